package extender

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"reflect"
	"slices"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	extenderv1 "k8s.io/kube-scheduler/extender/v1"
	"k8s.io/utils/cpuset"

	"github.com/corepin/corepin/api"
)

// numaTopologyJSON is a node without SMT of numas NUMA nodes with per CPUs each.
func numaTopologyJSON(numas, per int) string {
	var b strings.Builder
	b.WriteString(`{"version":1,"cpus":[`)
	for i := 0; i < numas*per; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"id":%d,"core":%d,"socket":0,"numa":%d,"l3":%d}`, i, i, i/per, i/per)
	}
	b.WriteString(`],"reserved":""}`)
	return b.String()
}

// boundPod is a pod bound to node with a UID and a priority: exclusive on
// cpus when cpus is set, else shared with 500m.
func boundPod(name, node string, priority int32, cpus string, annotations ...string) *v1.Pod {
	p := testPod(name, 1, false)
	p.UID = types.UID("uid-" + name)
	p.Spec.NodeName, p.Spec.Priority = node, &priority
	p.Spec.Containers[0].Resources.Limits[v1.ResourceCPU] = *resource.NewMilliQuantity(500, resource.DecimalSI)
	if cpus != "" {
		set, err := cpuset.Parse(cpus)
		if err != nil {
			panic(err)
		}
		p.Annotations[api.AnnotationCPUMode] = "exclusive"
		p.Annotations[api.AnnotationAllocStatus] = fmt.Sprintf(`{"node":%q,"cpus":%q,"containers":{"main":%q},"mems":"0"}`, node, cpus, cpus)
		p.Spec.Containers[0].Resources.Limits[v1.ResourceCPU] = *resource.NewQuantity(int64(set.Size()), resource.DecimalSI)
	}
	for i := 0; i+1 < len(annotations); i += 2 {
		p.Annotations[annotations[i]] = annotations[i+1]
	}
	return p
}

// preemptor is a pending exclusive pod of k CPUs at the given priority.
func preemptor(k int, priority int32, annotations ...string) *v1.Pod {
	p := testPod("urgent", k, true)
	p.UID, p.Spec.Priority = "uid-urgent", &priority
	for i := 0; i+1 < len(annotations); i += 2 {
		p.Annotations[annotations[i]] = annotations[i+1]
	}
	return p
}

func withPolicy(n *v1.Node, policy string) *v1.Node {
	n.Annotations[api.AnnotationNodePolicy] = policy
	return n
}

// TestPreempt: for each node kube-scheduler proposes, the fewest pods of a
// lower priority whose removal lets the pod fit by every rule, lowest
// priority first, then fewest exclusive CPUs, then those kube-scheduler
// proposed; a node where no such set is enough is left out, and so is one
// the extender does not know.
func TestPreempt(t *testing.T) {
	flat8 := func(name string) *v1.Node { return testNode(name, topologyJSON(8, "")) }
	const maxPerNode1 = api.AnnotationMaxPerNode
	for _, tc := range []struct {
		name  string
		nodes []*v1.Node
		pods  []*v1.Pod
		pod   *v1.Pod
		// proposed: kube-scheduler's victims per node, by pod name.
		proposed map[string][]string
		// want: the answer's victims per node, by pod name.
		want map[string][]string
	}{
		{
			name:  "lowest priority first",
			nodes: []*v1.Node{flat8("n1")},
			pods:  []*v1.Pod{boundPod("mid", "n1", 5, "0-3"), boundPod("low", "n1", 1, "4-7")},
			pod:   preemptor(4, 10), proposed: map[string][]string{"n1": {"mid"}},
			want: map[string][]string{"n1": {"low"}},
		},
		{
			name:  "negative priorities come before zero",
			nodes: []*v1.Node{flat8("n1")},
			pods:  []*v1.Pod{boundPod("zero", "n1", 0, "0-3"), boundPod("minus", "n1", -5, "4-7")},
			pod:   preemptor(4, 10), proposed: map[string][]string{"n1": {"zero"}},
			want: map[string][]string{"n1": {"minus"}},
		},
		{
			name:  "fewest exclusive CPUs among equal priorities, then the name",
			nodes: []*v1.Node{flat8("n1")},
			pods:  []*v1.Pod{boundPod("c", "n1", 1, "0-1"), boundPod("b", "n1", 1, "2-5"), boundPod("a", "n1", 1, "6-7")},
			pod:   preemptor(2, 10), proposed: map[string][]string{"n1": {"b"}},
			want: map[string][]string{"n1": {"a"}},
		},
		{
			name:  "kube-scheduler's proposal breaks the remaining tie",
			nodes: []*v1.Node{flat8("n1")},
			pods:  []*v1.Pod{boundPod("a", "n1", 1, "0-3"), boundPod("b", "n1", 1, "4-7")},
			pod:   preemptor(4, 10), proposed: map[string][]string{"n1": {"b"}},
			want: map[string][]string{"n1": {"b"}},
		},
		{
			name:  "minimal: one of three pods when one makes room",
			nodes: []*v1.Node{flat8("n1")},
			pods:  []*v1.Pod{boundPod("a", "n1", 1, "0-1"), boundPod("b", "n1", 1, "2-3"), boundPod("c", "n1", 1, "4-5")},
			pod:   preemptor(4, 10), proposed: map[string][]string{"n1": {"a", "b", "c"}},
			want: map[string][]string{"n1": {"a"}},
		},
		{
			name:  "the fewest pods: one large rather than two small ones",
			nodes: []*v1.Node{flat8("n1")},
			pods:  []*v1.Pod{boundPod("a", "n1", 1, "0-1"), boundPod("b", "n1", 1, "2-3"), boundPod("c", "n1", 1, "4-7")},
			pod:   preemptor(4, 10), proposed: map[string][]string{"n1": {"a", "b"}},
			want: map[string][]string{"n1": {"c"}},
		},
		{
			name:  "two victims when one is not enough; shared pods are no help to an exclusive pod",
			nodes: []*v1.Node{flat8("n1")},
			// web (500m) keeps the limit at 8 - 2*0.5 = 7: 1 held + 6 fit.
			pods: []*v1.Pod{boundPod("web", "n1", 0, ""), boundPod("a", "n1", 1, "0-2"), boundPod("b", "n1", 2, "3-5"),
				boundPod("keep", "n1", 20, "6")},
			pod: preemptor(6, 10), proposed: map[string][]string{"n1": {"a", "b"}},
			want: map[string][]string{"n1": {"a", "b"}},
		},
		{
			name:  "equal and higher priorities are never victims",
			nodes: []*v1.Node{flat8("n1"), flat8("n2")},
			pods: []*v1.Pod{boundPod("peer", "n1", 10, "0-5"), boundPod("low", "n1", 1, "6-7"),
				boundPod("boss", "n2", 100, "0-7")},
			pod: preemptor(4, 10), proposed: map[string][]string{"n1": {"peer", "low"}, "n2": {"boss"}},
			want: map[string][]string{},
		},
		{
			name:  "only proposed nodes, and only nodes the extender knows",
			nodes: []*v1.Node{flat8("n1"), flat8("n2")},
			pods:  []*v1.Pod{boundPod("a", "n1", 1, "0-7"), boundPod("b", "n2", 1, "0-7")},
			pod:   preemptor(4, 10), proposed: map[string][]string{"n2": {"b"}, "ghost": {"x"}},
			want: map[string][]string{"n2": {"b"}},
		},
		{
			name: "exclusive limit: no set helps a pod over the limit",
			// maxExclusiveRatio 0.75: at most 6 of the 8 CPUs.
			nodes: []*v1.Node{withPolicy(flat8("n1"), `{"maxExclusiveRatio": 0.75}`), flat8("n2")},
			pods:  []*v1.Pod{boundPod("a", "n1", 1, "0-2"), boundPod("b", "n1", 1, "3-5"), boundPod("c", "n2", 1, "0-7")},
			pod:   preemptor(7, 10), proposed: map[string][]string{"n1": {"a", "b"}, "n2": {"c"}},
			want: map[string][]string{"n2": {"c"}},
		},
		{
			name: "exclusive limit: shared pods are victims when their load holds the limit down",
			// h = 2: a 2-CPU shared pod keeps E <= 8 - 2*2 = 4.
			nodes: []*v1.Node{flat8("n1")},
			pods: []*v1.Pod{func() *v1.Pod {
				p := boundPod("web", "n1", 1, "")
				p.Spec.Containers[0].Resources.Limits[v1.ResourceCPU] = resource.MustParse("2")
				return p
			}(), boundPod("db", "n1", 20, "0-3")},
			pod: preemptor(2, 10, api.AnnotationAllocSpec, `{"numa":"None"}`), proposed: map[string][]string{"n1": {"web"}},
			want: map[string][]string{"n1": {"web"}},
		},
		{
			name:  "NUMA Required: the victims free one NUMA node, not any CPUs",
			nodes: []*v1.Node{testNode("n1", numaTopologyJSON(2, 4))},
			pods: []*v1.Pod{boundPod("low-0", "n1", 1, "0-1"), boundPod("high-0", "n1", 50, "2-3"),
				boundPod("low-1", "n1", 2, "4-7")},
			pod:      preemptor(3, 10, api.AnnotationAllocSpec, `{"numa":"Required"}`),
			proposed: map[string][]string{"n1": {"low-0"}},
			want:     map[string][]string{"n1": {"low-1"}},
		},
		{
			name:  "NUMA Required: no set helps a pod larger than any NUMA node",
			nodes: []*v1.Node{testNode("n1", numaTopologyJSON(2, 4))},
			pods:  []*v1.Pod{boundPod("a", "n1", 1, "0-3"), boundPod("b", "n1", 1, "4-7")},
			pod:   preemptor(5, 10, api.AnnotationAllocSpec, `{"numa":"Required"}`), proposed: map[string][]string{"n1": {"a", "b"}},
			want: map[string][]string{},
		},
		{
			name:  "max-per-node: no set helps when the app's pod there has the same priority",
			nodes: []*v1.Node{flat8("n1")},
			pods: []*v1.Pod{boundPod("db-0", "n1", 10, "0-1", maxPerNode1, "1", api.AnnotationApp, "db"),
				boundPod("low", "n1", 1, "2-7")},
			pod:      preemptor(2, 10, maxPerNode1, "1", api.AnnotationApp, "db"),
			proposed: map[string][]string{"n1": {"low"}},
			want:     map[string][]string{},
		},
		{
			name:  "max-per-node: a lower-priority pod of the app is the victim",
			nodes: []*v1.Node{flat8("n1")},
			pods: []*v1.Pod{boundPod("db-0", "n1", 5, "0-1", maxPerNode1, "1", api.AnnotationApp, "db"),
				boundPod("low", "n1", 1, "2-5")},
			pod:      preemptor(2, 10, maxPerNode1, "1", api.AnnotationApp, "db"),
			proposed: map[string][]string{"n1": {"low"}},
			want:     map[string][]string{"n1": {"db-0"}},
		},
		{
			name:  "the pod fits by corepin's rules: kube-scheduler's own victims, or no node without any",
			nodes: []*v1.Node{flat8("n1"), flat8("n2")},
			pods:  []*v1.Pod{boundPod("a", "n1", 1, "0-1"), boundPod("b", "n2", 1, "0-1")},
			pod:   preemptor(2, 10), proposed: map[string][]string{"n1": {"a"}, "n2": {}},
			want: map[string][]string{"n1": {"a"}},
		},
		{
			name:  "a terminating pod keeps its CPUs and counts like any other",
			nodes: []*v1.Node{flat8("n1")},
			pods: []*v1.Pod{func() *v1.Pod {
				p := boundPod("going", "n1", 1, "0-3")
				p.DeletionTimestamp = &metav1.Time{}
				return p
			}(), boundPod("other", "n1", 1, "4-7")},
			pod: preemptor(6, 10), proposed: map[string][]string{"n1": {"going"}},
			want: map[string][]string{"n1": {"going", "other"}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newTestScheduler(t, tc.nodes...)
			uids := map[types.UID]string{}
			byName := map[string]types.UID{}
			for _, p := range tc.pods {
				if err := s.UpsertPod(p); err != nil {
					t.Fatal(err)
				}
				uids[p.UID], byName[p.Name] = p.Name, p.UID
			}
			proposed := map[string]*extenderv1.MetaVictims{}
			for node, names := range tc.proposed {
				mv := &extenderv1.MetaVictims{Pods: []*extenderv1.MetaPod{}}
				for _, n := range names {
					uid := byName[n]
					if uid == "" {
						uid = types.UID("uid-" + n)
					}
					mv.Pods = append(mv.Pods, &extenderv1.MetaPod{UID: string(uid)})
				}
				proposed[node] = mv
			}
			// Through the handler, as kube-scheduler's HTTPExtender sends it.
			srv := &Server{Sched: s, Client: fake.NewClientset()}
			rec := post(t, srv.Handler(), "/preempt", extenderv1.ExtenderPreemptionArgs{Pod: tc.pod, NodeNameToMetaVictims: proposed})
			var res extenderv1.ExtenderPreemptionResult
			if err := json.Unmarshal(rec.Body.Bytes(), &res); err != nil || rec.Code != http.StatusOK {
				t.Fatalf("preempt: %d %s", rec.Code, rec.Body)
			}
			got := map[string][]string{}
			for node, mv := range res.NodeNameToMetaVictims {
				if len(mv.Pods) == 0 {
					t.Fatalf("node %s answered without a victim (kube-scheduler refuses that)", node)
				}
				for _, m := range mv.Pods {
					name, ok := uids[types.UID(m.UID)]
					if !ok {
						t.Fatalf("node %s: victim UID %s is no pod of the test", node, m.UID)
					}
					got[node] = append(got[node], name)
				}
				slices.Sort(got[node])
			}
			for _, v := range tc.want {
				slices.Sort(v)
			}
			if !maps.EqualFunc(got, tc.want, slices.Equal) {
				t.Fatalf("victims %v, want %v", got, tc.want)
			}
			// Victims are not removed from the cache: they hold their
			// CPUs until the API server has deleted them.
			for _, p := range tc.pods {
				if !s.Placed(PodKey(p)) {
					t.Fatalf("pod %s left the cache", p.Name)
				}
			}
		})
	}
}

// TestPreemptNodeNameToVictims: without nodeCacheCapable kube-scheduler sends
// whole pods; the answer is the same, by UID.
func TestPreemptNodeNameToVictims(t *testing.T) {
	s := newTestScheduler(t, testNode("n1", topologyJSON(8, "")))
	a, b := boundPod("a", "n1", 1, "0-3"), boundPod("b", "n1", 5, "4-7")
	for _, p := range []*v1.Pod{a, b} {
		if err := s.UpsertPod(p); err != nil {
			t.Fatal(err)
		}
	}
	srv := &Server{Sched: s, Client: fake.NewClientset()}
	rec := post(t, srv.Handler(), "/preempt", extenderv1.ExtenderPreemptionArgs{Pod: preemptor(4, 10),
		NodeNameToVictims: map[string]*extenderv1.Victims{"n1": {Pods: []*v1.Pod{b}, NumPDBViolations: 1}}})
	var res extenderv1.ExtenderPreemptionResult
	if err := json.Unmarshal(rec.Body.Bytes(), &res); err != nil || rec.Code != http.StatusOK {
		t.Fatalf("preempt: %d %s", rec.Code, rec.Body)
	}
	mv := res.NodeNameToMetaVictims["n1"]
	if len(res.NodeNameToMetaVictims) != 1 || mv == nil || len(mv.Pods) != 1 || mv.Pods[0].UID != string(a.UID) {
		t.Fatalf("answer %s, want pod a on n1", rec.Body)
	}
	// The violations kube-scheduler counted were among its proposal (b),
	// which the answer does not keep.
	if mv.NumPDBViolations != 0 {
		t.Fatalf("NumPDBViolations %d, want 0", mv.NumPDBViolations)
	}
}

// TestPreemptMalformedBodies: 400, naming the field.
func TestPreemptMalformedBodies(t *testing.T) {
	srv, _ := newTestServer(t)
	h := srv.Handler()
	pod := `{"metadata":{"name":"p","namespace":"default"}}`
	for _, tc := range []struct{ body, want string }{
		{"{", "malformed request body"},
		{`{"NodeNameToMetaVictims":{}}`, `no "Pod"`},
		{`{"Pod":` + pod + `}`, `neither "NodeNameToMetaVictims" nor "NodeNameToVictims"`},
		{`{"Pod":` + pod + `,"NodeNameToMetaVictims":{"n1":{"Pods":[{"UID":""}]}}}`, `NodeNameToMetaVictims["n1"].Pods[0].UID is empty`},
		{`{"Pod":` + pod + `,"NodeNameToMetaVictims":{"n1":{"Pods":[null]}}}`, `NodeNameToMetaVictims["n1"].Pods[0].UID is empty`},
		{`{"Pod":` + pod + `,"NodeNameToMetaVictims":{"n1":{"Pods":[{"UID":5}]}}}`, `NodeNameToMetaVictims["n1"].Pods[0].UID: want a string`},
		{`{"Pod":` + pod + `,"NodeNameToMetaVictims":{"n1":{"Pods":{"UID":"a"}}}}`, `NodeNameToMetaVictims["n1"].Pods: want an array`},
		{`{"Pod":` + pod + `,"NodeNameToMetaVictims":{"n1":{"Pods":["a"]}}}`, `NodeNameToMetaVictims["n1"].Pods[0]: want an object`},
		{`{"Pod":` + pod + `,"NodeNameToMetaVictims":{"n1":{"NumPDBViolations":"x"}}}`, "NumPDBViolations"},
		{`{"Pod":` + pod + `,"NodeNameToMetaVictims":[]}`, "NodeNameToMetaVictims"},
		{`{"Pod":` + pod + `,"NodeNameToVictims":{"n1":{"Pods":[{"metadata":{}}]}}}`, `NodeNameToVictims["n1"].Pods[0].metadata.uid is empty`},
		{`{"Pod":{"spec":{"priority":"high"}},"NodeNameToMetaVictims":{}}`, "priority"},
		{`{"Pod":` + pod + `,"NodeNameToMetaVictims":{}} {}`, "trailing"},
	} {
		rec := post(t, h, "/preempt", tc.body)
		if rec.Code != http.StatusBadRequest || !strings.Contains(rec.Body.String(), tc.want) {
			t.Errorf("%s: %d %s, want 400 naming %s", tc.body, rec.Code, rec.Body, tc.want)
		}
	}
	// A malformed pod is no malformed body: no node, 200.
	rec := post(t, h, "/preempt", `{"Pod":{"metadata":{"name":"p","namespace":"default","annotations":{"corepin.io/cpu-mode":"pinned"}}},"NodeNameToMetaVictims":{"n1":null}}`)
	if rec.Code != http.StatusOK || rec.Body.String() != `{"NodeNameToMetaVictims":{}}` {
		t.Errorf("malformed pod: %d %s", rec.Code, rec.Body)
	}
}

// TestPreemptNotReady: like every verb, preempt waits for the caches.
func TestPreemptNotReady(t *testing.T) {
	srv, _ := newTestServer(t)
	srv.Ready = func() bool { return false }
	rec := post(t, srv.Handler(), "/preempt", `{}`)
	if rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("preempt before sync: %d", rec.Code)
	}
}

// TestVictimsKeepTheirCPUs: a pod being deleted (deletionTimestamp set, as
// kube-scheduler's preemption leaves its victims) holds its CPUs in the
// cache until the API server has deleted it: filter rejects the node and
// bind refuses it for the preemptor, and both take it once it is gone.
func TestVictimsKeepTheirCPUs(t *testing.T) {
	s := newTestScheduler(t, testNode("n1", topologyJSON(8, "")))
	victim := boundPod("victim", "n1", 1, "0-5")
	if err := s.UpsertPod(victim); err != nil {
		t.Fatal(err)
	}
	terminating := victim.DeepCopy()
	now := metav1.Now()
	terminating.DeletionTimestamp = &now
	terminating.ResourceVersion = "2"
	if err := s.UpsertPod(terminating); err != nil {
		t.Fatal(err)
	}
	pod := preemptor(4, 10)
	if fits, failed, err := s.Filter(pod, []string{"n1"}); err != nil || len(fits) != 0 || !strings.Contains(failed["n1"].Message, "not enough free CPUs") {
		t.Fatalf("filter while the victim terminates: fits %v, failed %v, %v", fits, failed, err)
	}
	binder := newRecordingBinder()
	if _, err := s.Bind(context.Background(), pod, "n1", binder); err == nil || !IsBindConflict(err) {
		t.Fatalf("bind while the victim terminates: %v, want a conflict", err)
	}
	if len(s.Assumed()) != 0 {
		t.Fatalf("a refused bind left %v assumed", s.Assumed())
	}
	s.DeletePod(PodKey(victim))
	if fits, _, err := s.Filter(pod, []string{"n1"}); err != nil || len(fits) != 1 {
		t.Fatalf("filter once the victim is gone: %v, %v", fits, err)
	}
	st, err := s.Bind(context.Background(), pod, "n1", binder)
	if err != nil || st.CPUs.Size() != 4 {
		t.Fatalf("bind once the victim is gone: %+v, %v", st, err)
	}
}

// FuzzPreemptionArgs: decodePreemptionArgs accepts exactly the bodies that
// encoding/json (with the other verbs' decode rules: one value, nothing
// after it) accepts into the same fields, with the same result.
func FuzzPreemptionArgs(f *testing.F) {
	real, err := json.Marshal(extenderv1.ExtenderPreemptionArgs{Pod: preemptor(4, 10),
		NodeNameToMetaVictims: map[string]*extenderv1.MetaVictims{"n1": {Pods: []*extenderv1.MetaPod{{UID: "a"}, {UID: "b"}}, NumPDBViolations: 1}, "n2": nil}})
	if err != nil {
		f.Fatal(err)
	}
	victims, err := json.Marshal(extenderv1.ExtenderPreemptionArgs{Pod: preemptor(4, 10),
		NodeNameToVictims: map[string]*extenderv1.Victims{"n1": {Pods: []*v1.Pod{boundPod("a", "n1", 1, "0-1")}}}})
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range []string{string(real), string(victims), `{}`, `null`, ``, ` `, `[]`, `"x"`, `{} {}`, `{}x`,
		`{"pod":{"metadata":{"name":"p"}},"nodenametometavictims":{"n":{"pods":[{"uid":"\u00e9"},null],"numpdbviolations":-0}}}`,
		`{"NodeNameToMetaVictims":{"n":{"Pods":[{"UID":1}]}}}`, `{"NodeNameToMetaVictims":{"n":{"NumPDBViolations":1.5}}}`,
		`{"NodeNameToMetaVictims":{"n":{"NumPDBViolations":1e2}}}`, `{"NodeNameToMetaVictims":{"n":{"NumPDBViolations":01}}}`,
		`{"NodeNameToMetaVictims":{"a":{}},"NodeNameToMetaVictims":{"b":null}}`, `{"NodeNameToMetaVictims":{"a":{}},"NodeNameToMetaVictims":null}`,
		`{"Pod":{"spec":{"priority":3}},"Pod":{"metadata":{"name":"x"}}}`, `{"x":[1,{"y":"\""}],"Pod":null}`,
		`{"NodeNameToMetaVictims":{"n":{"Pods":[{"UID":"a","UID":null,"x":[]}]}}}`, `{"a":tru}`, `{"a":"\x01"}`, `{"a":"\q"}`,
		`{"NodeNameToMetaVictims":{"n":{"Pods":[,]}}}`, `{"NodeNameToMetaVictims":{"n":{"Pods":[{},]}}}`, `{"a":-}`, `{"a":1.}`, `{"a":1e}`} {
		f.Add(s)
	}
	for _, depth := range []int{9999, 10000, 10001} {
		f.Add(`{"x":` + strings.Repeat("[", depth-1) + strings.Repeat("]", depth-1) + `}`)
		f.Add(`{"NodeNameToMetaVictims":{"n":{"x":` + strings.Repeat("[", depth-3) + strings.Repeat("]", depth-3) + `}}}`)
	}
	type refArgs struct {
		Pod                   *wirePod                           `json:"Pod"`
		NodeNameToVictims     map[string]*wireVictims            `json:"NodeNameToVictims"`
		NodeNameToMetaVictims map[string]*extenderv1.MetaVictims `json:"NodeNameToMetaVictims"`
	}
	f.Fuzz(func(t *testing.T, body string) {
		var want refArgs
		wantErr := decode(httptest.NewRequest(http.MethodPost, "/preempt", strings.NewReader(body)), &want)
		got, gotErr := decodePreemptionArgs(body)
		if (wantErr == nil) != (gotErr == nil) {
			t.Fatalf("%q: encoding/json error %v, decodePreemptionArgs error %v", body, wantErr, gotErr)
		}
		if wantErr != nil {
			return
		}
		if !reflect.DeepEqual(want.Pod, got.Pod) || !reflect.DeepEqual(want.NodeNameToVictims, got.NodeNameToVictims) {
			t.Fatalf("%q: pod or NodeNameToVictims differ: %+v %+v / %+v %+v", body, want.Pod, want.NodeNameToVictims, got.Pod, got.NodeNameToVictims)
		}
		if (want.NodeNameToMetaVictims == nil) != (got.NodeNameToMetaVictims == nil) || len(want.NodeNameToMetaVictims) != len(got.NodeNameToMetaVictims) {
			t.Fatalf("%q: NodeNameToMetaVictims %v, want %v", body, got.NodeNameToMetaVictims, want.NodeNameToMetaVictims)
		}
		for node, w := range want.NodeNameToMetaVictims {
			g, ok := got.NodeNameToMetaVictims[node]
			if !ok || (w == nil) != (g == nil) {
				t.Fatalf("%q: node %q: %+v, want %+v", body, node, g, w)
			}
			if w == nil {
				continue
			}
			if w.NumPDBViolations != g.NumPDBViolations || len(w.Pods) != len(g.Pods) || (w.Pods == nil) != (g.Pods == nil) {
				t.Fatalf("%q: node %q: %+v, want %+v", body, node, g, w)
			}
			for i := range w.Pods {
				if (w.Pods[i] == nil) != (g.Pods[i] == nil) || w.Pods[i] != nil && w.Pods[i].UID != g.Pods[i].UID {
					t.Fatalf("%q: node %q pod %d: %+v, want %+v", body, node, i, g.Pods[i], w.Pods[i])
				}
			}
		}
	})
}

// TestFilterConfirmsTerminatingVictims: for a pod nominated to a node,
// filter asks the API server about the node's terminating pods and forgets
// those already gone (the informer lagging behind kube-scheduler's), so the
// node is not rejected for CPUs nobody holds; victims still there keep
// their CPUs, and nothing is asked for a pod without a nominated node.
func TestFilterConfirmsTerminatingVictims(t *testing.T) {
	for _, tc := range []struct {
		name      string
		inAPI     func(victim *v1.Pod) *v1.Pod // what the API server has under the victim's name
		nominated string
		fits      bool
		gets      int
	}{
		{"gone from the API server", func(*v1.Pod) *v1.Pod { return nil }, "n1", true, 1},
		{"replaced by a pod of the same name", func(v *v1.Pod) *v1.Pod { p := v.DeepCopy(); p.UID = "other"; return p }, "n1", true, 1},
		{"still terminating", func(v *v1.Pod) *v1.Pod { return v }, "n1", false, 1},
		{"not nominated: nothing asked", func(*v1.Pod) *v1.Pod { return nil }, "", false, 0},
		{"nominated elsewhere: nothing asked about n1", func(*v1.Pod) *v1.Pod { return nil }, "n2", false, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newTestScheduler(t, testNode("n1", topologyJSON(8, "")), testNode("n2", topologyJSON(8, "")))
			victim := boundPod("victim", "n1", 1, "0-5")
			now := metav1.Now()
			victim.DeletionTimestamp = &now
			if err := s.UpsertPod(victim); err != nil {
				t.Fatal(err)
			}
			if err := s.UpsertPod(boundPod("full", "n2", 1, "0-7")); err != nil {
				t.Fatal(err)
			}
			client := fake.NewClientset()
			if p := tc.inAPI(victim); p != nil {
				if _, err := client.CoreV1().Pods("default").Create(context.Background(), p, metav1.CreateOptions{}); err != nil {
					t.Fatal(err)
				}
			}
			client.ClearActions()
			srv := &Server{Sched: s, Client: client}
			pod := preemptor(4, 10)
			pod.Status.NominatedNodeName = tc.nominated
			names := []string{"n1"}
			rec := post(t, srv.Handler(), "/filter", extenderv1.ExtenderArgs{Pod: pod, NodeNames: &names})
			var fr extenderv1.ExtenderFilterResult
			if err := json.Unmarshal(rec.Body.Bytes(), &fr); err != nil || rec.Code != http.StatusOK {
				t.Fatalf("filter: %d %s", rec.Code, rec.Body)
			}
			if fits := fr.NodeNames != nil && len(*fr.NodeNames) == 1; fits != tc.fits {
				t.Fatalf("n1 fits: %v (%v), want %v", fits, fr.FailedNodes, tc.fits)
			}
			if got := len(client.Actions()); got != tc.gets {
				t.Fatalf("%d API calls, want %d: %v", got, tc.gets, client.Actions())
			}
			if placed := s.Placed("default/victim"); placed == tc.fits {
				t.Fatalf("victim placed: %v", placed)
			}
		})
	}
}

// The order Preempt keeps per node follows the node's pods: a victim gone,
// a pod added, a priority changed and the node's topology replaced each
// show in the next answer.
func TestPreemptFollowsTheNodesPods(t *testing.T) {
	s := newTestScheduler(t, testNode("n1", topologyJSON(8, "")))
	upsert := func(p *v1.Pod) {
		t.Helper()
		if err := s.UpsertPod(p); err != nil {
			t.Fatal(err)
		}
	}
	victims := func(proposed ...string) []string {
		t.Helper()
		mv := &extenderv1.MetaVictims{}
		for _, name := range proposed {
			mv.Pods = append(mv.Pods, &extenderv1.MetaPod{UID: "uid-" + name})
		}
		answer, err := s.Preempt(preemptor(4, 10), map[string]*extenderv1.MetaVictims{"n1": mv})
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		if a := answer["n1"]; a != nil {
			for _, m := range a.Pods {
				names = append(names, strings.TrimPrefix(m.UID, "uid-"))
			}
		}
		return names
	}
	upsert(boundPod("a", "n1", 1, "0-3"))
	upsert(boundPod("b", "n1", 5, "4-7"))
	if got := victims("b"); !slices.Equal(got, []string{"a"}) {
		t.Fatalf("victims %v, want [a]", got)
	}
	// a gone, c at priority 0 on its CPUs.
	if !s.DeletePod("default/a") {
		t.Fatal("a was not placed")
	}
	upsert(boundPod("c", "n1", 0, "0-3"))
	if got := victims("b"); !slices.Equal(got, []string{"c"}) {
		t.Fatalf("after a went and c came: victims %v, want [c]", got)
	}
	// b's priority drops to c's: the tie goes to kube-scheduler's proposal.
	upsert(boundPod("b", "n1", 0, "4-7"))
	if got := victims("b"); !slices.Equal(got, []string{"b"}) {
		t.Fatalf("after b's priority fell: victims %v, want [b]", got)
	}
	if got := victims("c"); !slices.Equal(got, []string{"c"}) {
		t.Fatalf("proposing c: victims %v, want [c]", got)
	}
	// Another topology (12 CPUs): the preemptor fits on the 4 free ones,
	// so the answer is kube-scheduler's own proposal.
	s.UpsertNode(testNode("n1", topologyJSON(12, "")))
	if got := victims("c"); !slices.Equal(got, []string{"c"}) {
		t.Fatalf("after the node grew: victims %v, want [c] (the proposal)", got)
	}
	if got := victims(); len(got) != 0 {
		t.Fatalf("after the node grew, nothing proposed: victims %v, want none", got)
	}
}

// A placement under the preemptor's own key (an older pod of that name, or
// the preemptor assumed by a bind that failed) is never its victim.
func TestPreemptNeverNamesThePreemptor(t *testing.T) {
	s := newTestScheduler(t, testNode("n1", topologyJSON(8, "")))
	older := boundPod("urgent", "n1", 1, "0-3")
	for _, p := range []*v1.Pod{older, boundPod("a", "n1", 1, "4-7")} {
		if err := s.UpsertPod(p); err != nil {
			t.Fatal(err)
		}
	}
	answer, err := s.Preempt(preemptor(4, 10), map[string]*extenderv1.MetaVictims{"n1": {Pods: []*extenderv1.MetaPod{{UID: "uid-urgent"}}}})
	if err != nil {
		t.Fatal(err)
	}
	if a := answer["n1"]; a == nil || len(a.Pods) != 1 || a.Pods[0].UID != "uid-a" {
		t.Fatalf("answer %+v, want pod a on n1", answer["n1"])
	}
}
