// Package plugin is corepin's node half: a containerd NRI plugin that gives
// every container its cpuset when it is created. Its ledger (one
// policy.Node plus the containers it knows) is the node's only record of
// which CPUs are held; handlers parse, decide through the ledger and return
// adjustments and updates.
package plugin

import (
	"fmt"
	"sort"

	"k8s.io/utils/cpuset"

	"github.com/corepin/corepin/api"
	"github.com/corepin/corepin/policy"
)

// Class is how a container is pinned.
type Class int

const (
	// Shared containers run in the shared pool.
	Shared Class = iota
	// Exclusive containers run on the CPUs their alloc-status gives them.
	Exclusive
	// System containers (system namespaces) run in the shared pool plus the reserved CPUs.
	System
	// BindAll containers run on every online CPU (minus reserved unless
	// exclude-reserve-cpuset is false).
	BindAll
)

// Pod is what the ledger needs of a pod sandbox.
type Pod struct {
	Namespace, Name string
	Annotations     map[string]string
	Labels          map[string]string
}

// Key is namespace/name.
func (p Pod) Key() string { return p.Namespace + "/" + p.Name }

// Container is a container the ledger tracks.
type Container struct {
	ID        string
	SandboxID string
	Pod       Pod
	Name      string
	Class     Class
	// CPUs are the exclusive CPUs of an Exclusive container.
	CPUs cpuset.CPUSet
	Mems cpuset.CPUSet
	// Milli is the container's CPU amount (quota, else shares), for the
	// capacity formula's shared sum.
	Milli int64
}

// Config is the node's policy.
type Config struct {
	NodeName         string
	SystemNamespaces []string
	Limits           api.Limits
	// UnplacedToShared sends exclusive pods without alloc-status to the
	// shared pool instead of refusing them.
	UnplacedToShared bool
}

// Ledger is the node's state. It is not safe for concurrent use; the
// plugin serialises handlers.
type Ledger struct {
	cfg        Config
	topo       *policy.Topology
	node       *policy.Node
	containers map[string]*Container
}

// NewLedger returns an empty ledger for a node's topology.
func NewLedger(cfg Config, topo *policy.Topology) *Ledger {
	return &Ledger{cfg: cfg, topo: topo, node: policy.NewNode(cfg.NodeName, topo, cfg.Limits), containers: map[string]*Container{}}
}

// Refusal is an allocation the plugin will not apply; its message names the
// pod, the container, the CPUs and the reason, and starts with "corepin:".
type Refusal struct {
	Pod, Container, CPUs, Reason string
	// Kind classifies the reason for metrics.
	Kind string
}

func (r *Refusal) Error() string {
	return fmt.Sprintf("corepin: pod %s container %s cpus %q: %s", r.Pod, r.Container, r.CPUs, r.Reason)
}

// Classify decides how a new container is pinned, from its pod's
// annotations. It changes nothing.
func (l *Ledger) Classify(pod Pod, name string, milli int64) (*Container, error) {
	c := &Container{Pod: pod, Name: name, Milli: milli, CPUs: cpuset.New(), Mems: cpuset.New()}
	refuse := func(kind, cpus, reason string) error {
		return &Refusal{Pod: pod.Key(), Container: name, CPUs: cpus, Reason: reason, Kind: kind}
	}
	intent, err := api.ParsePodIntent(pod.Annotations, pod.Labels)
	if err != nil {
		return nil, refuse("bad-annotation", "", err.Error())
	}
	switch {
	case intent.BindAll():
		c.Class = BindAll
		return c, nil
	case !intent.Exclusive():
		c.Class = Shared
		for _, ns := range l.cfg.SystemNamespaces {
			if ns == pod.Namespace {
				c.Class = System
			}
		}
		return c, nil
	}
	value, ok := pod.Annotations[api.AnnotationAllocStatus]
	if !ok {
		if l.cfg.UnplacedToShared {
			c.Class = Shared
			return c, nil
		}
		return nil, refuse("not-placed", "", "exclusive pod not placed by the corepin scheduler extender (no "+api.AnnotationAllocStatus+")")
	}
	status, err := api.ParseAllocStatus(value)
	if err != nil {
		return nil, refuse("bad-annotation", "", err.Error())
	}
	cpus, mine := status.Containers[name]
	if !mine {
		c.Class = Shared // a sidecar of an exclusive pod
		return c, nil
	}
	if status.Node != l.cfg.NodeName {
		return nil, refuse("wrong-node", cpus.String(), fmt.Sprintf("alloc-status is for node %q, this is %q", status.Node, l.cfg.NodeName))
	}
	c.Class, c.CPUs, c.Mems = Exclusive, cpus.Set(), status.Mems.Set()
	return c, nil
}

