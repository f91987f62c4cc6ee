package plugin

// In-place resize (contract section 10): the kubelet applies a resize
// through CRI UpdateContainerResources, which NRI hands the plugin as
// UpdateContainer. A shared container's grow is refused when the node
// would break the capacity rules; an exclusive container moves to the CPUs
// of its pod's new alloc-status (from the API server) once both the new
// amount and that alloc-status are known, whichever comes second.

import (
	"context"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/containerd/nri/pkg/api"
	"k8s.io/utils/cpuset"

	corepin "github.com/corepin/corepin/api"
	"github.com/corepin/corepin/policy"
)

// resizeOrder, set on an exclusive container whose CPUs a resize changed,
// orders its update in the next batch: a grow after the shared containers
// that give it CPUs, a shrink before those that take them.
type resizeOrder int8

const (
	resizeNone resizeOrder = iota
	resizeShrink
	resizeGrow
)

// resizeAmount is the CPU amount an UpdateContainer asks for, in
// millicores, by amount's rule: quota over period, else shares.
func resizeAmount(r *api.LinuxResources) int64 {
	return amount(&api.Container{Linux: &api.LinuxContainer{Resources: r}})
}

// UpdateContainer answers the runtime's update of a container's resources
// (an in-place resize). A shared container may shrink, and grow only
// within the capacity rules; an exclusive container may move to another
// whole number of CPUs, applied when its pod's alloc-status on the API
// server gives it that many (now, or when the alloc-status arrives). A
// refusal is returned to the runtime, which fails the CRI call: the
// container keeps its resources.
func (p *Plugin) UpdateContainer(_ context.Context, sb *api.PodSandbox, c *api.Container, res *api.LinuxResources) ([]*api.ContainerUpdate, error) {
	defer p.metrics.observe("UpdateContainer", time.Now())
	p.mu.Lock()
	defer p.mu.Unlock()
	q, ok := p.ledger.Container(c.GetId())
	if !ok || p.ledger.ReleaseAll() {
		return nil, nil // not tracked (left where it is), or nothing enforced
	}
	want := resizeAmount(res)
	var updates []*api.ContainerUpdate
	var err error
	if q.Class == Exclusive {
		updates, err = p.resizeExclusive(q, want, res)
	} else {
		err = p.resizeShared(q, want)
	}
	if err != nil {
		if r, ok := err.(*Refusal); ok {
			p.metrics.refusals.WithLabelValues(string(r.Code)).Inc()
			p.log.Warn("Refused resize", "pod", r.Pod, "container", r.Container, "cpus", r.CPUs, "reason", r.Reason)
		}
		p.event(podOf(sb), "CorepinResizeRefused", err.Error())
		return nil, err
	}
	p.changed()
	return updates, nil
}

// resizeShared records a shared container's new amount, unless it grows
// and the node would then break section 4's shared rules for the
// exclusive CPUs it holds.
func (p *Plugin) resizeShared(q *Container, to int64) error {
	l := p.ledger
	old := q.Milli
	if to == old {
		return nil
	}
	q.Milli = to
	_ = l.replacePod(q.podID, false)
	if to < old {
		p.log.Info("Resized shared container", "pod", q.podKey, "container", q.Name, "from", milli(old), "to", milli(to))
		return nil
	}
	if err := l.node.CheckSharedCapacity(0); err != nil {
		c := l.node.Capacity()
		limits := l.cfg.Limits
		byHeadroom := int(math.Floor((float64(c.P)*1000 - float64(limits.SharedHeadroom)*float64(c.M)) / 1000))
		bySum := c.P - int(math.Ceil(float64(c.S)/(limits.SharedOvercommit*1000)-1e-9))
		q.Milli = old
		_ = l.replacePod(q.podID, false)
		return &Refusal{Pod: q.podKey, Container: q.Name, CPUs: l.CPUsFor(q).String(), Code: policy.CodeOf(err),
			Reason: fmt.Sprintf("resize from %s to %s CPUs refused: the node holds %d exclusive CPUs, and with it the shared pods would total %s CPUs, the largest %s, "+
				"which allows at most min(P - h*M, P - ceil(S/r)) = min(%d - %d*%s, %d - ceil(%s/%g)) = %d (contract section 4); the container keeps %s CPUs",
				milli(old), milli(to), c.E, milli(c.S), milli(c.M), c.P, limits.SharedHeadroom, milli(c.M), c.P, milli(c.S), limits.SharedOvercommit,
				min(byHeadroom, bySum), milli(old))}
	}
	p.log.Info("Resized shared container", "pod", q.podKey, "container", q.Name, "from", milli(old), "to", milli(to))
	return nil
}

