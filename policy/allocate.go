package policy

import (
	"fmt"
	"slices"
	"sort"

	"k8s.io/utils/cpuset"

	"github.com/corepin/corepin/api"
)

// Allocation is the engine's answer for one exclusive pod.
type Allocation struct {
	CPUs       cpuset.CPUSet
	Containers map[string]cpuset.CPUSet
	// Mems are the NUMA nodes of CPUs; empty under numa None.
	Mems cpuset.CPUSet
}

// Status renders the allocation as the alloc-status annotation value.
func (a Allocation) Status(node string) api.AllocStatus {
	s := api.AllocStatus{Node: node, CPUs: api.NewCPUList(a.CPUs), Mems: api.NewCPUList(a.Mems), Containers: map[string]api.CPUList{}}
	for name, cpus := range a.Containers {
		s.Containers[name] = api.NewCPUList(cpus)
	}
	return s
}

// Allocate checks every rule and chooses the exclusive CPUs for req. It does
// not record the pod: the caller adds PlacementFor(req, a.CPUs) once the
// choice is committed. Shared pods get an empty allocation.
func (n *Node) Allocate(req Request) (Allocation, error) {
	if err := n.Fit(req); err != nil {
		return Allocation{}, err
	}
	if !req.Exclusive() {
		return Allocation{CPUs: cpuset.New(), Mems: cpuset.New()}, nil
	}
	acc := newAccumulator(n, req, true)
	numas, err := acc.chooseNUMANodes(nil)
	if err != nil {
		return Allocation{}, err
	}
	acc.keep(numas)
	switch req.Intent.Spec.CPU {
	case api.Spread:
		acc.takeThreads()
	default:
		acc.takeWholeCores()
		acc.takePartialCores()
	}
	if acc.need > 0 {
		// chooseNUMANodes counted these very candidates; reaching here is a bug.
		return Allocation{}, fmt.Errorf("internal error: %d CPUs short after choosing NUMA nodes", acc.need)
	}
	return acc.result(), nil
}

// candidate is a physical core the pod may take CPUs from.
type candidate struct {
	core int
	// free are the core's free threads (cpu indexes): acc.buf[lo:hi].
	lo, hi int
	// stacked is true when another pod's Spread CPUs share the core.
	stacked bool
}

// cpuAccumulator chooses the CPUs of one exclusive pod. Each take method
// handles one kind of unit: NUMA nodes, whole cores, partial cores, threads.
type cpuAccumulator struct {
	node   *Node
	topo   *Topology
	req    Request
	spread bool
	need   int
	cands  []candidate
	buf    []int
	picked []int
	// queueUse counts, per IO queue, the exclusive CPUs other pods hold in
	// it; covered marks the queues this pod already has a CPU in.
	queueUse []int
	covered  []bool
	// quiet: a failure is errNoFit, without a reason (see fits).
	quiet bool
	// home marks, by NUMA index, the NUMA nodes a resized pod already has
	// CPUs on (Resize): they come first, and under numa Required they are
	// the only ones. nil for a new pod.
	home []bool
}

// newAccumulator prepares an allocation; with list false it only counts,
// which is all a feasibility check needs.
func newAccumulator(n *Node, req Request, list bool) cpuAccumulator {
	acc := cpuAccumulator{
		node: n, topo: n.Topo, req: req,
		spread: req.Intent.Spec.CPU == api.Spread,
		need:   req.ExclusiveCPUs(),
	}
	if list {
		acc.collectCandidates()
	}
	return acc
}

// collectCandidates lists the cores the pod may use, in topology order.
func (a *cpuAccumulator) collectCandidates() {
	a.buf = make([]int, 0, len(a.topo.cpus))
	a.cands = make([]candidate, 0, len(a.topo.cores))
	for ci := range a.topo.cores {
		_, stacked, ok := a.node.eligible(ci, a.req, a.spread)
		if !ok {
			continue
		}
		lo := len(a.buf)
		for _, i := range a.topo.cores[ci].cpus {
			if a.node.owner[i] == nil {
				a.buf = append(a.buf, i)
			}
		}
		a.cands = append(a.cands, candidate{core: ci, lo: lo, hi: len(a.buf), stacked: stacked})
	}
}

