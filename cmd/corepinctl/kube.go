package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"golang.org/x/term"
	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/corepin/corepin/api"
	extender "github.com/corepin/corepin/scheduler-extender"
)

// kubeFlags are the connection flags every cluster command takes; they
// resolve the way kubectl's do: --kubeconfig, else $KUBECONFIG, else
// ~/.kube/config, with --context choosing the context.
type kubeFlags struct {
	kubeconfig string
	context    string
	namespace  string
	// extenderConfig is a local copy of the extender's configuration file;
	// configMap is where the cluster keeps it (namespace/name, key extender.yaml).
	extenderConfig string
	configMap      string
}

const defaultConfigMap = "corepin-system/corepin-scheduler-config"

func (k *kubeFlags) register(fs *flag.FlagSet, namespaced bool) {
	fs.StringVar(&k.kubeconfig, "kubeconfig", "", "path to the kubeconfig file (default $KUBECONFIG, then ~/.kube/config)")
	fs.StringVar(&k.context, "context", "", "the kubeconfig context to use")
	if namespaced {
		fs.StringVar(&k.namespace, "n", "", "the pod's namespace (default: the context's namespace)")
		fs.StringVar(&k.namespace, "namespace", "", "same as -n")
	}
	fs.StringVar(&k.extenderConfig, "extender-config", "", "the extender's configuration file (default: read it from --config-map)")
	fs.StringVar(&k.configMap, "config-map", defaultConfigMap, "the ConfigMap (namespace/name, key extender.yaml) holding the extender's configuration; empty for the defaults")
}

// clientFor connects to the cluster and returns the context's namespace.
// Tests replace it with a fake clientset.
var clientFor = func(k *kubeFlags) (kubernetes.Interface, string, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = k.kubeconfig
	cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: k.context})
	cfg, err := cc.ClientConfig()
	if err != nil {
		return nil, "", err
	}
	ns, _, err := cc.Namespace()
	if err != nil {
		return nil, "", err
	}
	client, err := kubernetes.NewForConfig(cfg)
	return client, ns, err
}

// isTerminal reports whether w is a terminal (colour is used only then).
var isTerminal = func(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// parseInterleaved parses flags placed before, between or after the
// positional arguments (`corepinctl node NAME -o json`), as kubectl allows.
// outputFlag registers -o and its long form --output, "text" by default.
// parseCommand parses a reading command's flags (the cluster's, -n when
// namespaced, -o) and its arguments; ok is false after a usage error.
func parseCommand(command, text string, namespaced bool, args []string, stderr io.Writer) (kf kubeFlags, output string, rest []string, ok bool) {
	fs := flag.NewFlagSet(command, flag.ContinueOnError)
	fs.SetOutput(stderr)
	kf.register(fs, namespaced)
	outputp := outputFlag(fs, text)
	rest, err := parseInterleaved(fs, args)
	if err != nil || !checkOutput(command, *outputp, stderr) {
		return kf, "", nil, false
	}
	return kf, *outputp, rest, true
}

func outputFlag(fs *flag.FlagSet, text string) *string {
	output := new(string)
	fs.StringVar(output, "o", "text", "output format: text ("+text+") or json")
	fs.StringVar(output, "output", "text", "same as -o")
	return output
}

// checkOutput refuses an output format other than text and json, naming
// the flag and the value.
func checkOutput(command, output string, stderr io.Writer) bool {
	if output == "text" || output == "json" {
		return true
	}
	fmt.Fprintf(stderr, "corepinctl %s: -o/--output %q: must be text or json\n", command, output)
	return false
}

func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return positional, nil
		}
		if args[0] == "--" {
			return append(positional, args[1:]...), nil
		}
		positional = append(positional, args[0])
		args = args[1:]
	}
}

