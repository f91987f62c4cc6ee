package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/corepin/corepin/api"
	"github.com/corepin/corepin/internal/nodeapply"
)

// releaseAllCommand is the subcommand the chart's hooks run: it asks every
// node's plugin to give every container the whole node and waits for each
// to say it did (the pre-delete hook), or, with --clear, removes that
// request from every node (pre-install and pre-upgrade).
const releaseAllCommand = "release-all"

type releaseAllOptions struct {
	kubeconfig string
	namespace  string
	selector   string
	timeout    time.Duration
	interval   time.Duration
	clear      bool
}

// releaseAllMain runs `corepin-nri release-all` and returns its exit code.
func releaseAllMain(args []string, stdout, stderr io.Writer) int {
	o := releaseAllOptions{namespace: defaultNamespace(), interval: time.Second}
	fs := flag.NewFlagSet("corepin-nri "+releaseAllCommand, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig for the API server (default: the in-cluster config)")
	fs.StringVar(&o.namespace, "namespace", o.namespace, "namespace of the corepin-nri DaemonSet (default $POD_NAMESPACE, else the pod's own, else corepin-system)")
	fs.StringVar(&o.selector, "selector", "app.kubernetes.io/name=corepin-nri", "label selector of the corepin-nri DaemonSet's pods")
	fs.DurationVar(&o.timeout, "timeout", 120*time.Second, "how long to wait for every node to report "+api.AnnotationReleaseAllDone)
	fs.BoolVar(&o.clear, "clear", false, "remove "+api.AnnotationReleaseAll+" and "+api.AnnotationReleaseAllDone+" from every node instead (a reinstall: the plugins pin again)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "corepin-nri %s: unexpected arguments %q\n", releaseAllCommand, fs.Args())
		return 2
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", o.kubeconfig)
	if err != nil {
		fmt.Fprintf(stderr, "corepin-nri %s: %v\n", releaseAllCommand, err)
		return 1
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		fmt.Fprintf(stderr, "corepin-nri %s: %v\n", releaseAllCommand, err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if o.clear {
		err = clearReleaseAll(ctx, client, stdout)
	} else {
		err = releaseAll(ctx, client, o, stdout)
	}
	if err != nil {
		fmt.Fprintf(stderr, "corepin-nri %s: %v\n", releaseAllCommand, err)
		return 1
	}
	return 0
}

// defaultNamespace is $POD_NAMESPACE, else the namespace of the pod's
// service account, else corepin-system.
func defaultNamespace() string {
	if ns := os.Getenv("POD_NAMESPACE"); ns != "" {
		return ns
	}
	if data, err := os.ReadFile("/var/run/secrets/kubernetes.io/serviceaccount/namespace"); err == nil && len(strings.TrimSpace(string(data))) > 0 {
		return strings.TrimSpace(string(data))
	}
	return "corepin-system"
}

// releaseAll sets corepin.io/release-all on every node that runs a
// corepin-nri pod (the DaemonSet's pods, by o.selector), by server-side
// apply as the command's own field manager, removing any earlier
// release-all-done (the plugin's), and waits until each of
// those nodes reports release-all-done. It fails naming the nodes that did
// not report within o.timeout, with their plugin pod's state; the nodes
// that did stay released.
func releaseAll(ctx context.Context, client kubernetes.Interface, o releaseAllOptions, out io.Writer) error {
	pods, err := client.CoreV1().Pods(o.namespace).List(ctx, metav1.ListOptions{LabelSelector: o.selector})
	if err != nil {
		return fmt.Errorf("listing the corepin-nri pods (namespace %s, selector %s): %w", o.namespace, o.selector, err)
	}
	plugins := map[string]v1.Pod{} // node -> its plugin pod
	for _, pod := range pods.Items {
		if pod.Spec.NodeName != "" {
			plugins[pod.Spec.NodeName] = pod
		}
	}
	if len(plugins) == 0 {
		fmt.Fprintf(out, "no corepin-nri pods on any node (namespace %s, selector %s): nothing to release\n", o.namespace, o.selector)
		return nil
	}
	nodes := make([]string, 0, len(plugins))
	for node := range plugins {
		nodes = append(nodes, node)
	}
	slices.Sort(nodes)
	failed := map[string]string{}
	pending := map[string]bool{}
	var set []string
	// A node deleted meanwhile has no container left to release.
	left := len(nodes)
	gone := func(node string) {
		delete(pending, node)
		left--
		fmt.Fprintf(out, "%s: the node is gone, nothing to release\n", node)
	}
	for _, node := range nodes {
		err := nodeapply.New(client, node, "", nodeapply.ManagerReleaseAllCommand).
			Remove(ctx, map[string]string{api.AnnotationReleaseAll: "true"}, api.AnnotationReleaseAllDone)
		switch {
		case nodeapply.Gone(err):
			gone(node)
		case err != nil:
			failed[node] = "could not be annotated: " + err.Error()
		default:
			pending[node] = true
			set = append(set, node)
		}
	}
	fmt.Fprintf(out, "%s=true set on %d nodes: %s; waiting up to %s for each to report %s\n",
		api.AnnotationReleaseAll, len(set), strings.Join(set, ", "), o.timeout, api.AnnotationReleaseAllDone)
	deadline := time.Now().Add(o.timeout)
	for {
		for _, node := range nodes {
			if !pending[node] {
				continue
			}
			n, err := client.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
			switch {
			case apierrors.IsNotFound(err):
				gone(node)
			case err != nil:
				// Transient: asked again at the next round.
			case n.Annotations[api.AnnotationReleaseAllDone] != "":
				delete(pending, node)
				fmt.Fprintf(out, "%s: every container on every CPU (%s %s)\n", node, api.AnnotationReleaseAllDone, n.Annotations[api.AnnotationReleaseAllDone])
			}
		}
		if len(pending) == 0 || !time.Now().Before(deadline) {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(min(o.interval, time.Until(deadline))):
		}
	}
	for node := range pending {
		failed[node] = "did not report " + api.AnnotationReleaseAllDone + " within " + o.timeout.String()
	}
	if len(failed) == 0 {
		fmt.Fprintf(out, "all %d nodes released\n", left)
		return nil
	}
	var lines []string
	for _, node := range nodes {
		if why, bad := failed[node]; bad {
			lines = append(lines, fmt.Sprintf("  %s %s (plugin pod %s: %s)", node, why, plugins[node].Name, podState(plugins[node])))
		}
	}
	return fmt.Errorf("%d of %d nodes not released:\n%s\n"+
		"Their containers may still be pinned: see each plugin pod's log (kubectl -n %s logs POD). The nodes that reported stay released "+
		"(nothing is pinned there until %s is removed: helm upgrade does, or kubectl annotate node NODE %s-). "+
		"helm uninstall --no-hooks uninstalls without this step",
		len(failed), left, strings.Join(lines, "\n"), o.namespace, api.AnnotationReleaseAll, api.AnnotationReleaseAll)
}

// podState is a pod's phase and readiness, for messages.
func podState(pod v1.Pod) string {
	if pod.DeletionTimestamp != nil {
		return string(pod.Status.Phase) + ", being deleted"
	}
	for _, c := range pod.Status.Conditions {
		if c.Type == v1.PodReady {
			if c.Status == v1.ConditionTrue {
				return string(pod.Status.Phase) + ", ready"
			}
			return string(pod.Status.Phase) + ", not ready"
		}
	}
	return string(pod.Status.Phase)
}

// clearReleaseAll removes release-all and release-all-done from every
// node that has either: the plugins there pin every container again.
func clearReleaseAll(ctx context.Context, client kubernetes.Interface, out io.Writer) error {
	nodes, err := client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("listing nodes: %w", err)
	}
	var cleared []string
	var errs []error
	for _, n := range nodes.Items {
		_, on := n.Annotations[api.AnnotationReleaseAll]
		_, done := n.Annotations[api.AnnotationReleaseAllDone]
		if !on && !done {
			continue
		}
		err := nodeapply.New(client, n.Name, n.UID, nodeapply.ManagerReleaseAllCommand).
			Remove(ctx, nil, api.AnnotationReleaseAll, api.AnnotationReleaseAllDone)
		if err != nil && !nodeapply.Gone(err) {
			errs = append(errs, fmt.Errorf("node %s: %w", n.Name, err))
			continue
		}
		cleared = append(cleared, n.Name)
	}
	if len(cleared) == 0 {
		fmt.Fprintf(out, "no node carries %s\n", api.AnnotationReleaseAll)
	} else {
		fmt.Fprintf(out, "%s removed from %d nodes: %s\n", api.AnnotationReleaseAll, len(cleared), strings.Join(cleared, ", "))
	}
	return errors.Join(errs...)
}
