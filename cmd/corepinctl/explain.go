package main

import (
	"context"
	"encoding/json"

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
	kf, output, rest, ok := parseCommand("explain", "the explanation", true, args, stderr)
	if !ok {
		return 2
	}
	if len(rest) != 1 {
		fmt.Fprintln(stderr, "usage: corepinctl explain [-n NAMESPACE] [NAMESPACE/]POD [-o text|json] [--kubeconfig FILE] [--context NAME]")
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
	e := explainer{ctx: ctx, client: client, cfg: cfg, pod: pod,
		doc: newExplainDoc(pod.Namespace, pod.Name, pod.Spec.NodeName, string(pod.Status.Phase), pod.Spec.SchedulerName)}
	if pod.Spec.NodeName != "" {
		err = e.placed()
	} else {
		err = e.pending()
	}
	// A script reading JSON gets a whole document or none; a person reading
	// text gets what was found before the error.
	if output == "json" && err == nil {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(e.doc.forJSON()); err != nil {
			return 1
		}
	}
	if output == "text" {
		printExplain(stdout, e.doc, newPainter(stdout))
	}
	if err != nil {
		fmt.Fprintf(stderr, "corepinctl explain: %v\n", err)
		return 1
	}
	// Failed checks are reported in the document, not by the exit code: the
	// command worked, the placement is what is wrong.
	return 0
}

// explainer gathers the facts about one pod into doc.
type explainer struct {
	ctx    context.Context
	client kubernetes.Interface
	cfg    api.Config
	pod    *v1.Pod
	doc    *explainDoc
}

// check records one consistency check.
func (e *explainer) check(ok bool, name, format string, args ...any) {
	e.doc.Checks = append(e.doc.Checks, checkDoc{Check: name, OK: ok, Detail: fmt.Sprintf(format, args...)})
	if !ok {
		e.doc.FailedChecks++
	}
}

// rule records what the pod's annotations ask for, or why they are invalid.
func (e *explainer) rule() (api.PodIntent, bool) {
	intent, err := api.ParsePodIntent(e.pod.Annotations, e.pod.Labels)
	if err != nil {
		e.doc.AnnotationErrors = errorList(err)
		return intent, false
	}
	e.doc.Mode = string(intent.Mode)
	if intent.BindAll() {
		e.doc.Mode = string(api.BindAllCPUs)
	}
	rule := &ruleDoc{CPUMode: string(intent.Mode), App: intent.App, MaxPerNode: intent.MaxPerNode}
	if intent.Mode == api.ModeExclusive || intent.BindAll() {
		spec := intent.Spec
		_, given := e.pod.Annotations[api.AnnotationAllocSpec]
		rule.AllocSpec = &allocSpecDoc{CPU: string(spec.CPU), NUMA: string(spec.NUMA), IOQueueSpread: spec.IOQueueSpread,
			Containers: spec.Containers, Defaults: !given}
	}
	e.doc.Rule = rule
	return intent, true
}

// errorList splits errors.Join's result into its errors, each naming one
// annotation and its value.
func errorList(err error) []string {
	joined, ok := err.(interface{ Unwrap() []error })
	if !ok {
		return []string{err.Error()}
	}
	var list []string
	for _, e := range joined.Unwrap() {
		list = append(list, e.Error())
	}
	return list
}

// placed explains a pod bound to a node.
func (e *explainer) placed() error {
	pod, nodeName, d := e.pod, e.pod.Spec.NodeName, e.doc
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
	e.nodeFacts(v)
	if !ok {
		return nil
	}
	if !intent.Exclusive() {
		e.sharedCPUs(intent, v)
		return nil
	}
	value, has := pod.Annotations[api.AnnotationAllocStatus]
	if !has {
		d.CPUSource = cpusNone
		return nil
	}
	status, err := api.ParseAllocStatus(value)
	if err != nil {
		d.CPUSource, d.AllocStatusError = cpusInvalid, err.Error()
		return nil
	}
	d.CPUSource, d.CPUs = cpusAllocStatus, status.CPUs.Set().String()
	d.AllocStatus = &allocStatusDoc{Node: status.Node, CPUs: d.CPUs, Mems: status.Mems.Set().String(), Containers: map[string]string{}}
	for name, set := range status.Containers {
		d.AllocStatus.Containers[name] = set.Set().String()
	}
	e.consistency(intent, status, v)
	return nil
}

// nodeFacts records the node's shared pool, reserved CPUs and warnings.
func (e *explainer) nodeFacts(v nodeView) {
	d := e.doc
	d.SharedPool, d.SharedPoolFrom = v.sharedPool.String(), poolComputed
	if v.published != nil {
		d.SharedPool, d.SharedPoolFrom = v.published.String(), poolPublished
	}
	if v.topo != nil {
		d.Reserved = v.topo.Reserved.Set().String()
	}
	d.Warnings = v.warnings
}

// sharedCPUs records the CPUs of a pod that holds no exclusive CPUs.
func (e *explainer) sharedCPUs(intent api.PodIntent, v nodeView) {
	d := e.doc
	switch {
	case intent.BindAll():
		online := cpuset.New()
		if v.topo != nil {
			online = v.topo.Online()
			if intent.ExcludeReserve {
				online = online.Difference(v.topo.Reserved.Set())
			}
		}
		d.CPUSource, d.CPUs = cpusOnline, online.String()
		if intent.ExcludeReserve {
			d.CPUSource = cpusOnlineMinusReserved
		}
	case contains(e.cfg.Systems(), e.pod.Namespace) && v.topo != nil:
		pool := v.sharedPool
		if v.published != nil {
			pool = *v.published
		}
		d.CPUSource, d.CPUs = cpusSystem, pool.Union(v.topo.Reserved.Set()).String()
	default:
		d.CPUSource, d.CPUs = cpusSharedPool, d.SharedPool
	}
}

// orReason is a check's detail: the reason it failed, else what holds.
func orReason(r *policy.Reason, format string, args ...any) string {
	if r != nil {
		return r.Message
	}
	return fmt.Sprintf(format, args...)
}

// consistency checks alloc-status against the node's topology and the other
// pods on it, by the rules of the contract.
func (e *explainer) consistency(intent api.PodIntent, status api.AllocStatus, v nodeView) {
	pod := e.pod
	cpus := status.CPUs.Set()
	e.check(status.Node == pod.Spec.NodeName, checkNode, "alloc-status names node %q, the pod is bound to %q", status.Node, pod.Spec.NodeName)
	if v.topo == nil {
		e.check(false, checkTopology, "the node publishes a valid %s", api.AnnotationTopology)
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
	e.check(len(offline) == 0, checkOnline, "CPUs %s are online (offline: %s)", cpus, orNone(cpuset.New(offline...).String()))
	reserved := cpus.Intersection(topo.Reserved.Set())
	e.check(reserved.IsEmpty(), checkNotReserved, "CPUs %s are not reserved (reserved: %s, of them in the pod: %s)", cpus, orNone(topo.Reserved.Set().String()), orNone(reserved.String()))

	// the exclusive containers and their amounts, and the mems rule: the
	// engine's own checks of a bound pod (policy.ReadBound), not a copy.
	if req, err := policy.NewRequest(pod); err == nil {
		r := policy.CheckContainers(req, status)
		e.check(r == nil, checkContainers, "%s", orReason(r, "exclusive containers and CPU counts match the pod's spec (alloc-status %s)", policy.ContainerCounts(status)))
	}
	numaOf := func(cpu int) (int, bool) {
		c, ok := info[cpu]
		return c.NUMA, ok
	}
	numaSet := policy.MemsOf(cpus, numaOf)
	mems := status.Mems.Set()
	r := policy.CheckMems(status, numaOf)
	if mems.IsEmpty() {
		e.check(r == nil, checkMems, "no mems: no memory binding (numa %s)", intent.Spec.NUMA)
	} else {
		e.check(r == nil, checkMems, "%s", orReason(r, "mems %s are the NUMA nodes of the CPUs (%s)", mems, numaSet))
	}
	if intent.Spec.NUMA == api.NUMARequired {
		e.check(numaSet.Size() == 1, checkNUMARequired, "numa Required: all CPUs in one NUMA node (NUMA nodes %s)", numaSet)
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
		e.check(len(doubled) == 0, checkSpread, "Spread: at most one CPU per physical core (%d cores; %s)", len(perCore), orNone(strings.Join(doubled, ", ")))
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
	e.check(len(conflicts) == 0, checkNotHeld, "no other pod holds these CPUs (%s)", orNone(strings.Join(conflicts, ", ")))
	e.check(len(neighbours) == 0, checkCoreSharing, "its cores are shared only as the contract allows (Spread beside Spread of another app): %s", orNone(strings.Join(neighbours, ", ")))
	if v.published != nil {
		overlap := v.published.Intersection(cpus)
		e.check(overlap.IsEmpty() || e.pod.Status.Phase != v1.PodRunning, checkNotShared, "not in the shared pool the node plugin publishes (%s; overlap %s)", orNone(v.published.String()), orNone(overlap.String()))
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
	pod, d := e.pod, e.doc
	if _, ok := e.rule(); !ok {
		return nil
	}
	events, err := failedScheduling(e.ctx, e.client, pod)
	if err != nil {
		d.EventsError = err.Error()
	}
	for _, ev := range events[:min(len(events), maxEvents)] {
		d.Events = append(d.Events, eventDoc{Time: eventTime(ev).UTC().Format(time.RFC3339), Count: max(ev.Count, 1),
			Message: strings.TrimSpace(ev.Message)})
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
	_, failed, err := st.sched.Filter(pod, names)
	if err != nil {
		d.ExtenderError = err.Error()
		return nil
	}
	d.Nodes = make([]nodeVerdict, 0, len(names))
	for _, n := range names {
		v := nodeVerdict{Node: n, Fits: true}
		if r, refused := failed[n]; refused {
			v.Fits, v.Reason, v.Code = false, r.Message, string(r.Code)
		}
		d.Nodes = append(d.Nodes, v)
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
