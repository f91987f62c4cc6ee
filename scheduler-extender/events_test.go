package extender

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/record"
	extenderv1 "k8s.io/kube-scheduler/extender/v1"

	"github.com/corepin/corepin/api"
	"github.com/corepin/corepin/policy"
)

// flush waits until the worker has handled everything queued before it,
// deciding the held rejections without waiting for them to be due.
func (e *PodEvents) flush(t *testing.T) { e.barrier(t, true) }

// settle waits until the worker has handled everything queued before it,
// leaving the rejections that are not due held.
func (e *PodEvents) settle(t *testing.T) { e.barrier(t, false) }

// barriers numbers the test barriers, so each is a key of its own.
var barriers atomic.Uint64

func (e *PodEvents) barrier(t *testing.T, force bool) {
	t.Helper()
	done := make(chan struct{})
	key := eventKey{kind: kindBarrier, seq: barriers.Add(1)}
	e.qmu.Lock()
	e.waiting[key] = &podEventItem{done: done, force: force}
	e.qmu.Unlock()
	e.queue.Add(key)
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("events worker did not run")
	}
}

// handleQueued does the worker's steps, in the test's goroutine, for what
// is on the queue now (no worker runs): with force, the held rejections
// are then decided at once.
func (e *PodEvents) handleQueued(state func(namespace, name string, uid types.UID) PodState, force bool) {
	for e.queue.Len() > 0 {
		e.processNext(state)
	}
	if force {
		e.decideHeld(state, true)
	}
}

// rejectNow hands a rejection of the pod over as filter does and decides it
// at once.
func (e *PodEvents) rejectNow(pod *v1.Pod, failed Rejections, state func(namespace, name string, uid types.UID) PodState) {
	e.NodesRejected(pod, 1, failed)
	e.handleQueued(state, true)
}

