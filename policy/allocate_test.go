package policy

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/corepin/corepin/api"
	"github.com/corepin/corepin/internal/testtopo"
)

func TestAllocate(t *testing.T) {
	type step struct {
		req  Request
		want string // expected CPUs, or "error: substring"
		mems string
	}
	scf := api.AllocSpec{}
	spread := api.AllocSpec{CPU: api.Spread}
	for _, tc := range []struct {
		name  string
		topo  string
		steps []step
	}{
		{"SameCoreFirst takes whole cores", "2s-smt-server", []step{
			{req: exclusiveReq("a", "", 4, scf), want: "0-1,16-17", mems: "0"},
			{req: exclusiveReq("b", "", 2, scf), want: "2,18"},
		}},
		{"odd count takes a partial core last", "2s-smt-server", []step{
			{req: exclusiveReq("a", "", 3, scf), want: "0-1,16"},
			// CPU 17 is a sibling of a held core: no SameCoreFirst pod takes it.
			{req: exclusiveReq("b", "", 1, scf), want: "2"},
		}},
		{"Spread takes one thread per core", "2s-smt-server", []step{
			{req: exclusiveReq("a", "x", 4, spread), want: "0-3"},
		}},
		{"Spread stacks a different app on free siblings only when fully free cores run out", "2s-smt-server", []step{
			{req: exclusiveReq("a", "x", 16, spread), want: "0-15"},
			{req: exclusiveReq("b", "y", 2, spread), want: "16-17"},
		}},
		{"Spread prefers another NUMA node's free cores to stacking", "2s-smt-server", []step{
			{req: exclusiveReq("a", "x", 8, spread), want: "0-7"},
			{req: exclusiveReq("b", "y", 2, spread), want: "8-9", mems: "1"},
		}},
		{"Spread never stacks the same app", "2s-smt-server", []step{
			{req: exclusiveReq("a", "x", 16, spread), want: "0-15"},
			{req: exclusiveReq("b", "x", 1, spread), want: "error: not enough physical cores eligible for Spread"},
		}},
		{"SameCoreFirst never stacks on Spread cores", "2s-smt-server", []step{
			{req: exclusiveReq("a", "x", 16, spread), want: "0-15"},
			{req: exclusiveReq("b", "y", 1, scf), want: "error: not enough free CPUs on cores no pod holds"},
		}},
		{"Spread is strict without SMT too", "1s-vm", []step{
			{req: exclusiveReq("a", "x", 4, spread), want: "0-3"},
			{req: exclusiveReq("b", "y", 1, spread), want: "4"},
		}},
		{"no SMT: both policies pick alike", "1s-vm", []step{
			{req: exclusiveReq("a", "", 3, scf), want: "0-2"},
		}},
		{"NUMA Preferred fits one node when it can", "2s-smt-server", []step{
			{req: exclusiveReq("a", "", 10, scf), want: "0-4,16-20"},
			{req: exclusiveReq("b", "", 8, scf), want: "8-11,24-27", mems: "1"},
		}},
		{"NUMA Preferred spans nodes when it must", "2s-smt-server", []step{
			{req: exclusiveReq("a", "", 20, scf), want: "0-9,16-25", mems: "0-1"},
		}},
		{"NUMA Required refuses to span", "2s-smt-server", []step{
			{req: exclusiveReq("a", "", 10, scf), want: "0-4,16-20"},
			{req: exclusiveReq("b", "", 10, scf), want: "8-12,24-28"},
			{req: exclusiveReq("c", "", 8, api.AllocSpec{NUMA: api.NUMARequired}), want: "error: no NUMA node has 8 free CPUs on cores no pod holds (numa Required; most: 6 on NUMA node 0)"},
			{req: exclusiveReq("d", "", 8, scf), want: "error: exclusive limit 21 reached (needs 8, holds 20)"},
		}},
		{"NUMA None leaves mems empty", "2s-smt-server", []step{
			{req: exclusiveReq("a", "", 2, api.AllocSpec{NUMA: api.NUMANone}), want: "0,16", mems: ""},
		}},
		{"same app prefers another NUMA node", "2s-smt-server", []step{
			{req: exclusiveReq("a", "db", 2, scf), want: "0,16"},
			{req: exclusiveReq("b", "db", 2, scf), want: "8,24"},
			{req: exclusiveReq("c", "web", 2, scf), want: "1,17"},
		}},
		{"adjacent siblings: whole cores are pairs of neighbours", "azure-d16s-v5", []step{
			{req: exclusiveReq("a", "", 4, scf), want: "0-3", mems: "0"},
			{req: exclusiveReq("b", "", 3, scf), want: "4-6"},
			// CPU 7 is the sibling of b's partial core.
			{req: exclusiveReq("c", "", 1, scf), want: "8"},
		}},
		{"an offline CPU leaves its sibling the best fit for a remainder", "xeon-4208-2s-cpu5-offline", []step{
			{req: exclusiveReq("a", "", 3, scf), want: "0,16,21"},
			{req: exclusiveReq("b", "", 2, scf), want: "1,17"},
		}},
		{"sparse ids are taken in order", "kvm-hotplug-sparse", []step{
			{req: exclusiveReq("a", "", 5, scf), want: "0-3,8", mems: "0"},
			{req: exclusiveReq("b", "", 1, spread), want: "error: exclusive limit 5 reached (needs 1, holds 5)"},
		}},
		{"capacity limit", "2s-smt-server", []step{
			{req: exclusiveReq("a", "", 20, scf), want: "0-9,16-25"},
			{req: exclusiveReq("b", "", 2, scf), want: "error: exclusive limit 21 reached (needs 2, holds 20)"},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := newTestNode(t, tc.topo)
			for i, s := range tc.steps {
				a, err := n.Allocate(s.req)
				if want, isErr := strings.CutPrefix(s.want, "error: "); isErr {
					if err == nil || !strings.Contains(err.Error(), want) {
						t.Fatalf("step %d: error %v, want %q (got cpus %s)", i, err, want, a.CPUs)
					}
					continue
				}
				if err != nil {
					t.Fatalf("step %d: %v", i, err)
				}
				if a.CPUs.String() != s.want {
					t.Fatalf("step %d: cpus %s, want %s", i, a.CPUs, s.want)
				}
				if s.mems != "" || s.req.Intent.Spec.NUMA == api.NUMANone {
					if a.Mems.String() != s.mems {
						t.Fatalf("step %d: mems %s, want %q", i, a.Mems, s.mems)
					}
				}
				if err := n.Add(PlacementFor(s.req, a.CPUs)); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

func TestAllocateDeterministic(t *testing.T) {
	run := func() string {
		n := newTestNode(t, "256-cpu")
		var out []string
		for i, k := range []int{8, 3, 16, 1, 7, 64, 2} {
			spec := api.AllocSpec{}
			if i%2 == 1 {
				spec.CPU = api.Spread
			}
			out = append(out, place(t, n, exclusiveReq(string(rune('a'+i)), string(rune('a'+i)), k, spec)).CPUs.String())
		}
		return strings.Join(out, " ")
	}
	if a, b := run(), run(); a != b {
		t.Fatalf("same inputs, different cores:\n%s\n%s", a, b)
	}
}

func TestReservedCPUsAreNeverAllocated(t *testing.T) {
	n := newTestNode(t, "seed-104")
	a := place(t, n, exclusiveReq("a", "", 64, api.AllocSpec{}))
	if !a.CPUs.Intersection(n.Topo.Reserved()).IsEmpty() {
		t.Fatalf("allocated reserved CPUs: %s", a.CPUs.Intersection(n.Topo.Reserved()))
	}
	if got := n.SharedPool().Size(); got != 96-64 {
		t.Fatalf("shared pool %d CPUs, want 32", got)
	}
}

func TestPartialCoreBestFit(t *testing.T) {
	// CPU 16 (sibling of core 0) reserved: core 0 has one allocatable thread,
	// the best fit for a 1-CPU remainder.
	n := newTestNode(t, "2s-smt-server", func(topo *api.Topology) { topo.Reserved = api.NewCPUList(mustSet("16")) })
	a := place(t, n, exclusiveReq("a", "", 3, api.AllocSpec{}))
	if a.CPUs.String() != "0-1,17" {
		t.Fatalf("cpus %s, want 0-1,17 (core 1 whole, then core 0's single thread)", a.CPUs)
	}
}

func TestIOQueueSpread(t *testing.T) {
	queues := []api.IOQueue{
		{Name: "nvme0q1", CPUs: api.NewCPUList(mustSet("0"))}, {Name: "nvme0q2", CPUs: api.NewCPUList(mustSet("1"))},
		{Name: "nvme0q3", CPUs: api.NewCPUList(mustSet("2"))}, {Name: "nvme0q4", CPUs: api.NewCPUList(mustSet("3"))},
	}
	n := newTestNode(t, "1s-vm", func(topo *api.Topology) { topo.IOQueues = queues })
	spec := api.AllocSpec{IOQueueSpread: true}
	a := place(t, n, exclusiveReq("a", "", 2, spec))
	if a.CPUs.String() != "0-1" {
		t.Fatalf("first pod cpus %s, want 0-1 (two distinct queues)", a.CPUs)
	}
	b := place(t, n, exclusiveReq("b", "", 2, spec))
	if b.CPUs.String() != "2-3" {
		t.Fatalf("second pod cpus %s, want the unused queues' CPUs 2-3", b.CPUs)
	}
	// Without ioQueueSpread a pod ignores queues: here it would take 4-5.
	c := place(t, n, exclusiveReq("c", "", 1, api.AllocSpec{}))
	if c.CPUs.String() != "4" {
		t.Fatalf("plain pod cpus %s, want 4", c.CPUs)
	}
	plain := newTestNode(t, "1s-vm")
	if _, err := plain.Allocate(exclusiveReq("d", "", 1, spec)); err == nil || !strings.Contains(err.Error(), "no IO queues") {
		t.Fatalf("ioQueueSpread on a node without queues: %v", err)
	}
}

// TestIOQueueSpreadCountsQueuesOnce: both threads of a core usually serve
// the same queue; counted per thread, a core in a used queue outscored a
// core in an unused one, and two pods landed on one queue.
func TestIOQueueSpreadCountsQueuesOnce(t *testing.T) {
	q0, q1 := mustSet("0"), mustSet("1-2,17-18")
	n := newTestNode(t, "2s-smt-server", func(topo *api.Topology) {
		topo.IOQueues = []api.IOQueue{{Name: "q0", CPUs: api.NewCPUList(q0)}, {Name: "q1", CPUs: api.NewCPUList(q1)}}
	})
	spec := api.AllocSpec{IOQueueSpread: true}
	x := place(t, n, exclusiveReq("x", "", 2, spec))
	y := place(t, n, exclusiveReq("y", "", 2, spec))
	inQ0 := func(a Allocation) bool { return !a.CPUs.Intersection(q0).IsEmpty() }
	if inQ0(x) == inQ0(y) {
		t.Fatalf("pods on %s and %s: want one in queue q0 (CPU 0) and one in q1, the least-used queue first", x.CPUs, y.CPUs)
	}
}

func TestPerContainerSplit(t *testing.T) {
	n := newTestNode(t, "2s-smt-server")
	req := exclusiveReq("a", "", 0, api.AllocSpec{})
	req.Containers = []Container{{Name: "engine", Milli: 4000, Exclusive: true}, {Name: "sidecar", Milli: 500}, {Name: "log", Milli: 2000, Exclusive: true}}
	a := place(t, n, req)
	if a.Containers["engine"].Size() != 4 || a.Containers["log"].Size() != 2 || a.CPUs.Size() != 6 {
		t.Fatalf("split %v", a.Containers)
	}
	if !a.Containers["engine"].Intersection(a.Containers["log"]).IsEmpty() {
		t.Fatalf("containers share CPUs: %v", a.Containers)
	}
	for _, c := range []string{"engine", "log"} {
		for core, threads := range coresOf(n, a.Containers[c]) {
			if threads != 2 {
				t.Fatalf("container %s has a partial core %d: %v", c, core, a.Containers)
			}
		}
	}
	if _, ok := a.Containers["sidecar"]; ok {
		t.Fatal("the fractional sidecar got exclusive CPUs")
	}
}

func TestRemoveFreesCores(t *testing.T) {
	n := newTestNode(t, "2s-smt-server")
	a := place(t, n, exclusiveReq("a", "", 4, api.AllocSpec{}))
	if !n.Remove("a") || n.Remove("a") {
		t.Fatal("Remove should report the pod once")
	}
	b := place(t, n, exclusiveReq("b", "", 4, api.AllocSpec{}))
	if !a.CPUs.Equals(b.CPUs) || n.Capacity().E != 4 {
		t.Fatalf("freed cores not reused: %s then %s", a.CPUs, b.CPUs)
	}
}

func TestAddRefusesConflicts(t *testing.T) {
	n := newTestNode(t, "seed-104")
	if err := n.Add(&Placement{Key: "a", CPUs: mustSet("8-9")}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		cpus, err string
	}{
		{"9-10", "CPU 9 is held by pod a"},
		{"0", "CPU 0 is reserved"},
		{"500", "CPU 500 is not online"},
	} {
		err := n.Add(&Placement{Key: "b", CPUs: mustSet(tc.cpus)})
		if err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("cpus %s: error %v, want %q", tc.cpus, err, tc.err)
		}
	}
	if n.Capacity().E != 2 || n.Len() != 1 {
		t.Fatalf("a refused placement changed the node: %+v", n.Capacity())
	}
}

// The filter's summary-based check and the allocator's candidate listing
// must agree on feasibility, whatever the node's state, on every named
// topology (L3 groups inside NUMA nodes, adjacent siblings, sparse ids, a
// core left with one thread).
func TestFeasibilityMatchesAllocation(t *testing.T) {
	for _, name := range testtopo.Names() {
		t.Run(name, func(t *testing.T) { feasibilityMatchesAllocation(t, name) })
	}
}

func feasibilityMatchesAllocation(t *testing.T, name string) {
	rng := rand.New(rand.NewPCG(1, 2))
	for round := 0; round < 30; round++ {
		n := newTestNode(t, name)
		n.Limits.MaxExclusiveRatio = 1
		for i := 0; i < 60; i++ {
			spec := api.AllocSpec{}
			switch rng.IntN(3) {
			case 1:
				spec.CPU = api.Spread
			case 2:
				spec.NUMA = api.NUMARequired
			}
			req := exclusiveReq(fmt.Sprintf("p%d", i), fmt.Sprintf("app%d", rng.IntN(3)), 1+rng.IntN(6), spec)
			feasible := n.CheckTopology(req) == nil
			acc := newAccumulator(n, req, true)
			_, err := acc.chooseNUMANodes(nil)
			if feasible != (err == nil) {
				t.Fatalf("round %d step %d: filter says %v, allocator says %v", round, i, feasible, err)
			}
			if feasible && n.CheckExclusiveCapacity(req.ExclusiveCPUs()) == nil {
				place(t, n, req)
			}
			if rng.IntN(4) == 0 && n.Len() > 0 {
				n.Remove(n.Pods()[rng.IntN(n.Len())].Key)
			}
		}
	}
}