// eligible says whether req may take CPUs from core ci, how many threads are
// free there, and whether another pod's Spread CPUs share it. SameCoreFirst
// takes only cores no pod holds anything on; Spread may also stack on a core
// whose holders are all Spread pods of other apps.
func (n *Node) eligible(ci int, req Request, spread bool) (free int, stacked, ok bool) {
	app := req.Intent.App
	for _, i := range n.Topo.cores[ci].cpus {
		p := n.owner[i]
		if p == nil {
			free++
			continue
		}
		stacked = true
		if !spread || p.Policy != api.Spread || (app != "" && p.App == app) || p.Key == req.Key {
			return 0, false, false
		}
	}
	return free, stacked, free > 0
}

// units is how many CPUs the pod can take from a candidate core.
func (a *cpuAccumulator) units(c candidate) int {
	if a.spread {
		return 1
	}
	return c.hi - c.lo
}

// chooseNUMANodes picks the NUMA nodes (indexes into topo.numas) to allocate
// from, in the order to use them. Required: one node that fits. Preferred and
// None: one node if any fits, else as few as possible, largest first. Among
// nodes that fit, those without a pod of the same app come first (soft rule),
// then, for Spread, those that fit without stacking, then the tightest fit,
// to keep large nodes whole for large pods. The result is appended to chosen
// (a caller's buffer keeps filters allocation-free).
func (a *cpuAccumulator) chooseNUMANodes(chosen []int) ([]int, error) {
	numas := len(a.topo.numas)
	// Small fixed buffers keep the filter path free of allocations on
	// machines with up to 8 NUMA nodes.
	var capBuf, freeBuf [8]int
	var appBuf [8]bool
	// capacity counts the units the pod may take on each NUMA node;
	// unstacked, those on cores no other pod holds anything on (for a
	// SameCoreFirst pod, all of them).
	var capacity, unstacked []int
	var sameApp []bool
	if numas <= len(capBuf) {
		capacity, unstacked, sameApp = capBuf[:numas], freeBuf[:numas], appBuf[:numas]
	} else {
		capacity, unstacked, sameApp = make([]int, numas), make([]int, numas), make([]bool, numas)
	}
	total := 0
	if a.cands != nil {
		for _, c := range a.cands {
			u := a.units(c)
			numa := a.topo.cores[c.core].numa
			if a.home != nil && !a.home[numa] && a.req.Intent.Spec.NUMA == api.NUMARequired {
				continue // a resized pod stays on its NUMA node
			}
			capacity[numa] += u
			if !c.stacked {
				unstacked[numa] += u
			}
			total += u
		}
	} else {
		// Feasibility only (filter): read the node's summary.
		for u, sum := range a.node.free {
			free := sum.wholeCPUs
			if a.spread {
				free = sum.freeCores
			}
			units := free
			if a.spread {
				for _, ci := range sum.stackable {
					if _, _, ok := a.node.eligible(ci, a.req, true); ok {
						units++
					}
				}
			}
			capacity[u] += units
			unstacked[u] += free
			total += units
		}
	}
	// Which NUMA nodes hold the app only orders those that fit: a quiet
	// check (feasibility alone) skips it.
	if app := a.req.Intent.App; app != "" && !a.quiet && a.node.appCount(app) > 0 {
		for i, p := range a.node.owner {
			if p != nil && p.App == app && p.Key != a.req.Key {
				sameApp[a.topo.numaOf[i]] = true
			}
		}
	}
	// better orders the NUMA nodes that fit: without a same-app pod first,
	// then those where a Spread pod need not stack on another app's cores
	// (Spread prefers cores whose siblings are all free, and that
	// preference must hold across NUMA nodes too, not only within the
	// chosen one), then the tightest fit.
	better := func(u, than int) bool {
		if a.home != nil && a.home[u] != a.home[than] {
			return a.home[u]
		}
		if sameApp[u] != sameApp[than] {
			return !sameApp[u]
		}
		if uFree, thanFree := unstacked[u] >= a.need, unstacked[than] >= a.need; uFree != thanFree {
			return uFree
		}
		return capacity[u] < capacity[than]
	}
	best := -1
	for u := 0; u < numas; u++ {
		if capacity[u] >= a.need && (best < 0 || better(u, best)) {
			best = u
		}
	}
	if best >= 0 {
		return append(chosen, best), nil
	}
	if a.quiet {
		if a.req.Intent.Spec.NUMA == api.NUMARequired || total < a.need {
			return nil, errNoFit
		}
		return chosen, nil // it fits across NUMA nodes; which ones is no question here
	}
	if a.req.Intent.Spec.NUMA == api.NUMARequired {
		most := 0
		for u := range capacity {
			if capacity[u] > capacity[most] {
				most = u
			}
		}
		return nil, Reasonf(CodeNUMARequired, "no NUMA node has %d %s (numa Required; most: %d on NUMA node %d)",
			a.need, a.unitName(), capacity[most], a.topo.numas[most])
	}
	if total < a.need {
		return nil, Reasonf(a.unitCode(), "not enough %s (needs %d, %d available)", a.unitName(), a.need, total)
	}
	order := make([]int, numas)
	for u := range order {
		order[u] = u
	}
	sort.SliceStable(order, func(i, j int) bool {
		ui, uj := order[i], order[j]
		if capacity[ui] != capacity[uj] {
			return capacity[ui] > capacity[uj]
		}
		return !sameApp[ui] && sameApp[uj]
	})
	sum := 0
	for _, u := range order {
		if sum >= a.need {
			break
		}
		chosen = append(chosen, u)
		sum += capacity[u]
	}
	return chosen, nil
}