func eventServer(t *testing.T, cfg PodEventsConfig) (*Server, *fake.Clientset, *record.FakeRecorder) {
	t.Helper()
	srv, client := newTestServer(t)
	recorder := record.NewFakeRecorder(100)
	srv.Events = NewPodEvents(recorder, srv.Metrics, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go srv.RunEvents(ctx)
	return srv, client, recorder
}

func filterCall(t *testing.T, h http.Handler, pod *v1.Pod, names ...string) extenderv1.ExtenderFilterResult {
	t.Helper()
	rec := post(t, h, "/filter", extenderv1.ExtenderArgs{Pod: pod, NodeNames: &names})
	var fr extenderv1.ExtenderFilterResult
	if err := json.Unmarshal(rec.Body.Bytes(), &fr); err != nil || rec.Code != 200 {
		t.Fatalf("filter: %d %s", rec.Code, rec.Body)
	}
	return fr
}

func drain(r *record.FakeRecorder) []string {
	var out []string
	for {
		select {
		case e := <-r.Events:
			out = append(out, e)
		default:
			return out
		}
	}
}

// A filter that rejects nodes for an exclusive pod records one Warning
// CorepinNodesRejected on the pod summarising the reasons; the same
// rejection again (kube-scheduler's retry) records nothing more; a changed
// rejection records a new event. Shared pods get none.
func TestFilterRecordsNodesRejected(t *testing.T) {
	srv, _, recorder := eventServer(t, PodEventsConfig{})
	h := srv.Handler()
	pod := testPod("db", 6, true)
	pod.UID = "uid-db"
	filterCall(t, h, pod, "n1", "n2", "ghost")
	srv.Events.flush(t)
	want := "Warning CorepinNodesRejected 2 of 3 nodes rejected: " +
		"1 not enough free CPUs on cores no pod holds (needs 6, 4 available); " +
		"1 node unknown to the corepin extender (not in its cache yet)"
	if got := drain(recorder); len(got) != 1 || got[0] != want {
		t.Fatalf("events %q\nwant %q", got, want)
	}
	if srv.Events.Len() != 1 {
		t.Fatalf("%d dedupe entries, want 1", srv.Events.Len())
	}

	// Deduplicated: the identical retry records nothing.
	filterCall(t, h, pod, "n1", "n2", "ghost")
	srv.Events.flush(t)
	if got := drain(recorder); len(got) != 0 {
		t.Fatalf("retry recorded %q", got)
	}
	if n := testutil.ToFloat64(srv.Metrics.PodEvents.WithLabelValues(ReasonNodesRejected, "deduplicated")); n != 1 {
		t.Fatalf("deduplicated %v, want 1", n)
	}

	// A different summary is news.
	filterCall(t, h, pod, "n1", "n2")
	srv.Events.flush(t)
	if got := drain(recorder); len(got) != 1 || !strings.Contains(got[0], "1 of 2 nodes rejected: 1 not enough free CPUs") {
		t.Fatalf("changed summary: events %q", got)
	}

	// A shared pod rejected on a node gets no event (and no entry).
	shared := testPod("web", 0, false)
	shared.Annotations[api.AnnotationMaxPerNode] = "1"
	shared.Labels = map[string]string{"app": "web"}
	filterCall(t, h, shared, "ghost")
	srv.Events.flush(t)
	if got := drain(recorder); len(got) != 0 || srv.Events.Len() != 1 {
		t.Fatalf("shared pod: events %q, %d entries", got, srv.Events.Len())
	}
	if n := testutil.ToFloat64(srv.Metrics.Rejections.WithLabelValues("unknown-node")); n != 3 {
		t.Fatalf("unknown-node rejections %v, want 3", n)
	}
}

// The summary groups by reason class, largest group first, quotes a reason
// all the group's nodes share, names the class and one example otherwise,
// and stays within 1 KiB whatever the number of nodes and reasons.
func TestRejectionSummary(t *testing.T) {
	limit, numa, mpn := policy.CodeExclusiveLimit, policy.CodeNUMARequired, policy.CodeMaxPerNode
	failed := Rejections{
		"a": policy.Reasonf(limit, "exclusive limit 32 reached (needs 8, holds 28)"),
		"b": policy.Reasonf(limit, "exclusive limit 32 reached (needs 8, holds 28)"),
		"c": policy.Reasonf(numa, "no NUMA node has 4 free CPUs on cores no pod holds (numa Required; most: 2 on NUMA node 1)"),
		"d": policy.Reasonf(mpn, "max-per-node 1 reached for app \"pg\" (1 on the node)"),
		"e": policy.Reasonf(mpn, "max-per-node 2 reached for app \"pg\" (2 on the node)"),
		"f": policy.Reasonf(mpn, "max-per-node 1 reached for app \"pg\" (1 on the node)"),
	}
	got := RejectionSummary(9, failed)
	want := "6 of 9 nodes rejected: 3 max-per-node, e.g. d: max-per-node 1 reached for app \"pg\" (1 on the node); " +
		"2 exclusive limit 32 reached (needs 8, holds 28); " +
		"1 no NUMA node has 4 free CPUs on cores no pod holds (numa Required; most: 2 on NUMA node 1)"
	if got != want {
		t.Fatalf("summary\n%s\nwant\n%s", got, want)
	}
	// 5,000 nodes, each with its own long reason, in every class.
	big := Rejections{}
	reasons := []string{"exclusive limit %d reached (needs 8, holds %d)", "node needs attention, no new exclusive pods: %d %d " + strings.Repeat("x", 2000),
		"shared headroom too small (needs %d CPUs; %d)", "shared pool too small (needs %d; %d)", "max-per-node %d reached for app (%d)",
		"node has no corepin.io/topology annotation %d %d", "not enough physical cores eligible for Spread (needs %d, %d available)",
		"not enough free CPUs on cores no pod holds (needs %d, %d available)", "node publishes no IO queues %d %d",
		"node unknown to the corepin extender %d %d", "mystery %d %d", "no NUMA node has %d CPUs (numa Required; %d)"}
	codes := []policy.Code{limit, policy.CodeAttention, policy.CodeSharedHeadroom, policy.CodeSharedPool, mpn, policy.CodeNoTopology, policy.CodeSpread,
		policy.CodeCores, policy.CodeIOQueue, policy.CodeUnknownNode, policy.CodeOther, numa}
	for i := 0; i < 5000; i++ {
		big[fmt.Sprintf("node-%05d", i)] = policy.Reasonf(codes[i%len(codes)], reasons[i%len(reasons)], i, i)
	}
	got = RejectionSummary(5000, big)
	if len(got) > maxEventMessage || !strings.HasPrefix(got, "5000 of 5000 nodes rejected: ") || !strings.Contains(got, "more for") {
		t.Fatalf("%d bytes: %s", len(got), got)
	}
}

// The dedupe memory is bounded: at most Entries pods, the least recently
// rejected forgotten first; entries older than the window expire; Forget
// drops a pod; a pod recreated under the same name (new UID) is news.
func TestPodEventsBounded(t *testing.T) {
	recorder := record.NewFakeRecorder(100)
	e := NewPodEvents(recorder, nil, PodEventsConfig{Entries: 3, Window: time.Minute})
	now := time.Unix(1000, 0)
	e.now = func() time.Time { return now }
	failed := Rejections{"n1": policy.Reasonf(policy.CodeExclusiveLimit, "exclusive limit 4 reached (needs 8, holds 0)")}
	reject := func(name string, uid string) {
		pod := testPod(name, 8, true)
		pod.UID = types.UID("uid-" + uid)
		e.rejectNow(pod, failed, nil)
	}
	for i := 0; i < 10; i++ {
		reject(fmt.Sprintf("p%d", i), "1")
	}
	if e.Len() != 3 || len(drain(recorder)) != 10 {
		t.Fatalf("%d entries, want 3", e.Len())
	}
	reject("p9", "1") // remembered: deduplicated
	reject("p0", "1") // evicted: recorded again
	if got := drain(recorder); len(got) != 1 {
		t.Fatalf("events %q", got)
	}
	reject("p0", "2") // recreated pod
	if got := drain(recorder); len(got) != 1 {
		t.Fatalf("recreated pod: events %q", got)
	}
	e.Forget("default/p0")
	if e.Len() != 2 {
		t.Fatalf("after Forget %d entries", e.Len())
	}
	now = now.Add(time.Minute)
	reject("p9", "1") // past the window: recorded again, remembered anew
	if got := drain(recorder); len(got) != 1 {
		t.Fatalf("after the window: events %q", got)
	}
	e.Expire(now.Add(time.Second))
	if e.Len() != 1 {
		t.Fatalf("after Expire %d entries, want 1 (p9)", e.Len())
	}
	// A pod placed meanwhile, or gone from the cache (deleted, maybe after
	// it was bound), gets no event and leaves no entry.
	e.rejectNow(testPod("p9", 8, true), Rejections{"n2": policy.Reasonf(policy.CodeOther, "other")},
		func(string, string, types.UID) PodState { return PodDone })
	e.rejectNow(testPod("new", 8, true), failed, func(string, string, types.UID) PodState { return PodUnknown })
	if got := drain(recorder); e.Len() != 0 || len(got) != 0 {
		t.Fatalf("%d entries, events %q", e.Len(), got)
	}
}

// A bound pod leaves no event state behind; a bind that loses the race for
// the node's CPUs records CorepinBindConflict on the pod and counts a
// conflict; a bind to an unknown node is an error, not a conflict.
func TestBindForgetsAndConflictEvent(t *testing.T) {
	srv, client, recorder := eventServer(t, PodEventsConfig{})
	h := srv.Handler()
	ctx := context.Background()
	first, second := testPod("db", 6, true), testPod("db2", 4, true)
	for _, p := range []*v1.Pod{first, second} {
		if _, err := client.CoreV1().Pods("default").Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	filterCall(t, h, first, "n1", "n2")
	filterCall(t, h, second, "n1", "n2")
	srv.Events.flush(t)
	if got := drain(recorder); len(got) != 1 || srv.Events.Len() != 1 {
		t.Fatalf("events %q, %d entries", got, srv.Events.Len())
	}
	bind := func(name, node string) extenderv1.ExtenderBindingResult {
		rec := post(t, h, "/bind", extenderv1.ExtenderBindingArgs{PodName: name, PodNamespace: "default", Node: node})
		var br extenderv1.ExtenderBindingResult
		if err := json.Unmarshal(rec.Body.Bytes(), &br); err != nil {
			t.Fatalf("bind: %d %s", rec.Code, rec.Body)
		}
		return br
	}
	if br := bind("db", "n1"); br.Error != "" {
		t.Fatal(br.Error)
	}
	if srv.Events.Len() != 0 {
		t.Fatalf("%d entries after the bind, want 0", srv.Events.Len())
	}
	// db took 6 of n1's 8 CPUs since db2 was filtered.
	if br := bind("db2", "n1"); !strings.Contains(br.Error, "does not fit on n1") {
		t.Fatalf("losing bind: %q", br.Error)
	}
	srv.Events.flush(t)
	want := "Warning CorepinBindConflict bind to node n1 lost a race, kube-scheduler retries the pod: " +
		"pod default/db2 does not fit on n1: not enough free CPUs on cores no pod holds (needs 4, 2 available)"
	if got := drain(recorder); len(got) != 1 || got[0] != want {
		t.Fatalf("events %q\nwant %q", got, want)
	}
	if br := bind("db2", "ghost"); !strings.Contains(br.Error, "unknown") {
		t.Fatalf("bind to ghost: %q", br.Error)
	}
	srv.Events.flush(t)
	if got := drain(recorder); len(got) != 0 {
		t.Fatalf("error recorded %q", got)
	}
	for result, want := range map[string]float64{"bound": 1, "conflict": 1, "error": 1} {
		if n := testutil.ToFloat64(srv.Metrics.Binds.WithLabelValues(result)); n != want {
			t.Errorf("binds %s = %v, want %v", result, n, want)
		}
	}
}

// The API server refusing the Binding as a conflict (the pod was bound
// meanwhile) is a lost race too.
func TestBindAPIConflictIsConflict(t *testing.T) {
	srv, client, recorder := eventServer(t, PodEventsConfig{})
	pod := testPod("db", 2, true)
	if _, err := client.CoreV1().Pods("default").Create(context.Background(), pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	client.PrependReactor("create", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if a.GetSubresource() != "binding" {
			return false, nil, nil
		}
		return true, nil, apierrors.NewConflict(schema.GroupResource{Resource: "pods/binding"}, "db", fmt.Errorf("pod is already assigned to node %q", "n2"))
	})
	rec := post(t, srv.Handler(), "/bind", extenderv1.ExtenderBindingArgs{PodName: "db", PodNamespace: "default", Node: "n1"})
	if !strings.Contains(rec.Body.String(), "already assigned") {
		t.Fatalf("bind: %s", rec.Body)
	}
	srv.Events.flush(t)
	if got := drain(recorder); len(got) != 1 || !strings.Contains(got[0], "CorepinBindConflict bind to node n1 lost a race") {
		t.Fatalf("events %q", got)
	}
	if n := testutil.ToFloat64(srv.Metrics.Binds.WithLabelValues("conflict")); n != 1 {
		t.Fatalf("conflicts %v", n)
	}
	if srv.Sched.Placed("default/db") {
		t.Fatal("the failed bind's assumption was kept")
	}
}

// Until the caches have synced, filter, prioritize and bind answer 503 with
// a body that says so, and touch nothing.
func TestNotReadyRefuses(t *testing.T) {
	srv, client := newTestServer(t)
	ready := false
	srv.Ready = func() bool { return ready }
	h := srv.Handler()
	pod := testPod("db", 2, true)
	names := []string{"n1"}
	for verb, body := range map[string]any{
		"filter":     extenderv1.ExtenderArgs{Pod: pod, NodeNames: &names},
		"prioritize": extenderv1.ExtenderArgs{Pod: pod, NodeNames: &names},
		"bind":       extenderv1.ExtenderBindingArgs{PodName: "db", PodNamespace: "default", Node: "n1"},
	} {
		rec := post(t, h, "/"+verb, body)
		if rec.Code != http.StatusServiceUnavailable || !strings.Contains(rec.Body.String(), "not ready") ||
			!strings.Contains(rec.Body.String(), "initial lists of nodes and pods") {
			t.Errorf("%s before sync: %d %s", verb, rec.Code, rec.Body)
		}
		if n := testutil.ToFloat64(srv.Metrics.NotReady.WithLabelValues(verb)); n != 1 {
			t.Errorf("not ready %s = %v", verb, n)
		}
	}
	if len(client.Actions()) != 0 || srv.Sched.Placed("default/db") {
		t.Fatalf("a refused request acted: %v", client.Actions())
	}
	ready = true
	if rec := post(t, h, "/filter", extenderv1.ExtenderArgs{Pod: pod, NodeNames: &names}); rec.Code != 200 {
		t.Fatalf("filter after sync: %d %s", rec.Code, rec.Body)
	}
}

// The handler never waits for events: with the queue full and no worker,
// filters still answer, and the extra event is dropped and counted.
func TestEventsNeverBlockTheHandler(t *testing.T) {
	srv, _ := newTestServer(t)
	srv.Events = NewPodEvents(record.NewFakeRecorder(1), srv.Metrics, PodEventsConfig{Queue: 1}) // no worker
	h := srv.Handler()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 5; i++ {
			filterCall(t, h, testPod(fmt.Sprintf("db%d", i), 6, true), "n1", "n2")
		}
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("filter blocked on the event queue")
	}
	if n := testutil.ToFloat64(srv.Metrics.PodEvents.WithLabelValues(ReasonNodesRejected, "dropped")); n != 4 {
		t.Fatalf("dropped %v, want 4", n)
	}
}

// End to end with a real broadcaster writing to the fake clientset, and the
// cache's informers: the event lands on the pod (reason, type, message,
// involved object), two identical filters make one event with count 1, and
// deleting the pod drops its dedupe entry.
func TestNodesRejectedEventOnThePod(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pod := testPod("db", 6, true)
	pod.UID = "uid-db"
	client := fake.NewClientset(testNode("n1", topologyJSON(8, "")), testNode("n2", topologyJSON(4, "")), pod)
	sched := newTestScheduler(t)
	c, err := NewCache(client, sched, nil)
	if err != nil {
		t.Fatal(err)
	}
	broadcaster := record.NewBroadcaster()
	broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: client.CoreV1().Events("")})
	defer broadcaster.Shutdown()
	recorder := broadcaster.NewRecorder(scheme.Scheme, v1.EventSource{Component: "corepin-extender"})
	events := NewPodEvents(recorder, nil, PodEventsConfig{})
	c.PodDone = events.Forget
	srv := &Server{Sched: sched, Client: client, Pods: c, Ready: c.Synced, Events: events}
	go srv.RunEvents(ctx)
	h := srv.Handler()
	if rec := post(t, h, "/filter", extenderv1.ExtenderArgs{Pod: pod, NodeNames: &[]string{"n2"}}); rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("filter before the cache started: %d", rec.Code)
	}
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	filterCall(t, h, pod, "n1", "n2")
	filterCall(t, h, pod, "n1", "n2")
	events.flush(t)
	if events.Len() != 1 {
		t.Fatalf("%d entries, want 1", events.Len())
	}
	// The broadcaster hands events to the sink one at a time, in order: once
	// a sentinel recorded after the filters is written, everything the two
	// filters caused (a second event, or a count update) is written too.
	sentinel := &v1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "sentinel", Namespace: "sentinel", UID: "uid-sentinel"}}
	recorder.Event(sentinel, v1.EventTypeNormal, "Sentinel", "recorded after the filters")
	if err := wait.PollUntilContextTimeout(ctx, 10*time.Millisecond, 10*time.Second, true, func(ctx context.Context) (bool, error) {
		list, err := client.CoreV1().Events("sentinel").List(ctx, metav1.ListOptions{})
		return err == nil && len(list.Items) == 1, err
	}); err != nil {
		t.Fatalf("sentinel event not written: %v", err)
	}
	list, err := client.CoreV1().Events("default").List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Items) != 1 {
		t.Fatalf("%d events on the pod, want 1: %+v", len(list.Items), list.Items)
	}
	e := list.Items[0]
	want := "1 of 2 nodes rejected: 1 not enough free CPUs on cores no pod holds (needs 6, 4 available)"
	if e.Reason != ReasonNodesRejected || e.Type != v1.EventTypeWarning || e.Message != want || e.Count != 1 ||
		e.InvolvedObject.Kind != "Pod" || e.InvolvedObject.Name != "db" || e.InvolvedObject.UID != "uid-db" ||
		e.Source.Component != "corepin-extender" {
		t.Fatalf("event %+v", e)
	}
	if err := client.CoreV1().Pods("default").Delete(ctx, "db", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); events.Len() != 0; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("deleted pod's dedupe entry kept")
		}
	}
}

