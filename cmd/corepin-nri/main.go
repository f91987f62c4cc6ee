// Command corepin-nri is corepin's node plugin: a containerd NRI plugin that
// pins every container when it is created (see docs/design.md).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/nri/pkg/stub"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/corepin/corepin/api"
	"github.com/corepin/corepin/plugin"
	"github.com/corepin/corepin/policy"
	"github.com/corepin/corepin/topology"
)

func main() {
	hostname, _ := os.Hostname()
	nodeName := os.Getenv("NODE_NAME")
	if nodeName == "" {
		nodeName = hostname
	}
	var (
		socket      = flag.String("nri-socket", "/var/run/nri/nri.sock", "containerd's NRI socket")
		index       = flag.String("plugin-index", "10", "NRI plugin index (order among plugins)")
		node        = flag.String("node-name", nodeName, "this node's name (default $NODE_NAME, then the hostname)")
		reserved    = flag.String("reserved-cpus", "", "CPUs reserved for the system, a Linux CPU list")
		systemNS    = flag.String("system-namespaces", "kube-system", "comma-separated namespaces whose pods also get the reserved CPUs")
		kubeconfig  = flag.String("kubeconfig", "", "kubeconfig to publish the node's topology; in-cluster config when running in a pod; none: standalone")
		sysRoot     = flag.String("sysfs-root", "/", "root holding sys/ for topology discovery")
		procRoot    = flag.String("proc-root", "", "proc root for IO queues (default SYSFS-ROOT/proc)")
		kubeletRoot = flag.String("kubelet-root", "/var/lib/kubelet", "kubelet state directory, to detect the static CPU manager")
		unplaced    = flag.Bool("unplaced-to-shared", false, "run exclusive pods without alloc-status in the shared pool instead of refusing them")
	)
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(log, *socket, *index, *node, *reserved, *systemNS, *kubeconfig, *sysRoot, *procRoot, *kubeletRoot, *unplaced); err != nil {
		log.Error("corepin-nri failed", "err", err)
		os.Exit(1)
	}
}

func run(log *slog.Logger, socket, index, node, reserved, systemNS, kubeconfig, sysRoot, procRoot, kubeletRoot string, unplaced bool) error {
	if err := checkCPUManager(kubeletRoot); err != nil {
		return err
	}
	res, err := api.ParseCPUList(reserved)
	if err != nil {
		return fmt.Errorf("--reserved-cpus %q: %w", reserved, err)
	}
	src, err := topology.Discover(topology.Options{Root: sysRoot, ProcRoot: procRoot, Reserved: res})
	if err != nil {
		return err
	}
	topo, err := policy.NewTopology(src)
	if err != nil {
		return err
	}
	cfg := plugin.Config{NodeName: node, SystemNamespaces: strings.Split(systemNS, ","), Limits: api.DefaultLimits(), UnplacedToShared: unplaced}
	p := plugin.New(plugin.NewLedger(cfg, topo), log)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	go publishTopology(ctx, log, kubeconfig, node, src)

	// containerd restarts and dropped connections are transient: reconnect
	// with backoff and resynchronise (NRI sends Synchronize on every connect).
	backoff := time.Second
	for ctx.Err() == nil {
		s, err := stub.New(p, stub.WithSocketPath(socket), stub.WithPluginIdx(index), stub.WithPluginName("corepin"))
		if err != nil {
			return err
		}
		start := time.Now()
		runCtx, cancel := context.WithCancel(ctx)
		go pushPoolUpdates(runCtx, log, p, s)
		err = s.Run(runCtx)
		cancel()
		if ctx.Err() != nil {
			break
		}
		if time.Since(start) > time.Minute {
			backoff = time.Second
		}
		log.Warn("NRI connection lost; reconnecting", "err", err, "in", backoff)
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 30*time.Second)
	}
	return nil
}

// pushPoolUpdates sends the updates no handler could return, from the
// plugin's own goroutine.
func pushPoolUpdates(ctx context.Context, log *slog.Logger, p *plugin.Plugin, s stub.Stub) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-p.Kicks():
			updates := p.PoolUpdates()
			if len(updates) == 0 {
				continue
			}
			failed, err := s.UpdateContainers(updates)
			log.Info("Grew the shared pool back", "updates", len(updates), "failed", len(failed), "err", err)
		}
	}
}

// checkCPUManager refuses to run beside the kubelet's static CPU manager:
// its reconcile loop rewrites container cpusets every 10 s.
func checkCPUManager(kubeletRoot string) error {
	data, err := os.ReadFile(filepath.Join(kubeletRoot, "cpu_manager_state"))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var state struct {
		PolicyName string `json:"policyName"`
	}
	if err := json.Unmarshal(data, &state); err != nil {
		return fmt.Errorf("%s: %w", filepath.Join(kubeletRoot, "cpu_manager_state"), err)
	}
	if state.PolicyName == "static" {
		return fmt.Errorf("the kubelet runs the static CPU manager (%s says policyName static): its reconcile loop would overwrite corepin's cpusets every 10 s; set cpuManagerPolicy: none",
			filepath.Join(kubeletRoot, "cpu_manager_state"))
	}
	return nil
}

// publishTopology writes corepin.io/topology on the node, retrying until the
// API server answers; enforcement does not wait for it.
func publishTopology(ctx context.Context, log *slog.Logger, kubeconfig, node string, topo api.Topology) {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		log.Info("No Kubernetes API: running standalone, topology not published", "reason", err.Error())
		return
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		log.Error("Kubernetes client", "err", err)
		return
	}
	value, _ := json.Marshal(topo)
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]string{api.AnnotationTopology: string(value)}}})
	for wait := time.Second; ctx.Err() == nil; wait = min(2*wait, time.Minute) {
		_, err := client.CoreV1().Nodes().Patch(ctx, node, types.MergePatchType, patch, metav1.PatchOptions{})
		if err == nil {
			log.Info("Published topology", "node", node, "cpus", len(topo.CPUs), "reserved", topo.Reserved.String())
			return
		}
		log.Warn("Publishing topology failed; retrying", "err", err, "in", wait)
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
	}
}
