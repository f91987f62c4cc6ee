package policy

import (
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/corepin/corepin/api"
)

// The contract's seed: 104 CPUs, 8 reserved (P = 96), at most 64 exclusive;
// with two shared 32-CPU pods, exclusiveLimit = min(64, 96-64, 96-32) = 32.
func TestSeedCapacity(t *testing.T) {
	n := newTestNode(t, "seed-104")
	if c := n.Capacity(); c.P != 96 || c.ExclusiveLimit != 64 {
		t.Fatalf("empty seed node: %+v, want P=96 limit=64", c)
	}
	place(t, n, sharedReq("web-0", "web", 32000))
	place(t, n, sharedReq("web-1", "web", 32000))
	if c := n.Capacity(); c.ExclusiveLimit != 32 || c.S != 64000 || c.M != 32000 {
		t.Fatalf("with two 32-CPU shared pods: %+v, want limit 32", c)
	}
	for i, k := range []int{8, 8, 8, 4} {
		place(t, n, exclusiveReq("db-"+string(rune('0'+i)), "", k, api.AllocSpec{}))
	}
	_, err := n.Allocate(exclusiveReq("db-4", "", 8, api.AllocSpec{}))
	if err == nil || err.Error() != "exclusive limit 32 reached (needs 8, holds 28)" {
		t.Fatalf("error %v, want the contract's example message", err)
	}
	// A third shared pod of 32 would need E <= 96 - ceil(96/2) = 48: fits.
	if err := n.CheckSharedCapacity(32000); err != nil {
		t.Fatalf("third 32-CPU shared pod: %v", err)
	}
	// A shared pod of 40 raises M: E=28 <= 96 - 2*40 = 16 fails.
	if err := n.CheckSharedCapacity(40000); err == nil || !strings.Contains(err.Error(), "headroom") {
		t.Fatalf("40-CPU shared pod: %v", err)
	}
}

func TestExclusiveLimitFormula(t *testing.T) {
	for _, tc := range []struct {
		name      string
		ratio, r  float64
		h, p      int
		s, m      int64
		wantLimit int
	}{
		{"ratio bound", 2.0 / 3.0, 2, 2, 96, 0, 0, 64},
		{"ratio 0.6667", 0.6667, 2, 2, 96, 0, 0, 64},
		{"headroom bound", 2.0 / 3.0, 2, 2, 96, 64000, 32000, 32},
		{"overcommit bound", 2.0 / 3.0, 2, 0, 96, 100000, 1000, 46},
		{"fractional M", 1, 2, 2, 2, 500, 500, 1},
		{"negative", 1, 1, 2, 4, 8000, 8000, -12},
	} {
		if got := exclusiveLimit(tc.ratio, tc.r, tc.h, tc.p, tc.s, tc.m); got != tc.wantLimit {
			t.Errorf("%s: limit %d, want %d", tc.name, got, tc.wantLimit)
		}
	}
}

func TestNodePolicyOverride(t *testing.T) {
	n := newTestNode(t, "seed-104")
	half := 0.5
	n.Limits = api.NodePolicy{MaxExclusiveRatio: &half}.Apply(n.Limits)
	if c := n.Capacity(); c.ExclusiveLimit != 48 {
		t.Fatalf("limit %d, want 48", c.ExclusiveLimit)
	}
}

func TestMaxPerNode(t *testing.T) {
	n := newTestNode(t, "2s-smt-server")
	limited := func(key string, exclusive bool) Request {
		r := sharedReq(key, "db", 1000)
		if exclusive {
			r = exclusiveReq(key, "db", 1, api.AllocSpec{})
		}
		r.Intent.MaxPerNode = 2
		return r
	}
	place(t, n, limited("a", true))
	place(t, n, limited("b", false))
	if _, err := n.Allocate(limited("c", true)); err == nil || err.Error() != `max-per-node 2 reached for app "db" (2 on the node)` {
		t.Fatalf("third db pod: %v", err)
	}
	// A pod of the app without its own limit still obeys the limit of those there.
	if err := n.CheckAppSpread(sharedReq("d", "db", 0)); err == nil {
		t.Fatal("an unlimited same-app pod ignored the limit of pods already there")
	}
	if err := n.CheckAppSpread(sharedReq("e", "web", 0)); err != nil {
		t.Fatalf("other app: %v", err)
	}
}

func TestScore(t *testing.T) {
	empty := newTestNode(t, "2s-smt-server")
	busy := newTestNode(t, "2s-smt-server")
	place(t, busy, exclusiveReq("a", "", 16, api.AllocSpec{}))
	req := exclusiveReq("b", "", 4, api.AllocSpec{})
	if e, b := empty.Score(req, api.MostAllocated), busy.Score(req, api.MostAllocated); !(b > e) || b > 10 || e < 0 {
		t.Fatalf("MostAllocated: busy %d, empty %d", b, e)
	}
	if e, b := empty.Score(req, api.LeastAllocated), busy.Score(req, api.LeastAllocated); !(e > b) {
		t.Fatalf("LeastAllocated: busy %d, empty %d", b, e)
	}
	if s := NewNode("bare", nil, api.DefaultLimits()).Score(req, api.MostAllocated); s != 0 {
		t.Fatalf("node without topology scored %d", s)
	}
}

