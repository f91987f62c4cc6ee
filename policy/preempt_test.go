package policy

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/corepin/corepin/api"
)

// colexLess orders two sets of candidate indexes (each sorted) of the same
// size the way Victims prefers them: by their last member, then the one
// before it, and so on.
func colexLess(a, b []int) bool {
	for i := len(a) - 1; i >= 0; i-- {
		if a[i] != b[i] {
			return a[i] < b[i]
		}
	}
	return false
}

// bruteVictims tries every subset of cands on a clone of the node.
func bruteVictims(t *testing.T, n *Node, req Request, cands []*Placement) ([]int, bool) {
	t.Helper()
	var best []int
	found := false
	for mask := 0; mask < 1<<len(cands); mask++ {
		var set []int
		c := n.Clone()
		for i := range cands {
			if mask&(1<<i) != 0 {
				set = append(set, i)
				c.Remove(cands[i].Key)
			}
		}
		if c.Fit(req) != nil {
			continue
		}
		if !found || len(set) < len(best) || len(set) == len(best) && colexLess(set, best) {
			best, found = set, true
		}
	}
	return best, found
}

func keysOf(ps []*Placement) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.Key
	}
	return out
}

// TestVictimsAgainstEverySubset: on random nodes and pods, Victims answers
// what trying every subset of the candidates answers: whether one makes
// room, the fewest pods that do, and among those the set Victims documents.
// The node is left as it was.
func TestVictimsAgainstEverySubset(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	topos := []string{"1s-vm", "2s-smt-server"}
	policies := []api.CPUPolicy{api.SameCoreFirst, api.Spread}
	numas := []api.NUMAPolicy{api.NUMAPreferred, api.NUMARequired, api.NUMANone}
	tried, some, none, multi := 0, 0, 0, 0
	for round := 0; round < 400; round++ {
		name := topos[round%len(topos)]
		n := newTestNode(t, name)
		ratio := []float64{1, 0.75, 2.0 / 3}[rng.IntN(3)]
		n.Limits.MaxExclusiveRatio = ratio
		cpus := n.Topo.allocatable
		// Fill the node with pods that fit, until a few attempts fail.
		for i, misses := 0, 0; misses < 4 && n.Len() < 10; i++ {
			var req Request
			app := fmt.Sprintf("app-%d", rng.IntN(4))
			if rng.IntN(4) == 0 {
				req = sharedReq(fmt.Sprintf("s-%d", i), app, int64(250*(1+rng.IntN(8))))
			} else {
				spec := api.AllocSpec{CPU: policies[rng.IntN(2)], NUMA: numas[rng.IntN(2)]}
				req = exclusiveReq(fmt.Sprintf("e-%d", i), app, 1+rng.IntN(max(1, cpus/6)), spec)
			}
			if rng.IntN(5) == 0 {
				req.Intent.MaxPerNode = 1 + rng.IntN(3)
			}
			a, err := n.Allocate(req)
			if err != nil {
				misses++
				continue
			}
			if err := n.Add(PlacementFor(req, a.CPUs)); err != nil {
				t.Fatal(err)
			}
		}
		pods := n.Pods()
		rng.Shuffle(len(pods), func(i, j int) { pods[i], pods[j] = pods[j], pods[i] })
		cands := pods[:rng.IntN(len(pods)+1)]
		spec := api.AllocSpec{CPU: policies[rng.IntN(2)], NUMA: numas[rng.IntN(3)]}
		req := exclusiveReq("preemptor", fmt.Sprintf("app-%d", rng.IntN(5)), 1+rng.IntN(cpus/2), spec)
		if rng.IntN(5) == 0 {
			req.Intent.MaxPerNode = 1 + rng.IntN(2)
		}
		if rng.IntN(6) == 0 {
			req = sharedReq("preemptor", "app-0", int64(1000*(1+rng.IntN(cpus))))
		}
		before := fmt.Sprint(n.Capacity(), n.Exclusive(), keysOf(n.Pods()), n.Stackable(), n.SharedPool())

		got, ok := n.Victims(req, cands)
		want, wantOK := bruteVictims(t, n, req, cands)
		// The candidates are the node's own pods, each once: the search
		// that trusts that answers the same.
		var vs VictimSearch
		if placed, placedOK := vs.VictimsAmongPlaced(n, req, cands); placedOK != ok || !slices.Equal(keysOf(placed), keysOf(got)) {
			t.Fatalf("round %d: VictimsAmongPlaced %v (%v), Victims %v (%v)", round, keysOf(placed), placedOK, keysOf(got), ok)
		}
		if after := fmt.Sprint(n.Capacity(), n.Exclusive(), keysOf(n.Pods()), n.Stackable(), n.SharedPool()); after != before {
			t.Fatalf("round %d: Victims changed the node: %s, was %s", round, after, before)
		}
		tried++
		if ok != wantOK {
			t.Fatalf("round %d (%s, %d candidates, %+v): Victims found a set: %v, every subset: %v", round, name, len(cands), req.Intent, ok, wantOK)
		}
		if !ok {
			none++
			continue
		}
		wantKeys := []string{}
		for _, i := range want {
			wantKeys = append(wantKeys, cands[i].Key)
		}
		if gotKeys := keysOf(got); !slices.Equal(gotKeys, wantKeys) && !(len(gotKeys) == 0 && len(wantKeys) == 0) {
			t.Fatalf("round %d (%s, candidates %v, %+v): victims %v, want %v", round, name, keysOf(cands), req.Intent, gotKeys, wantKeys)
		}
		// The answer really makes room.
		c := n.Clone()
		for _, p := range got {
			c.Remove(p.Key)
		}
		if err := c.Fit(req); err != nil {
			t.Fatalf("round %d: the pod does not fit without %v: %v", round, keysOf(got), err)
		}
		some++
		if len(got) > 1 {
			multi++
		}
	}
	t.Logf("%d rounds: %d with victims (%d with several), %d where no set helps", tried, some, multi, none)
	if some < 50 || none < 20 || multi < 10 {
		t.Fatalf("the random cases are too one-sided: %d with victims, %d with several, %d without", some, multi, none)
	}
}

