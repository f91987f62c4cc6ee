package policy

import (
	"fmt"
	"sort"

	"k8s.io/utils/cpuset"

	"github.com/corepin/corepin/api"
)

// Topology is an indexed, immutable view of a node's api.Topology. Nodes with
// identical topologies can share one value. CPUs are addressed by their index
// in CPUs (sorted by id), which keeps the engine's hot loops on slices rather
// than on maps.
type Topology struct {
	// Source is the topology as published.
	Source api.Topology
	cpus   []api.CPUInfo
	byID   map[int]int
	// cores are the physical cores, ordered by (NUMA, L3, core index).
	cores  []core
	coreOf []int // cpu index -> cores index
	// numas are the distinct NUMA node ids, sorted; numaOf maps a cpu index
	// to an index into numas.
	numas    []int
	numaOf   []int
	reserved []bool
	// allocatable is P: the online CPUs that are not reserved.
	allocatable int
	queues      []string
	queuesOf    [][]int // cpu index -> indexes into queues
	online      cpuset.CPUSet
	reservedSet cpuset.CPUSet
}

// core is one physical core.
type core struct {
	id   int // node-unique core index from the topology
	numa int // index into Topology.numas
	l3   int
	// cpus are the core's non-reserved threads (cpu indexes), sorted by id.
	cpus []int
}

// NewTopology validates t and indexes it.
func NewTopology(t api.Topology) (*Topology, error) {
	if err := t.Validate(); err != nil {
		return nil, err
	}
	topo := &Topology{
		Source:      t,
		cpus:        t.CPUs,
		byID:        make(map[int]int, len(t.CPUs)),
		coreOf:      make([]int, len(t.CPUs)),
		numaOf:      make([]int, len(t.CPUs)),
		reserved:    make([]bool, len(t.CPUs)),
		queuesOf:    make([][]int, len(t.CPUs)),
		online:      t.Online(),
		reservedSet: t.Reserved.Set(),
	}
	numaSet := map[int]bool{}
	for i, c := range t.CPUs {
		topo.byID[c.ID] = i
		numaSet[c.NUMA] = true
		topo.reserved[i] = topo.reservedSet.Contains(c.ID)
		if !topo.reserved[i] {
			topo.allocatable++
		}
	}
	for id := range numaSet {
		topo.numas = append(topo.numas, id)
	}
	sort.Ints(topo.numas)
	numaIndex := map[int]int{}
	for i, id := range topo.numas {
		numaIndex[id] = i
	}

	coreIndex := map[int]int{}
	order := make([]int, len(t.CPUs))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool {
		ca, cb := t.CPUs[order[a]], t.CPUs[order[b]]
		if ca.NUMA != cb.NUMA {
			return ca.NUMA < cb.NUMA
		}
		if ca.L3 != cb.L3 {
			return ca.L3 < cb.L3
		}
		if ca.Core != cb.Core {
			return ca.Core < cb.Core
		}
		return ca.ID < cb.ID
	})
	for _, i := range order {
		c := t.CPUs[i]
		topo.numaOf[i] = numaIndex[c.NUMA]
		ci, ok := coreIndex[c.Core]
		if !ok {
			ci = len(topo.cores)
			coreIndex[c.Core] = ci
			topo.cores = append(topo.cores, core{id: c.Core, numa: numaIndex[c.NUMA], l3: c.L3})
		}
		topo.coreOf[i] = ci
		if !topo.reserved[i] {
			topo.cores[ci].cpus = append(topo.cores[ci].cpus, i)
		}
	}
	for qi, q := range t.IOQueues {
		topo.queues = append(topo.queues, q.Name)
		for _, id := range q.CPUs.Set().List() {
			i := topo.byID[id]
			topo.queuesOf[i] = append(topo.queuesOf[i], qi)
		}
	}
	return topo, nil
}

// Allocatable is P: online CPUs that are not reserved.
func (t *Topology) Allocatable() int { return t.allocatable }

// Online returns the online CPUs.
func (t *Topology) Online() cpuset.CPUSet { return t.online }

// Reserved returns the reserved CPUs.
func (t *Topology) Reserved() cpuset.CPUSet { return t.reservedSet }

// HasIOQueues reports whether the node published any IO queue.
func (t *Topology) HasIOQueues() bool { return len(t.queues) > 0 }

// CPU returns the description of an online CPU.
func (t *Topology) CPU(id int) (api.CPUInfo, bool) {
	i, ok := t.byID[id]
	if !ok {
		return api.CPUInfo{}, false
	}
	return t.cpus[i], true
}

// indexes converts a set of CPU ids to cpu indexes, failing on CPUs that are
// not online.
func (t *Topology) indexes(set cpuset.CPUSet) ([]int, error) {
	out := make([]int, 0, set.Size())
	for _, id := range set.List() {
		i, ok := t.byID[id]
		if !ok {
			return nil, fmt.Errorf("CPU %d is not online on this node", id)
		}
		out = append(out, i)
	}
	return out, nil
}

// set converts cpu indexes to a set of CPU ids.
func (t *Topology) set(idx []int) cpuset.CPUSet {
	ids := make([]int, len(idx))
	for n, i := range idx {
		ids[n] = t.cpus[i].ID
	}
	return cpuset.New(ids...)
}

// mems returns the NUMA nodes of the given CPUs.
func (t *Topology) mems(idx []int) cpuset.CPUSet {
	ids := make([]int, 0, 2)
	for _, i := range idx {
		ids = append(ids, t.cpus[i].NUMA)
	}
	return cpuset.New(ids...)
}