// Admit records a classified container. An exclusive container's CPUs must
// be online, not reserved, not held by another pod, and within the
// capacity formula; otherwise the ledger is unchanged and the error is a
// Refusal.
func (l *Ledger) Admit(id string, c *Container) error {
	c.ID = id
	if old, ok := l.containers[id]; ok && old.Pod.Key() == c.Pod.Key() {
		l.Forget(id)
	}
	l.containers[id] = c
	if err := l.replacePod(c.Pod.Key()); err != nil {
		delete(l.containers, id)
		_ = l.replacePod(c.Pod.Key()) // restore the pod as it was
		return &Refusal{Pod: c.Pod.Key(), Container: c.Name, CPUs: c.CPUs.String(), Reason: err.Error(), Kind: "conflict"}
	}
	return nil
}

// ForgetSandbox drops every container of a pod sandbox and reports whether
// exclusive CPUs were freed.
func (l *Ledger) ForgetSandbox(sandboxID string) bool {
	freed := false
	for id, c := range l.containers {
		if c.SandboxID == sandboxID {
			l.Forget(id)
			freed = freed || c.Class == Exclusive
		}
	}
	return freed
}

// Forget drops a container (stopped or removed) and frees its CPUs.
func (l *Ledger) Forget(id string) (*Container, bool) {
	c, ok := l.containers[id]
	if !ok {
		return nil, false
	}
	delete(l.containers, id)
	_ = l.replacePod(c.Pod.Key())
	return c, true
}

// replacePod rebuilds one pod's placement from its live containers: the
// union of their exclusive CPUs and the sum of their shared amounts.
func (l *Ledger) replacePod(key string) error {
	var cpus []int
	var milli int64
	var pod *Pod
	for _, c := range l.containers {
		if c.Pod.Key() != key {
			continue
		}
		pod = &c.Pod
		if c.Class == Exclusive {
			cpus = append(cpus, c.CPUs.List()...)
		} else {
			milli += c.Milli
		}
	}
	old, had := l.node.Pod(key)
	l.node.Remove(key)
	if pod == nil {
		return nil
	}
	restore := func(err error) error {
		if had {
			_ = l.node.Add(old)
		}
		return err
	}
	intent, _ := api.ParsePodIntent(pod.Annotations, pod.Labels)
	p := &policy.Placement{Key: key, App: intent.App, Policy: intent.Spec.CPU, CPUs: cpuset.New(cpus...), SharedMilli: milli, MaxPerNode: intent.MaxPerNode}
	if err := l.node.Add(p); err != nil { // online, not reserved, not held by another pod
		return restore(err)
	}
	// Only growth is checked against the formula: a pod that keeps or
	// shrinks its CPUs is never refused what it already holds.
	if grew := !had || p.CPUs.Size() > old.CPUs.Size(); grew && p.Exclusive() {
		if c := l.node.Capacity(); c.E > c.ExclusiveLimit {
			l.node.Remove(key)
			added := p.CPUs.Size()
			if had {
				added -= old.CPUs.Size()
			}
			return restore(fmt.Errorf("exclusive limit %d reached (needs %d, holds %d)", c.ExclusiveLimit, added, c.E-added))
		}
	}
	return nil
}

// SharedPool is online minus reserved minus the CPUs of exclusive containers.
func (l *Ledger) SharedPool() cpuset.CPUSet { return l.node.SharedPool() }

// CPUsFor is the cpuset a container should have now.
func (l *Ledger) CPUsFor(c *Container) cpuset.CPUSet {
	switch c.Class {
	case Exclusive:
		return c.CPUs
	case System:
		return l.SharedPool().Union(l.topo.Reserved())
	case BindAll:
		intent, _ := api.ParsePodIntent(c.Pod.Annotations, c.Pod.Labels)
		if intent.ExcludeReserve {
			return l.topo.Online().Difference(l.topo.Reserved())
		}
		return l.topo.Online()
	}
	return l.SharedPool()
}

// Drifted returns the containers (other than skip) whose current cpuset,
// as given by current, differs from what the ledger says, sorted by ID.
func (l *Ledger) Drifted(skip string, current func(*Container) (cpuset.CPUSet, bool)) []*Container {
	var out []*Container
	for id, c := range l.containers {
		if id == skip {
			continue
		}
		if cur, ok := current(c); !ok || !cur.Equals(l.CPUsFor(c)) {
			out = append(out, c)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Containers returns the tracked containers sorted by ID.
func (l *Ledger) Containers() []*Container {
	out := make([]*Container, 0, len(l.containers))
	for _, c := range l.containers {
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Capacity is the node's position under the capacity formula.
func (l *Ledger) Capacity() policy.Capacity { return l.node.Capacity() }