func TestNodeWithoutTopology(t *testing.T) {
	n := NewNode("bare", nil, api.DefaultLimits())
	if _, err := n.Allocate(exclusiveReq("a", "", 1, api.AllocSpec{})); err == nil || !strings.Contains(err.Error(), api.AnnotationTopology) {
		t.Fatalf("exclusive on a bare node: %v", err)
	}
	if _, err := n.Allocate(sharedReq("b", "", 4000)); err != nil {
		t.Fatalf("shared on a bare node: %v", err)
	}
	n2 := newTestNode(t, "1s-vm")
	n2.Attention = "CPU 3 went offline"
	if err := n2.CheckTopology(exclusiveReq("a", "", 1, api.AllocSpec{})); err == nil || !strings.Contains(err.Error(), "CPU 3 went offline") {
		t.Fatalf("attention node: %v", err)
	}
}

func pod(annotations map[string]string, containers ...v1.Container) *v1.Pod {
	return &v1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "p", Annotations: annotations}, Spec: v1.PodSpec{Containers: containers}}
}

func container(name, limit, request string) v1.Container {
	c := v1.Container{Name: name, Resources: v1.ResourceRequirements{Limits: v1.ResourceList{}, Requests: v1.ResourceList{}}}
	if limit != "" {
		c.Resources.Limits[v1.ResourceCPU] = resource.MustParse(limit)
	}
	if request != "" {
		c.Resources.Requests[v1.ResourceCPU] = resource.MustParse(request)
	}
	return c
}

func TestNewRequest(t *testing.T) {
	excl := map[string]string{api.AnnotationCPUMode: "exclusive"}
	req, err := NewRequest(pod(excl, container("engine", "4", "2"), container("side", "", "500m"), container("idle", "", "")))
	if err != nil {
		t.Fatal(err)
	}
	if req.ExclusiveCPUs() != 4 || req.SharedMilli() != 500 || req.Key != "default/p" {
		t.Fatalf("request %+v", req)
	}
	_, err = NewRequest(pod(excl, container("a", "1500m", ""), container("b", "", "")))
	if err == nil || !strings.Contains(err.Error(), "a=1500m, b=none") || !strings.Contains(err.Error(), "default/p") {
		t.Fatalf("no whole amount: %v", err)
	}
	listed := map[string]string{api.AnnotationCPUMode: "exclusive", api.AnnotationAllocSpec: `{"containers":["engine"]}`}
	req, err = NewRequest(pod(listed, container("engine", "2", ""), container("log", "1", "")))
	if err != nil || req.ExclusiveCPUs() != 2 || req.SharedMilli() != 1000 {
		t.Fatalf("listed containers: %+v %v", req, err)
	}
	listed[api.AnnotationAllocSpec] = `{"containers":["missing"]}`
	if _, err := NewRequest(pod(listed, container("engine", "2", ""))); err == nil || !strings.Contains(err.Error(), `"missing"`) {
		t.Fatalf("missing container: %v", err)
	}
	if _, err := NewRequest(pod(map[string]string{api.AnnotationCPUMode: "dedicated"}, container("a", "1", ""))); err == nil ||
		!strings.Contains(err.Error(), `corepin.io/cpu-mode="dedicated"`) {
		t.Fatalf("bad mode: %v", err)
	}
	// An empty list would bind the pod with no CPUs and an alloc-status
	// the node plugin refuses: the pod is refused here instead.
	listed[api.AnnotationAllocSpec] = `{"containers":[]}`
	if _, err := NewRequest(pod(listed, container("engine", "2", ""))); err == nil ||
		!strings.Contains(err.Error(), `field "containers": an exclusive pod must list at least one container`) {
		t.Fatalf("empty containers list: %v", err)
	}
}

// TestNewRequestInitContainers: a native sidecar (restartPolicy Always)
// runs beside the app for the pod's life, in the shared pool, so it counts
// in the shared amount and never gets exclusive CPUs; an ordinary init
// container has finished before the app starts and counts nothing.
func TestNewRequestInitContainers(t *testing.T) {
	always := v1.ContainerRestartPolicyAlways
	sidecar := container("proxy", "2", "")
	sidecar.RestartPolicy = &always
	withInit := func(annotations map[string]string) *v1.Pod {
		p := pod(annotations, container("engine", "4", ""))
		p.Spec.InitContainers = []v1.Container{container("migrate", "8", ""), sidecar}
		return p
	}
	for _, tc := range []struct {
		name            string
		annotations     map[string]string
		exclusive       int
		sharedMilli     int64
		wantErrContains string
	}{
		{name: "shared pod", annotations: nil, sharedMilli: 6000},
		{name: "exclusive pod: the sidecar stays shared although its amount is whole",
			annotations: map[string]string{api.AnnotationCPUMode: "exclusive"}, exclusive: 4, sharedMilli: 2000},
		{name: "a sidecar cannot be listed for exclusive CPUs",
			annotations:     map[string]string{api.AnnotationCPUMode: "exclusive", api.AnnotationAllocSpec: `{"containers":["proxy"]}`},
			wantErrContains: `container "proxy" is listed for exclusive CPUs but it is an init container (native sidecar)`},
		{name: "an ordinary init container cannot be listed",
			annotations:     map[string]string{api.AnnotationCPUMode: "exclusive", api.AnnotationAllocSpec: `{"containers":["migrate"]}`},
			wantErrContains: `container "migrate" is listed for exclusive CPUs but the pod has no such container`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, err := NewRequest(withInit(tc.annotations))
			if tc.wantErrContains != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErrContains) {
					t.Fatalf("error %v, want %q", err, tc.wantErrContains)
				}
				return
			}
			if err != nil || req.ExclusiveCPUs() != tc.exclusive || req.SharedMilli() != tc.sharedMilli {
				t.Fatalf("request %+v (%v): want %d exclusive CPUs and %dm shared", req, err, tc.exclusive, tc.sharedMilli)
			}
		})
	}
}
