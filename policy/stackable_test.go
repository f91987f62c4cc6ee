package policy

import (
	"testing"

	"k8s.io/utils/cpuset"

	"github.com/corepin/corepin/api"
)

// Stackable is the free siblings of Spread cores, and only those: the free
// thread of a partly held SameCoreFirst core is not stackable.
func TestStackable(t *testing.T) {
	n := newTestNode(t, "2s-smt-server")
	if s := n.Stackable(); !s.IsEmpty() {
		t.Fatalf("empty node: stackable %s", s)
	}
	// Spread takes one thread of each of two cores: their siblings stack.
	a := place(t, n, exclusiveReq("spread", "a", 2, api.AllocSpec{CPU: api.Spread}))
	var siblings []int
	for _, id := range a.CPUs.List() {
		siblings = append(siblings, (id+16)%32)
	}
	if got, want := n.Stackable(), cpuset.New(siblings...); !got.Equals(want) {
		t.Fatalf("stackable %s, want the siblings %s of %s", got, want, a.CPUs)
	}
	// A SameCoreFirst pod of 3 CPUs takes a whole core and half of another:
	// that free half is shared, not stackable.
	b := place(t, n, exclusiveReq("samecore", "b", 3, api.AllocSpec{}))
	if got := n.Stackable(); got.Intersection(cpuset.New(siblings...)).Size() != 2 || got.Size() != 2 {
		t.Fatalf("stackable %s after SameCoreFirst %s", got, b.CPUs)
	}
	if !n.Stackable().IsSubsetOf(n.SharedPool()) {
		t.Fatalf("stackable CPUs %s are not in the shared pool %s", n.Stackable(), n.SharedPool())
	}
}
