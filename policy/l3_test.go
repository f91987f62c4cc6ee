package policy

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"k8s.io/utils/cpuset"

	"github.com/corepin/corepin/api"
)

// On AMD EPYC an L3 group (a CCX) is a fraction of a NUMA node: a pod that
// fits one group must get it whole, not the tail of one and the head of the
// next, which the cores' natural order alone would give. Each case is
// chosen so that order and the L3 preference disagree.
func TestAllocateStaysInOneL3Group(t *testing.T) {
	scf, spread := api.AllocSpec{}, api.AllocSpec{CPU: api.Spread}
	for _, tc := range []struct {
		name   string
		topo   string
		before []Request // placed first
		req    Request
		want   string
	}{
		// epyc-7313p: L3 group g is cores 4g..4g+3, CPUs 4g-4g+3 and 16+4g-16+4g+3.
		{"a group too full for the pod is skipped", "epyc-7313p",
			[]Request{exclusiveReq("a", "", 2, scf)},
			exclusiveReq("p", "", 8, scf), "4-7,20-23"},
		{"the tightest group that holds the pod comes first", "epyc-7313p",
			[]Request{exclusiveReq("a", "", 6, scf), exclusiveReq("b", "", 4, scf)},
			exclusiveReq("p", "", 4, scf), "6-7,22-23"},
		{"an odd pod keeps its partial core in the group", "epyc-7313p",
			[]Request{exclusiveReq("a", "", 6, scf)},
			exclusiveReq("p", "", 7, scf), "4-7,20-22"},
		{"Spread counts cores per group", "epyc-7313p",
			[]Request{exclusiveReq("a", "x", 2, scf)},
			exclusiveReq("p", "y", 4, spread), "4-7"},
		// epyc-7763-2s: 8 groups of 8 cores per socket, siblings N and N+128.
		{"a CCX-sized pod gets one CCX", "epyc-7763-2s",
			[]Request{exclusiveReq("a", "", 2, scf)},
			exclusiveReq("p", "", 16, scf), "8-15,136-143"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := newTestNode(t, tc.topo)
			n.Limits.MaxExclusiveRatio = 1
			for _, r := range tc.before {
				place(t, n, r)
			}
			a, err := n.Allocate(tc.req)
			if err != nil {
				t.Fatal(err)
			}
			if got := l3GroupsOf(n, a.CPUs); len(got) != 1 {
				t.Errorf("cpus %s span L3 groups %v, want one", a.CPUs, got)
			}
			if a.CPUs.String() != tc.want {
				t.Errorf("cpus %s, want %s", a.CPUs, tc.want)
			}
		})
	}
}

// A pod larger than any group takes the largest groups first, so the
// fewest groups are split and a partly used group is left for small pods.
func TestAllocateLargestL3GroupsFirst(t *testing.T) {
	n := newTestNode(t, "epyc-7313p")
	n.Limits.MaxExclusiveRatio = 1
	place(t, n, exclusiveReq("a", "", 2, api.AllocSpec{}))
	a, err := n.Allocate(exclusiveReq("p", "", 14, api.AllocSpec{}))
	if err != nil {
		t.Fatal(err)
	}
	if a.CPUs.String() != "4-10,20-26" {
		t.Fatalf("cpus %s, want 4-10,20-26 (group 1 whole, then 6 of group 2; group 0, partly used, untouched)", a.CPUs)
	}
}

// On random SameCoreFirst pods, whenever the NUMA node the engine chose has
// an L3 group with enough free whole-core CPUs for the pod (counted here
// from the node's held CPUs, not from the engine's summary), the pod's
// CPUs lie in one L3 group.
func TestAllocateL3WhenItFits(t *testing.T) {
	for _, name := range []string{"epyc-7313p", "epyc-7763-2s"} {
		t.Run(name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(3, 4))
			n := newTestNode(t, name)
			n.Limits.MaxExclusiveRatio = 1
			var keys []string
			checked := 0
			for i := 0; i < 400; i++ {
				if len(keys) > 0 && rng.IntN(3) == 0 {
					j := rng.IntN(len(keys))
					n.Remove(keys[j])
					keys = append(keys[:j], keys[j+1:]...)
				}
				k := 1 + rng.IntN(16)
				free := freeWholeCoreCPUsPerL3(n)
				req := exclusiveReq(fmt.Sprintf("p%d", i), "", k, api.AllocSpec{})
				a, err := n.Allocate(req)
				if err != nil {
					continue
				}
				if mems := a.Mems; mems.Size() == 1 {
					numa := mems.List()[0]
					fits := false
					for g, cpus := range free {
						if g.numa == numa && cpus >= k {
							fits = true
						}
					}
					if groups := l3GroupsOf(n, a.CPUs); fits && len(groups) != 1 {
						t.Fatalf("step %d: %d CPUs %s span L3 groups %v though one group of NUMA node %d had room (free %v)",
							i, k, a.CPUs, groups, numa, free)
					}
					if fits {
						checked++
					}
				}
				if err := n.Add(PlacementFor(req, a.CPUs)); err != nil {
					t.Fatal(err)
				}
				keys = append(keys, req.Key)
			}
			if checked < 100 {
				t.Fatalf("only %d allocations had a group with room: the test checks too little", checked)
			}
		})
	}
}

type numaL3 struct{ numa, l3 int }

// freeWholeCoreCPUsPerL3 counts, per L3 group, the CPUs of cores on which
// no CPU is held or reserved: what a SameCoreFirst pod may take.
func freeWholeCoreCPUsPerL3(n *Node) map[numaL3]int {
	busy := map[int]bool{}
	for _, id := range n.Exclusive().Union(n.Topo.Reserved()).List() {
		c, _ := n.Topo.CPU(id)
		busy[c.Core] = true
	}
	out := map[numaL3]int{}
	for _, id := range n.Topo.Online().List() {
		c, _ := n.Topo.CPU(id)
		if !busy[c.Core] {
			out[numaL3{c.NUMA, c.L3}]++
		}
	}
	return out
}

func l3GroupsOf(n *Node, cpus cpuset.CPUSet) []int {
	seen := map[int]bool{}
	var out []int
	for _, id := range cpus.List() {
		c, _ := n.Topo.CPU(id)
		if !seen[c.L3] {
			seen[c.L3] = true
			out = append(out, c.L3)
		}
	}
	return out
}
