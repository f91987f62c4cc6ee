package placer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/corepin/corepin/api"
	"github.com/corepin/corepin/internal/testtopo"
	extender "github.com/corepin/corepin/scheduler-extender"
)

// topologyAnnotation is the named test topology (internal/testtopo) as
// the node plugin publishes it in corepin.io/topology.
func topologyAnnotation(t testing.TB, name string) string {
	t.Helper()
	value, err := json.Marshal(testtopo.MustLoad(name))
	if err != nil {
		t.Fatal(err)
	}
	return string(value)
}

// memberCluster is a fake API server with one 8-CPU node, the cluster's
// own extender (its reservation controller, default rules: at most 5
// exclusive CPUs) running against it, and the placer's view of it, built
// with placerCfg.
func memberCluster(t *testing.T, ctx context.Context, name string, placerCfg api.Config) *Cluster {
	t.Helper()
	c, _, _ := memberClusterOf(t, ctx, name, placerCfg, name+"-node")
	return c
}

// memberClusterOf is memberCluster with the named 8-CPU nodes; it also
// returns the fake dynamic client, whose actions the tests read, and the
// cluster's extender.
func memberClusterOf(t *testing.T, ctx context.Context, name string, placerCfg api.Config, nodes ...string) (*Cluster, *dynamicfake.FakeDynamicClient, *extender.Scheduler) {
	t.Helper()
	return memberClusterWith(t, ctx, name, placerCfg, nil, nodes...)
}

// memberClusterWith is memberClusterOf with the test's reactors on the
// dynamic client, added before anything reads it (the fake's reactor chain
// is not safe to change then).
func memberClusterWith(t *testing.T, ctx context.Context, name string, placerCfg api.Config, reactors func(*dynamicfake.FakeDynamicClient), nodes ...string) (*Cluster, *dynamicfake.FakeDynamicClient, *extender.Scheduler) {
	t.Helper()
	var objs []runtime.Object
	for _, n := range nodes {
		objs = append(objs, &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: n, Annotations: map[string]string{api.AnnotationTopology: topologyAnnotation(t, "1s-vm")}}})
	}
	kube := fake.NewClientset(objs...)
	dyn := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(),
		map[schema.GroupVersionResource]string{api.CPUReservationGVR: "CPUReservationList"})
	// The API server gives every object its UID; the fake does not.
	var uids atomic.Int64
	dyn.PrependReactor("create", api.ResourceCPUReservation, func(action k8stesting.Action) (bool, runtime.Object, error) {
		if u, ok := action.(k8stesting.CreateAction).GetObject().(*unstructured.Unstructured); ok && u.GetUID() == "" {
			u.SetUID(types.UID(fmt.Sprintf("uid-%s-%d", name, uids.Add(1))))
		}
		return false, nil, nil
	})
	if reactors != nil {
		reactors(dyn)
	}
	sched, err := extender.NewScheduler(api.Config{})
	if err != nil {
		t.Fatal(err)
	}
	cache, err := extender.NewCache(kube, sched, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := cache.Start(ctx); err != nil {
		t.Fatal(err)
	}
	rc, err := extender.NewReservationController(dyn, sched, cache)
	if err != nil {
		t.Fatal(err)
	}
	go rc.Run(ctx, cache.Synced)

	c, err := NewCluster(name, placerCfg, kube, dyn)
	if err != nil {
		t.Fatal(err)
	}
	c.Start(ctx)
	return c, dyn, sched
}

func body(cpu string, name string) string {
	return fmt.Sprintf(`{"apiVersion":"corepin.io/v1alpha1","kind":"CPUReservation","metadata":{"namespace":"default","name":%q},
"spec":{"template":{"metadata":{"annotations":{"corepin.io/cpu-mode":"exclusive"}},
"spec":{"containers":[{"name":"engine","resources":{"limits":{"cpu":%q}}}]}}}}`, name, cpu)
}

