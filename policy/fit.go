package policy

import (
	"errors"

	"github.com/corepin/corepin/api"
)

// errNoFit is what the checks return, in place of a reason, when nobody will
// read the reason: Victims tries many removals on a private copy, and
// building a message for each failed try cost more than the try itself.
var errNoFit = errors.New("does not fit")

// Fit runs every hard rule for req on the node and returns the first reason
// it does not fit, in words a person can act on.
func (n *Node) Fit(req Request) error {
	return n.Check(req, api.AllFilters)
}

// Check runs the named filters (api.Filter*) in order.
func (n *Node) Check(req Request, filters []string) error {
	return n.check(req, filters, true)
}

// fits is Fit without the reason.
func (n *Node) fits(req Request) bool {
	return n.check(req, api.AllFilters, false) == nil
}

// check runs the filters; with explain false a failure is errNoFit.
func (n *Node) check(req Request, filters []string, explain bool) error {
	for _, f := range filters {
		var err error
		switch f {
		case api.FilterTopology:
			err = n.checkTopology(req, explain)
		case api.FilterCapacity:
			err = n.checkCapacity(req, explain)
		case api.FilterAppSpread:
			err = n.checkAppSpread(req, explain)
		case api.FilterIOQueue:
			err = n.CheckIOQueue(req)
		default:
			err = Reasonf(CodeUnknownFilter, "unknown filter %q", f)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// CheckTopology reports whether the node's topology can give an exclusive
// pod its CPUs under its cpu and numa policies. Shared pods always pass.
func (n *Node) CheckTopology(req Request) error { return n.checkTopology(req, true) }

func (n *Node) checkTopology(req Request, explain bool) error {
	if !req.Exclusive() {
		return nil
	}
	switch {
	case !explain && (n.Attention != "" || n.Topo == nil):
		return errNoFit
	case n.Attention != "":
		return Reasonf(CodeAttention, "node needs attention, no new exclusive pods: %s", n.Attention)
	case n.Topo == nil:
		return Reasonf(CodeNoTopology, "node has no %s annotation (is the corepin node plugin running there?)", api.AnnotationTopology)
	}
	acc := newAccumulator(n, req, false)
	acc.quiet = !explain
	var buf [8]int
	_, err := acc.chooseNUMANodes(buf[:0])
	return err
}

// CheckCapacity applies the capacity formula of contract section 4.
func (n *Node) CheckCapacity(req Request) error { return n.checkCapacity(req, true) }

func (n *Node) checkCapacity(req Request, explain bool) error {
	if req.Exclusive() {
		switch {
		case n.Topo == nil && !explain:
			return errNoFit
		case n.Topo == nil:
			return Reasonf(CodeNoTopology, "node has no %s annotation, so no exclusive capacity", api.AnnotationTopology)
		}
		return n.checkExclusiveCapacity(req.ExclusiveCPUs(), explain)
	}
	return n.checkSharedCapacity(req.SharedMilli(), explain)
}

// CheckAppSpread applies max-per-node: at most N pods of one app on the node,
// where N is the smallest limit among the incoming pod and the same-app pods
// already there.
func (n *Node) CheckAppSpread(req Request) error { return n.checkAppSpread(req, true) }

func (n *Node) checkAppSpread(req Request, explain bool) error {
	app := req.Intent.App
	if app == "" {
		return nil
	}
	count := n.appCount(app)
	if n.hasPod(req.Key) {
		count-- // the pod itself (a re-check of a placed pod)
	}
	if count == 0 {
		return nil
	}
	limit := req.Intent.MaxPerNode
	// The pods there may carry a lower limit than the incoming one.
	n.eachPod(func(p *Placement) {
		if p.App == app && p.Key != req.Key && p.MaxPerNode > 0 && (limit == 0 || p.MaxPerNode < limit) {
			limit = p.MaxPerNode
		}
	})
	if limit > 0 && count >= limit {
		if !explain {
			return errNoFit
		}
		return Reasonf(CodeMaxPerNode, "max-per-node %d reached for app %q (%d on the node)", limit, app, count)
	}
	return nil
}

// CheckIOQueue rejects, for a pod asking ioQueueSpread, a node that published
// no IO queues: spreading over queues there would be a silent no-op.
func (n *Node) CheckIOQueue(req Request) error {
	if !req.Exclusive() || !req.Intent.Spec.IOQueueSpread {
		return nil
	}
	if n.Topo == nil || !n.Topo.HasIOQueues() {
		return Reasonf(CodeIOQueue, "node publishes no IO queues but the pod asks for ioQueueSpread")
	}
	return nil
}

// Score ranks a node for req from 0 to 10 by how full it would be with the
// pod on it: MostAllocated favours full nodes, LeastAllocated empty ones.
// A node without topology scores 0.
func (n *Node) Score(req Request, strategy api.ScoringStrategy) int {
	c := n.Capacity()
	if c.P == 0 {
		return 0
	}
	used := int64(c.E)*1000 + c.S + req.SharedMilli()
	if req.Exclusive() {
		used += int64(req.ExclusiveCPUs()) * 1000
	}
	total := int64(c.P) * 1000
	used = min(max(used, 0), total)
	score := int((used*10 + total/2) / total)
	if strategy == api.LeastAllocated {
		return 10 - score
	}
	return score
}
