package policy

import (
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/corepin/corepin/api"
)

// TestResize: on the 2-socket SMT server (CPUs 0-15 one thread per core,
// 16-31 their siblings; NUMA 0 is cores 0-7; exclusive limit 21), a placed
// pod resized in place keeps its CPUs, grows as it would allocate and
// shrinks by dropping CPUs.
func TestResize(t *testing.T) {
	spread := api.AllocSpec{CPU: api.Spread}
	required := api.AllocSpec{NUMA: api.NUMARequired}
	type held struct {
		key, app string
		spec     api.AllocSpec
		cpus     string
	}
	for _, tc := range []struct {
		name   string
		others []held
		// the pod resized: its spec, its CPUs before, its new amount in
		// millicores
		spec api.AllocSpec
		app  string
		cpus string
		to   int64
		want string // CPUs after, or "error: substring"
		mems string
	}{
		{name: "SameCoreFirst grow takes a whole core", cpus: "0,16", to: 4000, want: "0-1,16-17", mems: "0"},
		{name: "SameCoreFirst grow takes its own core's free sibling first", cpus: "0-1,16", to: 4000, want: "0-1,16-17"},
		{name: "shrink keeps whole cores", cpus: "0-1,16", to: 2000, want: "0,16"},
		{name: "shrink of whole cores keeps the first", cpus: "0-1,16-17", to: 2000, want: "0,16"},
		{name: "Spread grow never takes a sibling", spec: spread, app: "x", cpus: "0-1", to: 3000, want: "0-2"},
		{name: "Spread grow stacks on another app's Spread core only when cores run out", spec: spread, app: "x", cpus: "0",
			others: []held{{key: "o", app: "y", spec: spread, cpus: "1-15"}}, to: 2000, want: "0,17"},
		{name: "Spread grow never stacks on its own app", spec: spread, app: "x", cpus: "0",
			others: []held{{key: "o", app: "x", spec: spread, cpus: "1-15"}}, to: 2000,
			want: "error: not enough physical cores eligible for Spread"},
		{name: "grow stays on its NUMA node though another fits tighter", app: "db", cpus: "0,16",
			others: []held{{key: "w", app: "web", cpus: "9-11,25-27"}}, to: 4000, want: "0-1,16-17", mems: "0"},
		{name: "grow is not pushed off its NUMA node by itself (same app)", app: "db", cpus: "0,16",
			others: []held{{key: "c", app: "db", cpus: "8,24"}, {key: "w", app: "web", cpus: "9-11,25-27"}}, to: 4000, want: "0-1,16-17"},
		{name: "Preferred grow spans NUMA nodes when its own is full", cpus: "0,16",
			others: []held{{key: "b", cpus: "1-7,17-23"}}, to: 4000, want: "0,8,16,24", mems: "0-1"},
		{name: "Required grow stays on its NUMA node or fails", spec: required, cpus: "0,16",
			others: []held{{key: "b", cpus: "1-7,17-23"}}, to: 4000,
			want: "error: no NUMA node has 2 free CPUs on cores no pod holds (numa Required"},
		{name: "grow past the exclusive limit keeps nothing new", cpus: "0,16",
			others: []held{{key: "b", cpus: "1-9,17-25"}}, to: 4000,
			want: "error: exclusive limit 21 reached (the resize from 2 to 4 CPUs needs 2 more, the node holds 20)"},
		{name: "shrink on a node over its limit still fits", cpus: "0-1,16-17",
			others: []held{{key: "b", cpus: "2-9,18-25"}}, to: 2000, want: "0,16"},
		{name: "a fraction is refused", cpus: "0,16", to: 1500,
			want: `error: resize of exclusive container "main" to 1500m CPUs refused: an exclusive container's CPU amount must be a whole number >= 1 (it keeps CPUs 0,16)`},
		{name: "zero is refused", cpus: "0,16", to: 0, want: "error: must be a whole number >= 1"},
		{name: "no change keeps the CPUs", cpus: "0,16", to: 2000, want: "0,16"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := newTestNode(t, "2s-smt-server")
			for _, o := range tc.others {
				req := exclusiveReq(o.key, o.app, 1, o.spec)
				if err := n.Add(PlacementFor(req, mustSet(o.cpus))); err != nil {
					t.Fatal(err)
				}
			}
			req := exclusiveReq("pod", tc.app, 0, tc.spec)
			cpus := mustSet(tc.cpus)
			if err := n.Add(PlacementFor(req, cpus)); err != nil {
				t.Fatal(err)
			}
			old := api.AllocStatus{Node: n.Name, CPUs: api.NewCPUList(cpus), Containers: map[string]api.CPUList{"main": api.NewCPUList(cpus)}}
			before, exclusive := n.Capacity(), n.Exclusive()
			req.Containers[0].Milli = tc.to
			a, err := n.Resize(req, old)
			if c, e := n.Capacity(), n.Exclusive(); c != before || !e.Equals(exclusive) {
				t.Fatalf("Resize changed the node: capacity %+v -> %+v, exclusive %s -> %s", before, c, exclusive, e)
			}
			if want, isErr := strings.CutPrefix(tc.want, "error: "); isErr {
				if err == nil || !strings.Contains(err.Error(), want) {
					t.Fatalf("error %v, want %q (got cpus %s)", err, want, a.CPUs)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if a.CPUs.String() != tc.want || a.Containers["main"].String() != tc.want {
				t.Fatalf("cpus %s (container %s), want %s", a.CPUs, a.Containers["main"], tc.want)
			}
			if tc.to/1000 >= int64(cpus.Size()) && !cpus.IsSubsetOf(a.CPUs) {
				t.Fatalf("grow dropped CPUs: %s -> %s", cpus, a.CPUs)
			}
			if tc.mems != "" && a.Mems.String() != tc.mems {
				t.Fatalf("mems %s, want %s", a.Mems, tc.mems)
			}
			// The result is what the node takes.
			grown := PlacementFor(req, a.CPUs)
			grown.Key = "pod"
			if err := n.Replace(grown); err != nil {
				t.Fatalf("the resized placement does not fit the node: %v", err)
			}
		})
	}
}

// TestResizeContainers: the containers of one pod resize together, and
// what one drops goes to another that grows; a shared container's new
// amount counts in the pod's shared amount for the limit.
func TestResizeContainers(t *testing.T) {
	n := newTestNode(t, "2s-smt-server")
	req := Request{Key: "pod", Namespace: "default",
		Intent:     api.PodIntent{Mode: api.ModeExclusive, Spec: api.AllocSpec{CPU: api.SameCoreFirst, NUMA: api.NUMAPreferred}, ExcludeReserve: true},
		Containers: []Container{{Name: "a", Milli: 2000, Exclusive: true}, {Name: "b", Milli: 2000, Exclusive: true}, {Name: "log", Milli: 500}}}
	if err := n.Add(PlacementFor(req, mustSet("0-1,16-17"))); err != nil {
		t.Fatal(err)
	}
	old := api.AllocStatus{Node: n.Name, CPUs: api.NewCPUList(mustSet("0-1,16-17")),
		Containers: map[string]api.CPUList{"a": api.NewCPUList(mustSet("0,16")), "b": api.NewCPUList(mustSet("1,17"))}}
	req.Containers[0].Milli, req.Containers[1].Milli = 1000, 3000
	a, err := n.Resize(req, old)
	if err != nil {
		t.Fatal(err)
	}
	if got := a.Containers["a"].String() + " " + a.Containers["b"].String(); got != "0 1,16-17" {
		t.Fatalf("containers a b = %s, want 0 1,16-17", got)
	}

	// With the shared container at 20 CPUs (allocated, its resize pending),
	// P - ceil(S/r) = 32 - 10 = 22 and P - h*M = -8: no exclusive grow fits.
	req.Containers[0].Milli, req.Containers[1].Milli = 3000, 2000
	req.Containers[2].Allocated = 20000
	_, err = n.Resize(req, old)
	if err == nil || CodeOf(err) != CodeExclusiveLimit || !strings.Contains(err.Error(), "exclusive limit 0 reached") {
		t.Fatalf("grow with a large shared container: %v, want exclusive limit 0 reached", err)
	}
}

func TestResizeNotPlaced(t *testing.T) {
	n := newTestNode(t, "2s-smt-server")
	req := exclusiveReq("pod", "", 2, api.AllocSpec{})
	old := api.AllocStatus{Node: n.Name, CPUs: api.NewCPUList(mustSet("0,16")), Containers: map[string]api.CPUList{"main": api.NewCPUList(mustSet("0,16"))}}
	if _, err := n.Resize(req, old); err == nil || !strings.Contains(err.Error(), "not placed on node") {
		t.Fatalf("resize of a pod not placed: %v", err)
	}
}

func TestSharedAmountCountsTheLarger(t *testing.T) {
	req := sharedReq("s", "", 1000)
	req.Containers[0].Allocated = 3000
	if got := req.SharedMilli(); got != 3000 {
		t.Fatalf("shared amount growing back from 3 to 1: %d, want 3000", got)
	}
	req.Containers[0].Milli, req.Containers[0].Allocated = 4000, 1000
	if got := req.SharedMilli(); got != 4000 {
		t.Fatalf("shared amount growing from 1 to 4: %d, want 4000", got)
	}
}

// TestBoundPodCountsPendingResize: a shared pod whose resize from 3 to 1
// CPU is not applied yet still counts 3, as the node still gives it 3; one
// resized from 1 to 4 counts 4 from the request on.
func TestBoundPodCountsPendingResize(t *testing.T) {
	for _, tc := range []struct {
		spec, status string
		allocated    bool // status in allocatedResources, not resources
		want         int64
	}{
		{spec: "1", status: "3", want: 3000},
		{spec: "4", status: "1", want: 4000},
		{spec: "2", status: "", want: 2000},
		{spec: "1", status: "2500m", allocated: true, want: 2500},
	} {
		p := pod(nil, container("main", tc.spec, ""))
		if tc.status != "" {
			st := v1.ContainerStatus{Name: "main"}
			q := resource.MustParse(tc.status)
			if tc.allocated {
				st.AllocatedResources = v1.ResourceList{v1.ResourceCPU: q}
			} else {
				st.Resources = &v1.ResourceRequirements{Limits: v1.ResourceList{v1.ResourceCPU: q}}
			}
			p.Status.ContainerStatuses = []v1.ContainerStatus{st}
		}
		b := ReadBound(BoundPodOf(p), nil)
		if got := b.Placement().SharedMilli; got != tc.want {
			t.Errorf("spec %s, status %s: shared amount %d, want %d", tc.spec, tc.status, got, tc.want)
		}
	}
}