func call(t *testing.T, srv *httptest.Server, method, path, reqBody string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader(reqBody))
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if len(data) > 0 {
		if err := json.Unmarshal(data, &out); err != nil {
			t.Fatalf("%s %s: %d %q: %v", method, path, resp.StatusCode, data, err)
		}
	}
	return resp.StatusCode, out
}

// The placer fills cluster a, then places in b; when a's extender refuses
// what the placer's view allowed (here: the view runs laxer rules), the
// reservation there is deleted and b is tried; when no cluster fits, 409
// with each cluster's reasons.
func TestPlacer(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	one := 1.0
	lax := api.Config{NodePolicy: api.NodePolicy{MaxExclusiveRatio: &one}} // 8 of 8, where the extenders allow 5
	a, b := memberCluster(t, ctx, "a", lax), memberCluster(t, ctx, "b", lax)
	p := New([]*Cluster{a, b})
	p.Wait, p.Poll = 5*time.Second, 10*time.Millisecond
	srv := httptest.NewServer(p.Handler())
	defer srv.Close()
	for deadline := time.Now().Add(10 * time.Second); !p.Ready(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("placer not ready")
		}
	}

	code, got := call(t, srv, "POST", "/v1/placements", body("4", "r1"))
	if code != http.StatusCreated || got["cluster"] != "a" || got["node"] != "a-node" || got["namespace"] != "default" || got["name"] != "r1" {
		t.Fatalf("r1: %d %v, want 201 in cluster a (the first of a tie)", code, got)
	}
	cpus, err := api.ParseCPUList(fmt.Sprint(got["cpus"]))
	if err != nil || cpus.Size() != 4 || got["containers"].(map[string]any)["engine"] != got["cpus"] {
		t.Fatalf("r1 cpus %v containers %v", got["cpus"], got["containers"])
	}

	// a holds 4 of its 5: its extender refuses 2 more, b takes them.
	code, got = call(t, srv, "POST", "/v1/placements", body("2", "r2"))
	if code != http.StatusCreated || got["cluster"] != "b" {
		t.Fatalf("r2: %d %v, want 201 in cluster b", code, got)
	}
	if _, err := a.Dynamic.Resource(api.CPUReservationGVR).Namespace("default").Get(ctx, "r2", metav1.GetOptions{}); err == nil {
		t.Error("the reservation a's extender refused was not deleted")
	}

	// 4 more fit nowhere by the extenders' rules.
	code, got = call(t, srv, "POST", "/v1/placements", body("4", "r3"))
	clusters, _ := got["clusters"].(map[string]any)
	if code != http.StatusConflict || got["error"] != "no cluster fits" || !strings.Contains(fmt.Sprint(clusters["a"]), "exclusive limit 5 reached") ||
		!strings.Contains(fmt.Sprint(clusters["b"]), "exclusive limit 5 reached") {
		t.Fatalf("r3: %d %v, want 409 with both clusters' reasons", code, got)
	}
	if !strings.HasSuffix(fmt.Sprint(clusters["a"]), "; then no node left but a-node") {
		t.Errorf("r3: a's reason %q, want its extender's refusal, then that no other node is left", clusters["a"])
	}
	// The views hold what was reserved: 5 fit in b's view alone (a's holds
	// r1's 4 of 8), so only b's extender is asked, and refuses.
	code, got = call(t, srv, "POST", "/v1/placements", body("5", "r5"))
	clusters, _ = got["clusters"].(map[string]any)
	if code != http.StatusConflict || !strings.Contains(fmt.Sprint(clusters["a"]), "0/1 nodes fit: a-node: ") ||
		!strings.Contains(fmt.Sprint(clusters["b"]), "exclusive limit 5 reached") {
		t.Fatalf("r5: %d %v, want a refused by the placer's view and b by its extender", code, got)
	}
	// Each cluster's extender is asked once per node: a view that still
	// chooses the node refused is not asked again in the next round.
	if a, b := testutil.ToFloat64(p.refusals.WithLabelValues("a")), testutil.ToFloat64(p.refusals.WithLabelValues("b")); a != 2 || b != 2 {
		t.Errorf("corepin_placer_cluster_refusals_total a=%v b=%v, want 2 each (r2 and r3 in a, r3 and r5 in b)", a, b)
	}
	// 9 fit in no view: refused without asking any extender.
	code, got = call(t, srv, "POST", "/v1/placements", body("9", "r4"))
	if clusters, _ = got["clusters"].(map[string]any); code != http.StatusConflict || !strings.Contains(fmt.Sprint(clusters["a"]), "0/1 nodes fit: a-node: ") {
		t.Fatalf("r4: %d %v", code, got)
	}

	code, got = call(t, srv, "GET", "/v1/placements/a/default/r1", "")
	if code != http.StatusOK || got["phase"] != "Reserved" || got["node"] != "a-node" {
		t.Fatalf("GET r1: %d %v", code, got)
	}
	if code, got = call(t, srv, "GET", "/v1/placements/c/default/r1", ""); code != http.StatusNotFound || !strings.Contains(fmt.Sprint(got["error"]), `unknown cluster "c" (member clusters: a, b)`) {
		t.Errorf("unknown cluster: %d %v", code, got)
	}
	if code, _ = call(t, srv, "DELETE", "/v1/placements/a/default/r1", ""); code != http.StatusNoContent {
		t.Errorf("DELETE r1: %d", code)
	}
	if code, _ = call(t, srv, "GET", "/v1/placements/a/default/r1", ""); code != http.StatusNotFound {
		t.Errorf("GET after DELETE: %d", code)
	}
}

