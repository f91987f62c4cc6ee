package main

import (
	"context"
	"encoding/json"

	"fmt"
	"io"
	"sort"
	"strings"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/cpuset"

	"github.com/corepin/corepin/api"
)

// CPU states in `corepinctl node`.
const (
	stateReserved  = "reserved"
	stateExclusive = "exclusive"
	stateShared    = "shared"
	// stateStacked is a shared CPU that is the free sibling of a Spread
	// pod's CPU: a Spread pod of another app may still take it.
	stateStacked = "stacked"
)

// nodeDoc is the `corepinctl node NAME -o json` document (docs/operations.md).
type nodeDoc struct {
	Node     string `json:"node"`
	Online   string `json:"online"`
	Reserved string `json:"reserved"`
	// SharedPool is computed from the pods' alloc-status; SharedPoolPublished
	// is corepin.io/shared-pool as the node plugin wrote it (null if absent).
	SharedPool          string      `json:"sharedPool"`
	SharedPoolPublished *string     `json:"sharedPoolPublished"`
	Stacked             string      `json:"stacked"`
	Capacity            capacityDoc `json:"capacity"`
	ExclusivePods       []podCPUs   `json:"exclusivePods"`
	Warnings            []string    `json:"warnings"`
	CPUs                []cpuDoc    `json:"cpus"`
}

type capacityDoc struct {
	// Allocatable is P, ExclusiveUsed E, ExclusiveLimit the contract's formula.
	Allocatable    int `json:"allocatable"`
	ExclusiveLimit int `json:"exclusiveLimit"`
	ExclusiveUsed  int `json:"exclusiveUsed"`
	// SharedMilli is S, LargestSharedMilli M, in millicores.
	SharedMilli        int64   `json:"sharedMilli"`
	LargestSharedMilli int64   `json:"largestSharedMilli"`
	MaxExclusiveRatio  float64 `json:"maxExclusiveRatio"`
	SharedOvercommit   float64 `json:"sharedOvercommit"`
	SharedHeadroom     int     `json:"sharedHeadroom"`
}

type podCPUs struct {
	Pod        string            `json:"pod"`
	CPUs       string            `json:"cpus"`
	Containers map[string]string `json:"containers"`
}

type cpuDoc struct {
	ID     int    `json:"id"`
	Core   int    `json:"core"`
	Socket int    `json:"socket"`
	NUMA   int    `json:"numa"`
	L3     int    `json:"l3"`
	State  string `json:"state"`
	// Pod (namespace/name) and Container hold an exclusive CPU.
	Pod       string `json:"pod,omitempty"`
	Container string `json:"container,omitempty"`
}

// nodeDocument builds the document from the view; the containers come from
// the holders' alloc-status.
func (st *clusterState) nodeDocument(v nodeView) nodeDoc {
	d := nodeDoc{Node: v.node.Name, SharedPool: v.sharedPool.String(), Stacked: "", Warnings: v.warnings,
		ExclusivePods: []podCPUs{}, CPUs: []cpuDoc{}}
	if d.Warnings == nil {
		d.Warnings = []string{}
	}
	if v.published != nil {
		s := v.published.String()
		d.SharedPoolPublished = &s
	}
	e := v.engine
	if e != nil {
		d.Capacity = capacityDoc{Allocatable: v.capacity.P, ExclusiveLimit: v.capacity.ExclusiveLimit, ExclusiveUsed: v.capacity.E,
			SharedMilli: v.capacity.S, LargestSharedMilli: v.capacity.M,
			MaxExclusiveRatio: e.Limits.MaxExclusiveRatio, SharedOvercommit: e.Limits.SharedOvercommit, SharedHeadroom: e.Limits.SharedHeadroom}
	}
	// container of each exclusive CPU, from the holders' alloc-status
	containerOf := map[int]string{}
	for _, p := range v.exclusive {
		pc := podCPUs{Pod: p.Key, CPUs: p.CPUs.String(), Containers: map[string]string{}}
		if pod := st.pods[p.Key]; pod != nil {
			if s, err := api.ParseAllocStatus(pod.Annotations[api.AnnotationAllocStatus]); err == nil {
				for name, set := range s.Containers {
					pc.Containers[name] = set.Set().String()
					for _, id := range set.Set().List() {
						containerOf[id] = name
					}
				}
			}
		}
		d.ExclusivePods = append(d.ExclusivePods, pc)
	}
	if v.topo == nil || e == nil || e.Topo == nil {
		return d
	}
	d.Online, d.Reserved = v.topo.Online().String(), v.topo.Reserved.Set().String()
	stackable := e.Stackable()
	d.Stacked = stackable.String()
	reserved := v.topo.Reserved.Set()
	cpus := append([]api.CPUInfo(nil), v.topo.CPUs...)
	sort.Slice(cpus, func(i, j int) bool { return cpus[i].ID < cpus[j].ID })
	for _, c := range cpus {
		cd := cpuDoc{ID: c.ID, Core: c.Core, Socket: c.Socket, NUMA: c.NUMA, L3: c.L3, State: stateShared}
		switch holder, held := e.Holder(c.ID); {
		case reserved.Contains(c.ID):
			cd.State = stateReserved
		case held:
			cd.State, cd.Pod, cd.Container = stateExclusive, holder.Key, containerOf[c.ID]
		case stackable.Contains(c.ID):
			cd.State = stateStacked
		}
		d.CPUs = append(d.CPUs, cd)
	}
	return d
}

