package plugin

// What is placed on the node: the containers the ledger tracks and their
// pods' placements in the engine, what each pod sandbox was granted, and the
// containers left where they are (quarantined).

import (
	"fmt"

	"k8s.io/utils/cpuset"

	"github.com/corepin/corepin/api"
	"github.com/corepin/corepin/policy"
)

// placed is what is placed on the node, keyed by container ID and, for
// what outlives its containers, by pod sandbox ID.
type placed struct {
	// node holds one placement per pod (by identity): its live exclusive
	// containers' CPUs, its shared sum, and its sandboxes' grants.
	node       *policy.Node
	containers map[string]*Container
	// quarantine holds, by container ID, the exclusive containers found
	// running at synchronize that could not be admitted (their CPUs
	// conflict with a container kept before them). They keep running where
	// they are, so all their CPUs stay out of the shared pool and are given
	// to no one until they go.
	quarantine map[string]*Container
	// granted remembers, by sandbox ID, the exclusive CPUs each live pod
	// sandbox was admitted with, its stopped containers' included: the
	// kubelet restarts a container in the same sandbox, and the engine
	// neither counts taking them back as growth nor gives their room to
	// anyone else (policy.Placement.Granted). Dropped with the sandbox;
	// rebuilt at synchronize from the sandboxes' alloc-status
	// (GrantSandbox), since containerd lists no exited container.
	granted map[string]grant
	// pool caches the shared pool between changes.
	pool *cpuset.CPUSet
}

func newPlaced(cfg Config, topo *policy.Topology) placed {
	return placed{node: policy.NewNode(cfg.NodeName, topo, cfg.Limits), containers: map[string]*Container{},
		quarantine: map[string]*Container{}, granted: map[string]grant{}}
}

// grant is what a pod sandbox was admitted with (see Ledger.granted).
type grant struct {
	podID, name string
	cpus        cpuset.CPUSet
}

// Admit records a classified container. An exclusive container's CPUs must
// be online, not reserved, not held by another pod (nor by a quarantined
// container), and within the capacity formula; otherwise the ledger is
// unchanged and the error is a Refusal.
func (l *Ledger) Admit(id string, c *Container) error { return l.admit(id, c, true) }

// AdmitExisting records a container that already exists (found at
// synchronize). It is a fact, not a request: it is never refused for
// capacity (a node can legitimately be over its exclusive limit, since
// shared containers are not capacity-checked when they are created), only
// for CPUs it cannot hold (offline, reserved, held by another pod).
func (l *Ledger) AdmitExisting(id string, c *Container) error { return l.admit(id, c, false) }

// keyed fills in the keys a container is found by.
func (c *Container) keyed(id string) {
	c.ID = id
	if c.podKey == "" {
		c.podKey = c.Pod.Key()
	}
	if c.podID == "" {
		c.podID = identity(c.Pod.UID, c.SandboxID)
	}
}

func (l *Ledger) admit(id string, c *Container, checkCapacity bool) error {
	c.keyed(id)
	refuse := func(reason string) error {
		return &Refusal{Pod: c.podKey, Container: c.Name, CPUs: c.CPUs.String(), Reason: reason, Code: policy.CodeConflict}
	}
	if c.Class == Exclusive && len(l.quarantine) > 0 {
		if q := l.quarantinedBy(c.CPUs, c.podID); q != nil {
			return refuse(fmt.Sprintf("CPUs %s: CPU %s is held by container %s of pod %s, left running at synchronize after a conflict",
				c.CPUs, q.CPUs.Intersection(c.CPUs), q.Name, q.podKey))
		}
	}
	if old, ok := l.containers[id]; ok && old.podID == c.podID {
		l.Forget(id)
	}
	l.containers[id] = c
	if err := l.replacePod(c.podID, checkCapacity); err != nil {
		delete(l.containers, id)
		_ = l.replacePod(c.podID, false) // restore the pod as it was
		r := refuse(err.Error()).(*Refusal)
		if code := policy.CodeOf(err); code != policy.CodeOther {
			r.Code = code // the engine's: conflict, exclusive-limit
		}
		return r
	}
	l.grant(c)
	return nil
}

// GrantSandbox records, for a pod sandbox found at synchronize, the CPUs
// its alloc-status gives the containers it names: a container stopped at
// that moment is not listed, and the kubelet may restart it there.
func (l *Ledger) GrantSandbox(sandboxID string, pod Pod) {
	status, ok := l.enforced(pod)
	if !ok {
		return
	}
	for name, cpus := range status.Containers {
		c := &Container{SandboxID: sandboxID, Pod: pod, Name: name, Class: Exclusive, CPUs: cpus.Set()}
		c.keyed("")
		l.grant(c)
	}
}

func (l *Ledger) grant(c *Container) {
	// An init container that ends is not restarted once the app runs.
	if c.Class != Exclusive || c.SandboxID == "" || l.runsToCompletion(c) {
		return
	}
	g := l.granted[c.SandboxID]
	if c.CPUs.IsSubsetOf(g.cpus) {
		return
	}
	g.podID, g.name, g.cpus = c.podID, c.podKey, g.cpus.Union(c.CPUs)
	l.granted[c.SandboxID] = g
	_ = l.replacePod(c.podID, false)
}

