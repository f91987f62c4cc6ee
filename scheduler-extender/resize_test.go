package extender

import (
	"context"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/record"

	"github.com/corepin/corepin/api"
)

func boundExclusive(name, node string, cpus int, status string) *v1.Pod {
	p := testPod(name, cpus, true)
	p.UID = types.UID("uid-" + name)
	p.Spec.NodeName = node
	p.Annotations[api.AnnotationAllocStatus] = status
	return p
}

func setCPU(p *v1.Pod, amount string) *v1.Pod {
	p = p.DeepCopy()
	p.Spec.Containers[0].Resources.Limits[v1.ResourceCPU] = resource.MustParse(amount)
	return p
}

// An exclusive pod resized from 2 to 4 CPUs gets 2 more on its node, held
// at once; the view keeps them while the new alloc-status is written and
// confirms them when the informer shows it.
func TestSchedulerResize(t *testing.T) {
	s := newTestScheduler(t, testNode("n1", topologyJSON(8, "")))
	pod := boundExclusive("db", "n1", 2, `{"node":"n1","cpus":"2-3","containers":{"main":"2-3"},"mems":"0"}`)
	if err := s.UpsertPod(pod); err != nil {
		t.Fatal(err)
	}
	if err := s.UpsertPod(boundExclusive("other", "n1", 2, `{"node":"n1","cpus":"0-1","containers":{"main":"0-1"},"mems":"0"}`)); err != nil {
		t.Fatal(err)
	}
	if st, err := s.Resize(pod); st != nil || err != nil {
		t.Fatalf("resize without a change: %v, %v", st, err)
	}
	grown := setCPU(pod, "4")
	st, err := s.Resize(grown)
	if err != nil || st == nil {
		t.Fatalf("resize 2 -> 4: %v, %v", st, err)
	}
	if got := st.String(); got != `{"node":"n1","cpus":"2-5","containers":{"main":"2-5"},"mems":"0"}` {
		t.Fatalf("new alloc-status %s", got)
	}
	held := func() string {
		n, _ := s.NodeSnapshot("n1")
		return n.Exclusive().String()
	}
	if got := held(); got != "0-5" {
		t.Fatalf("held %s after the resize, want 0-5", got)
	}
	// The informer shows the spec change before the new alloc-status.
	if err := s.UpsertPod(grown); err != nil && !strings.Contains(err.Error(), "alloc-status") {
		t.Fatal(err)
	}
	if got := held(); got != "0-5" {
		t.Fatalf("held %s while the alloc-status is written, want 0-5", got)
	}
	if again, _ := s.Resize(grown); again != nil {
		t.Fatalf("a second resize while the first is written: %s", again)
	}
	written := grown.DeepCopy()
	written.Annotations[api.AnnotationAllocStatus] = st.String()
	if err := s.UpsertPod(written); err != nil {
		t.Fatal(err)
	}
	if got := held(); got != "0-5" {
		t.Fatalf("held %s once written, want 0-5", got)
	}

	// Shrink back to 1: drops CPUs, keeps the first.
	shrunk := setCPU(written, "1")
	st, err = s.Resize(shrunk)
	if err != nil || st == nil || st.CPUs.Set().String() != "2" {
		t.Fatalf("resize 4 -> 1: %v, %v", st, err)
	}
	if got := held(); got != "0-2" {
		t.Fatalf("held %s after the shrink, want 0-2", got)
	}

	// A write that failed puts the pod back as the API server has it.
	s.resizeFailed(written)
	if got := held(); got != "0-5" {
		t.Fatalf("held %s after a failed write, want 0-5", got)
	}
}

func TestSchedulerResizeRefused(t *testing.T) {
	s := newTestScheduler(t, testNode("n1", topologyJSON(8, "")))
	pod := boundExclusive("db", "n1", 2, `{"node":"n1","cpus":"2-3","containers":{"main":"2-3"},"mems":"0"}`)
	for _, p := range []*v1.Pod{pod, boundExclusive("other", "n1", 5, `{"node":"n1","cpus":"0-1,4-6","containers":{"main":"0-1,4-6"},"mems":"0"}`)} {
		if err := s.UpsertPod(p); err != nil {
			t.Fatal(err)
		}
	}
	_, err := s.Resize(setCPU(pod, "4"))
	if err == nil || !strings.Contains(err.Error(), "exclusive limit 8 reached (the resize from 2 to 4 CPUs needs 2 more, the node holds 7)") {
		t.Fatalf("grow past the limit: %v", err)
	}
	_, err = s.Resize(setCPU(pod, "1500m"))
	if err == nil || !strings.Contains(err.Error(), `container "main" to 1500m CPUs refused`) {
		t.Fatalf("resize to a fraction: %v", err)
	}
	n, _ := s.NodeSnapshot("n1")
	if got := n.Exclusive().String(); got != "0-6" {
		t.Fatalf("held %s after refusals, want 0-6", got)
	}
}

