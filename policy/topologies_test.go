package policy

import (
	"fmt"
	"testing"

	"k8s.io/utils/cpuset"

	"github.com/corepin/corepin/api"
	"github.com/corepin/corepin/internal/testtopo"
)

// newTestNode builds a node of a named topology (internal/testtopo: the
// layouts of real machines, described in its README), after mutate.
func newTestNode(t testing.TB, name string, mutate ...func(*api.Topology)) *Node {
	t.Helper()
	src, err := testtopo.Load(name)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range mutate {
		m(&src)
	}
	topo, err := NewTopology(src)
	if err != nil {
		t.Fatalf("topology %s: %v", name, err)
	}
	return NewNode(name, topo, api.DefaultLimits())
}

// exclusiveReq is an exclusive pod with one container of k CPUs.
func exclusiveReq(key, app string, k int, spec api.AllocSpec) Request {
	if spec.CPU == "" {
		spec.CPU = api.SameCoreFirst
	}
	if spec.NUMA == "" {
		spec.NUMA = api.NUMAPreferred
	}
	return Request{Key: key, Namespace: "default",
		Intent:     api.PodIntent{Mode: api.ModeExclusive, Spec: spec, App: app, ExcludeReserve: true},
		Containers: []Container{{Name: "main", Milli: int64(k) * 1000, Exclusive: true}}}
}

// sharedReq is a shared pod of the given amount in millicores.
func sharedReq(key, app string, milli int64) Request {
	return Request{Key: key, Namespace: "default",
		Intent:     api.PodIntent{Mode: api.ModeShared, Spec: api.AllocSpec{CPU: api.SameCoreFirst, NUMA: api.NUMAPreferred}, App: app, ExcludeReserve: true},
		Containers: []Container{{Name: "main", Milli: milli}}}
}

// place allocates and records req, failing the test on error.
func place(t testing.TB, n *Node, req Request) Allocation {
	t.Helper()
	a, err := n.Allocate(req)
	if err != nil {
		t.Fatalf("allocate %s on %s: %v", req.Key, n.Name, err)
	}
	if err := n.Add(PlacementFor(req, a.CPUs)); err != nil {
		t.Fatalf("add %s: %v", req.Key, err)
	}
	return a
}

func coresOf(n *Node, cpus cpuset.CPUSet) map[int]int {
	out := map[int]int{}
	for _, id := range cpus.List() {
		c, _ := n.Topo.CPU(id)
		out[c.Core]++
	}
	return out
}

func mustSet(s string) cpuset.CPUSet {
	set, err := cpuset.Parse(s)
	if err != nil {
		panic(fmt.Sprint(s, err))
	}
	return set
}