// A rejection is recorded only if its pod still has no node after the
// delay: a pod bound meanwhile gets no event (counted as skipped), a pod
// still pending gets it; the worker wakes for the delay by itself.
func TestNodesRejectedWaitsForThePod(t *testing.T) {
	srv, client, recorder := eventServer(t, PodEventsConfig{Delay: time.Hour})
	h := srv.Handler()
	waiting, bound := testPod("db", 6, true), testPod("db2", 4, true)
	for _, p := range []*v1.Pod{waiting, bound} {
		if _, err := client.CoreV1().Pods("default").Create(context.Background(), p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	filterCall(t, h, waiting, "n1", "n2") // n2 has 4 CPUs: rejected
	filterCall(t, h, bound, "n1", "ghost")
	srv.Events.settle(t)
	if got := drain(recorder); len(got) != 0 {
		t.Fatalf("recorded before the delay: %q", got)
	}
	rec := post(t, h, "/bind", extenderv1.ExtenderBindingArgs{PodName: "db2", PodNamespace: "default", Node: "n1"})
	var br extenderv1.ExtenderBindingResult
	if err := json.Unmarshal(rec.Body.Bytes(), &br); err != nil || br.Error != "" {
		t.Fatalf("bind: %d %s", rec.Code, rec.Body)
	}
	srv.Events.flush(t)
	got := drain(recorder)
	if len(got) != 1 || !strings.Contains(got[0], "CorepinNodesRejected 1 of 2 nodes rejected: 1 not enough free CPUs") {
		t.Fatalf("events %q, want one for db", got)
	}
	if n := testutil.ToFloat64(srv.Metrics.PodEvents.WithLabelValues(ReasonNodesRejected, "skipped")); n != 1 {
		t.Fatalf("skipped %v, want 1 (db2 was bound)", n)
	}

	srv, _, recorder = eventServer(t, PodEventsConfig{Delay: 50 * time.Millisecond})
	filterCall(t, srv.Handler(), waiting, "n1", "n2")
	select {
	case e := <-recorder.Events:
		if !strings.Contains(e, "CorepinNodesRejected") {
			t.Fatalf("event %q", e)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no event 10 s after a 50 ms delay")
	}
}

// Rejections beyond Held while others wait out the delay are dropped and
// counted.
func TestNodesRejectedHeldBounded(t *testing.T) {
	srv, _, recorder := eventServer(t, PodEventsConfig{Delay: time.Hour, Held: 2})
	h := srv.Handler()
	for i := 0; i < 3; i++ {
		filterCall(t, h, testPod(fmt.Sprintf("db%d", i), 6, true), "n1", "n2")
	}
	srv.Events.flush(t)
	if got := drain(recorder); len(got) != 2 {
		t.Fatalf("events %q, want 2", got)
	}
	if n := testutil.ToFloat64(srv.Metrics.PodEvents.WithLabelValues(ReasonNodesRejected, "dropped")); n != 1 {
		t.Fatalf("dropped %v, want 1", n)
	}
}

// A rejection that is already due frees its place before a new one is
// counted as dropped.
func TestNodesRejectedOverdueFreesItsPlace(t *testing.T) {
	recorder := record.NewFakeRecorder(10)
	e := NewPodEvents(recorder, nil, PodEventsConfig{Delay: time.Second, Held: 1})
	now := time.Unix(1000, 0)
	e.now = func() time.Time { return now }
	failed := Rejections{"n1": policy.Reasonf(policy.CodeExclusiveLimit, "exclusive limit 4 reached (needs 8, holds 0)")}
	e.NodesRejected(testPod("a", 8, true), 1, failed)
	e.handleQueued(nil, false)
	now = now.Add(2 * time.Second)
	e.NodesRejected(testPod("b", 8, true), 1, failed)
	e.handleQueued(nil, false)
	if got := drain(recorder); len(got) != 1 || len(e.held) != 1 || e.held[eventKey{kind: kindRejected, namespace: "default", name: "b"}] == nil {
		t.Fatalf("events %q, held %d (want a recorded, b held)", got, len(e.held))
	}
}

// A pod rejected again before the worker gets to it waits on the queue
// once, with the latest rejection, and takes one place of Queue.
func TestNodesRejectedQueuedOncePerPod(t *testing.T) {
	recorder := record.NewFakeRecorder(10)
	metrics := NewMetrics(newTestScheduler(t))
	e := NewPodEvents(recorder, metrics, PodEventsConfig{Queue: 1})
	pod := testPod("db", 8, true)
	e.NodesRejected(pod, 1, Rejections{"n1": policy.Reasonf(policy.CodeExclusiveLimit, "exclusive limit 4 reached (needs 8, holds 0)")})
	e.NodesRejected(pod, 2, Rejections{"n2": policy.Reasonf(policy.CodeCores, "not enough free CPUs on cores no pod holds (needs 8, 2 available)")})
	if n := testutil.ToFloat64(metrics.PodEvents.WithLabelValues(ReasonNodesRejected, "dropped")); n != 0 {
		t.Fatalf("dropped %v, want 0 (one pod)", n)
	}
	e.handleQueued(nil, true)
	want := "Warning CorepinNodesRejected 1 of 2 nodes rejected: 1 not enough free CPUs on cores no pod holds (needs 8, 2 available)"
	if got := drain(recorder); len(got) != 1 || got[0] != want {
		t.Fatalf("events %q\nwant %q", got, want)
	}
}

// A rejection held again after the previous one for its pod was decided
// early (a flush) is decided by its own due key, not the earlier one's.
func TestNodesRejectedStaleDueKey(t *testing.T) {
	recorder := record.NewFakeRecorder(10)
	e := NewPodEvents(recorder, nil, PodEventsConfig{Delay: time.Hour})
	pod := testPod("db", 8, true)
	e.rejectNow(pod, Rejections{"n1": policy.Reasonf(policy.CodeExclusiveLimit, "exclusive limit 4 reached (needs 8, holds 0)")}, nil)
	if got := drain(recorder); len(got) != 1 {
		t.Fatalf("events %q", got)
	}
	e.NodesRejected(pod, 1, Rejections{"n2": policy.Reasonf(policy.CodeOther, "other")})
	e.handleQueued(nil, false)
	key := eventKey{kind: kindDue, namespace: "default", name: "db", seq: 1}
	if held := e.held[key.heldKey()]; held == nil || held.seq == key.seq {
		t.Fatalf("held %+v, want the second rejection under a new seq", held)
	}
	e.process(key, nil) // the first rejection's due key
	if got := drain(recorder); len(got) != 0 || len(e.held) != 1 {
		t.Fatalf("stale due key decided the new rejection: events %q, %d held", got, len(e.held))
	}
	key.seq = e.held[key.heldKey()].seq
	e.process(key, nil)
	if got := drain(recorder); len(got) != 1 || !strings.Contains(got[0], "1 other") || len(e.held) != 0 {
		t.Fatalf("own due key: events %q, %d held", got, len(e.held))
	}
}

// Run returns once its context is done, after recording what was already
// queued; what is handed over afterwards is ignored without blocking.
func TestPodEventsShutdown(t *testing.T) {
	recorder := record.NewFakeRecorder(10)
	e := NewPodEvents(recorder, nil, PodEventsConfig{})
	pod := testPod("db", 2, true)
	e.BindConflict(pod, "n1", fmt.Errorf("taken"))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		e.Run(ctx, nil)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after its context was done")
	}
	if got := drain(recorder); len(got) != 1 || !strings.Contains(got[0], "CorepinBindConflict bind to node n1") {
		t.Fatalf("events %q, want the conflict queued before the shutdown", got)
	}
	e.BindConflict(pod, "n2", fmt.Errorf("taken"))
	if e.queue.Len() != 0 {
		t.Fatal("queued after the shutdown")
	}
}