func (a *cpuAccumulator) unitName() string {
	if a.spread {
		return "physical cores eligible for Spread"
	}
	return "free CPUs on cores no pod holds"
}

// unitCode is the Code of a shortage of the units unitName names.
func (a *cpuAccumulator) unitCode() Code {
	if a.spread {
		return CodeSpread
	}
	return CodeCores
}

// keep restricts the candidates to the chosen NUMA nodes, in their order,
// and within a NUMA node orders the L3 groups: the tightest group that holds
// what the pod still needs first, then the others largest first.
func (a *cpuAccumulator) keep(numas []int) {
	var kept []candidate
	need := a.need
	for _, u := range numas {
		groups := map[int][]candidate{}
		var l3s []int
		for _, c := range a.cands {
			if a.topo.cores[c.core].numa != u {
				continue
			}
			l3 := a.topo.cores[c.core].l3
			if _, ok := groups[l3]; !ok {
				l3s = append(l3s, l3)
			}
			groups[l3] = append(groups[l3], c)
		}
		capOf := func(l3 int) int {
			n := 0
			for _, c := range groups[l3] {
				n += a.units(c)
			}
			return n
		}
		sort.SliceStable(l3s, func(i, j int) bool {
			ci, cj := capOf(l3s[i]), capOf(l3s[j])
			fi, fj := ci >= need, cj >= need
			switch {
			case fi && fj:
				return ci < cj
			case fi != fj:
				return fi
			}
			return ci > cj
		})
		for _, l3 := range l3s {
			kept = append(kept, groups[l3]...)
			need -= capOf(l3)
		}
	}
	a.cands = kept
	if a.spread {
		// Prefer cores whose siblings are all free; stack only when needed.
		sort.SliceStable(a.cands, func(i, j int) bool { return !a.cands[i].stacked && a.cands[j].stacked })
	}
	if a.req.Intent.Spec.IOQueueSpread && a.topo.HasIOQueues() {
		a.queueUse = make([]int, len(a.topo.queues))
		a.covered = make([]bool, len(a.topo.queues))
		for i, p := range a.node.owner {
			if p != nil {
				for _, q := range a.topo.queuesOf[i] {
					a.queueUse[q]++
				}
			}
		}
	}
}

