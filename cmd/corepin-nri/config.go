package main

import (
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/yaml"

	"github.com/corepin/corepin/api"
)

// options are the plugin's settings: flags, or for a pre-installed plugin
// the YAML file containerd also hands it (/etc/nri/conf.d/10-corepin.conf).
// A flag given on the command line wins over the file.
type options struct {
	NRISocket        string `json:"nriSocket"`
	PluginIndex      string `json:"pluginIndex"`
	NodeName         string `json:"nodeName"`
	ReservedCPUs     string `json:"reservedCPUs"`
	SystemNamespaces string `json:"systemNamespaces"`
	// BindAllNamespaces lists the namespaces whose pods may use
	// BindAllCPUs, as the extender's bindAllNamespaces does (its default,
	// none, is this default too).
	BindAllNamespaces string `json:"bindAllNamespaces"`
	Kubeconfig        string `json:"kubeconfig"`
	SysfsRoot         string `json:"sysfsRoot"`
	ProcRoot          string `json:"procRoot"`
	KubeletRoot       string `json:"kubeletRoot"`
	// KubeletConfig is the kubelet's configuration file (empty:
	// KUBELET-ROOT/config.yaml), read for its reservedSystemCPUs.
	KubeletConfig       string        `json:"kubeletConfig"`
	UnplacedToShared    bool          `json:"unplacedToShared"`
	MetricsAddr         string        `json:"metricsAddr"`
	DriftInterval       time.Duration `json:"-"`
	DriftIntervalStr    string        `json:"driftInterval"`
	PublishDebounce     time.Duration `json:"-"`
	TopologyInterval    time.Duration `json:"-"`
	TopologyIntervalStr string        `json:"topologyInterval"`
	// The capacity parameters before the node's corepin.io/node-policy;
	// set them as the extender's configuration sets them.
	MaxExclusiveRatio float64 `json:"maxExclusiveRatio"`
	SharedOvercommit  float64 `json:"sharedOvercommit"`
	SharedHeadroom    int     `json:"sharedHeadroom"`
	// reservedGiven: --reserved-cpus or reservedCPUs was set, even to
	// empty (which then must match the kubelet's reservedSystemCPUs too).
	reservedGiven bool
}

// limits are the capacity parameters the options set.
func (o options) limits() api.Limits {
	return api.Limits{MaxExclusiveRatio: o.MaxExclusiveRatio, SharedOvercommit: o.SharedOvercommit, SharedHeadroom: o.SharedHeadroom}
}

func (o options) validate() error {
	np := api.NodePolicy{MaxExclusiveRatio: &o.MaxExclusiveRatio, SharedOvercommit: &o.SharedOvercommit, SharedHeadroom: &o.SharedHeadroom}
	if err := np.Validate("corepin-nri"); err != nil {
		return err
	}
	for _, ns := range namespaces(o.BindAllNamespaces) {
		if errs := validation.IsDNS1123Label(ns); len(errs) > 0 {
			return fmt.Errorf("bindAllNamespaces %q: %q is not a namespace name: %s", o.BindAllNamespaces, ns, strings.Join(errs, "; "))
		}
	}
	return nil
}

// namespaces splits a comma-separated list of namespaces, ignoring blanks.
func namespaces(list string) []string {
	var out []string
	for _, ns := range strings.Split(list, ",") {
		if ns = strings.TrimSpace(ns); ns != "" {
			out = append(out, ns)
		}
	}
	return out
}

// preinstalledConfig is where containerd keeps a pre-installed plugin's
// configuration.
const preinstalledConfig = "/etc/nri/conf.d/10-corepin.conf"

func defaultOptions() options {
	hostname, _ := os.Hostname()
	node := os.Getenv("NODE_NAME")
	if node == "" {
		node = hostname
	}
	return options{NRISocket: "/var/run/nri/nri.sock", PluginIndex: "10", NodeName: node, SystemNamespaces: "kube-system",
		SysfsRoot: "/", KubeletRoot: "/var/lib/kubelet", DriftInterval: 30 * time.Second, TopologyInterval: time.Minute, PublishDebounce: 250 * time.Millisecond,
		MaxExclusiveRatio: api.DefaultMaxExclusiveRatio, SharedOvercommit: api.DefaultSharedOvercommit, SharedHeadroom: api.DefaultSharedHeadroom}
}

