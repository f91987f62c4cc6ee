package main

import (
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/corepin/corepin/api"
)

// explainDoc is what `corepinctl explain` found out about a pod. The text
// output is printed from it and `-o json` encodes it, so the two cannot
// disagree. The field names are documented in docs/operations.md and are
// stable: add fields, do not rename them.
type explainDoc struct {
	// Pod is namespace/name.
	Pod string `json:"pod"`
	// State is explainPlaced (bound to a node) or explainPending.
	State         string `json:"state"`
	Phase         string `json:"phase"`
	Node          string `json:"node"`
	SchedulerName string `json:"schedulerName"`
	// Mode is "exclusive", "shared" or "BindAllCPUs" (which holds no
	// exclusive CPUs whatever its cpu-mode); "" when the annotations are
	// invalid.
	Mode string `json:"mode"`
	// Rule is what the annotations ask for, null when they are invalid;
	// AnnotationErrors then has one entry per problem, each naming the
	// annotation and its value.
	Rule             *ruleDoc `json:"rule"`
	AnnotationErrors []string `json:"annotationErrors"`

	// The rest of the placed pod's facts; empty for a pending pod.

	// CPUs is the CPU list the pod's containers run on, and CPUSource says
	// where it comes from (one of the cpus* constants; "" when the
	// annotations are invalid).
	CPUs      string `json:"cpus"`
	CPUSource string `json:"cpuSource"`
	// SharedPool is the node's shared pool, as the node plugin published it
	// (SharedPoolFrom "published") or as the pods' alloc-status leave it
	// ("computed"); Reserved is the node's reserved CPUs.
	SharedPool     string `json:"sharedPool"`
	SharedPoolFrom string `json:"sharedPoolFrom"`
	Reserved       string `json:"reserved"`
	// AllocStatus is the pod's corepin.io/alloc-status, null when absent or
	// invalid; AllocStatusError says why it is invalid.
	AllocStatus      *allocStatusDoc `json:"allocStatus"`
	AllocStatusError string          `json:"allocStatusError"`
	// Checks are the alloc-status's checks against the node, run only when
	// the pod has a valid alloc-status; FailedChecks counts the failed ones.
	Checks       []checkDoc `json:"checks"`
	FailedChecks int        `json:"failedChecks"`
	// Warnings are the node's, as in `corepinctl nodes`.
	Warnings []string `json:"warnings"`

	// The rest of the pending pod's facts; empty for a placed pod.

	// Events are the latest FailedScheduling events, latest first, at most
	// maxEvents; EventsError says why they could not be listed.
	Events      []eventDoc `json:"events"`
	EventsError string     `json:"eventsError"`
	// ExtenderError is set when the extender refuses the pod itself, before
	// looking at any node; Nodes is then empty.
	ExtenderError string `json:"extenderError"`
	// Nodes has the engine's verdict for every node now, by name.
	Nodes []nodeVerdict `json:"nodes"`
}

// Pod states.
const (
	explainPlaced  = "placed"
	explainPending = "pending"
)

// Where a placed pod's CPUs come from (explainDoc.CPUSource).
const (
	// cpusAllocStatus: an exclusive pod's CPUs, from its alloc-status.
	cpusAllocStatus = "alloc-status"
	// cpusNone: an exclusive pod without alloc-status, which the node
	// plugin refuses (or puts in the shared pool).
	cpusNone = "none"
	// cpusInvalid: an exclusive pod whose alloc-status does not parse.
	cpusInvalid = "invalid-alloc-status"
	// cpusSharedPool: a shared pod, in the node's shared pool.
	cpusSharedPool = "shared-pool"
	// cpusSystem: a shared pod in a system namespace, in the shared pool
	// plus the reserved CPUs.
	cpusSystem = "shared-pool+reserved"
	// cpusOnline and cpusOnlineMinusReserved: a BindAllCPUs pod, on every
	// online CPU, without the reserved ones unless
	// corepin.io/exclude-reserve-cpuset is false.
	cpusOnline              = "online"
	cpusOnlineMinusReserved = "online-minus-reserved"
)

// Where the shared pool comes from (explainDoc.SharedPoolFrom).
const (
	poolPublished = "published"
	poolComputed  = "computed"
)

// maxEvents is how many FailedScheduling events explain shows.
const maxEvents = 3

type ruleDoc struct {
	// CPUMode is corepin.io/cpu-mode: "exclusive" or "shared".
	CPUMode string `json:"cpuMode"`
	// AllocSpec is null for a shared pod that is not BindAllCPUs: its
	// alloc-spec does not matter.
	AllocSpec  *allocSpecDoc `json:"allocSpec"`
	App        string        `json:"app"`
	MaxPerNode int           `json:"maxPerNode"`
}

