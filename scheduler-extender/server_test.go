package extender

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	extenderv1 "k8s.io/kube-scheduler/extender/v1"

	"github.com/corepin/corepin/api"
)

func newTestServer(t *testing.T) (*Server, *fake.Clientset) {
	t.Helper()
	s := newTestScheduler(t, testNode("n1", topologyJSON(8, "")), testNode("n2", topologyJSON(4, "")))
	client := fake.NewClientset()
	return &Server{Sched: s, Client: client, Metrics: NewMetrics(s)}, client
}

func post(t *testing.T, h http.Handler, path string, body any) *httptest.ResponseRecorder {
	t.Helper()
	var buf bytes.Buffer
	if s, ok := body.(string); ok {
		buf.WriteString(s)
	} else if err := json.NewEncoder(&buf).Encode(body); err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, path, &buf))
	return rec
}

func TestHTTPFilterPrioritizeBind(t *testing.T) {
	srv, client := newTestServer(t)
	h := srv.Handler()
	pod := testPod("db", 6, true)
	if _, err := client.CoreV1().Pods("default").Create(context.Background(), pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	names := []string{"n1", "n2", "ghost"}
	rec := post(t, h, "/filter", extenderv1.ExtenderArgs{Pod: pod, NodeNames: &names})
	var fr extenderv1.ExtenderFilterResult
	if err := json.Unmarshal(rec.Body.Bytes(), &fr); err != nil || rec.Code != 200 {
		t.Fatalf("filter: %d %s", rec.Code, rec.Body)
	}
	// 6 CPUs: n1 fits (the test scheduler's ratio is 1), n2 has only 4 CPUs.
	if fr.NodeNames == nil || strings.Join(*fr.NodeNames, ",") != "n1" ||
		!strings.Contains(fr.FailedNodes["n2"], "not enough free CPUs on cores no pod holds (needs 6, 4 available)") ||
		!strings.Contains(fr.FailedNodes["ghost"], "unknown") {
		t.Fatalf("filter result %+v", fr)
	}
	rec = post(t, h, "/prioritize", extenderv1.ExtenderArgs{Pod: pod, NodeNames: fr.NodeNames})
	var scores extenderv1.HostPriorityList
	// One candidate is its own lowest score: nothing to add to its rank.
	if err := json.Unmarshal(rec.Body.Bytes(), &scores); err != nil || rec.Code != 200 || len(scores) != 0 {
		t.Fatalf("prioritize: %d %s", rec.Code, rec.Body)
	}
	rec = post(t, h, "/bind", extenderv1.ExtenderBindingArgs{PodName: "db", PodNamespace: "default", Node: "n1"})
	var br extenderv1.ExtenderBindingResult
	if err := json.Unmarshal(rec.Body.Bytes(), &br); err != nil || br.Error != "" {
		t.Fatalf("bind: %s", rec.Body)
	}
	got, err := client.CoreV1().Pods("default").Get(context.Background(), "db", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	status, err := api.ParseAllocStatus(got.Annotations[api.AnnotationAllocStatus])
	if err != nil || status.Node != "n1" || status.CPUs.Size() != 6 {
		t.Fatalf("alloc-status on the pod: %+v %v", status, err)
	}
	var bound bool
	for _, a := range client.Actions() {
		if a.GetVerb() == "create" && a.GetSubresource() == "binding" {
			bound = true
		}
	}
	if !bound {
		t.Fatal("no Binding was created")
	}
	// A second bind of a pod that no longer fits fails so the scheduler retries.
	other := testPod("db2", 4, true)
	if _, err := client.CoreV1().Pods("default").Create(context.Background(), other, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	rec = post(t, h, "/bind", extenderv1.ExtenderBindingArgs{PodName: "db2", PodNamespace: "default", Node: "n1"})
	if err := json.Unmarshal(rec.Body.Bytes(), &br); err != nil || !strings.Contains(br.Error, "does not fit on n1: not enough free CPUs on cores no pod holds (needs 4, 2 available)") {
		t.Fatalf("losing bind: %s", rec.Body)
	}
}

// TestBindWrites checks what a bind writes to the API server in each mode:
// by default a server-side apply of alloc-status and then the Binding; with
// AllocStatusInBinding only the Binding, carrying the annotation (the API
// server copies it onto the pod; TestAllocStatusWrites shows that on a
// real one). A shared pod gets only its Binding either way.
func TestBindWrites(t *testing.T) {
	for _, tc := range []struct {
		name      string
		inBinding bool
		exclusive bool
		want      []string
	}{
		{"apply then binding", false, true, []string{"apply pods", "create pods/binding"}},
		{"in binding", true, true, []string{"create pods/binding+alloc-status"}},
		{"shared pod", false, false, []string{"create pods/binding"}},
		{"shared pod, in binding", true, false, []string{"create pods/binding"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, client := newTestServer(t)
			srv.AllocStatusInBinding = tc.inBinding
			pod := testPod("db", 2, tc.exclusive)
			if _, err := client.CoreV1().Pods("default").Create(context.Background(), pod, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			client.ClearActions()
			rec := post(t, srv.Handler(), "/bind", extenderv1.ExtenderBindingArgs{PodName: "db", PodNamespace: "default", Node: "n1"})
			var br extenderv1.ExtenderBindingResult
			if err := json.Unmarshal(rec.Body.Bytes(), &br); err != nil || br.Error != "" {
				t.Fatalf("bind: %s", rec.Body)
			}
			var got []string
			for _, a := range client.Actions() {
				if a.GetVerb() == "get" {
					continue
				}
				verb := a.GetVerb()
				if p, ok := a.(k8stesting.PatchAction); ok && p.GetPatchType() == types.ApplyPatchType {
					verb = "apply"
				}
				w := verb + " " + a.GetResource().Resource
				if a.GetSubresource() != "" {
					w += "/" + a.GetSubresource()
				}
				if c, ok := a.(k8stesting.CreateAction); ok && a.GetSubresource() == "binding" {
					binding := c.GetObject().(*v1.Binding)
					if v, ok := binding.Annotations[api.AnnotationAllocStatus]; ok {
						st, err := api.ParseAllocStatus(v)
						if err != nil || st.Node != "n1" || st.CPUs.Size() != 2 {
							t.Fatalf("alloc-status in the Binding: %q %v", v, err)
						}
						w += "+alloc-status"
					}
				}
				got = append(got, w)
			}
			if strings.Join(got, ", ") != strings.Join(tc.want, ", ") {
				t.Fatalf("writes %q, want %q", got, tc.want)
			}
			if tc.exclusive && !tc.inBinding {
				got, err := client.CoreV1().Pods("default").Get(context.Background(), "db", metav1.GetOptions{})
				if err != nil || got.Annotations[api.AnnotationAllocStatus] == "" {
					t.Fatalf("pod after the apply: %v, annotations %v", err, got.Annotations)
				}
			}
		})
	}
}

func TestHTTPBadPodIsUnresolvable(t *testing.T) {
	srv, _ := newTestServer(t)
	pod := testPod("bad", 1, true)
	pod.Annotations[api.AnnotationAllocSpec] = `{"cpu":"Packed"}`
	names := []string{"n1"}
	rec := post(t, srv.Handler(), "/filter", extenderv1.ExtenderArgs{Pod: pod, NodeNames: &names})
	var fr extenderv1.ExtenderFilterResult
	if err := json.Unmarshal(rec.Body.Bytes(), &fr); err != nil || !strings.Contains(fr.FailedAndUnresolvableNodes["n1"], `"Packed"`) {
		t.Fatalf("bad pod: %s", rec.Body)
	}
}

// TestMaxPerNodeNeedsAnApp: max-per-node without an app identity would
// limit nothing; the pod is refused with a reason naming the annotation,
// and accepted once it has an app.
func TestMaxPerNodeNeedsAnApp(t *testing.T) {
	srv, _ := newTestServer(t)
	pod := testPod("cache", 0, false)
	pod.Annotations[api.AnnotationMaxPerNode] = "1"
	names := []string{"n1"}
	filter := func() extenderv1.ExtenderFilterResult {
		rec := post(t, srv.Handler(), "/filter", extenderv1.ExtenderArgs{Pod: pod, NodeNames: &names})
		var fr extenderv1.ExtenderFilterResult
		if err := json.Unmarshal(rec.Body.Bytes(), &fr); err != nil {
			t.Fatalf("filter: %d %s", rec.Code, rec.Body)
		}
		return fr
	}
	want := `corepin.io/max-per-node="1" needs an app identity: set corepin.io/app or the label app.kubernetes.io/name or app`
	if fr := filter(); !strings.Contains(fr.FailedAndUnresolvableNodes["n1"], want) {
		t.Fatalf("without an app: %+v, want %q", fr, want)
	}
	pod.Labels = map[string]string{"app": "cache"}
	if fr := filter(); fr.NodeNames == nil || len(*fr.NodeNames) != 1 {
		t.Fatalf("with an app: %+v", fr)
	}
}

func TestHTTPMalformedBodies(t *testing.T) {
	srv, _ := newTestServer(t)
	h := srv.Handler()
	for _, tc := range []struct{ path, body, want string }{
		{"/filter", "{", "malformed request body"},
		{"/filter", `{"nodenames":["n1"]}`, "no pod"},
		{"/prioritize", "[]", "malformed request body"},
		{"/bind", `{"podName":"x"}`, "required"},
		{"/bind", `{} {}`, "trailing"},
	} {
		rec := post(t, h, tc.path, tc.body)
		if rec.Code != http.StatusBadRequest || !strings.Contains(rec.Body.String(), tc.want) {
			t.Errorf("%s %q: %d %s", tc.path, tc.body, rec.Code, rec.Body)
		}
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/filter", nil))
	if rec.Code != http.StatusMethodNotAllowed {
		t.Errorf("GET /filter: %d", rec.Code)
	}
}

func TestReadyz(t *testing.T) {
	srv, _ := newTestServer(t)
	ready := false
	srv.Ready = func() bool { return ready }
	get := func(path string) int {
		rec := httptest.NewRecorder()
		srv.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		return rec.Code
	}
	if get("/readyz") != 503 || get("/healthz") != 200 {
		t.Fatal("readyz before sync")
	}
	ready = true
	if get("/readyz") != 200 || get("/metrics") != 200 {
		t.Fatal("readyz after sync")
	}
}

// The address the kubelet probes serves health and metrics, never a verb.
func TestHealthHandlerHasNoVerbs(t *testing.T) {
	srv, _ := newTestServer(t)
	ready := false
	srv.Ready = func() bool { return ready }
	do := func(method, path string) int {
		rec := httptest.NewRecorder()
		srv.HealthHandler().ServeHTTP(rec, httptest.NewRequest(method, path, strings.NewReader(`{}`)))
		return rec.Code
	}
	if got := do(http.MethodGet, "/readyz"); got != 503 {
		t.Errorf("readyz before sync: %d", got)
	}
	ready = true
	for _, path := range []string{"/healthz", "/readyz", "/metrics"} {
		if got := do(http.MethodGet, path); got != 200 {
			t.Errorf("GET %s: %d", path, got)
		}
	}
	for _, verb := range []string{"/filter", "/prioritize", "/bind", "/preempt"} {
		if got := do(http.MethodPost, verb); got != http.StatusNotFound {
			t.Errorf("POST %s on the health address: %d, want 404", verb, got)
		}
	}
}

// FuzzHTTPBodies: whatever the body, every verb answers without panicking,
// and a body that is not JSON gets 400.
func FuzzHTTPBodies(f *testing.F) {
	f.Add("/filter", `{"pod":{"metadata":{"name":"a","annotations":{"corepin.io/cpu-mode":"exclusive"}},"spec":{"containers":[{"name":"c","resources":{"limits":{"cpu":"2"}}}]}},"nodenames":["n1"]}`)
	f.Add("/prioritize", `{"pod":{},"nodenames":["n1","n2"]}`)
	f.Add("/bind", `{"podName":"a","podNamespace":"default","node":"n1"}`)
	f.Add("/filter", `{"pod":null}`)
	srv := &Server{}
	sched, _ := NewScheduler(api.Config{})
	sched.UpsertNode(testNode("n1", topologyJSON(4, "")))
	srv.Sched, srv.Client = sched, fake.NewClientset()
	h := srv.Handler()
	f.Fuzz(func(t *testing.T, path, body string) {
		switch path {
		case "/filter", "/prioritize", "/bind":
		default:
			return
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, path, strings.NewReader(body)))
		if !json.Valid([]byte(body)) && rec.Code != http.StatusBadRequest {
			t.Fatalf("%s %q: status %d for a body that is not JSON", path, body, rec.Code)
		}
	})
}

func TestTransformKeepsWhatTheEngineReads(t *testing.T) {
	pod := testPod("a", 2, true)
	pod.UID, pod.ResourceVersion = "uid-a", "42"
	pod.Labels = map[string]string{api.LabelApp: "pg", "pod-template-hash": "abc"}
	pod.Annotations["kubectl.kubernetes.io/last-applied-configuration"] = strings.Repeat("x", 4096)
	pod.Annotations[api.AnnotationAllocStatus] = `{"node":"n1","cpus":"2-3","containers":{"main":"2-3"},"mems":"0"}`
	pod.Spec.NodeName = "n1"
	priority := int32(1000)
	pod.Spec.Priority, pod.Spec.PriorityClassName = &priority, "high"
	pod.Spec.Containers[0].Image = "postgres"
	pod.Spec.Containers[0].Env = []v1.EnvVar{{Name: "A", Value: "b"}}
	pod.Spec.Containers[0].Resources.Requests = v1.ResourceList{v1.ResourceCPU: resource.MustParse("1500m"), v1.ResourceMemory: resource.MustParse("1Gi")}
	pod.Spec.Containers = append(pod.Spec.Containers, v1.Container{Name: "sidecar"})
	pod.Status.Phase = v1.PodRunning
	out, err := Transform(pod)
	if err != nil {
		t.Fatal(err)
	}
	if again, _ := Transform(out); again != out {
		t.Fatalf("Transform is not idempotent: %T", again)
	}
	slim := out.(*PodRecord).Pod()
	want := &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "a", UID: "uid-a", ResourceVersion: "42",
			Labels: map[string]string{api.LabelApp: "pg"},
			Annotations: map[string]string{api.AnnotationCPUMode: "exclusive",
				api.AnnotationAllocStatus: `{"node":"n1","cpus":"2-3","containers":{"main":"2-3"},"mems":"0"}`}},
		Spec: v1.PodSpec{NodeName: "n1", Priority: &priority, Containers: []v1.Container{
			{Name: "main", Resources: v1.ResourceRequirements{
				Limits:   v1.ResourceList{v1.ResourceCPU: resource.MustParse("2")},
				Requests: v1.ResourceList{v1.ResourceCPU: resource.MustParse("1500m")}}},
			{Name: "sidecar"}}},
		Status: v1.PodStatus{Phase: v1.PodRunning},
	}
	if !apiequality.Semantic.DeepEqual(slim, want) {
		t.Fatalf("transformed pod\n%+v\nwant\n%+v", slim, want)
	}
	// The engine reads the same placement from the record as from the pod.
	full, err := PlacementFromPod(pod)
	if err != nil {
		t.Fatal(err)
	}
	kept, err := PlacementFromPod(slim)
	if err != nil || !samePlacement(full, kept) || full.Key != kept.Key {
		t.Fatalf("placement from the record %+v (%v), from the pod %+v", kept, err, full)
	}
}

func TestTransformNodeKeepsCorepinAnnotations(t *testing.T) {
	node := testNode("n1", topologyJSON(8, ""))
	node.UID, node.ResourceVersion = "uid-n1", "7"
	node.Labels = map[string]string{"kubernetes.io/hostname": "n1"}
	node.Annotations["node.alpha.kubernetes.io/ttl"] = "0"
	node.Status.Images = []v1.ContainerImage{{Names: []string{"postgres:17"}}}
	out, _ := Transform(node)
	want := &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1", UID: "uid-n1", ResourceVersion: "7",
		Annotations: map[string]string{api.AnnotationTopology: topologyJSON(8, "")}}}
	if !apiequality.Semantic.DeepEqual(out, want) {
		t.Fatalf("transformed node %+v", out)
	}
}

