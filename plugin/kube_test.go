package plugin

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/containerd/nri/pkg/api"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/cpuset"

	corepin "github.com/corepin/corepin/api"
)

func eventually(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestWatchPodsFollowsTheReleaseSwitch drives the release switch through a
// pod informer (client-go fake): annotate, and the exclusive container's
// update is pending; a malformed value leaves the pod pinned.
func TestWatchPodsFollowsTheReleaseSwitch(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	p := newTestPlugin(t)
	if _, _, err := p.CreateContainer(ctx, exclusivePod("s-db", "db", "2-3"), ctr("c-db", "s-db", "engine", 2000, "")); err != nil {
		t.Fatal(err)
	}
	pod := &v1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "db", Annotations: map[string]string{corepin.AnnotationCPUMode: "exclusive"}},
		Spec: v1.PodSpec{NodeName: "node-a", Containers: []v1.Container{{Name: "engine",
			Resources: v1.ResourceRequirements{Limits: v1.ResourceList{v1.ResourceCPU: resource.MustParse("2")}}}}}}
	client := fake.NewClientset(pod)
	WatchPods(ctx, client, "node-a", p, log)

	set := func(value string) {
		t.Helper()
		pod.Annotations[corepin.AnnotationReleaseIsolateMode] = value
		if _, err := client.CoreV1().Pods("default").Update(ctx, pod, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	waitUpdate := func(want string) {
		t.Helper()
		var got []string
		eventually(t, "the container update to "+want, func() bool {
			select {
			case <-p.Pending():
			case <-time.After(20 * time.Millisecond):
			}
			for _, u := range p.PendingUpdates() {
				got = append(got, cpusOf(u))
			}
			return len(got) > 0 && got[len(got)-1] == want
		})
	}
	set("true")
	waitUpdate("1-7")
	set("banana") // malformed: pinned again, and logged
	waitUpdate("2-3")
	set("true")
	waitUpdate("1-7")
	delete(pod.Annotations, corepin.AnnotationReleaseIsolateMode)
	if _, err := client.CoreV1().Pods("default").Update(ctx, pod, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitUpdate("2-3")
}

// TestPublishSharedPool checks the node annotation follows the pool.
func TestPublishSharedPool(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	p := newTestPlugin(t)
	client := fake.NewClientset(&v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-a"}})
	go PublishSharedPool(ctx, client, "node-a", p, time.Millisecond, log)
	published := func() string {
		n, err := client.CoreV1().Nodes().Get(ctx, "node-a", metav1.GetOptions{})
		if err != nil {
			return ""
		}
		s, err := corepin.ParseSharedPoolStatus(n.Annotations[corepin.AnnotationSharedPool])
		if err != nil {
			return ""
		}
		return s.CPUs.String()
	}
	eventually(t, "the initial pool published", func() bool { return published() == "1-7" })
	if _, _, err := p.CreateContainer(ctx, exclusivePod("s-db", "db", "2-3"), ctr("c-db", "s-db", "engine", 2000, "")); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the shrunk pool published", func() bool { return published() == "1,4-7" })
}

// TestNodePolicyFollowsTheNode: the node's corepin.io/node-policy (watched
// on the fake API server) changes the plugin's capacity formula the way
// the extender merges it (defaults, then the node's fields); malformed or
// removed, the defaults come back.
func TestNodePolicyFollowsTheNode(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	p := newTestPlugin(t) // P = 7: default limit floor(2/3*7) = 4
	node := &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-a", Annotations: map[string]string{
		corepin.AnnotationNodePolicy: `{"maxExclusiveRatio": 1.0}`}}}
	client := fake.NewClientset(node, &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-b"}})
	WatchNode(ctx, client, "node-a", log, p.NodePolicyHandler(log))
	limit := func() int { return p.Capacity().ExclusiveLimit }
	for _, tc := range []struct {
		name   string
		policy *string
		limit  int
	}{
		{"ratio 1 at start", nil, 7},
		{"headroom 3 beside the ratio", ptr(`{"maxExclusiveRatio": 1.0, "sharedHeadroom": 3}`), 7},
		{"ratio 0.5", ptr(`{"maxExclusiveRatio": 0.5}`), 3},
		{"malformed: defaults", ptr(`{"maxExclusiveRatio": 2}`), 4},
		{"ratio 1 again", ptr(`{"maxExclusiveRatio": 1}`), 7},
		{"removed: defaults", ptr(""), 4},
	} {
		if tc.policy != nil {
			if *tc.policy == "" {
				delete(node.Annotations, corepin.AnnotationNodePolicy)
			} else {
				node.Annotations[corepin.AnnotationNodePolicy] = *tc.policy
			}
			if _, err := client.CoreV1().Nodes().Update(ctx, node, metav1.UpdateOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		eventually(t, tc.name, func() bool { return limit() == tc.limit })
	}
	// Under ratio 1 a placement of 5 CPUs the default formula refuses is admitted.
	node.Annotations[corepin.AnnotationNodePolicy] = `{"maxExclusiveRatio": 1}`
	if _, err := client.CoreV1().Nodes().Update(ctx, node, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "ratio 1", func() bool { return limit() == 7 })
	if _, _, err := p.CreateContainer(ctx, exclusivePod("s-db", "db", "2-6"), ctr("c-db", "s-db", "engine", 5000, "")); err != nil {
		t.Fatalf("a 5-CPU placement under maxExclusiveRatio 1: %v", err)
	}
}

func ptr[T any](v T) *T { return &v }

// TestTopologyRediscoveredWithoutAPI: run without API access, the
// publisher still re-discovers every interval and tells the plugin of a
// changed host, so CPUs brought online are adopted standalone too.
func TestTopologyRediscoveredWithoutAPI(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var mu sync.Mutex
	n := 4
	started := make(chan struct{})
	var once sync.Once
	discover := func() (corepin.Topology, error) {
		defer once.Do(func() { close(started) })
		mu.Lock()
		defer mu.Unlock()
		src := corepin.Topology{Version: 1, Reserved: corepin.NewCPUList(cpuset.New(0))}
		for i := 0; i < n; i++ {
			src.CPUs = append(src.CPUs, corepin.CPUInfo{ID: i, Core: i})
		}
		return src, nil
	}
	pub := NewTopologyPublisher(nil, "node-a", discover, 20*time.Millisecond, slog.New(slog.NewTextHandler(io.Discard, nil)))
	changes := make(chan int, 10)
	pub.OnChange = func(tp corepin.Topology) error { changes <- len(tp.CPUs); return nil }
	go pub.Run(ctx)
	<-started // the 4-CPU host is what the plugin started with
	mu.Lock()
	n = 6
	mu.Unlock()
	select {
	case got := <-changes:
		if got != 6 {
			t.Fatalf("told of %d CPUs, want 6", got)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the grown host was never reported without API access")
	}
}

// TestTopologyIsRepublished: the topology annotation is written at start,
// written again when someone removes it from the node, and rewritten when
// the host's topology changes (re-discovered every interval).
func TestTopologyIsRepublished(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	topo := func(n int) corepin.Topology {
		src := corepin.Topology{Version: 1, Reserved: corepin.NewCPUList(cpuset.New(0))}
		for i := 0; i < n; i++ {
			src.CPUs = append(src.CPUs, corepin.CPUInfo{ID: i, Core: i})
		}
		return src
	}
	var mu sync.Mutex
	current := topo(4)
	discover := func() (corepin.Topology, error) {
		mu.Lock()
		defer mu.Unlock()
		return current, nil
	}
	node := &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-a", Annotations: map[string]string{"other": "kept"}}}
	client := fake.NewClientset(node)
	pub := NewTopologyPublisher(client, "node-a", discover, 50*time.Millisecond, log)
	changes := make(chan int, 10)
	pub.OnChange = func(tp corepin.Topology) error { changes <- len(tp.CPUs); return nil }
	WatchNode(ctx, client, "node-a", log, pub.NodeHandler())
	go pub.Run(ctx)
	annotation := func() string {
		n, err := client.CoreV1().Nodes().Get(ctx, "node-a", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return n.Annotations[corepin.AnnotationTopology]
	}
	cpus := func(value string) int {
		if value == "" {
			return 0
		}
		tp, err := corepin.ParseTopology(value)
		if err != nil {
			t.Fatalf("published topology %q: %v", value, err)
		}
		return len(tp.CPUs)
	}
	for _, tc := range []struct {
		name string
		step func()
		cpus int
	}{
		{"published at start", func() {}, 4},
		{"annotation removed: restored", func() {
			n, _ := client.CoreV1().Nodes().Get(ctx, "node-a", metav1.GetOptions{})
			delete(n.Annotations, corepin.AnnotationTopology)
			if _, err := client.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{}); err != nil {
				t.Fatal(err)
			}
		}, 4},
		{"host grew: republished", func() {
			mu.Lock()
			current = topo(8)
			mu.Unlock()
		}, 8},
		{"annotation overwritten: restored", func() {
			n, _ := client.CoreV1().Nodes().Get(ctx, "node-a", metav1.GetOptions{})
			n.Annotations[corepin.AnnotationTopology] = `{"version":1,"cpus":[{"id":0,"core":0,"socket":0,"numa":0,"l3":0}]}`
			if _, err := client.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{}); err != nil {
				t.Fatal(err)
			}
		}, 8},
	} {
		tc.step()
		eventually(t, tc.name, func() bool { return cpus(annotation()) == tc.cpus })
	}
	n, _ := client.CoreV1().Nodes().Get(ctx, "node-a", metav1.GetOptions{})
	if n.Annotations["other"] != "kept" {
		t.Fatalf("other annotations lost: %v", n.Annotations)
	}
	// The plugin was told of the host's change once, and of nothing else.
	if len(changes) != 1 || <-changes != 8 {
		t.Fatalf("OnChange calls: %d", len(changes)+1)
	}
}

// TestSlimObjects: the informers' transforms keep what the plugin reads
// and nothing else.
func TestSlimObjects(t *testing.T) {
	pod := &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "db", UID: "u1", ResourceVersion: "7", Labels: map[string]string{"app": "db"},
			Annotations: map[string]string{
				corepin.AnnotationReleaseIsolateMode:   "true",
				corepin.AnnotationExcludeReserveCPUSet: "false",
				corepin.AnnotationAllocStatus:          `{"node":"n"}`,
				"kubectl.kubernetes.io/last-applied":   "{...}",
			}},
		Spec: v1.PodSpec{NodeName: "node-a", Containers: []v1.Container{
			{Name: "engine", Image: "db:1", Env: []v1.EnvVar{{Name: "A", Value: "b"}}, Resources: v1.ResourceRequirements{
				Limits:   v1.ResourceList{v1.ResourceCPU: resource.MustParse("2"), v1.ResourceMemory: resource.MustParse("1Gi")},
				Requests: v1.ResourceList{v1.ResourceCPU: resource.MustParse("1")}}},
			{Name: "sidecar"},
		}, InitContainers: []v1.Container{
			{Name: "migrate", Image: "db:1", Resources: v1.ResourceRequirements{Limits: v1.ResourceList{v1.ResourceCPU: resource.MustParse("2")}}},
			{Name: "proxy", Image: "proxy:1", RestartPolicy: ptr(v1.ContainerRestartPolicyAlways)},
		}},
		Status: v1.PodStatus{Phase: v1.PodRunning},
	}
	node := &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-a", UID: "n1", ResourceVersion: "9", Labels: map[string]string{"zone": "a"},
		Annotations: map[string]string{corepin.AnnotationNodePolicy: "{}", corepin.AnnotationTopology: "{}", corepin.AnnotationSharedPool: "{}", "other": "x",
			corepin.AnnotationReleaseAll: "true", corepin.AnnotationReleaseAllDone: "2026-01-01T00:00:00Z"}},
		Status: v1.NodeStatus{Capacity: v1.ResourceList{v1.ResourceCPU: resource.MustParse("8")}}}
	cpu := func(q string) v1.ResourceList { return v1.ResourceList{v1.ResourceCPU: resource.MustParse(q)} }
	for _, tc := range []struct {
		name      string
		transform func(any) (any, error)
		in, want  any
	}{
		{"pod", slimPod, pod, &v1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "db", UID: "u1", ResourceVersion: "7", Annotations: map[string]string{
				corepin.AnnotationReleaseIsolateMode: "true", corepin.AnnotationExcludeReserveCPUSet: "false",
				corepin.AnnotationAllocStatus: `{"node":"n"}`}}, // resize and the IO-queue check (SeeBound) read it
			Spec: v1.PodSpec{Containers: []v1.Container{
				{Name: "engine", Resources: v1.ResourceRequirements{Limits: cpu("2")}},
				{Name: "sidecar"}, // no limit: none invented
			}, InitContainers: []v1.Container{
				{Name: "migrate"}, // runs to completion: its name only
				{Name: "proxy", RestartPolicy: ptr(v1.ContainerRestartPolicyAlways)}, // a native sidecar
			}}}},
		{"node", slimNode, node, &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-a", UID: "n1", ResourceVersion: "9",
			Annotations: map[string]string{corepin.AnnotationNodePolicy: "{}", corepin.AnnotationTopology: "{}",
				corepin.AnnotationReleaseAll: "true", corepin.AnnotationReleaseAllDone: "2026-01-01T00:00:00Z"}}}},
		{"a tombstone passes through", slimPod, cache.DeletedFinalStateUnknown{Key: "default/db"}, cache.DeletedFinalStateUnknown{Key: "default/db"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.transform(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			if !equality.Semantic.DeepEqual(got, tc.want) {
				t.Fatalf("got %+v\nwant %+v", got, tc.want)
			}
		})
	}
	// The release switch read from the slim pod is the full pod's.
	slim, _ := slimPod(pod)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if r := releaseOf(slim.(*v1.Pod), log); !r.Isolate || r.ExcludeReserve || r.LimitMilli["engine"] != 2000 || len(r.LimitMilli) != 1 {
		t.Fatalf("release from the slim pod %+v", r)
	}
	// Init containers that run to completion are known; a native sidecar
	// is not one of them (it is counted like the pod's containers).
	if r := releaseOf(slim.(*v1.Pod), log); !r.Init["migrate"] || r.Init["proxy"] || len(r.Init) != 1 {
		t.Fatalf("init containers from the slim pod %v, want migrate only", r.Init)
	}
}