type allocSpecDoc struct {
	CPU           string `json:"cpu"`
	NUMA          string `json:"numa"`
	IOQueueSpread bool   `json:"ioQueueSpread"`
	// Containers is null for every container with a whole CPU amount.
	Containers []string `json:"containers"`
	// Defaults is true when the pod has no corepin.io/alloc-spec.
	Defaults bool `json:"defaults"`
}

type allocStatusDoc struct {
	Node string `json:"node"`
	CPUs string `json:"cpus"`
	Mems string `json:"mems"`
	// Containers maps each exclusive container to its CPUs.
	Containers map[string]string `json:"containers"`
}

// checkDoc is one check of a placed pod's alloc-status against its node.
type checkDoc struct {
	// Check names the rule (one of the check* constants), Detail says what
	// was compared, as the text output does.
	Check  string `json:"check"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail"`
}

// Check names (checkDoc.Check).
const (
	checkNode         = "node"
	checkTopology     = "topology"
	checkOnline       = "online"
	checkNotReserved  = "not-reserved"
	checkContainers   = "containers"
	checkMems         = "mems"
	checkNUMARequired = "numa-required"
	checkSpread       = "spread"
	checkNotHeld      = "not-held-by-others"
	checkCoreSharing  = "core-sharing"
	checkNotShared    = "not-in-shared-pool"
)

type eventDoc struct {
	// Time is when the event was last seen, RFC 3339 in UTC.
	Time    string `json:"time"`
	Count   int32  `json:"count"`
	Message string `json:"message"`
}

// nodeVerdict is the engine's verdict on a pending pod for one node.
type nodeVerdict struct {
	Node string `json:"node"`
	Fits bool   `json:"fits"`
	// Reason is why the pod does not fit, "" when it fits.
	Reason string `json:"reason"`
	// Code classifies Reason (the engine's policy.Code, the metrics label).
	Code string `json:"code,omitempty"`
}

// newExplainDoc fills what every pod has.
func newExplainDoc(namespace, name, node, phase, scheduler string) *explainDoc {
	state := explainPending
	if node != "" {
		state = explainPlaced
	}
	return &explainDoc{Pod: namespace + "/" + name, State: state, Phase: phase, Node: node, SchedulerName: scheduler}
}

// forJSON returns the document with empty lists for the lists not filled,
// so scripts can iterate over them without checking for null. The text
// output tells "not reached" from "empty" by nil, so this is done only here.
func (d explainDoc) forJSON() explainDoc {
	for _, list := range []*[]string{&d.AnnotationErrors, &d.Warnings} {
		if *list == nil {
			*list = []string{}
		}
	}
	if d.Checks == nil {
		d.Checks = []checkDoc{}
	}
	if d.Events == nil {
		d.Events = []eventDoc{}
	}
	if d.Nodes == nil {
		d.Nodes = []nodeVerdict{}
	}
	return d
}

// printExplain prints the document as text. It also prints a document
// filled only in part (when explain stopped at an error), up to where it
// stopped.
func printExplain(w io.Writer, d *explainDoc, pt painter) {
	if d.State == explainPlaced {
		fmt.Fprintf(w, "Pod %s on node %s (%s)\n", d.Pod, d.Node, d.Phase)
	} else {
		fmt.Fprintf(w, "Pod %s is pending: not bound to a node (scheduler %s)\n", d.Pod, d.SchedulerName)
	}
	if d.Rule == nil {
		if d.AnnotationErrors != nil {
			fmt.Fprintf(w, "  Rule        %s %s\n", pt.paint(colRed, "invalid annotations:"), strings.Join(d.AnnotationErrors, "\n"))
		}
		return
	}
	fmt.Fprintf(w, "  Rule        %s\n", d.Rule.text())
	if d.State == explainPlaced {
		printPlaced(w, d, pt)
	} else {
		printPending(w, d, pt)
	}
}

// text is the rule as one line.
func (r *ruleDoc) text() string {
	rule := "cpu-mode " + r.CPUMode
	if spec := r.AllocSpec; spec != nil {
		rule += fmt.Sprintf("; alloc-spec cpu %s, numa %s", spec.CPU, spec.NUMA)
		if spec.IOQueueSpread {
			rule += ", ioQueueSpread"
		}
		if spec.Containers != nil {
			rule += ", containers " + strings.Join(spec.Containers, ",")
		}
		if spec.Defaults {
			rule += " (no " + api.AnnotationAllocSpec + ": the defaults)"
		}
	}
	if r.App != "" {
		rule += fmt.Sprintf("; app %q", r.App)
	}
	if r.MaxPerNode > 0 {
		rule += fmt.Sprintf(", max-per-node %d", r.MaxPerNode)
	}
	return rule
}

