package policy

import (
	"fmt"
	"testing"

	"github.com/corepin/corepin/api"
)

// filledNode returns the 256-CPU node (2 sockets x 64 cores x 2 threads,
// 4 NUMA nodes) with exclusive pods of 8 CPUs (alternating SameCoreFirst
// and Spread, distinct apps) until the given share of its CPUs is held.
func filledNode(b *testing.B, fill float64) *Node {
	n := newTestNode(b, "256-cpu")
	n.Limits.MaxExclusiveRatio = 1
	target := int(fill * float64(n.Topo.Allocatable()))
	for i := 0; n.Capacity().E+8 <= target; i++ {
		spec := api.AllocSpec{}
		if i%2 == 1 {
			spec.CPU = api.Spread
		}
		place(b, n, exclusiveReq(fmt.Sprintf("fill-%d", i), fmt.Sprintf("app-%d", i), 8, spec))
	}
	return n
}

func benchmarkAllocate(b *testing.B, fill float64, k int) {
	n := filledNode(b, fill)
	req := exclusiveReq("new", "new", k, api.AllocSpec{})
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := n.Allocate(req); err != nil {
			b.Fatal(err)
		}
	}
}

// Target: at most 20 us per 8-CPU allocation at 50% fill.
func BenchmarkAllocate8CPUs50PercentFull(b *testing.B) { benchmarkAllocate(b, 0.5, 8) }
func BenchmarkAllocate8CPUs90PercentFull(b *testing.B) { benchmarkAllocate(b, 0.9, 8) }
func BenchmarkAllocate64CPUs(b *testing.B)             { benchmarkAllocate(b, 0.5, 64) }

// BenchmarkFilterScore5000Nodes filters and scores one 8-CPU exclusive pod
// against 5,000 256-CPU nodes at 50% fill (target: at most 20 ms).
func BenchmarkFilterScore5000Nodes(b *testing.B) {
	base := filledNode(b, 0.5)
	nodes := make([]*Node, 5000)
	for i := range nodes {
		nodes[i] = base.Clone()
	}
	req := exclusiveReq("new", "new", 8, api.AllocSpec{})
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for _, n := range nodes {
			if n.Fit(req) == nil {
				_ = n.Score(req, api.MostAllocated)
			}
		}
	}
}

// BenchmarkVictims is one node of the extender's preemption benchmark: the
// 256-CPU node with 30 pods (every third exclusive with 4 CPUs, 40 held;
// the rest shared 500m) and an exclusive limit of 44, candidates in the
// extender's order (four shared pods before the first exclusive one), for
// an 8-CPU pod (one victim) and a 12-CPU pod (two), with one VictimSearch
// reused as the extender does.
func BenchmarkVictims(b *testing.B) {
	n := newTestNode(b, "256-cpu")
	n.Limits.MaxExclusiveRatio = 0.172
	var shared, exclusive []*Placement
	for j := 0; j < 30; j++ {
		key := fmt.Sprintf("pod-%02d", j)
		if j%3 == 0 {
			place(b, n, exclusiveReq(key, fmt.Sprintf("app-%d", j), 4, api.AllocSpec{}))
			p, _ := n.Pod(key)
			exclusive = append(exclusive, p)
		} else {
			place(b, n, sharedReq(key, fmt.Sprintf("app-%d", j), 500))
			p, _ := n.Pod(key)
			shared = append(shared, p)
		}
	}
	var cands []*Placement
	for len(shared)+len(exclusive) > 0 {
		take := min(4, len(shared))
		cands = append(cands, shared[:take]...)
		shared = shared[take:]
		if len(exclusive) > 0 {
			cands = append(cands, exclusive[0])
			exclusive = exclusive[1:]
		}
	}
	for _, tc := range []struct{ k, want int }{{8, 1}, {12, 2}} {
		b.Run(fmt.Sprintf("%d-CPUs", tc.k), func(b *testing.B) {
			req := exclusiveReq("urgent", "urgent", tc.k, api.AllocSpec{})
			var vs VictimSearch
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				if v, ok := vs.Victims(n, req, cands); !ok || len(v) != tc.want {
					b.Fatalf("victims %v (%v), want %d", keysOf(v), ok, tc.want)
				}
			}
		})
	}
}