// Bad input is refused with 400 naming the field.
func TestPlacerBadInput(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p := New([]*Cluster{memberCluster(t, ctx, "a", api.Config{})})
	srv := httptest.NewServer(p.Handler())
	defer srv.Close()
	for deadline := time.Now().Add(10 * time.Second); !p.Ready(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("placer not ready")
		}
	}
	for _, tc := range []struct{ body, want string }{
		{`{"metadata":{"namespace":"default","name":"x"},"spec":{"template":{"spec":{"containers":[{"name":"e"}]}},"ttl":5}}`, `unknown field "spec.ttl"`},
		{`{"metadata":{"name":"x"},"spec":{"template":{"spec":{"containers":[{"name":"e"}]}}}}`, "metadata.namespace: required"},
		{`{"metadata":{"namespace":"default","name":"x"},"spec":{"ttlSeconds":"ten"}}`, "ttlSeconds"},
		{`{"metadata":{"namespace":"default","name":"x"},"spec":{"template":{"spec":{"containers":[]}}}}`, "spec.template.spec.containers: required"},
		{`not json`, "malformed CPUReservation"},
		{strings.Replace(body("4", "x"), `"exclusive"`, `"shared"`, 1), "spec.template: not an exclusive pod"},
		{strings.Replace(body("4", "x"), `"4"`, `"1500m"`, 1), "spec.template: "},
	} {
		code, got := call(t, srv, "POST", "/v1/placements", tc.body)
		if code != http.StatusBadRequest || !strings.Contains(fmt.Sprint(got["error"]), tc.want) {
			t.Errorf("%s: %d %v, want 400 with %q", tc.body, code, got, tc.want)
		}
	}
	// A name already taken in the chosen cluster: 409, nothing deleted.
	if code, got := call(t, srv, "POST", "/v1/placements", body("2", "dup")); code != http.StatusCreated {
		t.Fatalf("dup: %d %v", code, got)
	}
	if code, got := call(t, srv, "POST", "/v1/placements", body("2", "dup")); code != http.StatusConflict || !strings.Contains(fmt.Sprint(got["error"]), "already exists") {
		t.Errorf("second dup: %d %v, want 409 already exists", code, got)
	}
	if code, got := call(t, srv, "GET", "/v1/placements/a/default/dup", ""); code != http.StatusOK || got["phase"] != "Reserved" {
		t.Errorf("dup after the refused second: %d %v", code, got)
	}
}

