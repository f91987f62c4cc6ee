package extender

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/cpuset"

	"github.com/corepin/corepin/api"
	"github.com/corepin/corepin/policy"
)

// topologyJSON is a node without SMT with cpus CPUs on one NUMA node.
func topologyJSON(cpus int, reserved string) string {
	var b strings.Builder
	b.WriteString(`{"version":1,"cpus":[`)
	for i := 0; i < cpus; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"id":%d,"core":%d,"socket":0,"numa":0,"l3":0}`, i, i)
	}
	fmt.Fprintf(&b, `],"reserved":%q}`, reserved)
	return b.String()
}

func testNode(name, topo string) *v1.Node {
	return &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: map[string]string{api.AnnotationTopology: topo}}}
}

func testPod(name string, cpus int, exclusive bool) *v1.Pod {
	p := &v1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name, Annotations: map[string]string{}},
		Spec: v1.PodSpec{Containers: []v1.Container{{Name: "main", Resources: v1.ResourceRequirements{
			Limits: v1.ResourceList{v1.ResourceCPU: *resource.NewQuantity(int64(cpus), resource.DecimalSI)}}}}}}
	if exclusive {
		p.Annotations[api.AnnotationCPUMode] = "exclusive"
	}
	return p
}

// recordingBinder records what a bind wrote, and can fail on demand.
type recordingBinder struct {
	mu       sync.Mutex
	statuses map[string]string
	nodes    map[string]string
	failBind error
}

func newRecordingBinder() *recordingBinder {
	return &recordingBinder{statuses: map[string]string{}, nodes: map[string]string{}}
}

func (b *recordingBinder) Bind(_ context.Context, pod *v1.Pod, node, allocStatus string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.failBind != nil {
		return b.failBind
	}
	if allocStatus != "" {
		b.statuses[PodKey(pod)] = allocStatus
	}
	b.nodes[PodKey(pod)] = node
	return nil
}

func newTestScheduler(t *testing.T, nodes ...*v1.Node) *Scheduler {
	t.Helper()
	one := 1.0
	s, err := NewScheduler(api.Config{NodePolicy: api.NodePolicy{MaxExclusiveRatio: &one}})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		s.UpsertNode(n)
	}
	return s
}

// Concurrent binds to one node never hand out the same CPU, and the ones
// that lose the race fail (so kube-scheduler retries them).
func TestConcurrentBindsNeverOverlap(t *testing.T) {
	s := newTestScheduler(t, testNode("n1", topologyJSON(16, "")))
	binder := newRecordingBinder()
	var wg sync.WaitGroup
	errs := make([]error, 12)
	for i := range errs {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			_, errs[i] = s.Bind(context.Background(), testPod(fmt.Sprintf("p%d", i), 2, true), "n1", binder)
		}(i)
	}
	wg.Wait()
	held, ok, failed := cpuset.New(), 0, 0
	for i, err := range errs {
		if err != nil {
			failed++
			continue
		}
		ok++
		st, perr := api.ParseAllocStatus(binder.statuses[fmt.Sprintf("default/p%d", i)])
		if perr != nil {
			t.Fatal(perr)
		}
		if overlap := held.Intersection(st.CPUs.Set()); !overlap.IsEmpty() {
			t.Fatalf("CPUs %s given twice", overlap)
		}
		held = held.Union(st.CPUs.Set())
	}
	if ok != 8 || failed != 4 {
		t.Fatalf("%d binds succeeded and %d failed, want 8 and 4 on 16 CPUs", ok, failed)
	}
}

func TestFailedBindIsForgotten(t *testing.T) {
	s := newTestScheduler(t, testNode("n1", topologyJSON(4, "")))
	binder := newRecordingBinder()
	binder.failBind = errors.New("conflict")
	if _, err := s.Bind(context.Background(), testPod("a", 4, true), "n1", binder); err == nil || !strings.Contains(err.Error(), "conflict") {
		t.Fatalf("bind error %v", err)
	}
	if n, _ := s.NodeSnapshot("n1"); n.Capacity().E != 0 || len(s.Assumed()) != 0 {
		t.Fatalf("a failed bind left CPUs held: %+v", n.Capacity())
	}
	binder.failBind = nil
	if _, err := s.Bind(context.Background(), testPod("a", 4, true), "n1", binder); err != nil {
		t.Fatalf("retry: %v", err)
	}
}

// The informer's view confirms an assumed pod; a restart rebuilds the same
// state from the pods' annotations alone.
func TestRebuildFromAnnotations(t *testing.T) {
	s := newTestScheduler(t, testNode("n1", topologyJSON(8, "0")))
	binder := newRecordingBinder()
	pod := bindAndConfirm(t, s, testPod("a", 3, true), "n1", binder)
	if len(s.Assumed()) != 0 {
		t.Fatalf("confirmed, still assumed %v", s.Assumed())
	}
	restarted := newTestScheduler(t, testNode("n1", topologyJSON(8, "0")))
	if err := restarted.UpsertPod(pod); err != nil {
		t.Fatal(err)
	}
	before, _ := s.NodeSnapshot("n1")
	after, _ := restarted.NodeSnapshot("n1")
	if !before.Exclusive().Equals(after.Exclusive()) || after.Exclusive().Size() != 3 {
		t.Fatalf("rebuilt %s, want %s", after.Exclusive(), before.Exclusive())
	}
}

// Informers deliver pods and nodes in any order: an exclusive pod seen
// before its node keeps its CPUs once the node's topology arrives.
func TestPodBeforeNode(t *testing.T) {
	s := newTestScheduler(t)
	pod := testPod("a", 2, true)
	pod.Spec.NodeName = "n1"
	pod.Annotations[api.AnnotationAllocStatus] = `{"node":"n1","cpus":"0-1","containers":{"main":"0-1"},"mems":"0"}`
	if err := s.UpsertPod(pod); err != nil {
		t.Fatal(err)
	}
	s.UpsertNode(testNode("n1", topologyJSON(8, "")))
	n, _ := s.NodeSnapshot("n1")
	if n.Exclusive().String() != "0-1" {
		t.Fatalf("exclusive CPUs %q after the node arrived, want 0-1", n.Exclusive())
	}
	if _, err := s.Bind(context.Background(), testPod("b", 8, true), "n1", newRecordingBinder()); err == nil {
		t.Fatal("a pod got CPUs 0-1 again")
	}
}

// A pod whose alloc-status overlaps another's is counted as shared and
// reported: it never takes the other pod's cores.
func TestConflictingPodDisturbsNobody(t *testing.T) {
	s := newTestScheduler(t, testNode("n1", topologyJSON(8, "")))
	mk := func(name, cpus string) *v1.Pod {
		p := testPod(name, 2, true)
		p.Spec.NodeName = "n1"
		p.Annotations[api.AnnotationAllocStatus] = fmt.Sprintf(`{"node":"n1","cpus":%q,"containers":{"main":%q},"mems":"0"}`, cpus, cpus)
		return p
	}
	if err := s.UpsertPod(mk("a", "2-3")); err != nil {
		t.Fatal(err)
	}
	err := s.UpsertPod(mk("b", "3-4"))
	if err == nil || !strings.Contains(err.Error(), "CPU 3 is held by pod default/a") {
		t.Fatalf("conflict error %v", err)
	}
	n, _ := s.NodeSnapshot("n1")
	if h, _ := n.Holder(3); h == nil || h.Key != "default/a" || n.Exclusive().String() != "2-3" {
		t.Fatalf("exclusive %s after a conflicting pod", n.Exclusive())
	}
}

// TestUnparsedPodKeepsItsCPUs: a bound pod whose other corepin
// annotations no longer parse (edited after binding, or a value a newer
// extender refuses, such as max-per-node "02") keeps the CPUs of its valid
// alloc-status, which the node plugin goes on enforcing; its other
// containers and native sidecars count as shared. The next exclusive pod
// gets other CPUs.
func TestUnparsedPodKeepsItsCPUs(t *testing.T) {
	for name, bad := range map[string]map[string]string{
		"max-per-node 02":  {api.AnnotationMaxPerNode: "02"},
		"cpu-mode garbled": {api.AnnotationCPUMode: "dedicated"},
	} {
		t.Run(name, func(t *testing.T) {
			s := newTestScheduler(t, testNode("n1", topologyJSON(8, "")))
			always := v1.ContainerRestartPolicyAlways
			old := testPod("old", 2, true)
			old.Spec.NodeName = "n1"
			old.Spec.Containers = append(old.Spec.Containers, v1.Container{Name: "log", Resources: v1.ResourceRequirements{
				Limits: v1.ResourceList{v1.ResourceCPU: resource.MustParse("500m")}}})
			old.Spec.InitContainers = []v1.Container{{Name: "proxy", RestartPolicy: &always, Resources: v1.ResourceRequirements{
				Limits: v1.ResourceList{v1.ResourceCPU: resource.MustParse("1")}}}}
			old.Annotations[api.AnnotationAllocStatus] = `{"node":"n1","cpus":"1-2","containers":{"main":"1-2"},"mems":"0"}`
			for k, v := range bad {
				old.Annotations[k] = v
			}
			if err := s.UpsertPod(old); err == nil {
				t.Fatal("no error for the unparsable pod")
			}
			n, _ := s.NodeSnapshot("n1")
			if got := n.Exclusive().String(); got != "1-2" {
				t.Fatalf("exclusive CPUs %q after the unparsable pod, want its alloc-status 1-2", got)
			}
			if c := n.Capacity(); c.S != 1500 {
				t.Fatalf("shared amount %dm, want 1500m (log 500m + native sidecar 1)", c.S)
			}
			status, err := s.Bind(context.Background(), testPod("new", 2, true), "n1", newRecordingBinder())
			if err != nil || status.CPUs.Set().Contains(1) || status.CPUs.Set().Contains(2) {
				t.Fatalf("next pod got %v (%v), overlapping the unparsable pod's 1-2", status, err)
			}
		})
	}
}

func TestIncompatibleTopologyChange(t *testing.T) {
	s := newTestScheduler(t, testNode("n1", topologyJSON(8, "")))
	if upd := s.UpsertNode(testNode("n1", topologyJSON(12, ""))); upd.Attention != "" {
		t.Fatalf("a compatible grow needs attention: %s", upd.Attention)
	}
	upd := s.UpsertNode(testNode("n1", topologyJSON(6, "")))
	if !strings.Contains(upd.Attention, "CPU 6 went offline") {
		t.Fatalf("attention %q", upd.Attention)
	}
	fits, failed, err := s.Filter(testPod("a", 1, true), []string{"n1"})
	if err != nil || len(fits) != 0 || !strings.Contains(failed["n1"].Message, "needs attention") || failed["n1"].Code != policy.CodeAttention {
		t.Fatalf("filter on an attention node: %v %v %v", fits, failed, err)
	}
	if fits, _, _ := s.Filter(testPod("b", 1, false), []string{"n1"}); len(fits) != 1 {
		t.Fatal("a shared pod was refused by an attention node")
	}
	// The extender records the reason on the node; while it is there the
	// node keeps its old topology and takes no exclusive pods.
	marked := testNode("n1", topologyJSON(6, ""))
	marked.Annotations[api.AnnotationNodeAttention] = upd.Attention
	s.UpsertNode(marked)
	if n, _ := s.NodeSnapshot("n1"); n.Attention == "" || n.Topo.Online().Size() != 12 {
		t.Fatalf("attention lost: %q, %d CPUs", n.Attention, n.Topo.Online().Size())
	}
	// The operator resolves it by removing the annotation.
	s.UpsertNode(testNode("n1", topologyJSON(6, "")))
	if n, _ := s.NodeSnapshot("n1"); n.Attention != "" || n.Topo.Online().Size() != 6 {
		t.Fatalf("after resolution: attention %q, %d CPUs", n.Attention, n.Topo.Online().Size())
	}
}

func TestPipelines(t *testing.T) {
	cfg, err := api.ParseConfig("cfg", []byte("pipelines:\n- name: relaxed\n  selector: {matchLabels: {tier: batch}}\n  filters: [topology]\n"))
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewScheduler(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s.UpsertNode(testNode("n1", topologyJSON(3, "")))
	big := testPod("big", 3, true) // over floor(2/3*3) = 2
	if fits, _, _ := s.Filter(big, []string{"n1"}); len(fits) != 0 {
		t.Fatal("default pipeline skipped the capacity filter")
	}
	big.Labels = map[string]string{"tier": "batch"}
	if fits, _, _ := s.Filter(big, []string{"n1"}); len(fits) != 1 {
		t.Fatal("the relaxed pipeline ran the capacity filter")
	}
	// Bind still enforces every rule.
	if _, err := s.Bind(context.Background(), big, "n1", newRecordingBinder()); err == nil {
		t.Fatal("bind ignored the capacity rule")
	}
}

// TestFilterPrioritizeInChunks: on a cluster large enough to be walked in
// parallel, filter and prioritize answer exactly what a walk of one node at
// a time answers, in the candidates' order.
func TestFilterPrioritizeInChunks(t *testing.T) {
	s, names, _ := populate(t, 3*chunkNodes+17, 3)
	// Fill some nodes so the answers differ from node to node.
	for i := 0; i < len(names); i += 7 {
		for j := 0; j < 60; j++ {
			first := 40 + 4*j
			if first+3 >= 128 { // 128-129 are reserved
				break
			}
			status := fmt.Sprintf(`{"node":%q,"cpus":"%d-%d","containers":{"main":"%d-%d"},"mems":"0"}`, names[i], first, first+3, first, first+3)
			if err := s.UpsertPod(benchPod(1_000_000+i*100+j, names[i], status)); err != nil {
				t.Fatal(err)
			}
		}
	}
	pod := benchPod(0, "", "")
	pod.Name = "incoming"
	pod.Annotations[api.AnnotationCPUMode] = "exclusive"
	// 128 CPUs fit an empty node and not a filled one.
	pod.Spec.Containers[0].Resources.Limits[v1.ResourceCPU] = resource.MustParse("128")
	candidates := append(slices.Clone(names), "no-such-node")
	fits, failed, err := s.Filter(pod, candidates)
	if err != nil {
		t.Fatal(err)
	}
	req, err := s.request(pod)
	if err != nil {
		t.Fatal(err)
	}
	var wantFits []string
	for _, name := range candidates {
		n, ok := s.engines[name]
		switch {
		case !ok:
			if failed[name] == nil || failed[name].Code != policy.CodeUnknownNode {
				t.Errorf("%s: unknown node not in failed", name)
			}
		case n.Check(req, api.AllFilters) != nil:
			if want := n.Check(req, api.AllFilters); failed[name] == nil || failed[name].Message != want.Error() || failed[name].Code != policy.CodeOf(want) {
				t.Errorf("%s: failed %v, want %q", name, failed[name], want)
			}
		default:
			wantFits = append(wantFits, name)
		}
	}
	if len(wantFits) == len(names) || len(wantFits) == 0 {
		t.Fatalf("test setup: %d of %d nodes fit; want some of each", len(wantFits), len(names))
	}
	if !slices.Equal(fits, wantFits) {
		t.Fatalf("filter kept %d nodes, want %d (order and content must match)", len(fits), len(wantFits))
	}
	scores, err := s.Prioritize(pod, candidates)
	if err != nil {
		t.Fatal(err)
	}
	for i, name := range candidates {
		want := 0
		if n, ok := s.engines[name]; ok {
			want = n.Score(req, s.cfg.Strategy())
		}
		if scores[i].Host != name || scores[i].Score != int64(want) {
			t.Fatalf("score %d = %+v, want %s %d", i, scores[i], name, want)
		}
	}
}

// bindAndConfirm binds pod to node and shows it bound, as the informer
// would, with the alloc-status the bind wrote.
func bindAndConfirm(t *testing.T, s *Scheduler, pod *v1.Pod, node string, binder Binder) *v1.Pod {
	t.Helper()
	status, err := s.Bind(context.Background(), pod, node, binder)
	if err != nil {
		t.Fatal(err)
	}
	pod.Annotations[api.AnnotationAllocStatus] = status.String()
	pod.Spec.NodeName = node
	if err := s.UpsertPod(pod); err != nil {
		t.Fatalf("confirm: %v", err)
	}
	return pod
}

// An assumed pod's deadline starts when its bind succeeds and lives with
// the pod: Expire forgets it after the TTL, a confirmed pod never expires.
func TestAssumedPodExpires(t *testing.T) {
	s := newTestScheduler(t, testNode("n1", topologyJSON(8, "0")))
	s.SetAssumeTTL(time.Minute)
	binder := newRecordingBinder()
	start := time.Now()
	if _, err := s.Bind(context.Background(), testPod("lost", 2, true), "n1", binder); err != nil {
		t.Fatal(err)
	}
	bindAndConfirm(t, s, testPod("seen", 2, true), "n1", binder)
	if got := s.Expire(start.Add(30 * time.Second)); len(got) != 0 {
		t.Fatalf("expired %v before the TTL", got)
	}
	if got := s.Expire(start.Add(2 * time.Minute)); !slices.Equal(got, []string{"default/lost"}) {
		t.Fatalf("expired %v, want [default/lost]", got)
	}
	if s.Placed("default/lost") || !s.Placed("default/seen") || len(s.Assumed()) != 0 {
		t.Fatalf("after expiry: lost placed %v, seen placed %v, assumed %v", s.Placed("default/lost"), s.Placed("default/seen"), s.Assumed())
	}
	if n, _ := s.NodeSnapshot("n1"); n.Exclusive().Size() != 2 {
		t.Fatalf("exclusive CPUs %s after expiry, want the confirmed pod's 2", n.Exclusive())
	}
}