func printPlaced(w io.Writer, d *explainDoc, pt painter) {
	poolFrom := map[string]string{poolPublished: "published by the node plugin", poolComputed: "computed from the pods' alloc-status"}[d.SharedPoolFrom]
	switch d.CPUSource {
	case cpusOnline, cpusOnlineMinusReserved:
		minus := ""
		if d.CPUSource == cpusOnlineMinusReserved {
			minus = " minus reserved"
		}
		fmt.Fprintf(w, "  CPUs        %s: BindAllCPUs pins every container to the node's online CPUs%s; it holds no exclusive CPUs\n", orNone(d.CPUs), minus)
	case cpusSystem:
		fmt.Fprintf(w, "  CPUs        %s: shared, in a system namespace: the shared pool %s (%s) plus the reserved CPUs %s\n",
			orNone(d.CPUs), orNone(d.SharedPool), poolFrom, orNone(d.Reserved))
	case cpusSharedPool:
		fmt.Fprintf(w, "  CPUs        %s: shared, the node's shared pool (%s)\n", orNone(d.CPUs), poolFrom)
	case cpusNone:
		fmt.Fprintf(w, "  CPUs        %s: the pod asks for exclusive CPUs but has no %s: the node plugin refuses its\n"+
			"              containers (event CorepinRefused), or, if it runs with --unplaced-to-shared, puts them in\n"+
			"              the shared pool %s; it was not scheduled by corepin (is its schedulerName the corepin scheduler's?)\n",
			pt.paint(colRed, "none"), api.AnnotationAllocStatus, orNone(d.SharedPool))
		return
	case cpusInvalid:
		fmt.Fprintf(w, "  CPUs        %s: %s\n", pt.paint(colRed, "invalid"), d.AllocStatusError)
		return
	case cpusAllocStatus:
		printAllocStatus(w, d, pt)
	default:
		return
	}
	for _, warning := range d.Warnings {
		fmt.Fprintf(w, "  %s %s\n", pt.paint(colYellow, "Warning"), warning)
	}
	if d.FailedChecks > 0 {
		fmt.Fprintf(w, "  %d check(s) failed: see docs/operations.md, \"Inspecting nodes and pods\"\n", d.FailedChecks)
	}
}

// printAllocStatus prints an exclusive pod's CPUs and the checks.
func printAllocStatus(w io.Writer, d *explainDoc, pt painter) {
	status := d.AllocStatus
	var containers []string
	for name, cpus := range status.Containers {
		containers = append(containers, name+": "+cpus)
	}
	sort.Strings(containers)
	fmt.Fprintf(w, "  CPUs        %s (%s), from %s\n", status.CPUs, strings.Join(containers, ", "), api.AnnotationAllocStatus)
	fmt.Fprintf(w, "  Mems        %s\n", orNone(status.Mems))
	fmt.Fprintf(w, "  Checks against node %s:\n", d.Node)
	for _, c := range d.Checks {
		mark := pt.paint(colGreen, "ok  ")
		if !c.OK {
			mark = pt.paint(colRed, "FAIL")
		}
		fmt.Fprintf(w, "    %s %s\n", mark, c.Detail)
	}
}

func printPending(w io.Writer, d *explainDoc, pt painter) {
	switch {
	case d.EventsError != "":
		fmt.Fprintf(w, "  Events      %s\n", d.EventsError)
	case len(d.Events) == 0:
		fmt.Fprintf(w, "  Events      no FailedScheduling events (the scheduler has not tried yet, or they expired)\n")
	default:
		fmt.Fprintf(w, "  Latest FailedScheduling events:\n")
		for _, ev := range d.Events {
			fmt.Fprintf(w, "    %s (x%d)  %s\n", ev.Time, ev.Count, ev.Message)
		}
	}
	if d.ExtenderError != "" {
		fmt.Fprintf(w, "  The corepin extender rejects the pod itself: %s\n", pt.paint(colRed, d.ExtenderError))
		return
	}
	if d.Nodes == nil {
		return
	}
	fmt.Fprintf(w, "  The corepin engine now, node by node (the extender's filter on the cluster as it is):\n")
	width := 0
	for _, n := range d.Nodes {
		width = max(width, len(n.Node))
	}
	var fits []string
	for _, n := range d.Nodes {
		reason := n.Reason
		if n.Fits {
			reason = pt.paint(colGreen, "fits")
			fits = append(fits, n.Node)
		}
		fmt.Fprintf(w, "    %-*s  %s\n", width, n.Node, reason)
	}
	if len(d.Nodes) == 0 {
		fmt.Fprintf(w, "    no nodes\n")
	}
	if len(fits) > 0 {
		fmt.Fprintf(w, "  It fits on %s for corepin now: if it stays pending, kube-scheduler's own filters (resources, taints, affinity) reject those nodes, or the pod is waiting for a retry; see the events.\n",
			strings.Join(fits, ", "))
	}
}