// bind registers the flags over o.
func (o *options) bind(fs *flag.FlagSet) *string {
	fs.StringVar(&o.NRISocket, "nri-socket", o.NRISocket, "containerd's NRI socket")
	fs.StringVar(&o.PluginIndex, "plugin-index", o.PluginIndex, "NRI plugin index (order among plugins)")
	fs.StringVar(&o.NodeName, "node-name", o.NodeName, "this node's name (default $NODE_NAME, then the hostname)")
	fs.StringVar(&o.ReservedCPUs, "reserved-cpus", o.ReservedCPUs, "CPUs reserved for the system, a Linux CPU list (default: the kubelet's reservedSystemCPUs; another set is refused)")
	fs.StringVar(&o.SystemNamespaces, "system-namespaces", o.SystemNamespaces, "comma-separated namespaces whose pods also get the reserved CPUs")
	fs.StringVar(&o.BindAllNamespaces, "bind-all-namespaces", o.BindAllNamespaces,
		"comma-separated namespaces whose pods may use BindAllCPUs (set it as the extender's bindAllNamespaces; empty: none)")
	fs.StringVar(&o.Kubeconfig, "kubeconfig", o.Kubeconfig, "kubeconfig for the API server; in-cluster config when running in a pod; none: standalone (enforce only)")
	fs.StringVar(&o.SysfsRoot, "sysfs-root", o.SysfsRoot, "root holding sys/ for topology discovery and cgroups")
	fs.StringVar(&o.ProcRoot, "proc-root", o.ProcRoot, "proc root for IO queues (default SYSFS-ROOT/proc)")
	fs.StringVar(&o.KubeletRoot, "kubelet-root", o.KubeletRoot, "kubelet state directory, to detect the static CPU manager")
	fs.StringVar(&o.KubeletConfig, "kubelet-config", o.KubeletConfig, "the kubelet's configuration file, read for reservedSystemCPUs (default KUBELET-ROOT/config.yaml, skipped when absent)")
	fs.BoolVar(&o.UnplacedToShared, "unplaced-to-shared", o.UnplacedToShared, "run exclusive pods without alloc-status in the shared pool instead of refusing them")
	fs.StringVar(&o.MetricsAddr, "metrics-addr", o.MetricsAddr, "address for /metrics, /livez, /readyz, /healthz and POST /drift (empty: off)")
	fs.DurationVar(&o.DriftInterval, "drift-interval", o.DriftInterval, "how often to read every container's cpuset and correct drift (0: only on POST /drift)")
	fs.Float64Var(&o.MaxExclusiveRatio, "max-exclusive-ratio", o.MaxExclusiveRatio, "capacity formula's ratio, before the node's corepin.io/node-policy (set it as the extender's configuration does)")
	fs.Float64Var(&o.SharedOvercommit, "shared-overcommit", o.SharedOvercommit, "capacity formula's shared overcommit r, before the node's node-policy")
	fs.IntVar(&o.SharedHeadroom, "shared-headroom", o.SharedHeadroom, "capacity formula's shared headroom h, before the node's node-policy")
	fs.DurationVar(&o.TopologyInterval, "topology-interval", o.TopologyInterval, "how often to re-discover the CPU topology and republish it if it changed or was removed from the node (0: only at start)")
	return fs.String("config", "", "YAML file with these settings (default "+preinstalledConfig+" when containerd launched the plugin)")
}

// parseOptions reads the YAML configuration strictly: an unknown key is
// an error naming it.
func parseOptions(data []byte, into *options) error {
	if err := api.UnmarshalYAMLStrict(data, into); err != nil {
		return err
	}
	if into.DriftIntervalStr != "" {
		d, err := time.ParseDuration(into.DriftIntervalStr)
		if err != nil || d < 0 {
			return fmt.Errorf("driftInterval %q: not a duration like 30s", into.DriftIntervalStr)
		}
		into.DriftInterval = d
	}
	if into.TopologyIntervalStr != "" {
		d, err := time.ParseDuration(into.TopologyIntervalStr)
		if err != nil || d < 0 {
			return fmt.Errorf("topologyInterval %q: not a duration like 60s", into.TopologyIntervalStr)
		}
		into.TopologyInterval = d
	}
	return nil
}

// load parses the command line; a configuration file fills in what the
// command line did not set.
func load(args []string) (options, error) {
	o := defaultOptions()
	fs := flag.NewFlagSet("corepin-nri", flag.ContinueOnError)
	config := o.bind(fs)
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	o.reservedGiven = flagGiven(fs, "reserved-cpus")
	path := *config
	if path == "" && os.Getenv("NRI_PLUGIN_SOCKET") != "" {
		if _, err := os.Stat(preinstalledConfig); err == nil {
			path = preinstalledConfig
		}
	}
	if path == "" {
		return o, o.validate()
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return o, err
	}
	fromFile := defaultOptions()
	if err := parseOptions(data, &fromFile); err != nil {
		return o, fmt.Errorf("%s: %w", path, err)
	}
	// The flags given on the command line win: parse them again over the file.
	merged := fromFile
	again := flag.NewFlagSet("corepin-nri", flag.ContinueOnError)
	merged.bind(again)
	if err := again.Parse(args); err != nil {
		return o, err
	}
	var keys map[string]any
	if err := yaml.Unmarshal(data, &keys); err != nil {
		return o, fmt.Errorf("%s: %w", path, err)
	}
	_, inFile := keys["reservedCPUs"]
	merged.reservedGiven = o.reservedGiven || inFile
	return merged, merged.validate()
}

// flagGiven reports whether the command line set the flag.
func flagGiven(fs *flag.FlagSet, name string) bool {
	given := false
	fs.Visit(func(f *flag.Flag) { given = given || f.Name == name })
	return given
}