// TestWatchPodsRecreatedPodUnderTheSameName: default/db is released on the
// API server, then deleted and re-created under the same name. The new
// pod's container is created while the informer still has the old pod: it
// is pinned (the switch carries the old pod's UID); the informer's
// Delete(old) and Add(new) then leave it so.
func TestWatchPodsRecreatedPodUnderTheSameName(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	p := newTestPlugin(t)
	pod := func(uid string, annotations map[string]string) *v1.Pod {
		return &v1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "db", UID: types.UID(uid), Annotations: annotations},
			Spec: v1.PodSpec{NodeName: "node-a", Containers: []v1.Container{{Name: "engine",
				Resources: v1.ResourceRequirements{Limits: v1.ResourceList{v1.ResourceCPU: resource.MustParse("2")}}}}}}
	}
	client := fake.NewClientset(pod("uid-old", map[string]string{corepin.AnnotationReleaseIsolateMode: "true"}))
	WatchPods(ctx, client, "node-a", p, log)
	if r := inLedger(p, func(l *Ledger) Release { return l.release["default/db"] }); r.UID != "uid-old" || !r.Isolate {
		t.Fatalf("switch from the informer %+v, want uid-old released", r)
	}
	adj, _, err := p.CreateContainer(ctx, withUID(exclusivePod("s-new", "db", "2-3"), "uid-new"), ctr("c-new", "s-new", "engine", 2000, ""))
	if err != nil {
		t.Fatal(err)
	}
	if cpu := adj.GetLinux().GetResources().GetCpu(); cpu.GetCpus() != "2-3" || cpu.GetQuota() != nil {
		t.Fatalf("the new pod's container created with %v, want pinned on 2-3, quota untouched", cpu)
	}
	if err := client.CoreV1().Pods("default").Delete(ctx, "db", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the old pod's switch dropped", func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		_, ok := p.ledger.release["default/db"]
		return !ok
	})
	if _, err := client.CoreV1().Pods("default").Create(ctx, pod("uid-new", map[string]string{}), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the new pod's switch", func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.ledger.release["default/db"].UID == "uid-new"
	})
	if upd := p.PendingUpdates(); len(upd) != 0 {
		t.Fatalf("pending batch %v, want none (the container was never released)", updateMap(upd))
	}
}

