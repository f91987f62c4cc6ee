package policy

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	"k8s.io/utils/cpuset"

	"github.com/corepin/corepin/api"
)

// Resize chooses the new exclusive CPUs of a pod placed on the node whose
// exclusive containers were resized in place (contract section 10). old is
// the alloc-status the pod holds: the containers it names stay the
// exclusive ones, each with the whole amount req now gives it. A container
// keeps the CPUs it has; one that shrinks drops CPUs, keeping its fullest
// physical cores; one that grows takes, first, the free threads of the
// pod's own cores (SameCoreFirst), then CPUs chosen as its alloc-spec
// would allocate them, on the NUMA nodes it is on first (only there under
// numa Required). A grow must fit the exclusive limit with the pod's new
// shared amount; a shrink always fits. A container resized to a fraction is
// refused (CodeResize). The node is not changed: the caller records the
// result (Replace with PlacementFor). Nothing to change returns old's CPUs.
func (n *Node) Resize(req Request, old api.AllocStatus) (Allocation, error) {
	p, ok := n.pods[req.Key]
	if !ok || !p.CPUs.Equals(old.CPUs.Set()) {
		return Allocation{}, Reasonf(CodeConflict, "pod %s is not placed on node %s with CPUs %s", req.Key, n.Name, old.CPUs.Set())
	}
	if n.Topo == nil {
		return Allocation{}, Reasonf(CodeNoTopology, "node %s has no CPU topology", n.Name)
	}
	req.Containers = slices.Clone(req.Containers)
	type resized struct {
		name      string
		have      cpuset.CPUSet
		want      int
		kept, add []int // cpu indexes
	}
	var list []*resized
	var bad []string
	grows, changed := 0, false
	for i := range req.Containers {
		c := &req.Containers[i]
		cpus, exclusive := old.Containers[c.Name]
		c.Exclusive = exclusive
		if !exclusive {
			continue
		}
		if c.Milli < 1000 || c.Milli%1000 != 0 {
			bad = append(bad, fmt.Sprintf("container %q to %s CPUs", c.Name, formatMilli(c.Milli)))
			continue
		}
		r := &resized{name: c.Name, have: cpus.Set(), want: int(c.Milli / 1000)}
		list = append(list, r)
		changed = changed || r.want != r.have.Size()
		grows += max(0, r.want-r.have.Size())
	}
	if len(bad) > 0 {
		return Allocation{}, Reasonf(CodeResize, "resize of exclusive %s refused: an exclusive container's CPU amount must be a whole number >= 1 (it keeps CPUs %s)",
			strings.Join(bad, ", "), old.CPUs.Set())
	}
	if len(list) != len(old.Containers) {
		var missing []string
		for name := range old.Containers {
			if !slices.ContainsFunc(list, func(r *resized) bool { return r.name == name }) {
				missing = append(missing, name)
			}
		}
		sort.Strings(missing)
		return Allocation{}, Reasonf(CodeBadAnnotation, "%s names containers %s that the pod does not have", api.AnnotationAllocStatus, strings.Join(missing, ", "))
	}
	if !changed {
		return allocationOf(old), nil
	}
	if grows > 0 && n.Attention != "" {
		return Allocation{}, Reasonf(CodeAttention, "node needs attention, no exclusive CPUs are given out: %s", n.Attention)
	}

	// Shrinks first: what a container drops may go to another that grows.
	var spare []int
	for _, r := range list {
		idx, err := n.Topo.indexes(r.have)
		if err != nil {
			return Allocation{}, Reasonf(CodeConflict, "pod %s container %s CPUs %s: %v", req.Key, r.name, r.have, err)
		}
		if r.want >= len(idx) {
			r.kept = idx
			continue
		}
		r.kept = n.keepFullest(idx, r.want)
		for _, i := range idx {
			if !slices.Contains(r.kept, i) {
				spare = append(spare, i)
			}
		}
	}
	for _, r := range list {
		for len(r.kept)+len(r.add) < r.want && len(spare) > 0 {
			r.add, spare = append(r.add, spare[0]), spare[1:]
		}
	}

	// The node without the pod's old placement, with what it keeps.
	work := n.Clone()
	work.Remove(req.Key)
	kept := PlacementFor(req, cpuset.New())
	kept.Name, kept.UID, kept.Priority, kept.Terminating = p.Name, p.UID, p.Priority, p.Terminating
	var keptIdx []int
	for _, r := range list {
		keptIdx = append(keptIdx, r.kept...)
		keptIdx = append(keptIdx, r.add...)
	}
	kept.CPUs = n.Topo.set(keptIdx)
	if err := work.Add(kept); err != nil {
		return Allocation{}, err
	}
	need := 0
	for _, r := range list {
		need += r.want - len(r.kept) - len(r.add)
	}
	if need > 0 {
		after := 0
		for _, r := range list {
			after += r.want
		}
		c := work.Capacity()
		if e := c.E + c.Dormant; e+need > c.ExclusiveLimit {
			return Allocation{}, Reasonf(CodeExclusiveLimit, "exclusive limit %d reached (the resize from %d to %d CPUs needs %d more, the node holds %d)",
				c.ExclusiveLimit, old.CPUs.Set().Size(), after, need, e)
		}
		if req.Intent.Spec.CPU != api.Spread {
			for _, r := range list {
				siblings := work.freeSiblings(kept, r.kept, r.want-len(r.kept)-len(r.add))
				r.add = append(r.add, siblings...)
				need -= len(siblings)
				keptIdx = append(keptIdx, siblings...)
				// Held before the next container looks, and before grow.
				work.Remove(kept.Key)
				kept.CPUs = n.Topo.set(keptIdx)
				if err := work.Add(kept); err != nil {
					return Allocation{}, err
				}
			}
		}
		if need > 0 {
			picked, err := work.grow(kept, req, need)
			if err != nil {
				return Allocation{}, err
			}
			for _, r := range list {
				k := min(r.want-len(r.kept)-len(r.add), len(picked))
				r.add, picked = append(r.add, picked[:k]...), picked[k:]
			}
		}
	}
	alloc := Allocation{Containers: map[string]cpuset.CPUSet{}, Mems: cpuset.New()}
	all := cpuset.New()
	for _, r := range list {
		set := n.Topo.set(append(slices.Clone(r.kept), r.add...))
		alloc.Containers[r.name] = set
		all = all.Union(set)
	}
	alloc.CPUs = all
	if req.Intent.Spec.NUMA != api.NUMANone {
		alloc.Mems = MemsOf(all, n.Topo.numaFunc())
	}
	return alloc, nil
}