// runNode implements `corepinctl node NAME`: the node's CPUs by socket,
// NUMA node and core, each marked reserved, exclusive, shared or stacked.
func runNode(args []string, stdout, stderr io.Writer) int {
	kf, output, rest, ok := parseCommand("node", "the map", false, args, stderr)
	if !ok {
		return 2
	}
	if len(rest) != 1 {
		fmt.Fprintln(stderr, "usage: corepinctl node NAME [-o text|json] [--kubeconfig FILE] [--context NAME]")
		return 2
	}
	name := rest[0]
	ctx := context.Background()
	client, _, err := clientFor(&kf)
	if err != nil {
		fmt.Fprintf(stderr, "corepinctl node: %v\n", err)
		return 1
	}
	node, err := client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		if apierrors.IsNotFound(err) {
			fmt.Fprintf(stderr, "corepinctl node: node %q not found\n", name)
		} else {
			fmt.Fprintf(stderr, "corepinctl node: %v\n", err)
		}
		return 1
	}
	cfg, err := kf.loadExtenderConfig(ctx, client)
	if err != nil {
		fmt.Fprintf(stderr, "corepinctl node: %v\n", err)
		return 1
	}
	pods, err := listPods(ctx, client, name)
	if err != nil {
		fmt.Fprintf(stderr, "corepinctl node: %v\n", err)
		return 1
	}
	st, err := newClusterState(cfg, []v1.Node{*node}, pods)
	if err != nil {
		fmt.Fprintf(stderr, "corepinctl node: %v\n", err)
		return 1
	}
	doc := st.nodeDocument(st.view(name))
	if output == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(doc); err != nil {
			return 1
		}
		return 0
	}
	printNodeMap(stdout, doc, newPainter(stdout))
	return 0
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

func withCount(list string) string {
	if list == "" {
		return "none"
	}
	set, err := cpuset.Parse(list)
	if err != nil {
		return list
	}
	return fmt.Sprintf("%s (%d)", list, set.Size())
}

func printNodeMap(w io.Writer, d nodeDoc, pt painter) {
	c := d.Capacity
	fmt.Fprintf(w, "Node %s\n", pt.paint(colBold, d.Node))
	fmt.Fprintf(w, "  CPUs online      %s\n", withCount(d.Online))
	fmt.Fprintf(w, "  Reserved         %s\n", withCount(d.Reserved))
	fmt.Fprintf(w, "  Shared pool      %s", withCount(d.SharedPool))
	if d.SharedPoolPublished != nil {
		fmt.Fprintf(w, "   (published by the node plugin: %s)", orNone(*d.SharedPoolPublished))
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "  Stacked          %s\n", withCount(d.Stacked))
	pods := "pods"
	if len(d.ExclusivePods) == 1 {
		pods = "pod"
	}
	fmt.Fprintf(w, "  Exclusive        limit %d, used %d, by %d %s\n", c.ExclusiveLimit, c.ExclusiveUsed, len(d.ExclusivePods), pods)
	fmt.Fprintf(w, "  Capacity         P=%d S=%s M=%s (ratio %.4g, overcommit %g, headroom %d)\n",
		c.Allocatable, milli(c.SharedMilli), milli(c.LargestSharedMilli), c.MaxExclusiveRatio, c.SharedOvercommit, c.SharedHeadroom)
	for _, warning := range d.Warnings {
		fmt.Fprintf(w, "  %s %s\n", pt.paint(colYellow, "Warning"), warning)
	}
	colour := map[string]string{stateReserved: colDim, stateExclusive: colRed, stateShared: colGreen, stateStacked: colYellow}
	// group by socket, then NUMA node, then core
	cpus := append([]cpuDoc(nil), d.CPUs...)
	sort.SliceStable(cpus, func(i, j int) bool {
		a, b := cpus[i], cpus[j]
		if a.Socket != b.Socket {
			return a.Socket < b.Socket
		}
		if a.NUMA != b.NUMA {
			return a.NUMA < b.NUMA
		}
		if a.Core != b.Core {
			return a.Core < b.Core
		}
		return a.ID < b.ID
	})
	coreWidth, cpuWidth := 0, 0
	for _, cpu := range cpus {
		coreWidth = max(coreWidth, len(fmt.Sprint(cpu.Core)))
		cpuWidth = max(cpuWidth, len(fmt.Sprint(cpu.ID)))
	}
	for i, cpu := range cpus {
		newSocket := i == 0 || cpus[i-1].Socket != cpu.Socket
		if newSocket {
			fmt.Fprintf(w, "\nsocket %d\n", cpu.Socket)
		}
		if newSocket || cpus[i-1].NUMA != cpu.NUMA {
			fmt.Fprintf(w, "  numa %d\n", cpu.NUMA)
		}
		core := strings.Repeat(" ", len("core ")+coreWidth)
		if i == 0 || cpus[i-1].Core != cpu.Core || newSocket {
			core = fmt.Sprintf("core %*d", coreWidth, cpu.Core)
		}
		line := fmt.Sprintf("    %s  cpu %*d  %s", core, cpuWidth, cpu.ID, pt.paint(colour[cpu.State], cpu.State))
		if cpu.Pod != "" {
			line += strings.Repeat(" ", len(stateExclusive)-len(cpu.State)+2) + cpu.Pod
			if cpu.Container != "" {
				line += " (" + cpu.Container + ")"
			}
		}
		fmt.Fprintln(w, line)
	}
	if len(cpus) == 0 {
		fmt.Fprintln(w, "\nno CPU map: the node publishes no valid "+api.AnnotationTopology)
	}
}

// milli renders millicores as CPUs ("1.5", "0.2").
func milli(m int64) string {
	if m%1000 == 0 {
		return fmt.Sprint(m / 1000)
	}
	return strings.TrimRight(strings.TrimRight(fmt.Sprintf("%.3f", float64(m)/1000), "0"), ".")
}
