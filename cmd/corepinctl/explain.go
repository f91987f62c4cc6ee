package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/cpuset"

	"github.com/corepin/corepin/api"
	"github.com/corepin/corepin/policy"
	extender "github.com/corepin/corepin/scheduler-extender"
)

// runExplain implements `corepinctl explain [NAMESPACE/]POD`: why a pod has
// its CPUs, or why it is pending.
func runExplain(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("explain", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var kf kubeFlags
	kf.register(fs, true)
	rest, err := parseInterleaved(fs, args)
	if err != nil {
		return 2
	}
	if len(rest) != 1 {
		fmt.Fprintln(stderr, "usage: corepinctl explain [-n NAMESPACE] [NAMESPACE/]POD [--kubeconfig FILE] [--context NAME]")
		return 2
	}
	ctx := context.Background()
	client, contextNS, err := clientFor(&kf)
	if err != nil {
		fmt.Fprintf(stderr, "corepinctl explain: %v\n", err)
		return 1
	}
	ns, name, ok := strings.Cut(rest[0], "/")
	if !ok {
		ns, name = kf.namespace, rest[0]
		if ns == "" {
			ns = contextNS
		}
		if ns == "" {
			ns = metav1.NamespaceDefault
		}
	}
	pod, err := client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		if apierrors.IsNotFound(err) {
			fmt.Fprintf(stderr, "corepinctl explain: pod %s/%s not found\n", ns, name)
		} else {
			fmt.Fprintf(stderr, "corepinctl explain: %v\n", err)
		}
		return 1
	}
	cfg, err := kf.loadExtenderConfig(ctx, client)
	if err != nil {
		fmt.Fprintf(stderr, "corepinctl explain: %v\n", err)
		return 1
	}
	e := explainer{ctx: ctx, client: client, cfg: cfg, pod: pod, w: stdout, pt: newPainter(stdout)}
	if pod.Spec.NodeName != "" {
		err = e.placed()
	} else {
		err = e.pending()
	}
	if err != nil {
		fmt.Fprintf(stderr, "corepinctl explain: %v\n", err)
		return 1
	}
	return 0
}

type explainer struct {
	ctx    context.Context
	client kubernetes.Interface
	cfg    api.Config
	pod    *v1.Pod
	w      io.Writer
	pt     painter
	// failed counts the checks that failed.
	failed int
}

func (e *explainer) printf(format string, args ...any) { fmt.Fprintf(e.w, format, args...) }

// check prints one consistency check.
func (e *explainer) check(ok bool, format string, args ...any) {
	mark := e.pt.paint(colGreen, "ok  ")
	if !ok {
		mark = e.pt.paint(colRed, "FAIL")
		e.failed++
	}
	e.printf("    %s %s\n", mark, fmt.Sprintf(format, args...))
}

// rule describes what the pod's annotations ask for.
func (e *explainer) rule() (api.PodIntent, bool) {
	intent, err := api.ParsePodIntent(e.pod.Annotations, e.pod.Labels)
	if err != nil {
		e.printf("  Rule        %s %v\n", e.pt.paint(colRed, "invalid annotations:"), err)
		return intent, false
	}
	rule := fmt.Sprintf("cpu-mode %s", intent.Mode)
	if intent.Mode == api.ModeExclusive || intent.BindAll() {
		spec := intent.Spec
		rule += fmt.Sprintf("; alloc-spec cpu %s, numa %s", spec.CPU, spec.NUMA)
		if spec.IOQueueSpread {
			rule += ", ioQueueSpread"
		}
		if spec.Containers != nil {
			rule += ", containers " + strings.Join(spec.Containers, ",")
		}
		if _, ok := e.pod.Annotations[api.AnnotationAllocSpec]; !ok {
			rule += " (no " + api.AnnotationAllocSpec + ": the defaults)"
		}
	}
	if intent.App != "" {
		rule += fmt.Sprintf("; app %q", intent.App)
	}
	if intent.MaxPerNode > 0 {
		rule += fmt.Sprintf(", max-per-node %d", intent.MaxPerNode)
	}
	e.printf("  Rule        %s\n", rule)
	return intent, true
}

