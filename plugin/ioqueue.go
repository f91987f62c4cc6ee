package plugin

import (
	v1 "k8s.io/api/core/v1"
	"k8s.io/utils/cpuset"

	"github.com/corepin/corepin/policy"
)

// boundQueues is an ioQueueSpread pod's IO-queue guarantee on this node
// (policy.QueueCoverage.Guaranteed) as the ledger computed it when the pod
// watch first showed the pod bound here with its alloc-status: what the
// extender could give the pod then, before any pod went and freed CPUs.
type boundQueues struct {
	// uid and cpus (the alloc-status' CPUs, a Linux list) are what it was
	// computed for: another pod under the name, or another alloc-status (a
	// resize), is computed again.
	uid, cpus  string
	guaranteed int
}

// busyFor are the CPUs held though no running container has them, for the
// IO-queue check of the pod placed as podID: quarantined containers' CPUs,
// and other pods' sandboxes' grants (a stopped container comes back on
// them, and the extender counts them as that pod's).
func (l *Ledger) busyFor(podID string) cpuset.CPUSet {
	busy := l.Quarantined()
	for _, g := range l.granted {
		if g.podID != podID {
			busy = busy.Union(g.cpus)
		}
	}
	return busy
}

// SeeBound keeps, for an ioQueueSpread pod the API server shows bound to
// this node with its alloc-status, the queues the engine guarantees it
// here, from the ledger as it is now (once per pod and alloc-status): the
// bound CheckQueues holds the pod's containers to. It reports whether a
// guarantee was kept.
func (l *Ledger) SeeBound(pod Pod) bool {
	if pod.UID == "" {
		return false
	}
	key := pod.Key()
	b := l.read(pod)
	spec := b.Request.Intent.Spec
	if !spec.IOQueueSpread || !b.Held {
		return false
	}
	cpus := b.Status.CPUs.Set()
	if k, ok := l.queues[key]; ok && k.uid == pod.UID && k.cpus == cpus.String() {
		return false
	}
	podID := identity(pod.UID, "")
	cov, ok, err := l.node.QueueCoverageOf(podID, spec, cpus, l.busyFor(podID))
	if err != nil || !ok {
		return false
	}
	l.queues[key] = boundQueues{uid: pod.UID, cpus: cpus.String(), guaranteed: cov.Guaranteed}
	return true
}

// ForgetBound drops the guarantee kept for a deleted pod (uid: the deleted
// pod's; one kept for another pod of the same name stays).
func (l *Ledger) ForgetBound(key, uid string) {
	if k, ok := l.queues[key]; ok && sameUID(k.uid, uid) {
		delete(l.queues, key)
	}
}

// CheckQueues refuses an exclusive container of an ioQueueSpread pod whose
// alloc-status CPUs cover fewer IO queues of this node than the engine
// guarantees the pod here (policy.CheckQueueSpread). The queues are the
// plugin's own, as topology discovery read them on this node: the
// extender chose the CPUs on its copy of them, which may be stale (IRQs
// moved since it was published). A container restarted in a sandbox that
// already holds its CPUs is not checked again. What is required is never
// more than the guarantee kept when the pod was seen bound (SeeBound): a
// pod deleted between this pod's bind and its container's creation frees
// CPUs the extender could not give, and the kubelet retries the creation
// with the same alloc-status; a refusal for that would stand for good.
// Without a kept guarantee (the plugin first learns of the pod here, e.g.
// after a restart, or has no API access) it is the node's now.
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
	most := -1
	if k, ok := l.queues[c.Pod.Key()]; ok && sameUID(k.uid, c.Pod.UID) && k.cpus == cpus.String() {
		most = k.guaranteed
	}
	err := l.node.CheckQueueSpreadAtMost(key, spec, cpus, l.busyFor(key), most)
	if err == nil {
		return nil
	}
	return &Refusal{Pod: c.Pod.Key(), Container: c.Name, CPUs: cpus.String(), Reason: err.Error(), Code: policy.CodeOf(err)}
}

// SeeBound hands the ledger a pod of this node as the pod watch has it
// (Ledger.SeeBound). Before the first Synchronize the ledger does not know
// what runs, and nothing is kept: the check then reads the node at
// CreateContainer.
func (p *Plugin) SeeBound(pod *v1.Pod) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.synced {
		return
	}
	kept := Pod{Namespace: pod.Namespace, Name: pod.Name, UID: string(pod.UID), Annotations: pod.Annotations, Labels: pod.Labels}
	if p.ledger.SeeBound(kept) {
		p.log.Debug("IO-queue guarantee kept for a bound pod", "pod", kept.Key(), "guaranteed", p.ledger.queues[kept.Key()].guaranteed)
	}
}