// Prioritize sends each score less the lowest one and leaves out the nodes
// at 0: kube-scheduler adds nothing for a node an extender does not list,
// and the same amount taken off every candidate changes no ranking.
func TestHTTPPrioritizeSendsRelativeScores(t *testing.T) {
	srv, _ := newTestServer(t)
	h := srv.Handler()
	names := []string{"n1", "n2"}
	prioritize := func(pod *v1.Pod) extenderv1.HostPriorityList {
		t.Helper()
		rec := post(t, h, "/prioritize", extenderv1.ExtenderArgs{Pod: pod, NodeNames: &names})
		var scores extenderv1.HostPriorityList
		if err := json.Unmarshal(rec.Body.Bytes(), &scores); err != nil || rec.Code != 200 {
			t.Fatalf("prioritize: %d %s", rec.Code, rec.Body)
		}
		return scores
	}
	// 3 CPUs: 3/8 of n1 scores 4, 3/4 of n2 scores 8 (MostAllocated); n1 is
	// the lowest, so only n2 is sent, with 8-4.
	db := testPod("db", 3, true)
	if abs, err := srv.Sched.Prioritize(db, names); err != nil || abs[0].Score != 4 || abs[1].Score != 8 {
		t.Fatalf("engine scores %+v (%v), want n1 4 and n2 8", abs, err)
	}
	if got := prioritize(db); !slices.Equal(got, extenderv1.HostPriorityList{{Host: "n2", Score: 4}}) {
		t.Fatalf("prioritize sent %+v, want n2 4 only", got)
	}
	// A shared pod asking for no CPU leaves both nodes at 0: nothing sent.
	if got := prioritize(testPod("web", 0, false)); len(got) != 0 {
		t.Fatalf("prioritize sent %+v, want nothing", got)
	}
}

