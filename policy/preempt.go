package policy

import (
	"slices"
)

// VictimSearchChecks bounds, per node, the Fit checks the exact search of
// Victims may spend after its greedy pass (see Victims).
const VictimSearchChecks = 512

// Victims chooses which of candidates to take off the node so that req fits
// by every rule (Fit): the fewest pods, and among sets of that many, the one
// whose last member in the candidates' order comes earliest, then the one
// whose second last does, and so on. Candidates are in the caller's order of
// preference, the pod it would rather lose first (the extender: lowest
// priority, then fewest exclusive CPUs, then those kube-scheduler proposed).
//
// It reports whether any set of the candidates is enough; when req fits
// without removing anything it returns no victim and true. Candidates not
// placed on the node, and repeats, are ignored. The node is not changed:
// every decision is Fit's, on a copy of the node with the pods removed.
//
// The search relies on removal never hurting a fit (fewer exclusive CPUs
// held, smaller shared sums, fewer pods of an app: each rule only gets
// easier). A greedy pass takes candidates in order until req fits, then puts
// back, last first, every one it can do without: a set from which no victim
// can be spared, found in at most twice as many checks as candidates. When
// that set has more than one pod, an exact search over smaller sets (and
// sets of the same size earlier in that order) follows, pruned by the same
// monotony; if it runs out of VictimSearchChecks checks first, the greedy
// set is the answer.
func (n *Node) Victims(req Request, candidates []*Placement) ([]*Placement, bool) {
	var vs VictimSearch
	return vs.Victims(n, req, candidates)
}

// A VictimSearch answers Victims for one node after another, reusing its
// buffers (the extender asks about up to thousands of nodes per preemption).
// The zero value is ready; it is not safe for concurrent use.
type VictimSearch struct {
	scratch Node
	req     Request
	cands   []*Placement
	// cpus are, per candidate, the cpu indexes it held, recorded when it is
	// taken off the scratch node and used to put it back.
	cpus [][]int
	seen map[string]bool
	// checks is what the exact search may still spend; aborted is set once
	// it ran out.
	checks  int
	aborted bool
	// greedy and chosen are the sets (candidate indexes) found by the
	// greedy pass and by the exact search.
	greedy, chosen []int
}

// Victims is Node.Victims for n.
func (v *VictimSearch) Victims(n *Node, req Request, candidates []*Placement) ([]*Placement, bool) {
	if n.fits(req) {
		return nil, true
	}
	v.placed(n, candidates)
	return v.search(n, req)
}

// VictimsAmongPlaced is Victims for candidates that are n's own placements
// (as AppendPods returns them), each once: it skips checking that, a map
// lookup per candidate, which was a third of the search's time when the
// extender asks about a thousand nodes of 30 pods each.
func (v *VictimSearch) VictimsAmongPlaced(n *Node, req Request, candidates []*Placement) ([]*Placement, bool) {
	if n.fits(req) {
		return nil, true
	}
	v.cands = append(v.cands[:0], candidates...)
	return v.search(n, req)
}

// placed sets v.cands to the candidates placed on n, each once.
func (v *VictimSearch) placed(n *Node, candidates []*Placement) {
	// Repeats are found by scanning what is kept (cheaper than a map up to
	// some dozens of candidates, which is what a node holds).
	useMap := len(candidates) > 64
	if useMap {
		if v.seen == nil {
			v.seen = map[string]bool{}
		}
		clear(v.seen)
	}
	v.cands = v.cands[:0]
	for _, c := range candidates {
		p, ok := n.pods[c.Key]
		switch {
		case !ok:
			continue
		case useMap:
			if v.seen[c.Key] {
				continue
			}
			v.seen[c.Key] = true
		case slices.Contains(v.cands, p):
			continue
		}
		v.cands = append(v.cands, p)
	}
}