// resizeExclusive handles an exclusive container's new amount: a fraction
// is refused; a whole number other than the CPUs it holds waits for the
// matching alloc-status, and is applied at once when the API server has it
// already, with the updates that move the shared containers.
func (p *Plugin) resizeExclusive(q *Container, want int64, res *api.LinuxResources) ([]*api.ContainerUpdate, error) {
	l := p.ledger
	refuse := func(code policy.Code, reason string) error {
		return &Refusal{Pod: q.podKey, Container: q.Name, CPUs: q.CPUs.String(), Code: code, Reason: reason}
	}
	if want < 1000 || want%1000 != 0 {
		return nil, refuse(policy.CodeResize, fmt.Sprintf("resize to %s CPUs refused: an exclusive container's CPU amount must be a whole number >= 1; it keeps its %d CPUs",
			milli(want), q.CPUs.Size()))
	}
	if quota := res.GetCpu().GetQuota().Get(); quota != nil && *quota > 0 {
		q.Quota = *quota
		if period := res.GetCpu().GetPeriod().Get(); period != nil {
			q.Period = *period
		}
	}
	k := int(want / 1000)
	if k == q.CPUs.Size() {
		q.wantCPUs = 0
		return p.ownUpdate(q, nil), nil
	}
	q.wantCPUs = k
	cpus, mems, ok := l.resizedCPUs(q)
	if !ok {
		p.log.Info("Exclusive container resized; waiting for its pod's alloc-status to give it the CPUs", "pod", q.podKey, "container", q.Name,
			"cpus", q.CPUs.String(), "want", k)
		return p.ownUpdate(q, nil), nil
	}
	from := q.CPUs
	if err := l.resizeTo(q, cpus, mems); err != nil {
		q.wantCPUs = 0
		return nil, refuse(policy.CodeOf(err), fmt.Sprintf("resize to %d CPUs (%s) refused: %v; it keeps its CPUs", k, cpus, err))
	}
	q.resizeOrder = resizeNone // the reply's order is NRI's: the others first
	others, _ := p.updates(q.ID, "resize", false)
	p.log.Info("Resized exclusive container", "pod", q.podKey, "container", q.Name, "from", from.String(), "to", cpus.String(), "updates", len(others))
	return p.ownUpdate(q, others), nil
}

// ownUpdate appends the update of the container being updated, with the
// cpuset (and mems) the ledger gives it, to others: NRI applies it last.
func (p *Plugin) ownUpdate(q *Container, others []*api.ContainerUpdate) []*api.ContainerUpdate {
	cpus, lifted := p.ledger.CPUsFor(q), p.ledger.Lifted(q)
	u := &api.ContainerUpdate{ContainerId: q.ID}
	u.SetLinuxCPUSetCPUs(cpus.String())
	if !q.Mems.IsEmpty() && !p.ledger.releaseAll {
		u.SetLinuxCPUSetMems(q.memsList())
	}
	if lifted {
		u.SetLinuxCPUQuota(-1)
	}
	p.ledger.Applied(q.ID, cpus, lifted)
	return append(others, u)
}

// resizedCPUs are the CPUs and mems the API server's alloc-status gives an
// exclusive container waiting for a resize, if it gives it the number the
// runtime asked for.
func (l *Ledger) resizedCPUs(c *Container) (cpus, mems cpuset.CPUSet, ok bool) {
	if c.wantCPUs == 0 {
		return cpuset.New(), cpuset.New(), false
	}
	status, ok := l.apiStatus(c)
	if !ok {
		return cpuset.New(), cpuset.New(), false
	}
	set, ok := status.Containers[c.Name]
	if !ok || set.Set().Size() != c.wantCPUs {
		return cpuset.New(), cpuset.New(), false
	}
	return set.Set(), status.Mems.Set(), true
}

