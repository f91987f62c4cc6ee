package policy

import (
	"fmt"
	"testing"

	"k8s.io/utils/cpuset"

	"github.com/corepin/corepin/api"
)

// synthetic builds a topology numbered the way Linux numbers x86 servers:
// thread t of core c (counting cores across sockets) is CPU c + t*cores. Each
// socket is split into numaPerSocket NUMA nodes, each with its own L3.
func synthetic(sockets, coresPerSocket, threads, numaPerSocket int, reserved string, queues ...api.IOQueue) api.Topology {
	cores := sockets * coresPerSocket
	topo := api.Topology{Version: api.TopologyVersion, IOQueues: queues}
	coresPerNUMA := coresPerSocket / numaPerSocket
	for t := 0; t < threads; t++ {
		for c := 0; c < cores; c++ {
			socket := c / coresPerSocket
			numa := c / coresPerNUMA
			topo.CPUs = append(topo.CPUs, api.CPUInfo{ID: c + t*cores, Core: c, Socket: socket, NUMA: numa, L3: numa})
		}
	}
	set, err := cpuset.Parse(reserved)
	if err != nil {
		panic(err)
	}
	topo.Reserved = api.NewCPUList(set)
	return topo
}

// Named topologies used across the tests and benchmarks.
var namedTopologies = map[string]func() api.Topology{
	// 2 sockets x 8 cores x 2 threads, one NUMA node per socket: CPUs 0-31,
	// siblings N and N+16.
	"2s-smt-server": func() api.Topology { return synthetic(2, 8, 2, 1, "") },
	// 1 socket, 8 CPUs, no SMT.
	"1s-vm": func() api.Topology { return synthetic(1, 8, 1, 1, "") },
	// 2 sockets x 64 cores x 2 threads, 2 NUMA nodes per socket: 256 CPUs.
	"256-cpu": func() api.Topology { return synthetic(2, 64, 2, 2, "") },
	// The contract's seed: 104 CPUs, 8 reserved, so P = 96.
	"seed-104": func() api.Topology { return synthetic(2, 26, 2, 1, "0-3,52-55") },
}

func newTestNode(t testing.TB, name string, mutate ...func(*api.Topology)) *Node {
	t.Helper()
	src := namedTopologies[name]()
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
