package policy

import (
	"math"
)

// Capacity is a node's position under the capacity rules (contract section 4).
type Capacity struct {
	// P is the number of online non-reserved CPUs.
	P int
	// E is the number of exclusive CPUs held by running containers.
	E int
	// Dormant counts the CPUs granted to placements (Placement.Granted)
	// that no running container holds: they are in the shared pool, but
	// count with E against the exclusive limit.
	Dormant int
	// S is the sum of shared pods' amounts; M the largest one (millicores).
	S, M int64
	// ExclusiveLimit = min(floor(ratio*P), P - h*M, P - ceil(S/r)), floored
	// at 0 (a node whose shared load already exceeds the formula takes no
	// exclusive CPUs at all).
	ExclusiveLimit int
}

// epsilon absorbs float error in ratio*P, so a ratio of exactly 2/3 on
// P = 96 gives 64 rather than 63.
const epsilon = 1e-9

// Capacity computes the node's capacity. A node without topology has P = 0.
func (n *Node) Capacity() Capacity {
	c := Capacity{E: n.held, Dormant: n.dormant(), S: n.sumS, M: n.maxS}
	if n.Topo != nil {
		c.P = n.Topo.allocatable
	}
	c.ExclusiveLimit = max(0, exclusiveLimit(n.Limits.MaxExclusiveRatio, n.Limits.SharedOvercommit, n.Limits.SharedHeadroom, c.P, c.S, c.M))
	return c
}

// exclusiveLimit is the contract's formula in millicores:
// min(floor(ratio*P), floor(P - h*M), P - ceil(S/r)).
func exclusiveLimit(ratio, r float64, h, p int, s, m int64) int {
	byRatio := int(math.Floor(ratio*float64(p) + epsilon))
	byHeadroom := floorDiv(int64(p)*1000-int64(h)*m, 1000)
	bySum := p - sharedCPUs(s, r)
	return min(byRatio, byHeadroom, bySum)
}

// sharedCPUs is ceil(S/r) for S in millicores.
func sharedCPUs(s int64, r float64) int {
	return int(math.Ceil(float64(s)/(r*1000) - epsilon))
}

func floorDiv(a, b int64) int {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return int(q)
}

// grant counts (delta 1) or uncounts (-1) the CPUs granted to p.
func (n *Node) grant(p *Placement, delta int) {
	if p.Granted.IsEmpty() || n.Topo == nil {
		return
	}
	if n.grants == nil {
		n.grants = make([]int, len(n.Topo.cpus))
	}
	for _, id := range p.Granted.UnsortedList() {
		if i, ok := n.Topo.byID[id]; ok {
			n.grants[i] += delta
		}
	}
}

// dormant counts the granted CPUs that no running container holds (their
// containers are stopped and will be restarted on them).
func (n *Node) dormant() int {
	d := 0
	for i, g := range n.grants {
		if g > 0 && n.owner[i] == nil {
			d++
		}
	}
	return d
}

// Replace puts p in the place of the placement of its key, if any: a pod
// whose containers changed. It refuses, leaving the node unchanged, what
// Add refuses; capacity is not checked (see Grow).
func (n *Node) Replace(p *Placement) error { return n.replace(p, false) }

// Grow is Replace for a request: exclusive CPUs beyond those the pod held
// before and was granted must also fit the exclusive limit. A pod is never
// refused CPUs it holds, nor those a container the kubelet restarts in its
// sandbox was granted, on a node over a limit lowered since it was placed.
func (n *Node) Grow(p *Placement) error { return n.replace(p, true) }

func (n *Node) replace(p *Placement, grow bool) error {
	old, had := n.pods[p.Key]
	if had {
		n.Remove(p.Key)
	}
	err := n.Add(p)
	if err == nil && grow && p.Exclusive() {
		held := p.Granted
		if had {
			held = held.Union(old.CPUs)
		}
		if c := n.Capacity(); !p.CPUs.IsSubsetOf(held) && c.E+c.Dormant > c.ExclusiveLimit {
			n.Remove(p.Key)
			added := p.CPUs.Size()
			if had {
				added -= old.CPUs.Size()
			}
			err = Reasonf(CodeExclusiveLimit, "exclusive limit %d reached (needs %d, holds %d)", c.ExclusiveLimit, added, c.E+c.Dormant-added)
		}
	}
	if err != nil && had {
		_ = n.Add(old)
	}
	return err
}

// CheckExclusiveCapacity reports whether k more exclusive CPUs fit: E + k <= exclusiveLimit.
func (n *Node) CheckExclusiveCapacity(k int) error { return n.checkExclusiveCapacity(k, true) }

func (n *Node) checkExclusiveCapacity(k int, explain bool) error {
	c := n.Capacity()
	if e := c.E + c.Dormant; e+k > c.ExclusiveLimit {
		if !explain {
			return errNoFit
		}
		return Reasonf(CodeExclusiveLimit, "exclusive limit %d reached (needs %d, holds %d)", c.ExclusiveLimit, k, e)
	}
	return nil
}

// CheckSharedCapacity reports whether a shared pod of amount a (millicores)
// fits: with S' = S + a and M' = max(M, a), E <= P - h*M' and E <= P - ceil(S'/r).
// A node without topology is not managed by corepin and takes any shared pod.
func (n *Node) CheckSharedCapacity(a int64) error { return n.checkSharedCapacity(a, true) }

func (n *Node) checkSharedCapacity(a int64, explain bool) error {
	if n.Topo == nil {
		return nil
	}
	c := n.Capacity()
	s, m := c.S+a, max(c.M, a)
	h, r := n.Limits.SharedHeadroom, n.Limits.SharedOvercommit
	if byHeadroom := floorDiv(int64(c.P)*1000-int64(h)*m, 1000); c.E > byHeadroom {
		if !explain {
			return errNoFit
		}
		return Reasonf(CodeSharedHeadroom, "shared headroom too small (needs %s CPUs; %d exclusive CPUs held, %d allowed beside a largest shared pod of %s with headroom %d)",
			formatMilli(a), c.E, byHeadroom, formatMilli(m), h)
	}
	if bySum := c.P - sharedCPUs(s, r); c.E > bySum {
		if !explain {
			return errNoFit
		}
		return Reasonf(CodeSharedPool, "shared pool too small (needs %s CPUs; %d exclusive CPUs held, %d allowed with shared total %s at overcommit %g)",
			formatMilli(a), c.E, bySum, formatMilli(s), r)
	}
	return nil
}
