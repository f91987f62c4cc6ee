package api

import (
	"fmt"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
)

// The CPUReservation resource (contract section 7).
const (
	GroupName              = "corepin.io"
	ReservationVersion     = "v1alpha1"
	KindCPUReservation     = "CPUReservation"
	ResourceCPUReservation = "cpureservations"
	// DefaultReservationTTL is ttlSeconds when the spec leaves it out (the
	// CRD's default; the extender applies it too, for objects read from
	// elsewhere).
	DefaultReservationTTL = 600
)

// CPUReservationGVR and CPUReservationGVK name the resource for the dynamic
// client and for type meta.
var (
	CPUReservationGVR = schema.GroupVersionResource{Group: GroupName, Version: ReservationVersion, Resource: ResourceCPUReservation}
	CPUReservationGVK = schema.GroupVersionKind{Group: GroupName, Version: ReservationVersion, Kind: KindCPUReservation}
)

// ReservationPhase is status.phase of a CPUReservation.
type ReservationPhase string

// The phases of a reservation.
const (
	// ReservationPending: not yet placed by the extender (or phase unset).
	ReservationPending ReservationPhase = "Pending"
	// ReservationReserved: CPUs held on status.node.
	ReservationReserved ReservationPhase = "Reserved"
	// ReservationUnschedulable: no node fits now; tried again when the
	// cluster changes, until the TTL runs out.
	ReservationUnschedulable ReservationPhase = "Unschedulable"
	// ReservationConsumed: a pod took the CPUs (status.consumedBy).
	ReservationConsumed ReservationPhase = "Consumed"
	// ReservationExpired: not consumed within the TTL; the CPUs are free.
	ReservationExpired ReservationPhase = "Expired"
)

// ReservationPhases lists every phase, Pending first.
var ReservationPhases = []ReservationPhase{ReservationPending, ReservationReserved, ReservationUnschedulable, ReservationConsumed, ReservationExpired}

// CPUReservation holds exclusive CPUs for a pod that does not exist yet.
type CPUReservation struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              CPUReservationSpec   `json:"spec"`
	Status            CPUReservationStatus `json:"status,omitempty"`
}

// CPUReservationSpec is what to reserve.
type CPUReservationSpec struct {
	// Template is the pod that will consume the reservation: what the rules
	// of contract sections 1 and 4 read (labels, annotations, containers).
	Template v1.PodTemplateSpec `json:"template"`
	// TTLSeconds: not consumed this long after reservedAt (or, never
	// placed, after creation), the reservation is released. Default 600.
	TTLSeconds *int64 `json:"ttlSeconds,omitempty"`
	// NodeName, when set, is the only node considered.
	NodeName string `json:"nodeName,omitempty"`
}

// CPUReservationStatus is written by the extender only.
type CPUReservationStatus struct {
	Phase      ReservationPhase  `json:"phase,omitempty"`
	Node       string            `json:"node,omitempty"`
	CPUs       string            `json:"cpus,omitempty"`
	Containers map[string]string `json:"containers,omitempty"`
	Mems       string            `json:"mems,omitempty"`
	ReservedAt *metav1.Time      `json:"reservedAt,omitempty"`
	ConsumedBy *ConsumerRef      `json:"consumedBy,omitempty"`
	// Reason says why the reservation is Unschedulable (the filter's
	// per-node reasons) or was released.
	Reason string `json:"reason,omitempty"`
}

// ConsumerRef names the pod that consumed a reservation.
type ConsumerRef struct {
	Name string    `json:"name"`
	UID  types.UID `json:"uid,omitempty"`
}

// TTL is the spec's ttlSeconds, or the default.
func (r *CPUReservation) TTL() time.Duration {
	if r.Spec.TTLSeconds != nil && *r.Spec.TTLSeconds > 0 {
		return time.Duration(*r.Spec.TTLSeconds) * time.Second
	}
	return DefaultReservationTTL * time.Second
}

// Key is namespace/name.
func (r *CPUReservation) Key() string { return r.Namespace + "/" + r.Name }

// Phase is status.phase, Pending when unset.
func (r *CPUReservation) Phase() ReservationPhase {
	if r.Status.Phase == "" {
		return ReservationPending
	}
	return r.Status.Phase
}

