package extender

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/record"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/corepin/corepin/api"
)

// testReservation reserves containers (name -> CPUs) for an exclusive pod.
func testReservation(name string, containers map[string]int64) *api.CPUReservation {
	r := &api.CPUReservation{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name, UID: types.UID("uid-" + name),
		CreationTimestamp: metav1.Now()}}
	r.Spec.Template.Annotations = map[string]string{api.AnnotationCPUMode: "exclusive"}
	for _, c := range []string{"engine", "log", "main"} {
		if n, ok := containers[c]; ok {
			r.Spec.Template.Spec.Containers = append(r.Spec.Template.Spec.Containers, v1.Container{Name: c,
				Resources: v1.ResourceRequirements{Limits: v1.ResourceList{v1.ResourceCPU: *resource.NewQuantity(n, resource.DecimalSI)}}})
		}
	}
	return r
}

// consumerPod is testPod consuming the named reservation.
func consumerPod(name string, cpus int, reservation string) *v1.Pod {
	p := testPod(name, cpus, true)
	p.UID = types.UID("uid-" + name)
	p.Annotations[api.AnnotationReservation] = reservation
	return p
}

func place(t *testing.T, s *Scheduler, r *api.CPUReservation) ReservationView {
	t.Helper()
	if err := s.UpsertReservation(r); err != nil {
		t.Fatal(err)
	}
	v, err := s.PlaceReservation(r.Key(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// A reservation's CPUs count against the node like a pod's: nobody else
// gets them, and the pod that names it gets exactly them.
func TestReservationHeldAndConsumed(t *testing.T) {
	s := newTestScheduler(t, testNode("n1", topologyJSON(8, "")), testNode("n2", topologyJSON(8, "")))
	v := place(t, s, testReservation("db-7", map[string]int64{"main": 6}))
	if v.Phase != api.ReservationReserved || v.Status.CPUs.Set().Size() != 6 {
		t.Fatalf("reservation %+v, want Reserved with 6 CPUs", v)
	}
	node := v.Status.Node
	other := map[string]string{"n1": "n2", "n2": "n1"}[node]
	n, _ := s.NodeSnapshot(node)
	if !n.Exclusive().Equals(v.Status.CPUs.Set()) {
		t.Fatalf("node %s holds %s, the reservation %s", node, n.Exclusive(), v.Status.CPUs)
	}
	// A 4-CPU pod no longer fits on the reserved node (8 - 6 < 4).
	fits, failed, err := s.Filter(testPod("other", 4, true), []string{"n1", "n2"})
	if err != nil || len(fits) != 1 || fits[0] != other || !strings.Contains(failed[node].Message, "CPU") {
		t.Fatalf("other pod: fits %v failed %v err %v", fits, failed.FailedNodes(), err)
	}

	// The consumer passes only on the reserved node, and binds to its CPUs.
	pod := consumerPod("db-7-0", 6, "db-7")
	fits, failed, err = s.Filter(pod, []string{"n1", "n2"})
	if err != nil || len(fits) != 1 || fits[0] != node || !strings.Contains(failed[other].Message, "CPUReservation default/db-7 holds the pod's CPUs on node "+node) {
		t.Fatalf("consumer: fits %v failed %v err %v", fits, failed.FailedNodes(), err)
	}
	binder := newRecordingBinder()
	st, err := s.Bind(context.Background(), pod, node, binder)
	if err != nil {
		t.Fatal(err)
	}
	if !st.CPUs.Set().Equals(v.Status.CPUs.Set()) || st.Containers["main"].Set().String() != v.Status.CPUs.Set().String() {
		t.Fatalf("consumer got %s, the reservation held %s", st, v.Status.CPUs)
	}
	if binder.statuses["default/db-7-0"] != v.Status.String() {
		t.Errorf("bind wrote %s, want the reservation's %s", binder.statuses["default/db-7-0"], v.Status)
	}
	got, _ := s.Reservation("default/db-7")
	if got.Phase != api.ReservationConsumed || got.Consumer != "default/db-7-0" || got.ConsumerID != pod.UID {
		t.Fatalf("after bind: %+v, want Consumed by default/db-7-0", got)
	}
	n, _ = s.NodeSnapshot(node)
	if !n.Exclusive().Equals(v.Status.CPUs.Set()) || n.Len() != 1 {
		t.Fatalf("node holds %s in %d placements, want the reservation's CPUs in the pod's alone", n.Exclusive(), n.Len())
	}
	// A second consumer is refused, naming the reservation.
	if _, _, err := s.Filter(consumerPod("db-7-1", 6, "db-7"), []string{"n1", "n2"}); err == nil ||
		!strings.Contains(err.Error(), "CPUReservation default/db-7 is already consumed by pod default/db-7-0") {
		t.Errorf("second consumer: %v", err)
	}
	// Used once: the pod gone, the CPUs are free.
	s.DeletePod("default/db-7-0")
	if n, _ := s.NodeSnapshot(node); !n.Exclusive().IsEmpty() {
		t.Errorf("after the consumer went, %s still held", n.Exclusive())
	}
}

// Pods that cannot consume a reservation are refused with a reason naming
// it and the difference.
func TestReservationRefusals(t *testing.T) {
	s := newTestScheduler(t, testNode("n1", topologyJSON(8, "")))
	place(t, s, testReservation("db-7", map[string]int64{"main": 4}))
	for _, tc := range []struct {
		pod  *v1.Pod
		want string
	}{
		{consumerPod("a", 2, "db-7"), "CPUReservation default/db-7 reserves exclusive containers main=4, the pod's are main=2"},
		{consumerPod("b", 4, "nope"), `corepin.io/reservation="nope": no CPUReservation default/nope`},
	} {
		if _, _, err := s.Filter(tc.pod, []string{"n1"}); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("pod %s: %v, want %q", tc.pod.Name, err, tc.want)
		}
		if _, err := s.Bind(context.Background(), tc.pod, "n1", newRecordingBinder()); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("bind %s: %v, want %q", tc.pod.Name, err, tc.want)
		}
	}
	renamed := testReservation("db-8", map[string]int64{"main": 5})
	if err := s.UpsertReservation(renamed); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Filter(consumerPod("c", 5, "db-8"), []string{"n1"}); err == nil || !strings.Contains(err.Error(), "CPUReservation default/db-8 is Pending, not Reserved") {
		t.Errorf("pending reservation: %v", err)
	}
	v, _ := s.PlaceReservation("default/db-8", time.Now())
	if v.Phase != api.ReservationUnschedulable || !strings.Contains(v.Reason, "0/1 nodes fit: n1: ") {
		t.Fatalf("a 5-CPU reservation on 8 CPUs with ratio 1 and 4 reserved: %+v", v)
	}
	if _, _, err := s.Filter(consumerPod("d", 5, "db-8"), []string{"n1"}); err == nil || !strings.Contains(err.Error(), "CPUReservation default/db-8 is Unschedulable, not Reserved: 0/1 nodes fit") {
		t.Errorf("unschedulable reservation: %v", err)
	}
	shared := testReservation("shared", map[string]int64{"main": 4})
	shared.Spec.Template.Annotations = nil
	if err := s.UpsertReservation(shared); err != nil {
		t.Fatal(err)
	}
	if v, _ := s.PlaceReservation("default/shared", time.Now()); v.Phase != api.ReservationUnschedulable || !strings.Contains(v.Reason, "not an exclusive pod") {
		t.Errorf("shared template: %+v", v)
	}
}

// A bind that fails gives the CPUs back to the reservation; expiry and
// deletion free them.
func TestReservationFailedBindExpiryDelete(t *testing.T) {
	s := newTestScheduler(t, testNode("n1", topologyJSON(8, "")))
	r := testReservation("db-7", map[string]int64{"main": 4})
	v := place(t, s, r)
	failing := newRecordingBinder()
	failing.failBind = errors.New("API down")
	if _, err := s.Bind(context.Background(), consumerPod("db-7-0", 4, "db-7"), "n1", failing); err == nil {
		t.Fatal("bind through a failing binder succeeded")
	}
	if got, _ := s.Reservation("default/db-7"); got.Phase != api.ReservationReserved {
		t.Fatalf("after a failed bind: %+v, want Reserved", got)
	}
	if n, _ := s.NodeSnapshot("n1"); !n.Exclusive().Equals(v.Status.CPUs.Set()) {
		t.Fatalf("after a failed bind the node holds %s, want the reservation's %s", n.Exclusive(), v.Status.CPUs)
	}
	if s.ExpireReservation("default/db-7", v.ReservedAt.Add(r.TTL()-time.Second)) {
		t.Fatal("expired before its TTL")
	}
	if !s.ExpireReservation("default/db-7", v.ReservedAt.Add(r.TTL())) {
		t.Fatal("not expired at its TTL")
	}
	if n, _ := s.NodeSnapshot("n1"); !n.Exclusive().IsEmpty() {
		t.Fatalf("expired, yet %s held", n.Exclusive())
	}
	if _, _, err := s.Filter(consumerPod("db-7-0", 4, "db-7"), []string{"n1"}); err == nil || !strings.Contains(err.Error(), "is Expired, not Reserved: not consumed within ttlSeconds 600") {
		t.Errorf("consumer of an expired reservation: %v", err)
	}
	place(t, s, testReservation("db-9", map[string]int64{"main": 4}))
	s.DeleteReservation("default/db-9")
	if n, _ := s.NodeSnapshot("n1"); !n.Exclusive().IsEmpty() {
		t.Fatalf("deleted, yet %s held", n.Exclusive())
	}
}

// After a restart the view is rebuilt from the reservations' status, in
// whatever order the informers deliver them and the pods.
func TestReservationRebuilt(t *testing.T) {
	before := newTestScheduler(t, testNode("n1", topologyJSON(8, "")))
	r := testReservation("db-7", map[string]int64{"main": 4})
	v := place(t, before, r)
	r.Status = desiredStatus(v, "default")

	// Reservation first, then the node: held; a pod cannot get those CPUs.
	s := newTestScheduler(t)
	if err := s.UpsertReservation(r); err != nil {
		t.Fatal(err)
	}
	s.UpsertNode(testNode("n1", topologyJSON(8, "")))
	if n, _ := s.NodeSnapshot("n1"); !n.Exclusive().Equals(v.Status.CPUs.Set()) {
		t.Fatalf("rebuilt node holds %s, want %s", n.Exclusive(), v.Status.CPUs)
	}
	st, err := s.Bind(context.Background(), testPod("other", 4, true), "n1", newRecordingBinder())
	if err != nil || !st.CPUs.Set().Intersection(v.Status.CPUs.Set()).IsEmpty() {
		t.Fatalf("other pod got %v (%v), the reservation holds %s", st, err, v.Status.CPUs)
	}

	// The consumer was bound before the restart, its Consumed status never
	// written: seen before the reservation, it consumed it.
	s = newTestScheduler(t, testNode("n1", topologyJSON(8, "")))
	pod := consumerPod("db-7-0", 4, "db-7")
	pod.Spec.NodeName = "n1"
	pod.Annotations[api.AnnotationAllocStatus] = v.Status.String()
	if err := s.UpsertPod(pod); err != nil {
		t.Fatal(err)
	}
	notified := []string{}
	s.SetReservationNotify(func(key string) { notified = append(notified, key) })
	if err := s.UpsertReservation(r); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Reservation("default/db-7"); got.Phase != api.ReservationConsumed || got.Consumer != "default/db-7-0" || len(notified) != 1 {
		t.Fatalf("reservation %+v (notified %v), want Consumed by the bound pod", got, notified)
	}
	if n, _ := s.NodeSnapshot("n1"); n.Len() != 1 {
		t.Fatalf("%d placements on n1, want the pod's alone", n.Len())
	}

	// Seen bound, then updated (its deletion begins) before the reservation
	// is seen: the update re-reads the pod and still remembers it consumed.
	s = newTestScheduler(t, testNode("n1", topologyJSON(8, "")))
	if err := s.UpsertPod(pod); err != nil {
		t.Fatal(err)
	}
	deleting := pod.DeepCopy()
	deleting.DeletionTimestamp = &metav1.Time{Time: time.Now()}
	if err := s.UpsertPod(deleting); err != nil {
		t.Fatal(err)
	}
	if err := s.UpsertReservation(r); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Reservation("default/db-7"); got.Phase != api.ReservationConsumed || got.Consumer != "default/db-7-0" {
		t.Fatalf("reservation %+v after its consumer's update, want Consumed by it", got)
	}
	if n, _ := s.NodeSnapshot("n1"); n.Len() != 1 {
		t.Fatalf("%d placements on n1, want the pod's alone", n.Len())
	}

	// A consumer deleted before its reservation is seen leaves nothing
	// behind: the reservation is then held, as nobody consumed it here.
	s = newTestScheduler(t, testNode("n1", topologyJSON(8, "")))
	if err := s.UpsertPod(pod); err != nil {
		t.Fatal(err)
	}
	s.DeletePod(PodKey(pod))
	if err := s.UpsertReservation(r); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Reservation("default/db-7"); got.Phase != api.ReservationReserved {
		t.Fatalf("reservation %+v after its consumer went, want Reserved", got)
	}
}

// The controller places a reservation and writes its status through the
// dynamic client, retries an Unschedulable one when a node comes, and
// expires one at its TTL.
func TestReservationController(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	kube := fake.NewClientset(testNode("n1", topologyJSON(8, "")))
	sched := newTestScheduler(t)
	c, err := NewCache(kube, sched, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	scheme := runtime.NewScheme()
	dyn := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(scheme, map[schema.GroupVersionResource]string{api.CPUReservationGVR: "CPUReservationList"})
	rc, err := NewReservationController(dyn, sched, c)
	if err != nil {
		t.Fatal(err)
	}
	rc.SetRetryDelay(10 * time.Millisecond)
	recorder, metrics := record.NewFakeRecorder(100), NewMetrics(sched)
	rc.Recorder, rc.Metrics = recorder, metrics
	go rc.Run(ctx, c.Synced)
	// event waits for the next event on a reservation and checks its text.
	event := func(want string) {
		t.Helper()
		select {
		case e := <-recorder.Events:
			if !strings.HasPrefix(e, want) {
				t.Errorf("event %q, want %q...", e, want)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("no event, want %q", want)
		}
	}

	create := func(r *api.CPUReservation) {
		t.Helper()
		obj, err := api.ReservationToUnstructured(r)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := dyn.Resource(api.CPUReservationGVR).Namespace("default").Create(ctx, &unstructured.Unstructured{Object: obj}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	status := func(name string, want api.ReservationPhase) api.CPUReservationStatus {
		t.Helper()
		var last api.CPUReservationStatus
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			u, err := dyn.Resource(api.CPUReservationGVR).Namespace("default").Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			r, err := api.ReservationFromUnstructured(u.Object)
			if err != nil {
				t.Fatal(err)
			}
			if last = r.Status; last.Phase == want {
				return last
			}
		}
		t.Fatalf("%s: status %+v, want phase %s", name, last, want)
		return last
	}

	create(testReservation("db-7", map[string]int64{"main": 6}))
	st := status("db-7", api.ReservationReserved)
	if st.Node != "n1" || st.Containers["main"] != st.CPUs || st.ReservedAt == nil {
		t.Fatalf("Reserved status %+v", st)
	}
	cpus, _ := api.ParseCPUList(st.CPUs)
	if cpus.Size() != 6 {
		t.Fatalf("reserved %s, want 6 CPUs", st.CPUs)
	}
	event(fmt.Sprintf("Normal CorepinReserved Reserved CPUs %s on node n1 (mems 0) for 600s from ", st.CPUs))

	// No room for 4 more on n1: Unschedulable, with the filter's reason.
	create(testReservation("db-8", map[string]int64{"main": 4}))
	st = status("db-8", api.ReservationUnschedulable)
	if !strings.Contains(st.Reason, "0/1 nodes fit: n1: ") {
		t.Errorf("Unschedulable reason %q", st.Reason)
	}
	event("Warning CorepinReservationUnschedulable 0/1 nodes fit: n1: ")
	// A new node: tried again, placed there.
	if _, err := kube.CoreV1().Nodes().Create(ctx, testNode("n2", topologyJSON(8, "")), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if st = status("db-8", api.ReservationReserved); st.Node != "n2" {
		t.Errorf("db-8 reserved on %s, want n2", st.Node)
	}
	event("Normal CorepinReserved Reserved CPUs " + st.CPUs + " on node n2")

	// A one-second TTL: Expired, the CPUs free.
	short := testReservation("db-9", map[string]int64{"main": 1})
	one := int64(1)
	short.Spec.TTLSeconds = &one
	create(short)
	status("db-9", api.ReservationReserved)
	st = status("db-9", api.ReservationExpired)
	if !strings.Contains(st.Reason, "not consumed within ttlSeconds 1") {
		t.Errorf("Expired reason %q", st.Reason)
	}
	event("Normal CorepinReserved Reserved CPUs ")
	event("Normal CorepinReservationExpired not consumed within ttlSeconds 1 of reservedAt: CPUs ")
	for phase, want := range map[string]float64{"Reserved": 3, "Unschedulable": 1, "Expired": 1, "Consumed": 0} {
		if got := testutil.ToFloat64(metrics.ReservationTransitions.WithLabelValues(phase)); got != want {
			t.Errorf("corepin_extender_reservation_transitions_total{phase=%q} %v, want %v", phase, got, want)
		}
	}
	if err := testutil.GatherAndCompare(metrics.Registry, strings.NewReader(`
# HELP corepin_extender_reservations CPUReservations in the extender's cache, by phase.
# TYPE corepin_extender_reservations gauge
corepin_extender_reservations{phase="Consumed"} 0
corepin_extender_reservations{phase="Expired"} 1
corepin_extender_reservations{phase="Pending"} 0
corepin_extender_reservations{phase="Reserved"} 2
corepin_extender_reservations{phase="Unschedulable"} 0
`), "corepin_extender_reservations"); err != nil {
		t.Error(err)
	}
	for _, node := range []string{"n1", "n2"} {
		n, _ := sched.NodeSnapshot(node)
		if got := n.Exclusive().Size(); got != map[string]int{"n1": 6, "n2": 4}[node] {
			t.Errorf("%s holds %d CPUs after db-9 expired", node, got)
		}
	}

	// Deleting frees.
	if err := dyn.Resource(api.CPUReservationGVR).Namespace("default").Delete(ctx, "db-7", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if n, _ := sched.NodeSnapshot("n1"); n.Exclusive().IsEmpty() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("deleted reservation's CPUs still held")
		}
	}
}
