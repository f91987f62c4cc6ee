package api

import (
	"fmt"
	"maps"
	"slices"
	"sort"
	"strconv"

	"k8s.io/utils/cpuset"
)

// TopologyVersion is the only version of corepin.io/topology so far.
const TopologyVersion = 1

// Topology is the value of corepin.io/topology: what the node plugin
// discovered about a node's CPUs.
type Topology struct {
	Version  int       `json:"version"`
	CPUs     []CPUInfo `json:"cpus"`
	Reserved CPUList   `json:"reserved"`
	IOQueues []IOQueue `json:"ioQueues,omitempty"`
}

// CPUInfo describes one online logical CPU.
type CPUInfo struct {
	ID int `json:"id"`
	// Core is a node-unique physical core index; SMT siblings share it.
	Core   int `json:"core"`
	Socket int `json:"socket"`
	NUMA   int `json:"numa"`
	// L3 is a node-unique last-level-cache group index.
	L3 int `json:"l3"`
}

// IOQueue is one interrupt queue of a NIC or block device and the CPUs its
// interrupts are delivered to.
type IOQueue struct {
	Name string  `json:"name"`
	CPUs CPUList `json:"cpus"`
}

// Online returns the set of CPU ids.
func (t Topology) Online() cpuset.CPUSet {
	ids := make([]int, len(t.CPUs))
	for i, c := range t.CPUs {
		ids[i] = c.ID
	}
	return cpuset.New(ids...)
}

// ParseTopology parses corepin.io/topology strictly and validates it.
func ParseTopology(value string) (Topology, error) {
	var t Topology
	if err := decodeStrict(AnnotationTopology, value, &t); err != nil {
		return Topology{}, err
	}
	if err := t.Validate(); err != nil {
		return Topology{}, err
	}
	return t, nil
}

// Validate checks the invariants the engine relies on: known version, unique
// CPU ids, SMT siblings on one socket and NUMA node, a core in one L3 group,
// and reserved CPUs and IO queues that name online CPUs. CPUs are sorted by id.
func (t *Topology) Validate() error {
	key := AnnotationTopology
	if t.Version != TopologyVersion {
		return fieldError(key, "version", t.Version, fmt.Sprintf("unsupported version, want %d", TopologyVersion))
	}
	if len(t.CPUs) == 0 {
		return fieldError(key, "cpus", "[]", "must list the online CPUs")
	}
	sort.Slice(t.CPUs, func(i, j int) bool { return t.CPUs[i].ID < t.CPUs[j].ID })
	type place struct{ socket, numa, l3 int }
	cores := map[int]place{}
	for i, c := range t.CPUs {
		if c.ID < 0 || c.ID > MaxCPUID || c.Core < 0 || c.Socket < 0 || c.NUMA < 0 || c.L3 < 0 {
			return fieldError(key, "cpus", fmt.Sprintf("%+v", c), fmt.Sprintf("ids must be from 0 to %d and indexes >= 0", MaxCPUID))
		}
		if i > 0 && t.CPUs[i-1].ID == c.ID {
			return fieldError(key, "cpus", fmt.Sprintf("id %d", c.ID), "CPU listed twice")
		}
		p := place{c.Socket, c.NUMA, c.L3}
		if old, ok := cores[c.Core]; ok && old != p {
			return fieldError(key, "cpus", fmt.Sprintf("%+v", c),
				fmt.Sprintf("core %d has threads on different sockets, NUMA nodes or L3 groups", c.Core))
		}
		cores[c.Core] = p
	}
	online := t.Online()
	if r := t.Reserved.Set(); !r.IsSubsetOf(online) {
		return fieldError(key, "reserved", strconv.Quote(r.String()),
			fmt.Sprintf("CPUs %s are not online", r.Difference(online)))
	}
	names := map[string]bool{}
	for _, q := range t.IOQueues {
		if q.Name == "" || names[q.Name] {
			return fieldError(key, "ioQueues", strconv.Quote(q.Name), "queue names must be unique and not empty")
		}
		names[q.Name] = true
		if c := q.CPUs.Set(); !c.IsSubsetOf(online) {
			return fieldError(key, "ioQueues", fmt.Sprintf("%s: %q", q.Name, c.String()),
				fmt.Sprintf("CPUs %s are not online", c.Difference(online)))
		}
	}
	return nil
}

// CompatibleGrow reports whether next may replace old without disturbing any
// placement: every old CPU is still there with the same core, socket and NUMA
// node, and in the same IO queues (contract section 3). New CPUs, new queues
// and a changed reserved set are allowed (the elastic-CPU case). The error
// says what changed.
func CompatibleGrow(old, next Topology) error {
	nextByID := make(map[int]CPUInfo, len(next.CPUs))
	for _, c := range next.CPUs {
		nextByID[c.ID] = c
	}
	for _, c := range old.CPUs {
		n, ok := nextByID[c.ID]
		switch {
		case !ok:
			return fmt.Errorf("CPU %d went offline", c.ID)
		case n.Core != c.Core || n.Socket != c.Socket || n.NUMA != c.NUMA:
			return fmt.Errorf("CPU %d moved from core %d socket %d NUMA %d to core %d socket %d NUMA %d",
				c.ID, c.Core, c.Socket, c.NUMA, n.Core, n.Socket, n.NUMA)
		}
	}
	queuesOf := func(t Topology) map[int]map[string]bool {
		m := map[int]map[string]bool{}
		for _, q := range t.IOQueues {
			for _, id := range q.CPUs.Set().UnsortedList() {
				if m[id] == nil {
					m[id] = map[string]bool{}
				}
				m[id][q.Name] = true
			}
		}
		return m
	}
	oldQ, nextQ := queuesOf(old), queuesOf(next)
	for _, c := range old.CPUs {
		for _, name := range slices.Sorted(maps.Keys(oldQ[c.ID])) {
			if !nextQ[c.ID][name] {
				return fmt.Errorf("CPU %d left IO queue %s", c.ID, name)
			}
		}
		for _, name := range slices.Sorted(maps.Keys(nextQ[c.ID])) {
			if !oldQ[c.ID][name] {
				return fmt.Errorf("CPU %d joined IO queue %s", c.ID, name)
			}
		}
	}
	return nil
}