// placed explains a pod bound to a node.
func (e *explainer) placed() error {
	pod, nodeName := e.pod, e.pod.Spec.NodeName
	e.printf("Pod %s/%s on node %s (%s)\n", pod.Namespace, pod.Name, nodeName, pod.Status.Phase)
	intent, ok := e.rule()
	node, err := e.client.CoreV1().Nodes().Get(e.ctx, nodeName, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("node %s: %w", nodeName, err)
	}
	pods, err := listPods(e.ctx, e.client, nodeName)
	if err != nil {
		return err
	}
	st, err := newClusterState(e.cfg, []v1.Node{*node}, pods)
	if err != nil {
		return err
	}
	v := st.view(nodeName)
	pool := v.sharedPool
	poolFrom := "computed from the pods' alloc-status"
	if v.published != nil {
		pool, poolFrom = *v.published, "published by the node plugin"
	}
	if !ok {
		return nil
	}
	if !intent.Exclusive() {
		switch {
		case intent.BindAll():
			online := cpuset.New()
			if v.topo != nil {
				online = v.topo.Online()
				if intent.ExcludeReserve {
					online = online.Difference(v.topo.Reserved.Set())
				}
			}
			e.printf("  CPUs        %s: BindAllCPUs pins every container to the node's online CPUs%s; it holds no exclusive CPUs\n",
				orNone(online.String()), map[bool]string{true: " minus reserved", false: ""}[intent.ExcludeReserve])
		case contains(e.cfg.Systems(), pod.Namespace) && v.topo != nil:
			e.printf("  CPUs        %s: shared, in a system namespace: the shared pool %s (%s) plus the reserved CPUs %s\n",
				orNone(pool.Union(v.topo.Reserved.Set()).String()), orNone(pool.String()), poolFrom, orNone(v.topo.Reserved.Set().String()))
		default:
			e.printf("  CPUs        %s: shared, the node's shared pool (%s)\n", orNone(pool.String()), poolFrom)
		}
		for _, warning := range v.warnings {
			e.printf("  %s %s\n", e.pt.paint(colYellow, "Warning"), warning)
		}
		return nil
	}
	value, has := pod.Annotations[api.AnnotationAllocStatus]
	if !has {
		e.printf("  CPUs        %s: the pod asks for exclusive CPUs but has no %s: the node plugin refuses its\n"+
			"              containers (event CorepinRefused), or, if it runs with --unplaced-to-shared, puts them in\n"+
			"              the shared pool %s; it was not scheduled by corepin (is its schedulerName the corepin scheduler's?)\n",
			e.pt.paint(colRed, "none"), api.AnnotationAllocStatus, orNone(pool.String()))
		return nil
	}
	status, err := api.ParseAllocStatus(value)
	if err != nil {
		e.printf("  CPUs        %s: %v\n", e.pt.paint(colRed, "invalid"), err)
		return nil
	}
	cpus := status.CPUs.Set()
	var containers []string
	for name, set := range status.Containers {
		containers = append(containers, name+": "+set.Set().String())
	}
	sort.Strings(containers)
	e.printf("  CPUs        %s (%s), from %s\n", cpus, strings.Join(containers, ", "), api.AnnotationAllocStatus)
	e.printf("  Mems        %s\n", orNone(status.Mems.Set().String()))
	e.printf("  Checks against node %s:\n", nodeName)
	e.consistency(intent, status, v)
	if len(v.warnings) > 0 {
		for _, warning := range v.warnings {
			e.printf("  %s %s\n", e.pt.paint(colYellow, "Warning"), warning)
		}
	}
	if e.failed > 0 {
		e.printf("  %d check(s) failed: see docs/operations.md, \"Inspecting nodes and pods\"\n", e.failed)
	}
	return nil
}