// quarantinedBy returns a quarantined container of another pod (by
// identity) on one of cpus.
func (l *Ledger) quarantinedBy(cpus cpuset.CPUSet, podID string) *Container {
	for _, q := range l.quarantined() {
		if q.podID != podID && !q.CPUs.Intersection(cpus).IsEmpty() {
			return q
		}
	}
	return nil
}

// Quarantine records an exclusive container that exists but could not be
// admitted: it keeps running on its CPUs, so they leave the shared pool and
// are refused to anyone else until the container goes (Forget).
func (l *Ledger) Quarantine(id string, c *Container) {
	c.keyed(id)
	l.quarantine[id] = c
	l.pool = nil
}

// Leave records a container found at synchronize (or created under
// release-all) that the ledger cannot place and that claims no CPU: it is
// left where it is, and only release-all moves it (lists.target). It is
// kept with the quarantined containers, with no CPUs.
func (l *Ledger) Leave(id string, c *Container) {
	c.CPUs = cpuset.New()
	l.Quarantine(id, c)
}

// Quarantined is the union of the quarantined containers' CPUs.
func (l *Ledger) Quarantined() cpuset.CPUSet {
	out := cpuset.New()
	for _, q := range l.quarantine {
		out = out.Union(q.CPUs)
	}
	return out
}

// quarantined lists the quarantined containers sorted by ID.
func (l *Ledger) quarantined() []*Container { return byID(l.quarantine) }

// ForgetSandbox drops every container of a pod sandbox, and what the
// sandbox was granted, and reports whether exclusive CPUs were freed.
func (l *Ledger) ForgetSandbox(sandboxID string) bool {
	freed := false
	if g, ok := l.granted[sandboxID]; ok {
		delete(l.granted, sandboxID)
		_ = l.replacePod(g.podID, false)
	}
	for id, c := range l.containers {
		if c.SandboxID == sandboxID {
			l.Forget(id)
			freed = freed || c.Class == Exclusive
		}
	}
	for id, q := range l.quarantine {
		if q.SandboxID == sandboxID {
			l.Forget(id)
			freed = true
		}
	}
	return freed
}

// Forget drops a container (stopped or removed) and frees its CPUs; a
// quarantined container's CPUs go back to the shared pool.
func (l *Ledger) Forget(id string) (*Container, bool) {
	if q, ok := l.quarantine[id]; ok {
		delete(l.quarantine, id)
		l.pool = nil
		return q, true
	}
	c, ok := l.containers[id]
	if !ok {
		return nil, false
	}
	delete(l.containers, id)
	_ = l.replacePod(c.podID, false)
	return c, true
}

// replacePod rebuilds one pod's placement (by identity) from its live
// containers (the union of their exclusive CPUs, the sum of their shared
// amounts) and what its sandboxes were granted. With request, the engine
// refuses exclusive CPUs beyond what the pod held and was granted that do
// not fit the formula (policy.Node.Grow).
func (l *Ledger) replacePod(key string, request bool) error {
	l.pool = nil // recomputed on demand
	p := &policy.Placement{Key: key, CPUs: cpuset.New(), Granted: cpuset.New()}
	var pod *Pod
	for _, c := range l.containers {
		if c.podID != key {
			continue
		}
		pod = &c.Pod
		switch {
		case c.Class == Exclusive:
			p.CPUs = p.CPUs.Union(c.CPUs)
		case l.runsToCompletion(c):
			// An init container runs before the others and ends: as the
			// extender, the formula does not count it.
		default:
			p.SharedMilli += c.Milli
		}
	}
	for _, g := range l.granted {
		if g.podID == key {
			p.Granted, p.Name = p.Granted.Union(g.cpus), g.name
		}
	}
	switch {
	case pod != nil:
		intent, _ := api.ParsePodIntent(pod.Annotations, pod.Labels)
		p.Name, p.App, p.Policy, p.MaxPerNode = pod.Key(), intent.App, intent.Spec.CPU, intent.MaxPerNode
	case p.Granted.IsEmpty():
		l.node.Remove(key)
		return nil
	}
	if request {
		return l.node.Grow(p)
	}
	return l.node.Replace(p)
}

// Holder names (namespace/name) the pod holding a CPU exclusively, if any.
func (l *Ledger) Holder(cpu int) (string, bool) {
	h, ok := l.node.Holder(cpu)
	if !ok {
		return "", false
	}
	return h.Name, true
}

// SharedPool is online minus reserved minus the CPUs of exclusive
// containers, tracked or quarantined.
func (l *Ledger) SharedPool() cpuset.CPUSet {
	if l.pool == nil {
		pool := l.node.SharedPool()
		if len(l.quarantine) > 0 {
			pool = pool.Difference(l.Quarantined())
		}
		l.pool = &pool
	}
	return *l.pool
}

// CPUsFor is the cpuset a container should have now.
func (l *Ledger) CPUsFor(c *Container) cpuset.CPUSet {
	if l.releaseAll {
		return l.topo.Online()
	}
	switch c.Class {
	case Exclusive:
		if r := l.releaseOf(c); r.Isolate {
			return l.wide(r.ExcludeReserve)
		}
		return c.CPUs
	case System:
		return l.SharedPool().Union(l.topo.Reserved())
	case BindAll:
		return l.wide(l.releaseOf(c).ExcludeReserve)
	}
	return l.SharedPool()
}