// Pod is the template as the pod that will consume the reservation, in the
// reservation's namespace under its name: what filter and allocate read.
func (r *CPUReservation) Pod() *v1.Pod {
	meta := *r.Spec.Template.ObjectMeta.DeepCopy()
	meta.Namespace, meta.Name, meta.UID = r.Namespace, r.Name, r.UID
	return &v1.Pod{ObjectMeta: meta, Spec: *r.Spec.Template.Spec.DeepCopy()}
}

// AllocStatus is the status' CPUs as the alloc-status a consuming pod gets.
// It fails, naming the field, unless the status holds a valid allocation.
func (s CPUReservationStatus) AllocStatus() (AllocStatus, error) {
	containers := make(map[string]CPUList, len(s.Containers))
	for name, list := range s.Containers {
		set, err := ParseCPUList(list)
		if err != nil {
			return AllocStatus{}, fmt.Errorf("status.containers[%q]: %w", name, err)
		}
		containers[name] = NewCPUList(set)
	}
	cpus, err := ParseCPUList(s.CPUs)
	if err != nil {
		return AllocStatus{}, fmt.Errorf("status.cpus: %w", err)
	}
	mems, err := ParseCPUList(s.Mems)
	if err != nil {
		return AllocStatus{}, fmt.Errorf("status.mems: %w", err)
	}
	st := AllocStatus{Node: s.Node, CPUs: NewCPUList(cpus), Containers: containers, Mems: NewCPUList(mems)}
	// The alloc-status rules (a node, containers that partition the CPUs)
	// hold for a reservation's status too.
	if _, err := ParseAllocStatus(st.String()); err != nil {
		return AllocStatus{}, fmt.Errorf("status: %w", err)
	}
	return st, nil
}

// SetAllocation fills node, cpus, containers and mems from an allocation.
func (s *CPUReservationStatus) SetAllocation(st AllocStatus) {
	s.Node, s.CPUs, s.Mems = st.Node, st.CPUs.Set().String(), st.Mems.Set().String()
	s.Containers = make(map[string]string, len(st.Containers))
	for name, list := range st.Containers {
		s.Containers[name] = list.Set().String()
	}
}

// DeepCopyInto copies r into out. Hand-written: one small type does not
// justify a code generator in the build.
func (r *CPUReservation) DeepCopyInto(out *CPUReservation) {
	*out = *r
	r.ObjectMeta.DeepCopyInto(&out.ObjectMeta)
	r.Spec.Template.DeepCopyInto(&out.Spec.Template)
	if r.Spec.TTLSeconds != nil {
		ttl := *r.Spec.TTLSeconds
		out.Spec.TTLSeconds = &ttl
	}
	if r.Status.Containers != nil {
		out.Status.Containers = make(map[string]string, len(r.Status.Containers))
		for k, v := range r.Status.Containers {
			out.Status.Containers[k] = v
		}
	}
	if r.Status.ReservedAt != nil {
		out.Status.ReservedAt = r.Status.ReservedAt.DeepCopy()
	}
	if r.Status.ConsumedBy != nil {
		c := *r.Status.ConsumedBy
		out.Status.ConsumedBy = &c
	}
}

// DeepCopy returns a copy of r.
func (r *CPUReservation) DeepCopy() *CPUReservation {
	if r == nil {
		return nil
	}
	out := new(CPUReservation)
	r.DeepCopyInto(out)
	return out
}

// DeepCopyObject implements runtime.Object.
func (r *CPUReservation) DeepCopyObject() runtime.Object { return r.DeepCopy() }

var _ runtime.Object = (*CPUReservation)(nil)

// ReservationFromUnstructured converts what the dynamic client returns into
// the typed struct; unknown fields are an error naming them (the CRD's
// schema prunes them, so one here means a newer or foreign object).
func ReservationFromUnstructured(obj map[string]any) (*CPUReservation, error) {
	var r CPUReservation
	if err := runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(obj, &r, true); err != nil {
		return nil, fmt.Errorf("CPUReservation: %w", err)
	}
	return &r, nil
}

// ReservationToUnstructured is the reverse, with apiVersion and kind set.
func ReservationToUnstructured(r *CPUReservation) (map[string]any, error) {
	c := r.DeepCopy()
	c.APIVersion, c.Kind = CPUReservationGVK.GroupVersion().String(), KindCPUReservation
	return runtime.DefaultUnstructuredConverter.ToUnstructured(c)
}