// consistency checks alloc-status against the node's topology and the other
// pods on it, by the rules of the contract.
func (e *explainer) consistency(intent api.PodIntent, status api.AllocStatus, v nodeView) {
	pod := e.pod
	cpus := status.CPUs.Set()
	e.check(status.Node == pod.Spec.NodeName, "alloc-status names node %q, the pod is bound to %q", status.Node, pod.Spec.NodeName)
	if v.topo == nil {
		e.check(false, "the node publishes a valid %s", api.AnnotationTopology)
		return
	}
	topo := v.topo
	info := map[int]api.CPUInfo{}
	for _, c := range topo.CPUs {
		info[c.ID] = c
	}
	var offline []int
	for _, id := range cpus.List() {
		if _, ok := info[id]; !ok {
			offline = append(offline, id)
		}
	}
	e.check(len(offline) == 0, "CPUs %s are online (offline: %s)", cpus, orNone(cpuset.New(offline...).String()))
	reserved := cpus.Intersection(topo.Reserved.Set())
	e.check(reserved.IsEmpty(), "CPUs %s are not reserved (reserved: %s, of them in the pod: %s)", cpus, orNone(topo.Reserved.Set().String()), orNone(reserved.String()))

	// the exclusive containers and their amounts
	if req, err := policy.NewRequest(pod); err == nil {
		var want, got []string
		for _, c := range req.Containers {
			if c.Exclusive {
				want = append(want, fmt.Sprintf("%s=%d", c.Name, c.Milli/1000))
			}
		}
		for name, set := range status.Containers {
			got = append(got, fmt.Sprintf("%s=%d", name, set.Set().Size()))
		}
		sort.Strings(want)
		sort.Strings(got)
		e.check(strings.Join(want, ",") == strings.Join(got, ","), "exclusive containers and CPU counts match the pod's spec (spec %s, alloc-status %s)",
			strings.Join(want, " "), strings.Join(got, " "))
	}

	var numas []int
	for _, id := range cpus.List() {
		if c, ok := info[id]; ok {
			numas = append(numas, c.NUMA)
		}
	}
	numaSet := cpuset.New(numas...)
	mems := status.Mems.Set()
	if intent.Spec.NUMA == api.NUMANone {
		e.check(mems.IsEmpty(), "numa None: no mems set (mems %s)", orNone(mems.String()))
	} else {
		e.check(mems.Equals(numaSet), "mems %s are the NUMA nodes of the CPUs (%s)", orNone(mems.String()), numaSet)
	}
	if intent.Spec.NUMA == api.NUMARequired {
		e.check(numaSet.Size() == 1, "numa Required: all CPUs in one NUMA node (NUMA nodes %s)", numaSet)
	}

	// cores: Spread takes one thread per core; nobody shares a core with a
	// SameCoreFirst pod; Spread stacks only beside Spread pods of other apps.
	perCore := map[int][]int{}
	siblings := map[int][]int{}
	for _, c := range topo.CPUs {
		siblings[c.Core] = append(siblings[c.Core], c.ID)
	}
	for _, id := range cpus.List() {
		if c, ok := info[id]; ok {
			perCore[c.Core] = append(perCore[c.Core], id)
		}
	}
	if intent.Spec.CPU == api.Spread {
		var doubled []string
		for core, ids := range perCore {
			if len(ids) > 1 {
				doubled = append(doubled, fmt.Sprintf("core %d: %s", core, cpuset.New(ids...)))
			}
		}
		sort.Strings(doubled)
		e.check(len(doubled) == 0, "Spread: at most one CPU per physical core (%d cores; %s)", len(perCore), orNone(strings.Join(doubled, ", ")))
	}
	key := extender.PodKey(pod)
	var conflicts, neighbours []string
	if v.engine != nil {
		for _, id := range cpus.List() {
			if h, ok := v.engine.Holder(id); ok && h.Key != key {
				conflicts = append(conflicts, fmt.Sprintf("CPU %d held by %s", id, h.Key))
			}
		}
		for core := range perCore {
			for _, id := range siblings[core] {
				h, ok := v.engine.Holder(id)
				if !ok || h.Key == key {
					continue
				}
				switch {
				case intent.Spec.CPU != api.Spread || h.Policy != api.Spread:
					neighbours = append(neighbours, fmt.Sprintf("core %d: CPU %d held by %s (%s)", core, id, h.Key, h.Policy))
				case intent.App != "" && h.App == intent.App:
					neighbours = append(neighbours, fmt.Sprintf("core %d: CPU %d held by %s of the same app", core, id, h.Key))
				}
			}
		}
	}
	sort.Strings(neighbours)
	e.check(len(conflicts) == 0, "no other pod holds these CPUs (%s)", orNone(strings.Join(conflicts, ", ")))
	e.check(len(neighbours) == 0, "its cores are shared only as the contract allows (Spread beside Spread of another app): %s", orNone(strings.Join(neighbours, ", ")))
	if v.published != nil {
		overlap := v.published.Intersection(cpus)
		e.check(overlap.IsEmpty() || e.pod.Status.Phase != v1.PodRunning, "not in the shared pool the node plugin publishes (%s; overlap %s)", orNone(v.published.String()), orNone(overlap.String()))
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// pending explains a pod not bound to a node: the scheduler's latest
// FailedScheduling events, then the engine's reasons now, node by node.
func (e *explainer) pending() error {
	pod := e.pod
	e.printf("Pod %s/%s is pending: not bound to a node (scheduler %s)\n", pod.Namespace, pod.Name, pod.Spec.SchedulerName)
	if _, ok := e.rule(); !ok {
		return nil
	}
	events, err := failedScheduling(e.ctx, e.client, pod)
	if err != nil {
		e.printf("  Events      %v\n", err)
	} else if len(events) == 0 {
		e.printf("  Events      no FailedScheduling events (the scheduler has not tried yet, or they expired)\n")
	} else {
		e.printf("  Latest FailedScheduling events:\n")
		for i, ev := range events {
			if i == 3 {
				break
			}
			when := eventTime(ev)
			e.printf("    %s (x%d)  %s\n", when.UTC().Format(time.RFC3339), max(ev.Count, 1), strings.TrimSpace(ev.Message))
		}
	}
	nodes, err := e.client.CoreV1().Nodes().List(e.ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("listing nodes: %w", err)
	}
	pods, err := listPods(e.ctx, e.client, "")
	if err != nil {
		return err
	}
	st, err := newClusterState(e.cfg, nodes.Items, pods)
	if err != nil {
		return err
	}
	names := st.nodeNames()
	fits, failed, err := st.sched.Filter(pod, names)
	if err != nil {
		e.printf("  The corepin extender rejects the pod itself: %s\n", e.pt.paint(colRed, err.Error()))
		return nil
	}
	e.printf("  The corepin engine now, node by node (the extender's filter on the cluster as it is):\n")
	width := 0
	for _, n := range names {
		width = max(width, len(n))
	}
	for _, n := range names {
		reason, ok := failed[n]
		if !ok {
			reason = e.pt.paint(colGreen, "fits")
		}
		e.printf("    %-*s  %s\n", width, n, reason)
	}
	if len(names) == 0 {
		e.printf("    no nodes\n")
	}
	if len(fits) > 0 {
		e.printf("  It fits on %s for corepin now: if it stays pending, kube-scheduler's own filters (resources, taints, affinity) reject those nodes, or the pod is waiting for a retry; see the events.\n",
			strings.Join(fits, ", "))
	}
	return nil
}

// failedScheduling returns the pod's FailedScheduling events, latest first.
func failedScheduling(ctx context.Context, client kubernetes.Interface, pod *v1.Pod) ([]v1.Event, error) {
	selector := fields.Set{"involvedObject.kind": "Pod", "involvedObject.name": pod.Name, "reason": "FailedScheduling"}.AsSelector().String()
	list, err := client.CoreV1().Events(pod.Namespace).List(ctx, metav1.ListOptions{FieldSelector: selector})
	if err != nil {
		return nil, fmt.Errorf("listing events: %w", err)
	}
	var out []v1.Event
	for _, ev := range list.Items {
		o := ev.InvolvedObject
		if ev.Reason != "FailedScheduling" || o.Kind != "Pod" || o.Name != pod.Name || (o.UID != "" && pod.UID != "" && o.UID != pod.UID) {
			continue
		}
		out = append(out, ev)
	}
	sort.SliceStable(out, func(i, j int) bool { return eventTime(out[i]).After(eventTime(out[j])) })
	return out, nil
}

// eventTime is when an event was last seen, whichever API wrote it.
func eventTime(ev v1.Event) time.Time {
	t := ev.LastTimestamp.Time
	if ev.Series != nil && ev.Series.LastObservedTime.After(t) {
		t = ev.Series.LastObservedTime.Time
	}
	if ev.EventTime.After(t) {
		t = ev.EventTime.Time
	}
	if t.IsZero() {
		t = ev.CreationTimestamp.Time
	}
	return t
}
