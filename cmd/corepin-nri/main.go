// Command corepin-nri is corepin's node plugin: a containerd NRI plugin that
// pins every container when it is created (see docs/design.md).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	nriapi "github.com/containerd/nri/pkg/api"
	"github.com/containerd/nri/pkg/stub"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/record"

	"github.com/corepin/corepin/api"
	"github.com/corepin/corepin/plugin"
	"github.com/corepin/corepin/policy"
	"github.com/corepin/corepin/topology"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == releaseAllCommand {
		os.Exit(releaseAllMain(os.Args[2:], os.Stdout, os.Stderr))
	}
	o, err := load(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "corepin-nri:", err)
		os.Exit(2)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(log, o); err != nil {
		log.Error("corepin-nri failed", "err", err)
		os.Exit(1)
	}
}

func run(log *slog.Logger, o options) error {
	client := kubeClient(log, o.Kubeconfig)
	if err := checkCPUManager(o.KubeletRoot); err != nil {
		nodeEvent(client, o.NodeName, "CorepinStaticCPUManager", err.Error())
		return err
	}
	res, from, err := o.reservedCPUs()
	if err != nil {
		nodeEvent(client, o.NodeName, "CorepinReservedCPUs", err.Error())
		return err
	}
	log.Info("Reserved CPUs", "cpus", res.String(), "from", from)
	discover := func() (api.Topology, error) {
		return topology.Discover(topology.Options{Root: o.SysfsRoot, ProcRoot: o.ProcRoot, Reserved: res})
	}
	src, err := discover()
	if err != nil {
		return err
	}
	topo, err := policy.NewTopology(src)
	if err != nil {
		return err
	}
	cfg := plugin.Config{NodeName: o.NodeName, SystemNamespaces: namespaces(o.SystemNamespaces), BindAllNamespaces: namespaces(o.BindAllNamespaces),
		Limits: o.limits(), UnplacedToShared: o.UnplacedToShared}
	metrics := plugin.NewMetrics()
	p := plugin.New(plugin.NewLedger(cfg, topo), log, metrics)
	p.SetConfigCheck(func(config string) error {
		// containerd hands a pre-installed plugin the file it was started
		// with; a change needs a restart, which containerd does.
		var in options
		if err := parseOptions([]byte(config), &in); err != nil {
			return fmt.Errorf("%s: %w", preinstalledConfig, err)
		}
		return nil
	})
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	reader := plugin.NewCgroupReader(o.SysfsRoot)
	drift := func() int { return p.CheckDrift(reader.CPUs) }
	if o.MetricsAddr != "" {
		go serveMetrics(ctx, log, o.MetricsAddr, metrics, p, drift)
	}
	if client == nil && o.TopologyInterval > 0 {
		// Standalone: nothing to publish, but CPUs brought online are
		// still adopted (a compatible grow), as with API access.
		topo := plugin.NewTopologyPublisher(nil, o.NodeName, discover, o.TopologyInterval, log)
		topo.OnChange = p.SetTopology
		go topo.Run(ctx)
	}
	if client != nil {
		broadcaster := record.NewBroadcaster()
		broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: client.CoreV1().Events("")})
		defer broadcaster.Shutdown()
		p.SetEventRecorder(broadcaster.NewRecorder(scheme.Scheme, v1.EventSource{Component: "corepin-nri", Host: o.NodeName}))
		// Topology: published at start, re-discovered every
		// --topology-interval and republished when the host changed or the
		// annotation was removed from the node; the plugin adopts a
		// compatible grow (CPUs brought online) and keeps enforcing the
		// topology it has on any other change.
		topo := plugin.NewTopologyPublisher(client, o.NodeName, discover, o.TopologyInterval, log)
		topo.OnChange = p.SetTopology
		go topo.Run(ctx)
		// The node's corepin.io/node-policy changes the capacity formula
		// as it does the extender's; its corepin.io/release-all (an
		// uninstall) is read before the first Synchronize too, so a plugin
		// restarted meanwhile pins nothing back.
		released := plugin.NewReleaseAllReporter(client, o.NodeName, p, log)
		go released.Run(ctx)
		nodeSynced := make(chan struct{})
		go func() {
			plugin.WatchNode(ctx, client, o.NodeName, log, p.NodePolicyHandler(log), topo.NodeHandler(), released.NodeHandler())
			close(nodeSynced)
		}()
		go plugin.PublishSharedPool(ctx, client, o.NodeName, p, o.PublishDebounce, log)
		// Learn the node's limits and the release switches before the
		// first Synchronize, so that neither a container placed under the
		// node's node-policy is refused nor one found released is pinned
		// back for a moment; an API server that is away delays enforcement
		// by 10 s at most.
		podsSynced := make(chan struct{})
		go func() { plugin.WatchPods(ctx, client, o.NodeName, p, log); close(podsSynced) }()
		var deadline <-chan time.Time = time.After(10 * time.Second)
		closedChannel := make(chan time.Time)
		close(closedChannel)
		for _, w := range []struct {
			synced <-chan struct{}
			what   string
		}{{nodeSynced, "The node's corepin.io/node-policy and corepin.io/release-all are not read yet; enforcing with the settings' limits until they are"},
			{podsSynced, "The pods of this node are not listed yet; enforcing without their release switches until they are"}} {
			select {
			case <-w.synced:
			case <-ctx.Done():
			case <-deadline:
				log.Warn(w.what)
				deadline = closedChannel // the 10 s are over for both
			}
		}
	}
	if client == nil {
		log.Info("No Kubernetes API: the node's corepin.io/node-policy is not read; capacity limits from the settings",
			"maxExclusiveRatio", o.MaxExclusiveRatio, "sharedOvercommit", o.SharedOvercommit, "sharedHeadroom", o.SharedHeadroom)
	}
	if o.DriftInterval > 0 {
		go func() {
			t := time.NewTicker(o.DriftInterval)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
					drift()
				}
			}
		}()
	}

	// containerd restarts and dropped connections are transient: reconnect
	// with backoff and resynchronise (NRI sends Synchronize on every
	// connect). A pre-installed plugin's connection was made by containerd
	// and cannot be redialled, so it exits; containerd launches
	// pre-installed plugins only when containerd itself (re)starts, so
	// until then the node runs without corepin (docs/plugin.md).
	preinstalled := os.Getenv(nriapi.PluginSocketEnvVar) != ""
	// 1 s doubling to 30 s, from 1 s again after a connection that lasted.
	reconnect := wait.Backoff{Duration: time.Second, Factor: 2, Jitter: 0.1, Steps: math.MaxInt32, Cap: 30 * time.Second}
	delay := reconnect.DelayFunc()
	for ctx.Err() == nil {
		opts := []stub.Option{stub.WithPluginName("corepin")}
		if preinstalled {
			opts = nil
			// The stub takes INDEX-NAME from the binary's name, as containerd launched it.
			p.SetNRIName(filepath.Base(os.Args[0]))
		} else {
			opts = append(opts, stub.WithSocketPath(o.NRISocket), stub.WithPluginIdx(o.PluginIndex))
			p.SetNRIName(o.PluginIndex + "-corepin")
		}
		s, err := stub.New(p, opts...)
		if err != nil {
			return err
		}
		start := time.Now()
		runCtx, cancel := context.WithCancel(ctx)
		go pushUpdates(runCtx, log, p, s)
		err = s.Run(runCtx)
		cancel()
		p.Disconnected(err)
		if ctx.Err() != nil {
			break
		}
		if preinstalled {
			return fmt.Errorf("connection to the runtime lost (a pre-installed plugin is launched again only when containerd restarts): %v", err)
		}
		if time.Since(start) > time.Minute {
			delay = reconnect.DelayFunc()
		}
		backoff := delay()
		log.Warn("NRI connection lost; reconnecting", "err", err, "in", backoff)
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
	}
	return nil
}