// apiStatus is the API server's alloc-status of a container's pod, when it
// has a valid one for this node.
func (l *Ledger) apiStatus(c *Container) (corepin.AllocStatus, bool) {
	r, ok := l.apiRelease(c)
	if !ok || r.AllocStatus == "" {
		return corepin.AllocStatus{}, false
	}
	s, err := corepin.ParseAllocStatus(r.AllocStatus)
	if err != nil || s.Node != l.cfg.NodeName {
		return corepin.AllocStatus{}, false
	}
	return s, true
}

// resizeTo moves an exclusive container to cpus: they must be free of
// other pods and quarantined containers, and what they add beyond what the
// pod holds must fit the exclusive limit; otherwise nothing changes. The
// sandbox's grant follows (a restarted container gets the new CPUs).
func (l *Ledger) resizeTo(c *Container, cpus, mems cpuset.CPUSet) error {
	if q := l.quarantinedBy(cpus, c.podID); q != nil {
		return fmt.Errorf("CPU %s is held by container %s of pod %s, left running at synchronize after a conflict", q.CPUs.Intersection(cpus), q.Name, q.podKey)
	}
	old, oldMems := c.CPUs, c.Mems
	set := func(cpus, mems cpuset.CPUSet) {
		c.CPUs, c.Mems, c.cpus, c.mems = cpus, mems, "", ""
	}
	set(cpus, mems)
	if err := l.replacePod(c.podID, true); err != nil {
		set(old, oldMems)
		_ = l.replacePod(c.podID, false)
		return err
	}
	if g, ok := l.granted[c.SandboxID]; ok {
		g.cpus = g.cpus.Difference(old).Union(cpus)
		l.granted[c.SandboxID] = g
		_ = l.replacePod(c.podID, false)
	}
	c.wantCPUs = 0
	c.resizeOrder = resizeGrow
	if cpus.IsSubsetOf(old) {
		c.resizeOrder = resizeShrink
	}
	return nil
}

// resizeFromAPI applies the resizes of a pod's (namespace/name) exclusive
// containers that were waiting for the alloc-status the API server now
// has, and reports whether any was applied: their updates go out with the
// plugin's own goroutine.
func (p *Plugin) resizeFromAPI(key string) bool {
	l := p.ledger
	applied := false
	// Every update of every pod on the node comes here: a walk of the
	// map, no sorted copy.
	for _, c := range l.containers {
		if c.wantCPUs == 0 || c.podKey != key || c.Class != Exclusive {
			continue
		}
		cpus, mems, ok := l.resizedCPUs(c)
		if !ok {
			continue
		}
		from := c.CPUs
		if err := l.resizeTo(c, cpus, mems); err != nil {
			c.wantCPUs = 0
			p.metrics.refusals.WithLabelValues(string(policy.CodeOf(err))).Inc()
			msg := fmt.Sprintf("corepin: pod %s container %s cpus %q: resize to the alloc-status' CPUs %s not applied: %v; it keeps its CPUs", key, c.Name, from, cpus, err)
			p.log.Warn("Resize not applied", "pod", key, "container", c.Name, "cpus", from.String(), "to", cpus.String(), "err", err)
			p.event(c.Pod, "CorepinResizeRefused", msg)
			continue
		}
		p.log.Info("Resized exclusive container", "pod", key, "container", c.Name, "from", from.String(), "to", cpus.String())
		applied = true
	}
	return applied
}

// orderResizes puts, in a batch of changes, a resized exclusive
// container's shrink before everything else and its grow after everything
// else (the shared containers give up its new CPUs first, and take its old
// ones only once it has left them), and clears the marks.
func orderResizes(changes []Change) {
	marked := false
	for _, ch := range changes {
		marked = marked || ch.Container.resizeOrder != resizeNone
	}
	if !marked {
		return
	}
	rank := func(ch Change) int {
		switch ch.Container.resizeOrder {
		case resizeShrink:
			return 0
		case resizeGrow:
			return 2
		}
		return 1
	}
	slices.SortStableFunc(changes, func(a, b Change) int { return rank(a) - rank(b) })
	for _, ch := range changes {
		ch.Container.resizeOrder = resizeNone
	}
}
