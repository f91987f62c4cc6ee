package extender

import (
	"slices"
	"strings"
	"unique"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"

	"github.com/corepin/corepin/api"
	"github.com/corepin/corepin/policy"
)

// PodRecord is what the Pod informer keeps of a pod: exactly the fields the
// engine reads, a few hundred bytes where even a stripped v1.Pod takes over
// 2 KiB (its structs alone are 1.5 KiB). Strings that repeat across pods
// (node, container and app names, annotation keys and most values) are
// interned with package unique, so the cluster's hundreds of thousands of
// pods share one copy of each.
//
// A PodRecord is immutable once built; Pod turns it back into the v1.Pod
// the engine takes.
type PodRecord struct {
	key             string // namespace/name
	uid             types.UID
	resourceVersion string // informers tell updates from resyncs by it
	node            unique.Handle[string]
	phase           v1.PodPhase
	// appName and app are the labels app.kubernetes.io/name and app, the
	// only labels the engine reads of a placed pod (its app identity).
	appName, app unique.Handle[string]
	// allocStatus is kept apart: it is unique to the pod, so interning it
	// would cost more than it saves.
	allocStatus    string
	hasAllocStatus bool
	// priority is spec.priority, which preemption compares (hasPriority:
	// set at all). It fits in the padding after hasAllocStatus: a record
	// is no larger for it.
	hasPriority bool
	// terminating: the pod has a deletionTimestamp (preemption's victims
	// while they go). Also in the padding.
	terminating bool
	priority    int32
	// annotations are the other corepin.io/* annotations, sorted by key.
	annotations []internedPair
	containers  []containerCPU
}

type internedPair struct{ key, value unique.Handle[string] }

// containerCPU is a container's name and CPU limit and request, in
// millicores, with whether each is set. sidecar marks a native sidecar (an
// init container with restartPolicy Always): it counts in the pod's shared
// amount. Other init containers are not kept.
type containerCPU struct {
	name                 unique.Handle[string]
	limit, request       int64
	hasLimit, hasRequest bool
	sidecar              bool
	// allocated is the amount the pod's status gives the container when
	// it differs from the spec's (an in-place resize requested and not
	// done yet: contract section 10), else 0.
	allocated int64
}

func newContainerCPU(c *v1.Container) containerCPU {
	out := containerCPU{name: intern(c.Name), sidecar: policy.IsNativeSidecar(c)}
	if q, ok := c.Resources.Limits[v1.ResourceCPU]; ok {
		out.limit, out.hasLimit = q.MilliValue(), true
	}
	if q, ok := c.Resources.Requests[v1.ResourceCPU]; ok {
		out.request, out.hasRequest = q.MilliValue(), true
	}
	return out
}

func (c containerCPU) container() v1.Container {
	out := v1.Container{Name: str(c.name)}
	if c.hasLimit {
		out.Resources.Limits = v1.ResourceList{v1.ResourceCPU: *resource.NewMilliQuantity(c.limit, resource.DecimalSI)}
	}
	if c.hasRequest {
		out.Resources.Requests = v1.ResourceList{v1.ResourceCPU: *resource.NewMilliQuantity(c.request, resource.DecimalSI)}
	}
	if c.sidecar {
		always := v1.ContainerRestartPolicyAlways
		out.RestartPolicy = &always
	}
	return out
}

var noHandle unique.Handle[string]

func intern(s string) unique.Handle[string] {
	if s == "" {
		return noHandle
	}
	return unique.Make(s)
}

func str(h unique.Handle[string]) string {
	if h == noHandle {
		return ""
	}
	return h.Value()
}

// knownPhase returns the package's constant for the usual phases, so a
// record does not keep the decoder's copy of the word.
func knownPhase(p v1.PodPhase) v1.PodPhase {
	for _, k := range []v1.PodPhase{v1.PodPending, v1.PodRunning, v1.PodSucceeded, v1.PodFailed, v1.PodUnknown} {
		if p == k {
			return k
		}
	}
	return v1.PodPhase(strings.Clone(string(p)))
}

