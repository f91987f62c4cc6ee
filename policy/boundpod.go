package policy

import (
	"fmt"
	"sort"
	"strings"

	v1 "k8s.io/api/core/v1"
	"k8s.io/utils/cpuset"

	"github.com/corepin/corepin/api"
)

// BoundPod is what the engine reads of a pod bound to a node, whichever
// door it comes through: the extender's informer, the node plugin's pod
// sandbox, corepinctl's API read.
type BoundPod struct {
	Namespace, Name string
	// Node is the node the pod is bound to; "" when not known.
	Node        string
	Annotations map[string]string
	Labels      map[string]string
	// Containers are the app containers then the native sidecars, with
	// their amounts; nil when the reader does not know the spec (the node
	// plugin sees one container at a time), and then the container rules,
	// checked at bind, are not checked again.
	Containers []Container
}

// BoundPodOf reads a pod from the API: each container's requested amount
// from the spec and its allocated amount from the status.
func BoundPodOf(pod *v1.Pod) BoundPod {
	b := BoundPod{Namespace: pod.Namespace, Name: pod.Name, Node: pod.Spec.NodeName, Annotations: pod.Annotations, Labels: pod.Labels,
		Containers: make([]Container, 0, len(pod.Spec.Containers))}
	for i := range pod.Spec.Containers {
		c := &pod.Spec.Containers[i]
		b.Containers = append(b.Containers, Container{Name: c.Name, Milli: ContainerAmount(c),
			Allocated: StatusAmount(pod.Status.ContainerStatuses, c.Name)})
	}
	for i := range pod.Spec.InitContainers {
		if c := &pod.Spec.InitContainers[i]; IsNativeSidecar(c) {
			b.Containers = append(b.Containers, Container{Name: c.Name, Milli: ContainerAmount(c),
				Allocated: StatusAmount(pod.Status.InitContainerStatuses, c.Name), Sidecar: true})
		}
	}
	return b
}

// StatusAmount is the CPU amount the node has for a container, in
// millicores, by the rule of ContainerAmount: the limit of its status'
// resources if set, else their request, else its allocatedResources' CPU;
// 0 when the status says nothing (not started, or a kubelet that does not
// report it).
func StatusAmount(statuses []v1.ContainerStatus, name string) int64 {
	for i := range statuses {
		s := &statuses[i]
		if s.Name != name {
			continue
		}
		if r := s.Resources; r != nil {
			if q, ok := r.Limits[v1.ResourceCPU]; ok {
				return q.MilliValue()
			}
			if q, ok := r.Requests[v1.ResourceCPU]; ok {
				return q.MilliValue()
			}
		}
		if q, ok := s.AllocatedResources[v1.ResourceCPU]; ok {
			return q.MilliValue()
		}
		return 0
	}
	return 0
}

// Key is namespace/name.
func (b BoundPod) Key() string { return b.Namespace + "/" + b.Name }

// Bound is how a bound pod is enforced, on the node and in the cluster
// view alike.
type Bound struct {
	// Request is the pod as its annotations ask; when they do not parse,
	// the contract's defaults (a shared pod) with the spec's containers.
	Request Request
	// Status is the alloc-status enforced; Held reports whether there is
	// one. Its CPUs are held for the pod even when Reason is set: a
	// container running on them must never see them given to another.
	Status api.AllocStatus
	Held   bool
	// Reason says why the annotations are not honoured as written: they do
	// not parse (the valid alloc-status is still enforced), the pod is
	// exclusive but not placed, or its alloc-status is for another node,
	// does not parse or does not match the pod. nil when all is well.
	Reason *Reason
}

// ContainerCPUs are the exclusive CPUs of one container, if it has any.
func (b Bound) ContainerCPUs(name string) (cpuset.CPUSet, bool) {
	if !b.Held {
		return cpuset.New(), false
	}
	cpus, ok := b.Status.Containers[name]
	return cpus.Set(), ok
}

// Placement is the bound pod for the engine's Node: the CPUs held, and the
// shared amount of the containers that are not exclusive.
func (b Bound) Placement() *Placement {
	p := PlacementFor(b.Request, NoCPUs())
	if !b.Held {
		return p
	}
	p.CPUs, p.SharedMilli = b.Status.CPUs.Set(), 0
	for _, c := range b.Request.Containers {
		if _, exclusive := b.Status.Containers[c.Name]; !exclusive {
			p.SharedMilli += c.SharedAmount()
		}
	}
	return p
}