// TestVictimsPrefersFewestThenOrder: the fewest pods win over the order
// (two small ones taken first would be a larger set), and among equally
// small sets the order decides; a node where even all candidates are not
// enough gets none; a pod that fits already needs none.
func TestVictimsPrefersFewestThenOrder(t *testing.T) {
	n := newTestNode(t, "1s-vm") // 8 CPUs, no SMT
	n.Limits.MaxExclusiveRatio = 1
	a := place(t, n, exclusiveReq("a", "", 2, api.AllocSpec{}))
	b := place(t, n, exclusiveReq("b", "", 2, api.AllocSpec{}))
	c := place(t, n, exclusiveReq("c", "", 4, api.AllocSpec{}))
	_, _, _ = a, b, c
	elsewhere := newTestNode(t, "1s-vm")
	place(t, elsewhere, exclusiveReq("x", "", 4, api.AllocSpec{}))
	other, _ := elsewhere.Pod("x")
	pa, _ := n.Pod("a")
	pb, _ := n.Pod("b")
	pc, _ := n.Pod("c")
	for _, tc := range []struct {
		name  string
		k     int
		cands []*Placement
		want  []string
		ok    bool
	}{
		{"one small pod is enough: the first in order", 2, []*Placement{pa, pb, pc}, []string{"a"}, true},
		{"order decides among single pods", 2, []*Placement{pb, pa, pc}, []string{"b"}, true},
		{"one large pod beats two small ones taken first", 4, []*Placement{pa, pb, pc}, []string{"c"}, true},
		{"two pods when no single one is enough", 6, []*Placement{pa, pb, pc}, []string{"a", "c"}, true},
		{"not among the candidates: never a victim", 4, []*Placement{pa, pb}, []string{"a", "b"}, true},
		{"no set of the candidates is enough", 6, []*Placement{pa, pb}, nil, false},
		{"repeats and pods of other nodes are ignored", 4, []*Placement{pa, pa, other, pb, pa, pc}, []string{"c"}, true},
		{"the node cannot hold the pod at all", 9, []*Placement{pa, pb, pc}, nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := n.Victims(exclusiveReq("p", "", tc.k, api.AllocSpec{}), tc.cands)
			if ok != tc.ok || !slices.Equal(keysOf(got), tc.want) && len(tc.want) > 0 {
				t.Fatalf("victims %v (%v), want %v (%v)", keysOf(got), ok, tc.want, tc.ok)
			}
		})
	}
	n.Remove("a")
	if got, ok := n.Victims(exclusiveReq("p", "", 2, api.AllocSpec{}), []*Placement{pb, pc}); !ok || len(got) != 0 {
		t.Fatalf("a pod that fits already: victims %v (%v), want none needed", keysOf(got), ok)
	}
}