// A shared pod counts the larger of its spec and status amounts: a grow
// from 1 to 3 counts 3 as soon as the spec says so; a shrink from 3 to 1
// keeps counting 3 until the status says 1. Through the informer's record.
func TestSharedResizeCountsTheLarger(t *testing.T) {
	s := newTestScheduler(t, testNode("n1", topologyJSON(8, "")))
	pod := testPod("web", 3, false)
	pod.Spec.NodeName = "n1"
	pod.Status.ContainerStatuses = []v1.ContainerStatus{{Name: "main", Resources: &v1.ResourceRequirements{
		Limits: v1.ResourceList{v1.ResourceCPU: resource.MustParse("3")}}}}
	shared := func(p *v1.Pod) int64 {
		t.Helper()
		rec, _ := Transform(p)
		if err := s.UpsertPod(rec.(*PodRecord).Pod()); err != nil {
			t.Fatal(err)
		}
		n, _ := s.NodeSnapshot("n1")
		return n.Capacity().S
	}
	if got := shared(pod); got != 3000 {
		t.Fatalf("S = %d, want 3000", got)
	}
	requested := setCPU(pod, "1") // resize requested, not applied
	if got := shared(requested); got != 3000 {
		t.Fatalf("S = %d while a shrink to 1 is pending, want 3000", got)
	}
	applied := requested.DeepCopy()
	applied.Status.ContainerStatuses[0].Resources.Limits[v1.ResourceCPU] = resource.MustParse("1")
	if got := shared(applied); got != 1000 {
		t.Fatalf("S = %d once the shrink is applied, want 1000", got)
	}
	if got := shared(setCPU(applied, "6")); got != 6000 {
		t.Fatalf("S = %d once a grow to 6 is requested, want 6000", got)
	}
}

// The Resizer, fed by the informers, writes the new alloc-status by
// server-side apply as corepin-extender, and reports a grow that does not
// fit with a CorepinResizeInfeasible event, once.
func TestResizerWritesAllocStatus(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	db := boundExclusive("db", "n1", 2, `{"node":"n1","cpus":"2-3","containers":{"main":"2-3"},"mems":"0"}`)
	other := boundExclusive("other", "n1", 3, `{"node":"n1","cpus":"4-6","containers":{"main":"4-6"},"mems":"0"}`)
	other.UID = "uid-other"
	client := fake.NewClientset(testNode("n1", topologyJSON(8, "")), db, other)
	sched := newTestScheduler(t)
	recorder := record.NewFakeRecorder(10)
	c, err := NewCache(client, sched, nil)
	if err != nil {
		t.Fatal(err)
	}
	events := NewPodEvents(recorder, nil, PodEventsConfig{})
	go events.Run(ctx, nil)
	resizer := NewResizer(sched, client, c, events)
	c.PodUpdated = resizer.Observe
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	go resizer.Run(ctx)

	if _, err := client.CoreV1().Pods("default").Update(ctx, setCPU(db, "3"), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	want := `{"node":"n1","cpus":"0,2-3","containers":{"main":"0,2-3"},"mems":"0"}`
	var got *v1.Pod
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, err = client.CoreV1().Pods("default").Get(ctx, "db", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if got.Annotations[api.AnnotationAllocStatus] == want {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("alloc-status %s, want %s", got.Annotations[api.AnnotationAllocStatus], want)
		}
		time.Sleep(20 * time.Millisecond)
	}
	managed := false
	for _, m := range got.ManagedFields {
		managed = managed || m.Manager == fieldManager && m.Operation == metav1.ManagedFieldsOperationApply
	}
	if !managed {
		t.Fatalf("alloc-status not applied by %s: managed fields %+v", fieldManager, got.ManagedFields)
	}

	// Now 0 and 2-6 are held: other growing from 3 to 6 needs 3 of the 2 free.
	if _, err := client.CoreV1().Pods("default").Update(ctx, setCPU(other, "6"), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	select {
	case e := <-recorder.Events:
		if !strings.Contains(e, ReasonResizeInfeasible) || !strings.Contains(e, "main 3 -> 6 CPUs on node n1") ||
			!strings.Contains(e, "exclusive limit 8 reached") || !strings.Contains(e, "keeps CPUs 4-6") {
			t.Fatalf("event %q", e)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no CorepinResizeInfeasible event")
	}
	if p, _ := client.CoreV1().Pods("default").Get(ctx, "other", metav1.GetOptions{}); p.Annotations[api.AnnotationAllocStatus] != other.Annotations[api.AnnotationAllocStatus] {
		t.Fatalf("refused resize changed the alloc-status to %s", p.Annotations[api.AnnotationAllocStatus])
	}
	// The same refusal is not reported again on the next update.
	touched := setCPU(other, "6")
	touched.Labels = map[string]string{"touched": "yes"}
	if _, err := client.CoreV1().Pods("default").Update(ctx, touched, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	select {
	case e := <-recorder.Events:
		t.Fatalf("refusal reported again: %q", e)
	case <-time.After(500 * time.Millisecond):
	}
}