// allocationOf is an alloc-status as an Allocation.
func allocationOf(s api.AllocStatus) Allocation {
	a := Allocation{CPUs: s.CPUs.Set(), Mems: s.Mems.Set(), Containers: map[string]cpuset.CPUSet{}}
	for name, cpus := range s.Containers {
		a.Containers[name] = cpus.Set()
	}
	return a
}

// keepFullest picks want of the cpu indexes idx to keep: those on the
// physical cores where idx has the most threads first (a shrink keeps whole
// cores whole), then the lowest CPU ids.
func (n *Node) keepFullest(idx []int, want int) []int {
	perCore := map[int]int{}
	for _, i := range idx {
		perCore[n.Topo.coreOf[i]]++
	}
	sorted := slices.Clone(idx)
	sort.SliceStable(sorted, func(a, b int) bool {
		ca, cb := perCore[n.Topo.coreOf[sorted[a]]], perCore[n.Topo.coreOf[sorted[b]]]
		if ca != cb {
			return ca > cb
		}
		ia, ib := n.Topo.coreOf[sorted[a]], n.Topo.coreOf[sorted[b]]
		if ia != ib {
			return ia < ib
		}
		return n.Topo.cpus[sorted[a]].ID < n.Topo.cpus[sorted[b]].ID
	})
	return sorted[:want]
}

// freeSiblings returns up to k free threads of the cores that hold the
// cpu indexes mine, on cores no pod but p holds anything on (SameCoreFirst
// never shares a core with another pod).
func (n *Node) freeSiblings(p *Placement, mine []int, k int) []int {
	var out []int
	for _, i := range mine {
		if len(out) >= k {
			break
		}
		c := n.Topo.cores[n.Topo.coreOf[i]]
		if slices.ContainsFunc(c.cpus, func(j int) bool { return n.owner[j] != nil && n.owner[j] != p }) {
			continue
		}
		for _, j := range c.cpus {
			if len(out) < k && n.owner[j] == nil && !slices.Contains(out, j) {
				out = append(out, j)
			}
		}
	}
	return out
}

// grow chooses need more CPUs for the placed pod p (req's) the way Allocate
// would, with p's NUMA nodes first, and returns them (cpu indexes) in pick
// order.
func (n *Node) grow(p *Placement, req Request, need int) ([]int, error) {
	more := req
	more.Containers = []Container{{Name: "resize", Milli: int64(need) * 1000, Exclusive: true}}
	acc := newAccumulator(n, more, true)
	acc.home = make([]bool, len(n.Topo.numas))
	for i, holder := range n.owner {
		if holder == p {
			acc.home[n.Topo.numaOf[i]] = true
		}
	}
	numas, err := acc.chooseNUMANodes(nil)
	if err != nil {
		return nil, err
	}
	acc.keep(numas)
	if acc.covered != nil {
		// The queues the pod covers already count as covered.
		for i, holder := range n.owner {
			if holder == p {
				for _, q := range n.Topo.queuesOf[i] {
					acc.covered[q] = true
				}
			}
		}
	}
	if acc.spread {
		acc.takeThreads()
	} else {
		acc.takeWholeCores()
		acc.takePartialCores()
	}
	if acc.need > 0 {
		return nil, fmt.Errorf("internal error: %d CPUs short after choosing NUMA nodes", acc.need)
	}
	return acc.picked, nil
}
