package framework

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/utils/cpuset"

	"github.com/corepin/corepin/api"
)

// Namespace holds every pod of these tests.
const Namespace = "default"

// PodOpts is what differs between the tests' pods.
type PodOpts struct {
	// CPU is the container's CPU limit (and so its request).
	CPU         string
	Annotations map[string]string
	Labels      map[string]string
}

// NewPod is a pod of one container, engine, running the workload image
// with o.CPU CPUs and 64Mi, without a service account token.
func NewPod(name string, o PodOpts) *v1.Pod {
	q := resource.MustParse(o.CPU)
	return &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: Namespace, Annotations: o.Annotations, Labels: o.Labels},
		Spec: v1.PodSpec{
			AutomountServiceAccountToken: new(bool),
			Containers: []v1.Container{{Name: "engine", Image: WorkloadImage,
				Resources: v1.ResourceRequirements{Limits: v1.ResourceList{v1.ResourceCPU: q, v1.ResourceMemory: resource.MustParse("64Mi")}}}},
		},
	}
}

// BoundPod is NewPod already bound to PluginNode (created so where no
// kube-scheduler runs).
func BoundPod(name, cpu string, annotations map[string]string) *v1.Pod {
	p := NewPod(name, PodOpts{CPU: cpu, Annotations: annotations})
	p.Spec.NodeName = PluginNode
	return p
}

// Exclusive is the annotations of an exclusive pod, with extra key, value
// pairs.
func Exclusive(extra ...string) map[string]string {
	m := map[string]string{api.AnnotationCPUMode: "exclusive"}
	for i := 0; i+1 < len(extra); i += 2 {
		m[extra[i]] = extra[i+1]
	}
	return m
}

// AllocStatusFor is the annotations of an exclusive pod whose container
// engine the extender gave cpus on PluginNode.
func AllocStatusFor(cpus cpuset.CPUSet) map[string]string {
	return Exclusive(api.AnnotationAllocStatus,
		fmt.Sprintf(`{"node":%q,"cpus":%q,"containers":{"engine":%q},"mems":"0"}`, PluginNode, cpus, cpus))
}

// AllocStatus parses the pod's corepin.io/alloc-status.
func AllocStatus(t testing.TB, pod *v1.Pod) api.AllocStatus {
	t.Helper()
	st, err := api.ParseAllocStatus(pod.Annotations[api.AnnotationAllocStatus])
	if err != nil {
		t.Fatalf("pod %s: %v", pod.Name, err)
	}
	return st
}

// CreatePod creates p, failing the test if the API server refuses it.
func (cp *ControlPlane) CreatePod(t testing.TB, p *v1.Pod) *v1.Pod {
	t.Helper()
	created, err := cp.Client.CoreV1().Pods(Namespace).Create(context.Background(), p, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return created
}

// GetPod reads a pod, failing the test if it cannot.
func (cp *ControlPlane) GetPod(t testing.TB, name string) *v1.Pod {
	t.Helper()
	pod, err := cp.Client.CoreV1().Pods(Namespace).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return pod
}

// DeletePod deletes a pod at once (grace period 0).
func (cp *ControlPlane) DeletePod(t testing.TB, name string) {
	t.Helper()
	if err := cp.Client.CoreV1().Pods(Namespace).Delete(context.Background(), name, metav1.DeleteOptions{GracePeriodSeconds: new(int64)}); err != nil {
		t.Fatal(err)
	}
}

// WaitScheduled waits up to a minute for the pod to have a node.
func (cp *ControlPlane) WaitScheduled(t testing.TB, name string) *v1.Pod {
	t.Helper()
	var pod *v1.Pod
	Eventually(t, 60*time.Second, "pod "+name+" scheduled", func() (bool, error) {
		var err error
		pod, err = cp.Client.CoreV1().Pods(Namespace).Get(context.Background(), name, metav1.GetOptions{})
		return err == nil && pod.Spec.NodeName != "", err
	})
	return pod
}

// WaitEvent waits, for at most within, for an event of the given reason on
// the pod whose message contains every one of contains.
func (cp *ControlPlane) WaitEvent(t testing.TB, within time.Duration, pod, reason string, contains ...string) {
	t.Helper()
	Eventually(t, within, fmt.Sprintf("%s event on %s with %q", reason, pod, contains), func() (bool, error) {
		events, err := cp.Client.CoreV1().Events(Namespace).List(context.Background(), metav1.ListOptions{
			FieldSelector: fields.OneTermEqualSelector("involvedObject.name", pod).String()})
		if err != nil {
			return false, err
		}
		var seen []string
		for _, e := range events.Items {
			if e.Reason != reason {
				continue
			}
			ok := true
			for _, s := range contains {
				ok = ok && strings.Contains(e.Message, s)
			}
			if ok {
				return true, nil
			}
			seen = append(seen, e.Message)
		}
		return false, fmt.Errorf("%s events so far: %q", reason, seen)
	})
}

// WaitFailedScheduling waits up to a minute for kube-scheduler's
// FailedScheduling event on the pod with substr in its message.
func (cp *ControlPlane) WaitFailedScheduling(t testing.TB, pod, substr string) {
	t.Helper()
	cp.WaitEvent(t, 60*time.Second, pod, "FailedScheduling", substr)
}

// ExclusivePod is NewPod of an exclusive pod, with extra annotations as
// key, value pairs.
func ExclusivePod(name, cpu string, extra ...string) *v1.Pod {
	return NewPod(name, PodOpts{CPU: cpu, Annotations: Exclusive(extra...)})
}
