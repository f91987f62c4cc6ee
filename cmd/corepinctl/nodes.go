package main

import (
	"context"
	"encoding/json"

	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/cpuset"

	"github.com/corepin/corepin/api"
	"github.com/corepin/corepin/policy"
)

// nodeView is what corepinctl shows of one node: its objects as published,
// and the engine's state of it rebuilt from the node and its pods.
type nodeView struct {
	node *v1.Node
	// topo is nil when the node has no valid corepin.io/topology.
	topo *api.Topology
	// engine is the extender's state of the node (capacity, holders).
	engine   *policy.Node
	capacity policy.Capacity
	// sharedPool is computed: online - reserved - CPUs held per alloc-status.
	sharedPool cpuset.CPUSet
	// published is corepin.io/shared-pool as the plugin wrote it, nil if absent.
	published *cpuset.CPUSet
	exclusive []*policy.Placement
	warnings  []string
}

func (st *clusterState) view(name string) nodeView {
	n := st.nodes[name]
	v := nodeView{node: n, sharedPool: cpuset.New()}
	value, hasTopo := n.Annotations[api.AnnotationTopology]
	if hasTopo {
		if t, err := api.ParseTopology(value); err == nil {
			v.topo = &t
		}
	} else {
		v.warnings = append(v.warnings, fmt.Sprintf("no %s annotation (is the corepin node plugin running there?)", api.AnnotationTopology))
	}
	v.warnings = append(v.warnings, st.problems[name]...)
	if a := n.Annotations[api.AnnotationNodeAttention]; a != "" {
		v.warnings = append(v.warnings, "attention: "+a)
	}
	if engine, ok := st.sched.NodeSnapshot(name); ok {
		v.engine = engine
		v.capacity = engine.Capacity()
		v.sharedPool = engine.SharedPool()
		for _, p := range engine.Pods() {
			if p.Exclusive() {
				v.exclusive = append(v.exclusive, p)
			}
		}
	}
	if value, ok := n.Annotations[api.AnnotationSharedPool]; ok {
		s, err := api.ParseSharedPoolStatus(value)
		switch {
		case err != nil:
			v.warnings = append(v.warnings, "invalid "+err.Error())
		default:
			set := s.CPUs.Set()
			v.published = &set
			if v.topo != nil && !set.Equals(v.sharedPool) {
				v.warnings = append(v.warnings, fmt.Sprintf("%s %q differs from the pool the pods' alloc-status leave (%q): a pod is starting or stopping, or the node plugin is behind",
					api.AnnotationSharedPool, set.String(), v.sharedPool.String()))
			}
		}
	}
	return v
}

// poolSize is the shared pool's size as published, else as computed.
func (v nodeView) poolSize() int {
	if v.published != nil {
		return v.published.Size()
	}
	return v.sharedPool.Size()
}

// nodeSummary is one line of `corepinctl nodes -o json`.
type nodeSummary struct {
	Name           string   `json:"name"`
	CPUs           int      `json:"cpus"`
	Reserved       int      `json:"reserved"`
	ExclusiveLimit int      `json:"exclusiveLimit"`
	ExclusiveUsed  int      `json:"exclusiveUsed"`
	SharedPool     int      `json:"sharedPool"`
	ExclusivePods  int      `json:"exclusivePods"`
	Warnings       []string `json:"warnings"`
}

func (v nodeView) summary() nodeSummary {
	s := nodeSummary{Name: v.node.Name, ExclusiveLimit: v.capacity.ExclusiveLimit, ExclusiveUsed: v.capacity.E,
		SharedPool: v.poolSize(), ExclusivePods: len(v.exclusive), Warnings: v.warnings}
	if s.Warnings == nil {
		s.Warnings = []string{}
	}
	if v.topo != nil {
		s.CPUs, s.Reserved = len(v.topo.CPUs), v.topo.Reserved.Set().Size()
	}
	return s
}

// runNodes implements `corepinctl nodes`: one line per node.
func runNodes(args []string, stdout, stderr io.Writer) int {
	kf, output, rest, ok := parseCommand("nodes", "a table", false, args, stderr)
	if !ok {
		return 2
	}
	if len(rest) > 0 {
		fmt.Fprintln(stderr, "usage: corepinctl nodes [-o text|json] [--kubeconfig FILE] [--context NAME]")
		return 2
	}
	ctx := context.Background()
	client, _, err := clientFor(&kf)
	if err != nil {
		fmt.Fprintf(stderr, "corepinctl nodes: %v\n", err)
		return 1
	}
	cfg, err := kf.loadExtenderConfig(ctx, client)
	if err != nil {
		fmt.Fprintf(stderr, "corepinctl nodes: %v\n", err)
		return 1
	}
	nodes, err := client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		fmt.Fprintf(stderr, "corepinctl nodes: listing nodes: %v\n", err)
		return 1
	}
	pods, err := listPods(ctx, client, "")
	if err != nil {
		fmt.Fprintf(stderr, "corepinctl nodes: %v\n", err)
		return 1
	}
	st, err := newClusterState(cfg, nodes.Items, pods)
	if err != nil {
		fmt.Fprintf(stderr, "corepinctl nodes: %v\n", err)
		return 1
	}
	var lines []nodeSummary
	for _, name := range st.nodeNames() {
		lines = append(lines, st.view(name).summary())
	}
	if output == "json" {
		if lines == nil {
			lines = []nodeSummary{}
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(lines); err != nil {
			return 1
		}
		return 0
	}
	pt := newPainter(stdout)
	tw := tabwriter.NewWriter(stdout, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tCPUS\tRESERVED\tEXCL-LIMIT\tEXCL-USED\tSHARED-POOL\tEXCL-PODS\tWARNINGS")
	for _, s := range lines {
		cpus, reserved := "-", "-"
		if s.CPUs > 0 {
			cpus, reserved = strconv.Itoa(s.CPUs), strconv.Itoa(s.Reserved)
		}
		warnings := "-"
		if len(s.Warnings) > 0 {
			warnings = pt.paint(colYellow, strings.Join(s.Warnings, "; "))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\t%d\t%s\n", s.Name, cpus, reserved, s.ExclusiveLimit, s.ExclusiveUsed, s.SharedPool, s.ExclusivePods, warnings)
	}
	if err := tw.Flush(); err != nil {
		return 1
	}
	return 0
}