// next returns the position in a.cands of the next candidate to take among
// those ok accepts: the first in order, or with ioQueueSpread the one whose
// CPUs cover the most IO queues this pod does not cover yet, least used first.
func (a *cpuAccumulator) next(ok func(candidate) bool) int {
	best, bestNew, bestUse := -1, -1, 0
	for pos, c := range a.cands {
		if c.hi == c.lo || !ok(c) {
			continue
		}
		if a.queueUse == nil {
			return pos
		}
		newQ, use := a.queueGain(a.take(c))
		if newQ > bestNew || newQ == bestNew && use < bestUse {
			best, bestNew, bestUse = pos, newQ, use
		}
	}
	return best
}

// take returns the threads the pod would take from a candidate right now.
func (a *cpuAccumulator) take(c candidate) []int {
	n := c.hi - c.lo
	if a.spread {
		n = 1
	}
	return a.buf[c.lo : c.lo+min(n, a.need)]
}

// queueGain counts the distinct queues the CPUs would newly cover and their
// use. Two threads of one core usually serve the same queue: counted per
// thread, that queue would outweigh an unused queue on another core.
func (a *cpuAccumulator) queueGain(cpus []int) (newQueues, use int) {
	var buf [8]int
	seen := buf[:0]
	for _, i := range cpus {
		for _, q := range a.topo.queuesOf[i] {
			if a.covered[q] || slices.Contains(seen, q) {
				continue
			}
			seen = append(seen, q)
			newQueues++
			use += a.queueUse[q]
		}
	}
	return newQueues, use
}

// pick takes cpus from the candidate at pos.
func (a *cpuAccumulator) pick(pos int, cpus []int) {
	a.picked = append(a.picked, cpus...)
	a.need -= len(cpus)
	a.cands[pos].hi = a.cands[pos].lo // a core is taken from once
	if a.covered != nil {
		for _, i := range cpus {
			for _, q := range a.topo.queuesOf[i] {
				a.covered[q] = true
			}
		}
	}
}

// takeWholeCores takes every free thread of cores that fit in what is
// still needed (SameCoreFirst).
func (a *cpuAccumulator) takeWholeCores() {
	for a.need > 0 {
		pos := a.next(func(c candidate) bool { return c.hi-c.lo <= a.need })
		if pos < 0 {
			return
		}
		a.pick(pos, a.take(a.cands[pos]))
	}
}

// takePartialCores takes the remainder from the core whose free threads
// exceed it by the least, so the fewest siblings are left behind.
func (a *cpuAccumulator) takePartialCores() {
	for a.need > 0 {
		pos := -1
		if a.queueUse != nil {
			pos = a.next(func(candidate) bool { return true })
		} else {
			for p, c := range a.cands {
				if free := c.hi - c.lo; free > 0 && (pos < 0 || free < a.cands[pos].hi-a.cands[pos].lo) {
					pos = p
				}
			}
		}
		if pos < 0 {
			return
		}
		a.pick(pos, a.take(a.cands[pos]))
	}
}

// takeThreads takes one thread from each of as many cores as needed (Spread).
func (a *cpuAccumulator) takeThreads() {
	for a.need > 0 {
		pos := a.next(func(candidate) bool { return true })
		if pos < 0 {
			return
		}
		a.pick(pos, a.take(a.cands[pos]))
	}
}

// result splits the picked CPUs among the exclusive containers in spec
// order, in pick order so that each container gets whole cores where it can.
func (a *cpuAccumulator) result() Allocation {
	alloc := Allocation{CPUs: a.topo.set(a.picked), Containers: map[string]cpuset.CPUSet{}, Mems: cpuset.New()}
	if a.req.Intent.Spec.NUMA != api.NUMANone {
		alloc.Mems = a.topo.mems(a.picked)
	}
	rest := a.picked
	for _, c := range a.req.Containers {
		if !c.Exclusive {
			continue
		}
		k := int(c.Milli / 1000)
		alloc.Containers[c.Name] = a.topo.set(rest[:k])
		rest = rest[k:]
	}
	return alloc
}