// Concurrent placements hold their CPUs in the placer's view while in
// flight, so they choose apart: 8 at once over 4 nodes, each allowing two
// (5 exclusive CPUs of 8), are all placed on first try, two per node,
// with no reservation refused and deleted by the cluster's extender.
func TestPlacerConcurrentPlacementsChooseApart(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c, dyn, _ := memberClusterOf(t, ctx, "a", api.Config{}, "n1", "n2", "n3", "n4")
	p := New([]*Cluster{c})
	srv := httptest.NewServer(p.Handler())
	defer srv.Close()
	for deadline := time.Now().Add(10 * time.Second); !p.Ready(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("placer not ready")
		}
	}
	var wg sync.WaitGroup
	codes, nodes := make([]int, 8), make([]string, 8)
	for i := range codes {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			code, got := call(t, srv, "POST", "/v1/placements", body("2", fmt.Sprintf("db-%d", i)))
			codes[i], nodes[i] = code, fmt.Sprint(got["node"])
		}(i)
	}
	wg.Wait()
	perNode := map[string]int{}
	for i, code := range codes {
		if code != http.StatusCreated {
			t.Errorf("db-%d: %d, want 201", i, code)
		}
		perNode[nodes[i]]++
	}
	for _, n := range []string{"n1", "n2", "n3", "n4"} {
		if perNode[n] != 2 {
			t.Errorf("placements per node %v, want 2 on each", perNode)
			break
		}
	}
	for _, a := range dyn.Actions() {
		if a.GetVerb() == "delete" {
			t.Errorf("a placement was refused by the extender and deleted: %v", a)
		}
	}
	if n := c.Sched.AssumedReservations(); n != 0 {
		t.Errorf("%d placements still assumed after all were answered", n)
	}
	// The view holds what the cluster reserved, taken over from what it
	// assumed: the next placements are counted against it.
	for _, n := range []string{"n1", "n2", "n3", "n4"} {
		if node, _ := c.Sched.NodeSnapshot(n); node.Len() != 2 || node.Exclusive().Size() != 4 {
			t.Errorf("view of %s holds %s in %d placements, want its 2 reservations' 4 CPUs", n, node.Exclusive(), node.Len())
		}
	}
}

// The health listener serves the probes and the metrics, never the
// placement API: it is plain HTTP where the API requires client
// certificates.
func TestPlacerHealthHandler(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p := New([]*Cluster{memberCluster(t, ctx, "a", api.Config{})})
	srv := httptest.NewServer(p.HealthHandler())
	defer srv.Close()
	get := func(path string) (int, string) {
		resp, err := srv.Client().Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		data, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(data)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if code, _ := get("/readyz"); code == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("/readyz never 200")
		}
	}
	if code, body := get("/healthz"); code != http.StatusOK || body != "ok\n" {
		t.Errorf("/healthz: %d %q", code, body)
	}
	if code, body := get("/metrics"); code != http.StatusOK || !strings.Contains(body, "corepin_placer_placements_in_flight 0") {
		t.Errorf("/metrics: %d, want corepin_placer_placements_in_flight in %q", code, body)
	}
	resp, err := srv.Client().Post(srv.URL+"/v1/placements", "application/json", strings.NewReader(body("2", "db-1")))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("POST /v1/placements on the health listener: %s, want 404", resp.Status)
	}
	if code, _ := get("/v1/placements/a/default/db-1"); code != http.StatusNotFound {
		t.Errorf("GET a placement on the health listener: %d, want 404", code)
	}
}

