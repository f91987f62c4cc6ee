package policy

import (
	"testing"

	"k8s.io/utils/cpuset"
)

// threadsOf are the CPUs (every SMT thread) of the given cores.
func threadsOf(n *Node, cores ...int) cpuset.CPUSet {
	var ids []int
	for _, c := range n.Topo.Source.CPUs {
		for _, core := range cores {
			if c.Core == core {
				ids = append(ids, c.ID)
			}
		}
	}
	return cpuset.New(ids...)
}

// TestGrantedCPUs: a node plugin's pod keeps the CPUs its sandbox was
// granted while its containers are stopped. They count in E but stay in
// the shared pool and have no holder; taking them back is not growth, even
// on a node whose limit was lowered meanwhile, while any CPU beyond them
// is checked against the limit.
func TestGrantedCPUs(t *testing.T) {
	for _, topo := range []string{"2s-smt-server", "256-cpu", "seed-104"} {
		t.Run(topo, func(t *testing.T) {
			n := newTestNode(t, topo)
			p := n.Capacity().P
			n.Limits.MaxExclusiveRatio = 5.5 / float64(p) // limit 5
			db := threadsOf(n, 10, 11)                    // two cores, every thread
			if err := n.Grow(&Placement{Key: "db", CPUs: db, Granted: db}); err != nil {
				t.Fatalf("db: %v", err)
			}
			// Its containers stop: it runs on nothing, its grant stays.
			if err := n.Replace(&Placement{Key: "db", CPUs: cpuset.New(), Granted: db}); err != nil {
				t.Fatal(err)
			}
			if c := n.Capacity(); c.E != 0 || c.Dormant != db.Size() {
				t.Fatalf("E %d, dormant %d while db is stopped, want 0 and its %d granted CPUs", c.E, c.Dormant, db.Size())
			}
			if pool := n.SharedPool(); !db.IsSubsetOf(pool) {
				t.Fatalf("shared pool %s lacks db's stopped CPUs %s", pool, db)
			}
			if h, ok := n.Holder(db.List()[0]); ok {
				t.Fatalf("stopped CPU %d held by %s", db.List()[0], h.Key)
			}
			x := threadsOf(n, 12)
			if err := n.Grow(&Placement{Key: "x", CPUs: x}); err == nil || err.Error() != "exclusive limit 5 reached (needs 2, holds 4)" {
				t.Fatalf("x into db's room: %v", err)
			}
			if _, ok := n.Pod("x"); ok {
				t.Fatal("refused x is placed")
			}
			n.Limits.MaxExclusiveRatio = 2.5 / float64(p) // limit 2: db is over it
			for _, tc := range []struct {
				name    string
				cpus    cpuset.CPUSet
				wantErr string
			}{
				{"restart on part of the grant", threadsOf(n, 10), ""},
				{"restart on all of it", db, ""},
				{"grow beyond it", db.Union(x), "exclusive limit 2 reached (needs 2, holds 4)"},
			} {
				err := n.Grow(&Placement{Key: "db", CPUs: tc.cpus, Granted: db})
				if got := errString(err); got != tc.wantErr {
					t.Fatalf("%s: %q, want %q", tc.name, got, tc.wantErr)
				}
				if got, _ := n.Pod("db"); !got.CPUs.Equals(db) && tc.wantErr != "" {
					t.Fatalf("%s: refused, db now holds %s", tc.name, got.CPUs)
				}
			}
			// A fact is never refused for capacity, only for CPUs held by
			// another pod, which leaves the node as it was.
			if err := n.Replace(&Placement{Key: "db", CPUs: db.Union(x), Granted: db}); err != nil {
				t.Fatalf("fact: %v", err)
			}
			if err := n.Replace(&Placement{Key: "y", CPUs: x}); err == nil {
				t.Fatal("y placed on db's CPUs")
			}
			if h, _ := n.Holder(x.List()[0]); h.Key != "db" {
				t.Fatalf("CPU %d held by %s after y's refusal", x.List()[0], h.Key)
			}
			n.Remove("db")
			if c := n.Capacity(); c.E+c.Dormant != 0 || !n.SharedPool().Equals(n.Topo.Online().Difference(n.Topo.Reserved())) {
				t.Fatalf("db gone: E %d, pool %s", c.E, n.SharedPool())
			}
		})
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