// extenderConfig returns the extender's configuration: the file given, else
// the ConfigMap in the cluster, else the defaults (when the ConfigMap does
// not exist). The capacity parameters and the filter pipelines depend on it.
func (k *kubeFlags) loadExtenderConfig(ctx context.Context, client kubernetes.Interface) (api.Config, error) {
	if k.extenderConfig != "" {
		return api.LoadConfig(k.extenderConfig)
	}
	if k.configMap == "" {
		return api.Config{}, nil
	}
	ns, name, ok := strings.Cut(k.configMap, "/")
	if !ok || ns == "" || name == "" {
		return api.Config{}, fmt.Errorf("--config-map %q: want namespace/name", k.configMap)
	}
	cm, err := client.CoreV1().ConfigMaps(ns).Get(ctx, name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return api.Config{}, nil
	case err != nil:
		return api.Config{}, fmt.Errorf("reading the extender's configuration from ConfigMap %s: %w (use --extender-config FILE or --config-map '')", k.configMap, err)
	}
	data, ok := cm.Data["extender.yaml"]
	if !ok {
		return api.Config{}, fmt.Errorf("ConfigMap %s has no key extender.yaml", k.configMap)
	}
	return api.ParseConfig("ConfigMap "+k.configMap+" extender.yaml", []byte(data))
}

// clusterState is the extender's view of (part of) the cluster, rebuilt from
// the API server's objects with the extender's own code: Scheduler.UpsertNode
// and UpsertPod, what its informers call.
type clusterState struct {
	sched *extender.Scheduler
	nodes map[string]*v1.Node
	pods  map[string]*v1.Pod
	// problems are per node: invalid annotations and pods whose
	// alloc-status cannot be honoured.
	problems map[string][]string
}

func newClusterState(cfg api.Config, nodes []v1.Node, pods []v1.Pod) (*clusterState, error) {
	s, err := extender.NewScheduler(cfg)
	if err != nil {
		return nil, err
	}
	st := &clusterState{sched: s, nodes: map[string]*v1.Node{}, pods: map[string]*v1.Pod{}, problems: map[string][]string{}}
	for i := range nodes {
		n := &nodes[i]
		st.nodes[n.Name] = n
		upd := s.UpsertNode(n)
		st.problems[n.Name] = append(st.problems[n.Name], upd.Problems...)
	}
	for i := range pods {
		p := &pods[i]
		st.pods[extender.PodKey(p)] = p
		if err := s.UpsertPod(p); err != nil && p.Spec.NodeName != "" {
			st.problems[p.Spec.NodeName] = append(st.problems[p.Spec.NodeName], err.Error())
		}
	}
	return st, nil
}

// nodeNames are the nodes, sorted.
func (st *clusterState) nodeNames() []string {
	names := make([]string, 0, len(st.nodes))
	for name := range st.nodes {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}

// listPods lists pods, on one node when node is not empty. The field
// selector is applied again here: not every client honours it.
func listPods(ctx context.Context, client kubernetes.Interface, node string) ([]v1.Pod, error) {
	opts := metav1.ListOptions{}
	if node != "" {
		opts.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", node).String()
	}
	list, err := client.CoreV1().Pods(metav1.NamespaceAll).List(ctx, opts)
	if err != nil {
		return nil, fmt.Errorf("listing pods: %w", err)
	}
	if node == "" {
		return list.Items, nil
	}
	out := list.Items[:0]
	for _, p := range list.Items {
		if p.Spec.NodeName == node {
			out = append(out, p)
		}
	}
	return out, nil
}

// ANSI colours, used only on a terminal (and not when $NO_COLOR is set).
const (
	colReset  = "\x1b[0m"
	colDim    = "\x1b[2m"
	colRed    = "\x1b[31m"
	colGreen  = "\x1b[32m"
	colYellow = "\x1b[33m"
	colBold   = "\x1b[1m"
)

type painter bool

func newPainter(w io.Writer) painter {
	return painter(os.Getenv("NO_COLOR") == "" && isTerminal(w))
}

func (p painter) paint(colour, s string) string {
	if !p || s == "" {
		return s
	}
	return colour + s + colReset
}