// A node the cluster's extender refused is left out when the placer
// chooses again: its view does not know why (here the extender alone holds
// a pod on n1), and the next-best node of the same cluster is tried.
func TestPlacerChoosesAnotherNodeAfterARefusal(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c, _, ext := memberClusterOf(t, ctx, "a", api.Config{}, "n1", "n2")
	p := New([]*Cluster{c})
	p.Wait, p.Poll = 5*time.Second, 10*time.Millisecond
	srv := httptest.NewServer(p.Handler())
	defer srv.Close()
	for deadline := time.Now().Add(10 * time.Second); !p.Ready(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("placer not ready")
		}
	}
	pod := &v1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "db-seen-first", UID: "uid-db-seen-first",
		Annotations: map[string]string{api.AnnotationCPUMode: "exclusive", api.AnnotationAllocStatus: `{"node":"n1","cpus":"0-4","containers":{"engine":"0-4"},"mems":"0"}`}},
		Spec: v1.PodSpec{NodeName: "n1", Containers: []v1.Container{{Name: "engine", Resources: v1.ResourceRequirements{
			Limits: v1.ResourceList{v1.ResourceCPU: resource.MustParse("5")}}}}}}
	if err := ext.UpsertPod(pod); err != nil {
		t.Fatal(err)
	}
	code, got := call(t, srv, "POST", "/v1/placements", body("2", "db-1"))
	if code != http.StatusCreated || got["node"] != "n2" {
		t.Fatalf("db-1: %d %v, want 201 on n2 after n1 was refused", code, got)
	}
	if n := testutil.ToFloat64(p.refusals.WithLabelValues("a")); n != 1 {
		t.Errorf("corepin_placer_cluster_refusals_total{cluster=a} %v, want 1 (n1, once)", n)
	}
}

// A cluster whose extender does not answer (here its status writes fail)
// is a refusal once --wait passes, and the reservation is deleted there. A
// client that goes away first is no refusal: the reservation is deleted
// all the same, for nobody is left to learn where it is.
func TestPlacerClusterThatDoesNotAnswer(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c, dyn, _ := memberClusterWith(t, ctx, "a", api.Config{}, func(dyn *dynamicfake.FakeDynamicClient) {
		dyn.PrependReactor("update", api.ResourceCPUReservation, func(action k8stesting.Action) (bool, runtime.Object, error) {
			if action.GetSubresource() == "status" {
				return true, nil, errors.New("status writes refused in this test")
			}
			return false, nil, nil
		})
	}, "n1")
	p := New([]*Cluster{c})
	p.Wait, p.Poll = 300*time.Millisecond, 20*time.Millisecond
	srv := httptest.NewServer(p.Handler())
	defer srv.Close()
	for deadline := time.Now().Add(10 * time.Second); !p.Ready(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("placer not ready")
		}
	}
	reservations := dyn.Resource(api.CPUReservationGVR).Namespace("default")
	gone := func(name string) {
		t.Helper()
		if _, err := reservations.Get(ctx, name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("CPUReservation %s left in the cluster: %v", name, err)
		}
	}

	code, got := call(t, srv, "POST", "/v1/placements", body("2", "db-slow"))
	clusters, _ := got["clusters"].(map[string]any)
	if code != http.StatusConflict || !strings.Contains(fmt.Sprint(clusters["a"]), "node n1: the cluster's extender did not answer within 300ms") {
		t.Fatalf("db-slow: %d %v, want 409 naming the extender that did not answer", code, got)
	}
	gone("db-slow")
	if n := testutil.ToFloat64(p.refusals.WithLabelValues("a")); n != 1 {
		t.Errorf("corepin_placer_cluster_refusals_total{cluster=a} %v, want 1", n)
	}

	p.Wait = 10 * time.Second
	reqCtx, hangUp := context.WithTimeout(ctx, 200*time.Millisecond)
	defer hangUp()
	req, _ := http.NewRequestWithContext(reqCtx, "POST", srv.URL+"/v1/placements", strings.NewReader(body("2", "db-gone")))
	if resp, err := srv.Client().Do(req); err == nil {
		resp.Body.Close()
		t.Fatalf("db-gone: answered %s before the client went away", resp.Status)
	}
	for deadline := time.Now().Add(5 * time.Second); testutil.ToFloat64(p.placements.WithLabelValues("error")) == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the placement of a client gone did not end")
		}
	}
	gone("db-gone")
	if n := testutil.ToFloat64(p.refusals.WithLabelValues("a")); n != 1 {
		t.Errorf("corepin_placer_cluster_refusals_total{cluster=a} %v after the client went away, want still 1", n)
	}
	if c.Sched.AssumedReservations() != 0 {
		t.Error("the assumption outlived the placement")
	}
}