// pushUpdates sends the updates no handler could return, from the
// plugin's own goroutine. Containers a batch could not bring to their
// target (failed, or moved by a handler while it was in flight) are sent
// again by the next batch; after a failure it waits a moment, so a
// container that keeps failing is not retried in a tight loop, and after
// plugin.MaxFailures failures in a row the plugin stops sending it again
// (logged once) and leaves it to the drift check.
func pushUpdates(ctx context.Context, log *slog.Logger, p *plugin.Plugin, s stub.Stub) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-p.Pending():
			sent, failed, err := p.PushPending(s.UpdateContainers)
			if sent == 0 {
				continue
			}
			log.Info("Updated containers", "updates", sent, "failed", failed, "err", err)
			if failed > 0 {
				select {
				case <-ctx.Done():
				case <-time.After(time.Second):
				}
			}
		}
	}
}

// healthGrace is how long the plugin may be without an NRI connection
// before /healthz fails: reconnecting with backoff (up to 30 s) is normal.
const healthGrace = 30 * time.Second

// serveMetrics serves /metrics, the probes and POST /drift (check every
// container's cpuset now). /livez: the process serves (liveness);
// /readyz: synchronized with the runtime on the current connection
// (readiness); /healthz: connected, or not for less than healthGrace.
func serveMetrics(ctx context.Context, log *slog.Logger, addr string, m *plugin.Metrics, p *plugin.Plugin, drift func() int) {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("/livez", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })
	mux.Handle("/healthz", p.HealthHandler(healthGrace))
	mux.Handle("/readyz", p.ReadyHandler())
	mux.HandleFunc("POST /drift", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = fmt.Fprintf(w, "{\"drifted\":%d}\n", drift())
	})
	srv := &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { <-ctx.Done(); _ = srv.Close() }()
	log.Info("Serving metrics", "addr", addr)
	if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Error("Metrics server", "err", err)
	}
}

// nodeEvent records a warning on this node and waits for it to be written
// (the plugin is about to exit).
func nodeEvent(client kubernetes.Interface, node, reason, message string) {
	if client == nil {
		return
	}
	now := metav1.Now()
	ev := &v1.Event{
		ObjectMeta:     metav1.ObjectMeta{GenerateName: node + ".", Namespace: metav1.NamespaceDefault},
		InvolvedObject: v1.ObjectReference{Kind: "Node", APIVersion: "v1", Name: node, UID: types.UID(node)},
		Reason:         reason, Message: message, Type: v1.EventTypeWarning,
		Source:         v1.EventSource{Component: "corepin-nri", Host: node},
		FirstTimestamp: now, LastTimestamp: now, Count: 1,
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, _ = client.CoreV1().Events(metav1.NamespaceDefault).Create(ctx, ev, metav1.CreateOptions{})
}

// kubeClient returns a client from the kubeconfig (or the in-cluster
// config), or nil to run standalone.
func kubeClient(log *slog.Logger, kubeconfig string) kubernetes.Interface {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		log.Info("No Kubernetes API: running standalone (no release switch, nothing published)", "reason", err.Error())
		return nil
	}
	cfg.ContentType = runtime.ContentTypeProtobuf
	cfg.AcceptContentTypes = runtime.ContentTypeProtobuf + "," + runtime.ContentTypeJSON
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		log.Error("Kubernetes client", "err", err)
		return nil
	}
	return client
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
