package policy

import (
	"fmt"
	"strings"

	v1 "k8s.io/api/core/v1"

	"github.com/corepin/corepin/api"
)

// Request is what the engine needs to know about a pod.
type Request struct {
	// Key is namespace/name.
	Key       string
	Namespace string
	Intent    api.PodIntent
	// Containers are the pod's app containers in spec order, then its
	// native sidecars.
	Containers []Container
}

// Container is one container's CPU amount and whether it gets exclusive CPUs.
type Container struct {
	Name string
	// Milli is the CPU amount in millicores: the limit if set, else the request.
	Milli int64
	// Allocated is the amount the node allocated to the running container
	// (its status), 0 when not known. It differs from Milli while an
	// in-place resize is pending or in progress (contract section 10).
	Allocated int64
	Exclusive bool
	// Sidecar marks a native sidecar: an init container with restartPolicy
	// Always, which runs in the shared pool for the pod's whole life, so it
	// counts in the shared amount. It never gets exclusive CPUs. Other init
	// containers finish before the app starts and are not counted.
	Sidecar bool
}

// ExclusiveCPUs is k: the number of exclusive CPUs the pod needs.
func (r Request) ExclusiveCPUs() int {
	k := 0
	for _, c := range r.Containers {
		if c.Exclusive {
			k += int(c.Milli / 1000)
		}
	}
	return k
}

// SharedMilli is the pod's shared amount: the sum of its non-exclusive
// containers' amounts, in millicores.
func (r Request) SharedMilli() int64 {
	var s int64
	for _, c := range r.Containers {
		if !c.Exclusive {
			s += c.SharedAmount()
		}
	}
	return s
}

// SharedAmount is what a shared container counts in S and M: the larger of
// its requested and allocated amounts, so a resize counts from the moment
// it is requested until the smaller side is gone (contract section 10).
func (c Container) SharedAmount() int64 { return max(c.Milli, c.Allocated) }

// Exclusive reports whether the pod holds exclusive CPUs.
func (r Request) Exclusive() bool { return r.Intent.Exclusive() }

// ContainerAmount is a container's CPU amount in millicores: its CPU limit if
// set, else its CPU request, else 0.
func ContainerAmount(c *v1.Container) int64 {
	if q, ok := c.Resources.Limits[v1.ResourceCPU]; ok {
		return q.MilliValue()
	}
	if q, ok := c.Resources.Requests[v1.ResourceCPU]; ok {
		return q.MilliValue()
	}
	return 0
}

// IsNativeSidecar reports whether an init container keeps running beside
// the app containers (restartPolicy: Always).
func IsNativeSidecar(c *v1.Container) bool {
	return c.RestartPolicy != nil && *c.RestartPolicy == v1.ContainerRestartPolicyAlways
}

// NewRequest builds the engine's request from a pod. It fails, naming the
// pod, when the annotations are malformed or an exclusive pod has no
// container with a whole CPU amount.
func NewRequest(pod *v1.Pod) (Request, error) {
	key := pod.Namespace + "/" + pod.Name
	intent, err := api.ParsePodIntent(pod.Annotations, pod.Labels)
	if err != nil {
		return Request{}, &Reason{Code: CodeBadAnnotation, Message: fmt.Sprintf("pod %s: %v", key, err), Err: err}
	}
	req := Request{Key: key, Namespace: pod.Namespace, Intent: intent, Containers: BoundPodOf(pod).Containers}
	if !intent.Exclusive() {
		return req, nil
	}
	if err := req.markExclusive(); err != nil {
		return Request{}, &Reason{Code: CodeBadAnnotation, Message: fmt.Sprintf("pod %s: %v", key, err), Err: err}
	}
	return req, nil
}

// markExclusive decides which containers get exclusive CPUs: the ones the
// alloc-spec lists, or by default every container with a whole amount.
func (r *Request) markExclusive() error {
	isWhole := func(m int64) bool { return m >= 1000 && m%1000 == 0 }
	if listed := r.Intent.Spec.Containers; listed != nil {
		if len(listed) == 0 {
			return fmt.Errorf("%s: field \"containers\": an exclusive pod must list at least one container (got [])", api.AnnotationAllocSpec)
		}
		for _, name := range listed {
			found := false
			for i := range r.Containers {
				c := &r.Containers[i]
				if c.Name != name {
					continue
				}
				if c.Sidecar {
					return fmt.Errorf("%s: container %q is listed for exclusive CPUs but it is an init container (native sidecar), which runs in the shared pool",
						api.AnnotationAllocSpec, name)
				}
				found = true
				if !isWhole(c.Milli) {
					return fmt.Errorf("%s: container %q is listed for exclusive CPUs but its CPU amount %s is not a whole number >= 1",
						api.AnnotationAllocSpec, name, formatMilli(c.Milli))
				}
				c.Exclusive = true
			}
			if !found {
				return fmt.Errorf("%s: container %q is listed for exclusive CPUs but the pod has no such container", api.AnnotationAllocSpec, name)
			}
		}
		return nil
	}
	any := false
	for i := range r.Containers {
		if !r.Containers[i].Sidecar && isWhole(r.Containers[i].Milli) {
			r.Containers[i].Exclusive = true
			any = true
		}
	}
	if !any {
		amounts := make([]string, len(r.Containers))
		for i, c := range r.Containers {
			amount := formatMilli(c.Milli)
			if c.Milli == 0 {
				amount = "none"
			}
			amounts[i] = c.Name + "=" + amount
		}
		return fmt.Errorf("exclusive pod has no container with a whole CPU amount >= 1 (CPU limit, else request): %s",
			strings.Join(amounts, ", "))
	}
	return nil
}

// formatMilli prints an amount the way a user writes it ("2", "500m").
func formatMilli(m int64) string {
	switch {
	case m%1000 == 0:
		return fmt.Sprint(m / 1000)
	}
	return fmt.Sprintf("%dm", m)
}