// TestReleaseAllFollowsTheNode: the node's corepin.io/release-all (on the
// fake API server) switches the plugin's release-all, and the plugin keeps
// corepin.io/release-all-done on the node while it is done: written once
// every update went through, removed when release-all is removed or
// malformed, and a stale one (left from an earlier request) removed.
func TestReleaseAllFollowsTheNode(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	p := newTestPlugin(t)
	if _, err := p.Synchronize(ctx, []*api.PodSandbox{sandbox("s-web", "default", "web", nil)}, []*api.Container{ctr("c-web", "s-web", "app", 500, "1-7")}); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	applied := map[string]string{}
	go func() { // the plugin's own goroutine, against a runtime that applies everything
		for {
			select {
			case <-ctx.Done():
				return
			case <-p.Pending():
				p.PushPending(func(batch []*api.ContainerUpdate) ([]*api.ContainerUpdate, error) {
					mu.Lock()
					defer mu.Unlock()
					for k, v := range updateMap(batch) {
						applied[k] = v
					}
					return nil, nil
				})
			}
		}
	}()
	node := &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-a", Annotations: map[string]string{corepin.AnnotationReleaseAllDone: "2020-01-01T00:00:00Z"}}}
	client := fake.NewClientset(node)
	r := NewReleaseAllReporter(client, "node-a", p, log)
	go r.Run(ctx)
	WatchNode(ctx, client, "node-a", log, r.NodeHandler())
	done := func() string {
		n, err := client.CoreV1().Nodes().Get(ctx, "node-a", metav1.GetOptions{})
		if err != nil {
			return "?"
		}
		return n.Annotations[corepin.AnnotationReleaseAllDone]
	}
	set := func(value *string) {
		t.Helper()
		n, err := client.CoreV1().Nodes().Get(ctx, "node-a", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if value == nil {
			delete(n.Annotations, corepin.AnnotationReleaseAll)
		} else {
			n.Annotations[corepin.AnnotationReleaseAll] = *value
		}
		if _, err := client.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	web := func() string {
		mu.Lock()
		defer mu.Unlock()
		return applied["c-web"]
	}
	eventually(t, "the stale done removed", func() bool { return done() == "" })
	for _, tc := range []struct {
		name     string
		value    *string
		released bool
		cpus     string
	}{
		{"set", ptr("true"), true, "0-7"},
		{"malformed: pinned", ptr("yes"), false, "1-7"},
		{"set again", ptr("true"), true, "0-7"},
		{"false: pinned", ptr("false"), false, "1-7"},
		{"set once more", ptr("true"), true, "0-7"},
		{"removed: pinned", nil, false, "1-7"},
	} {
		set(tc.value)
		eventually(t, tc.name, func() bool {
			requested, _ := p.ReleaseAll()
			d := done()
			_, err := time.Parse(time.RFC3339, d)
			return requested == tc.released && web() == tc.cpus && (tc.released == (err == nil)) && (tc.released || d == "")
		})
	}
}

// An overwrite the node watch reports while a publish is in flight is
// newer than the publish: it is kept, so the next pass restores the
// topology, where taking the write for the node's state lost it for good.
func TestTopologyOverwriteSeenDuringAPublishIsKept(t *testing.T) {
	pub := NewTopologyPublisher(nil, "node-a", nil, 0, slog.New(slog.NewTextHandler(io.Discard, nil)))
	watch := pub.NodeHandler()
	node := func(topology string) *v1.Node {
		return &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-a", Annotations: map[string]string{corepin.AnnotationTopology: topology}}}
	}
	watch(node("old"))
	differs, watched := pub.differs("desired")
	if !differs {
		t.Fatal(`"old" on the node: not told it differs from "desired"`)
	}
	watch(node("overwritten")) // while the publish of "desired" is in flight
	pub.applied("desired", watched)
	if differs, _ := pub.differs("desired"); !differs {
		t.Fatal("the overwrite seen during the publish was lost: the node is taken to hold the topology")
	}
	// With no report since, the write is the newest the publisher knows.
	_, watched = pub.differs("desired")
	pub.applied("desired", watched)
	if differs, _ := pub.differs("desired"); differs {
		t.Fatal("a publish with no report since it began: still taken to differ")
	}
}