func TestRelativeScores(t *testing.T) {
	for _, tc := range []struct {
		name     string
		in, want extenderv1.HostPriorityList
	}{
		{"empty", nil, extenderv1.HostPriorityList{}},
		{"all equal", extenderv1.HostPriorityList{{Host: "a", Score: 3}, {Host: "b", Score: 3}}, extenderv1.HostPriorityList{}},
		{"lowest not first", extenderv1.HostPriorityList{{Host: "a", Score: 7}, {Host: "b", Score: 2}, {Host: "c", Score: 2}, {Host: "d", Score: 10}},
			extenderv1.HostPriorityList{{Host: "a", Score: 5}, {Host: "d", Score: 8}}},
		{"zero lowest", extenderv1.HostPriorityList{{Host: "a", Score: 0}, {Host: "b", Score: 6}}, extenderv1.HostPriorityList{{Host: "b", Score: 6}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := *relativeScores(slices.Clone(tc.in))
			if !slices.Equal(got, tc.want) {
				t.Fatalf("relativeScores(%+v) = %+v, want %+v", tc.in, got, tc.want)
			}
			// The winner is unchanged: the highest relative score is on the
			// node with the highest engine score.
			if len(got) > 0 {
				best := slices.MaxFunc(tc.in, func(a, b extenderv1.HostPriority) int { return cmp.Compare(a.Score, b.Score) })
				if top := slices.MaxFunc(got, func(a, b extenderv1.HostPriority) int { return cmp.Compare(a.Score, b.Score) }); top.Host != best.Host {
					t.Fatalf("top node %s, engine's best %s", top.Host, best.Host)
				}
			}
		})
	}
}
