package plugin

import (
	"github.com/corepin/corepin/policy"
)

// CheckQueues refuses an exclusive container of an ioQueueSpread pod whose
// alloc-status CPUs cover fewer IO queues of this node than the engine
// guarantees the pod here (policy.CheckQueueSpread). The queues are the
// plugin's own, as topology discovery read them on this node: the
// extender chose the CPUs on its copy of them, which may be stale (IRQs
// moved since it was published). A container restarted in a sandbox that
// already holds its CPUs is not checked again.
func (l *Ledger) CheckQueues(c *Container) error {
	if c.Class != Exclusive {
		return nil
	}
	b := l.read(c.Pod)
	spec := b.Request.Intent.Spec
	if !spec.IOQueueSpread || !b.Held {
		return nil
	}
	// A container restarted in its sandbox is no new placement: what the
	// sandbox was admitted with (or found with at synchronize) stands.
	if g, ok := l.granted[c.SandboxID]; ok && c.CPUs.IsSubsetOf(g.cpus) {
		return nil
	}
	cpus := b.Status.CPUs.Set()
	key := identity(c.Pod.UID, c.SandboxID)
	// Held though no running container has them: quarantined containers'
	// CPUs, and other pods' sandboxes' grants (a stopped container comes
	// back on them, and the extender counts them as that pod's).
	busy := l.Quarantined()
	for _, g := range l.granted {
		if g.podID != key {
			busy = busy.Union(g.cpus)
		}
	}
	err := l.node.CheckQueueSpread(key, spec, cpus, busy)
	if err == nil {
		return nil
	}
	return &Refusal{Pod: c.Pod.Key(), Container: c.Name, CPUs: cpus.String(), Reason: err.Error(), Code: policy.CodeOf(err)}
}