// search is Victims over v.cands, for a request that does not fit as the
// node is.
func (v *VictimSearch) search(n *Node, req Request) ([]*Placement, bool) {
	for len(v.cpus) < len(v.cands) {
		v.cpus = append(v.cpus, nil)
	}
	v.req, v.checks, v.aborted = req, 0, false
	n.copyInto(&v.scratch)
	defer func() { v.req, v.cands, v.scratch.base = Request{}, v.cands[:0], nil }()
	// Greedy: the shortest prefix of the candidates that makes room. If all
	// of them do not, no set does.
	last := -1
	for i := range v.cands {
		v.remove(i)
		if v.fits() {
			last = i
			break
		}
	}
	if last < 0 {
		return nil, false
	}
	// Put back, last first, each one the pod fits without. The last one
	// taken stays: without it the prefix before it did not fit.
	v.greedy = append(v.greedy[:0], last)
	for i := last - 1; i >= 0; i-- {
		v.add(i)
		if !v.fits() {
			v.remove(i)
			v.greedy = append(v.greedy, i)
		}
	}
	slices.Sort(v.greedy)
	if len(v.greedy) == 1 {
		return []*Placement{v.cands[last]}, true
	}
	for _, i := range v.greedy {
		v.add(i)
	}
	v.checks = VictimSearchChecks
	for size := 1; size <= len(v.greedy) && !v.aborted; size++ {
		v.chosen = v.chosen[:0]
		// The greedy pass found where the last member of any set that
		// fits starts.
		if v.find(size, len(v.cands), max(last, size-1)) {
			return v.placements(v.chosen), true
		}
	}
	return v.placements(v.greedy), true
}

func (v *VictimSearch) fits() bool {
	v.checks--
	if v.scratch.dirty {
		v.scratch.summarise()
		v.scratch.dirty = false
	}
	return v.scratch.fits(v.req)
}

func (v *VictimSearch) remove(i int) { v.cpus[i] = v.scratch.detach(v.cands[i], v.cpus[i][:0]) }

// add puts a candidate back on the CPUs it held a moment ago, which nothing
// took since.
func (v *VictimSearch) add(i int) { v.scratch.attach(v.cands[i], v.cpus[i]) }

func (v *VictimSearch) placements(idx []int) []*Placement {
	out := make([]*Placement, len(idx))
	for j, i := range idx {
		out[j] = v.cands[i]
	}
	return out
}

// find looks for the first set T of size candidates among cands[:hi], in
// the order Victims documents, such that req fits with T removed besides
// what the scratch node has removed already (R). On success T is appended
// to v.chosen and stays removed; otherwise the scratch node is left as it
// was.
//
// Pruning: if req does not fit with R and all of cands[:m+1] removed, no
// set whose last member is at most m does, so the last member starts at
// the first m where that prefix fits: first, when the caller knows it
// (else -1).
func (v *VictimSearch) find(size, hi, first int) bool {
	if size == 0 {
		return v.fits()
	}
	if first < 0 {
		removed := 0
		for m := 0; m < hi; m++ {
			v.remove(m)
			removed++
			if m >= size-1 && v.fits() {
				first = m
				break
			}
		}
		for m := removed - 1; m >= 0; m-- {
			v.add(m)
		}
		if first < 0 {
			return false
		}
	}
	for m := first; m < hi; m++ {
		if v.checks <= 0 {
			v.aborted = true
			return false
		}
		v.remove(m)
		if v.find(size-1, m, -1) {
			v.chosen = append(v.chosen, m)
			return true
		}
		v.add(m)
		if v.aborted {
			return false
		}
	}
	return false
}

// copyInto makes c a private, lazy view of the node for trying removals
// on, reusing c's slices: its own owners, counters and summary; the pods
// and apps of n less those it takes off (base, gone); the (immutable)
// placements and topology shared. n must not change while c is in use.
func (n *Node) copyInto(c *Node) {
	owner, free, freeBuf, gone := c.owner, c.free, c.freeBuf, c.gone
	*c = Node{Name: n.Name, Limits: n.Limits, Topo: n.Topo, Attention: n.Attention,
		held: n.held, sumS: n.sumS, maxS: n.maxS, maxCount: n.maxCount, lazy: true, base: n, gone: gone[:0]}
	c.free, c.freeBuf = free, freeBuf
	if n.Topo == nil {
		return
	}
	c.owner = append(owner[:0], n.owner...)
	switch numas := len(n.free); {
	case numas <= len(c.freeBuf):
		c.free = c.freeBuf[:numas]
	case cap(c.free) < numas || &c.free[:1][0] == &c.freeBuf[0]:
		c.free = make([]numaSummary, numas)
	default:
		c.free = c.free[:numas]
	}
	for i, sum := range n.free {
		c.free[i] = numaSummary{wholeCPUs: sum.wholeCPUs, freeCores: sum.freeCores,
			stackable: append(c.free[i].stackable[:0], sum.stackable...)}
	}
}