// NewPodRecord keeps what the engine reads of pod. Nothing of pod is
// retained: every string is copied or interned.
func NewPodRecord(pod *v1.Pod) *PodRecord {
	r := &PodRecord{
		key:             pod.Namespace + "/" + pod.Name,
		uid:             types.UID(strings.Clone(string(pod.UID))),
		resourceVersion: strings.Clone(pod.ResourceVersion),
		node:            intern(pod.Spec.NodeName),
		phase:           knownPhase(pod.Status.Phase),
		appName:         intern(pod.Labels[api.LabelAppName]),
		app:             intern(pod.Labels[api.LabelApp]),
	}
	if pod.Spec.Priority != nil {
		r.priority, r.hasPriority = *pod.Spec.Priority, true
	}
	r.terminating = pod.DeletionTimestamp != nil
	for k, v := range pod.Annotations {
		switch {
		case k == api.AnnotationAllocStatus:
			r.allocStatus, r.hasAllocStatus = strings.Clone(v), true
		case strings.HasPrefix(k, "corepin.io/"):
			r.annotations = append(r.annotations, internedPair{unique.Make(k), unique.Make(v)})
		}
	}
	slices.SortFunc(r.annotations, func(a, b internedPair) int { return strings.Compare(a.key.Value(), b.key.Value()) })
	r.containers = make([]containerCPU, 0, len(pod.Spec.Containers))
	for i := range pod.Spec.Containers {
		r.containers = append(r.containers, withAllocated(newContainerCPU(&pod.Spec.Containers[i]), &pod.Spec.Containers[i], pod.Status.ContainerStatuses))
	}
	for i := range pod.Spec.InitContainers {
		if c := &pod.Spec.InitContainers[i]; policy.IsNativeSidecar(c) {
			r.containers = append(r.containers, withAllocated(newContainerCPU(c), c, pod.Status.InitContainerStatuses))
		}
	}
	return r
}

// withAllocated keeps the status' amount of a container when it is not the
// spec's.
func withAllocated(out containerCPU, c *v1.Container, statuses []v1.ContainerStatus) containerCPU {
	if a := policy.StatusAmount(statuses, c.Name); a != 0 && a != policy.ContainerAmount(c) {
		out.allocated = a
	}
	return out
}

// Key is namespace/name.
func (r *PodRecord) Key() string { return r.key }

func (r *PodRecord) namespaceName() (string, string) {
	ns, name, _ := strings.Cut(r.key, "/")
	return ns, name
}

// Pod rebuilds the pod as the engine sees it: name, namespace, UID, node,
// priority, phase, the app labels, the corepin.io annotations and each
// container's (and native sidecar's) name and CPU limit and request, with
// a status giving the amount the node has where it is not the spec's; a
// pod being deleted has a DeletionTimestamp, of the zero time (the record
// keeps only that it has one). The result is the caller's.
func (r *PodRecord) Pod() *v1.Pod {
	ns, name := r.namespaceName()
	pod := &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: r.uid, ResourceVersion: r.resourceVersion},
		Spec:       v1.PodSpec{NodeName: str(r.node)},
		Status:     v1.PodStatus{Phase: r.phase},
	}
	if r.hasPriority {
		priority := r.priority
		pod.Spec.Priority = &priority
	}
	if r.terminating {
		pod.DeletionTimestamp = &metav1.Time{}
	}
	if r.appName != noHandle || r.app != noHandle {
		pod.Labels = map[string]string{}
		if r.appName != noHandle {
			pod.Labels[api.LabelAppName] = r.appName.Value()
		}
		if r.app != noHandle {
			pod.Labels[api.LabelApp] = r.app.Value()
		}
	}
	if r.hasAllocStatus || len(r.annotations) > 0 {
		pod.Annotations = make(map[string]string, len(r.annotations)+1)
		for _, a := range r.annotations {
			pod.Annotations[a.key.Value()] = a.value.Value()
		}
		if r.hasAllocStatus {
			pod.Annotations[api.AnnotationAllocStatus] = r.allocStatus
		}
	}
	pod.Spec.Containers = make([]v1.Container, 0, len(r.containers))
	for _, c := range r.containers {
		if c.sidecar {
			pod.Spec.InitContainers = append(pod.Spec.InitContainers, c.container())
		} else {
			pod.Spec.Containers = append(pod.Spec.Containers, c.container())
		}
		if c.allocated == 0 {
			continue
		}
		// A resize in flight: the status' amount, as its limit.
		st := v1.ContainerStatus{Name: str(c.name), Resources: &v1.ResourceRequirements{
			Limits: v1.ResourceList{v1.ResourceCPU: *resource.NewMilliQuantity(c.allocated, resource.DecimalSI)}}}
		if c.sidecar {
			pod.Status.InitContainerStatuses = append(pod.Status.InitContainerStatuses, st)
		} else {
			pod.Status.ContainerStatuses = append(pod.Status.ContainerStatuses, st)
		}
	}
	return pod
}

// GetObjectMeta gives informers the name, namespace, UID and resource
// version they key and compare records by.
func (r *PodRecord) GetObjectMeta() metav1.Object {
	ns, name := r.namespaceName()
	return &metav1.ObjectMeta{Namespace: ns, Name: name, UID: r.uid, ResourceVersion: r.resourceVersion}
}

// GetObjectKind implements runtime.Object; a record carries no type meta.
func (r *PodRecord) GetObjectKind() schema.ObjectKind { return schema.EmptyObjectKind }

// DeepCopyObject implements runtime.Object.
func (r *PodRecord) DeepCopyObject() runtime.Object {
	c := *r
	c.annotations = slices.Clone(r.annotations)
	c.containers = slices.Clone(r.containers)
	return &c
}

var (
	_ runtime.Object            = (*PodRecord)(nil)
	_ metav1.ObjectMetaAccessor = (*PodRecord)(nil)
)