// ReadBound reads a bound pod once, by one set of rules, for every door.
// topo is the node's topology, nil when not known (then mems are not
// checked against it).
//
// The mems rule: an alloc-status' mems are empty (numa None: no memory
// binding) or exactly the NUMA nodes of its CPUs, which is what the engine
// writes.
func ReadBound(pod BoundPod, topo *Topology) Bound {
	key := pod.Key()
	intent, err := api.ParsePodIntent(pod.Annotations, pod.Labels)
	b := Bound{Request: Request{Key: key, Namespace: pod.Namespace, Intent: intent, Containers: pod.Containers}}
	if err == nil && pod.Containers != nil && intent.Exclusive() {
		b.Request.Containers = append([]Container(nil), pod.Containers...)
		err = b.Request.markExclusive()
	}
	if err != nil {
		// Annotations that do not parse (edited after bind, or written
		// under rules since made stricter) do not void a valid alloc-status:
		// its CPUs stay held, its containers exclusive, the rest shared.
		b.Reason = &Reason{Code: CodeBadAnnotation, Message: err.Error(), Err: err}
		defaults, _ := api.ParsePodIntent(nil, pod.Labels)
		defaults.App = api.AppOf(pod.Annotations, pod.Labels)
		b.Request = Request{Key: key, Namespace: pod.Namespace, Intent: defaults, Containers: pod.Containers}
		if status, ok := pod.Annotations[api.AnnotationAllocStatus]; ok {
			if s, err := api.ParseAllocStatus(status); err == nil && (pod.Node == "" || s.Node == pod.Node) {
				b.Status, b.Held = s, true
			}
		}
		return b
	}
	if !intent.Exclusive() {
		return b
	}
	value, ok := pod.Annotations[api.AnnotationAllocStatus]
	if !ok {
		b.Reason = Reasonf(CodeNotPlaced, "exclusive pod not placed by the corepin scheduler extender (no %s)", api.AnnotationAllocStatus)
		return b
	}
	status, err := api.ParseAllocStatus(value)
	if err != nil {
		b.Reason = &Reason{Code: CodeBadAnnotation, Message: err.Error(), Err: err}
		return b
	}
	if pod.Node != "" && status.Node != pod.Node {
		b.Reason = Reasonf(CodeWrongNode, "alloc-status is for node %q, the pod is on %q", status.Node, pod.Node)
		return b
	}
	b.Status, b.Held = status, true
	if r := CheckContainers(b.Request, status); r != nil {
		b.Reason = r
	} else if r := CheckMems(status, topo.numaFunc()); r != nil {
		b.Reason = r
	}
	return b
}

// CheckContainers reports an alloc-status whose exclusive containers or
// CPU counts are not the spec's (the spec changed, or the annotation was
// edited); its CPUs are still held. A request without containers (the spec
// not known) passes.
func CheckContainers(req Request, status api.AllocStatus) *Reason {
	if req.Containers == nil {
		return nil
	}
	var want []string
	for _, c := range req.Containers {
		if c.Exclusive {
			want = append(want, fmt.Sprintf("%s=%d", c.Name, c.Milli/1000))
		}
	}
	sort.Strings(want)
	if w, g := strings.Join(want, " "), ContainerCounts(status); w != g {
		return Reasonf(CodeBadAnnotation, "%s gives containers %s but the spec's exclusive containers are %s", api.AnnotationAllocStatus, g, w)
	}
	return nil
}

// ContainerCounts lists an alloc-status' containers and CPU counts
// ("db=2 log=1"), sorted by name.
func ContainerCounts(status api.AllocStatus) string {
	got := make([]string, 0, len(status.Containers))
	for name, set := range status.Containers {
		got = append(got, fmt.Sprintf("%s=%d", name, set.Set().Size()))
	}
	sort.Strings(got)
	return strings.Join(got, " ")
}

// CheckMems applies the mems rule (see ReadBound); numaOf gives a CPU's
// NUMA node (nil: the topology is not known, nothing is checked).
func CheckMems(status api.AllocStatus, numaOf func(cpu int) (int, bool)) *Reason {
	mems := status.Mems.Set()
	if numaOf == nil || mems.IsEmpty() {
		return nil
	}
	for _, id := range status.CPUs.Set().UnsortedList() {
		if _, ok := numaOf(id); !ok {
			return nil // an offline CPU: the engine's conflict check names it
		}
	}
	numa := MemsOf(status.CPUs.Set(), numaOf)
	if !mems.Equals(numa) {
		return Reasonf(CodeBadAnnotation, "%s mems %q are not the NUMA nodes of its CPUs %s (%s)", api.AnnotationAllocStatus, mems, status.CPUs.Set(), numa)
	}
	return nil
}

// MemsOf is the NUMA nodes of cpus (those numaOf knows).
func MemsOf(cpus cpuset.CPUSet, numaOf func(cpu int) (int, bool)) cpuset.CPUSet {
	ids := make([]int, 0, 2)
	for _, id := range cpus.UnsortedList() {
		if n, ok := numaOf(id); ok {
			ids = append(ids, n)
		}
	}
	return cpuset.New(ids...)
}

// numaFunc gives a CPU's NUMA node; nil for a nil topology.
func (t *Topology) numaFunc() func(cpu int) (int, bool) {
	if t == nil {
		return nil
	}
	return func(cpu int) (int, bool) {
		c, ok := t.CPU(cpu)
		return c.NUMA, ok
	}
}
