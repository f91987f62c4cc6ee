// Package plugin is corepin's node half: a containerd NRI plugin that gives
// every container its cpuset when it is created. Its ledger (one
// policy.Node plus the containers it knows) is the node's only record of
// which CPUs are held; handlers parse, decide through the ledger and return
// adjustments and updates.
package plugin

import (
	"fmt"
	"maps"
	"slices"
	"strings"

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
	Namespace, Name, UID string
	Annotations          map[string]string
	Labels               map[string]string
}

// Key is namespace/name: how the pod is named in messages and events,
// and how the API server's release switch finds it.
func (p Pod) Key() string { return p.Namespace + "/" + p.Name }

// identity is what the ledger keys a pod's placement by: its UID, else (a
// runtime that does not report it) the sandbox's ID. namespace/name is not
// enough: a pod deleted and re-created under the same name (a bare pod, a
// force delete) gets a new sandbox while the old one's containers may
// still run, and the two must not be merged into one placement.
func identity(uid, sandboxID string) string {
	if uid != "" {
		return uid
	}
	return "sandbox:" + sandboxID
}

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
	// CgroupsPath is the runtime's cgroup path of the container, to read
	// its actual cpuset for drift.
	CgroupsPath string
	// Quota and Period are the CFS limit the container was created with
	// (Quota <= 0: none), restored when release-isolate-mode is unset.
	Quota  int64
	Period uint64
	// quotaFromLimit: the container was found at synchronize with the
	// quota the plugin writes (-1), so the one it was created with is
	// unknown; the pod spec's CPU limit stands for it.
	quotaFromLimit bool
	// left and leftMems are the cpuset and mems (Linux lists, "" when the
	// runtime did not say) a container left where it is was found on:
	// where release-all's end puts it back.
	left, leftMems string

	// cpus caches CPUs.String(); podKey caches Pod.Key(); podID is the
	// pod's identity (UID, else sandbox ID) that placements are keyed by.
	cpus, podKey, podID string
	// mems caches Mems.String() of an exclusive container.
	mems string
	// sandboxRelease is the release switch in the sandbox's annotations,
	// in force until the API server says otherwise.
	sandboxRelease Release
	// applied is what the plugin last set (or found) on the container.
	applied applied
	// failures counts the unsolicited updates of the container that failed
	// in a row (reset by one that does not).
	failures int
	// wantCPUs is the whole number of CPUs the runtime's UpdateContainer
	// gave an exclusive container, while its pod's alloc-status does not
	// give it that many yet (resize.go); 0 otherwise. resizeOrder orders its
	// next update after a resize.
	wantCPUs    int
	resizeOrder resizeOrder
}

// Config is the node's policy.
type Config struct {
	NodeName         string
	SystemNamespaces []string
	// BindAllNamespaces are the namespaces whose pods may use BindAllCPUs
	// (the extender's bindAllNamespaces); elsewhere such a container is
	// refused.
	BindAllNamespaces []string
	Limits            api.Limits
	// UnplacedToShared sends exclusive pods without alloc-status to the
	// shared pool instead of refusing them.
	UnplacedToShared bool
}

// Ledger is the node's state: what is placed (placed.go), what was
// applied and delivered (applied.go, kept on each Container) and what the
// API server says (release.go). It is not safe for concurrent use; the
// plugin serialises handlers.
type Ledger struct {
	cfg  Config
	topo *policy.Topology
	placed
	apiView
}

// NewLedger returns an empty ledger for a node's topology.
func NewLedger(cfg Config, topo *policy.Topology) *Ledger {
	return &Ledger{cfg: cfg, topo: topo, placed: newPlaced(cfg, topo), apiView: apiView{release: map[string]Release{}, queues: map[string]boundQueues{}}}
}

// renewed is an empty ledger that keeps what the API server said (the
// release switches, release-all): what survives an NRI reconnect, after
// which the runtime lists again what exists (Plugin.Synchronize).
func (l *Ledger) renewed() *Ledger {
	n := NewLedger(l.cfg, l.topo)
	n.apiView = l.apiView
	return n
}

// regrown is the ledger over a compatibly grown topology with everything
// kept: every tracked container is admitted again as a fact, quarantined
// ones stay so, and the sandboxes keep their grants.
func (l *Ledger) regrown(topo *policy.Topology) *Ledger {
	n := &Ledger{cfg: l.cfg, topo: topo, placed: newPlaced(l.cfg, topo), apiView: l.apiView}
	n.granted = l.granted
	for _, c := range l.Containers() {
		if err := n.AdmitExisting(c.ID, c); err != nil {
			n.Quarantine(c.ID, c) // cannot happen on a grow; never free its CPUs
		}
	}
	for _, q := range l.quarantined() {
		n.Quarantine(q.ID, q)
	}
	for _, g := range n.granted {
		_ = n.replacePod(g.podID, false) // stopped containers' grants count
	}
	return n
}

// wide is every online CPU, minus the reserved ones when excludeReserve.
func (l *Ledger) wide(excludeReserve bool) cpuset.CPUSet {
	if excludeReserve {
		return l.topo.Online().Difference(l.topo.Reserved())
	}
	return l.topo.Online()
}

// Refusal is an allocation the plugin will not apply; its message names the
// pod, the container, the CPUs and the reason, and starts with "corepin:".
type Refusal struct {
	Pod, Container, CPUs, Reason string
	// Code classifies the reason for metrics and events.
	Code policy.Code
}

func (r *Refusal) Error() string {
	return fmt.Sprintf("corepin: pod %s container %s cpus %q: %s", r.Pod, r.Container, r.CPUs, r.Reason)
}

// read is the engine's one reading of a pod sandbox on this node. The
// alloc-status is the API server's where it has one for the pod: an
// in-place resize changes it after the sandbox copied it, and a container
// restarted in the sandbox must get the CPUs of its new amount.
func (l *Ledger) read(pod Pod) policy.Bound {
	annotations := pod.Annotations
	if r, ok := l.release[pod.Key()]; ok && r.AllocStatus != "" && sameUID(r.UID, pod.UID) &&
		r.AllocStatus != annotations[api.AnnotationAllocStatus] && annotations[api.AnnotationAllocStatus] != "" {
		annotations = maps.Clone(annotations)
		annotations[api.AnnotationAllocStatus] = r.AllocStatus
	}
	return policy.ReadBound(policy.BoundPod{Namespace: pod.Namespace, Name: pod.Name, Node: l.cfg.NodeName,
		Annotations: annotations, Labels: pod.Labels}, l.topo)
}

// Classify decides how a new container is pinned, from its pod's
// annotations read by the engine (policy.ReadBound). It changes nothing.
func (l *Ledger) Classify(pod Pod, name string, milli int64) (*Container, error) {
	c := &Container{Pod: pod, podKey: pod.Key(), Name: name, Milli: milli, CPUs: cpuset.New(), Mems: cpuset.New()}
	refuse := func(code policy.Code, cpus, reason string) error {
		return &Refusal{Pod: pod.Key(), Container: name, CPUs: cpus, Reason: reason, Code: code}
	}
	b := l.read(pod)
	intent := b.Request.Intent
	switch {
	case b.Reason != nil && b.Reason.Code == policy.CodeNotPlaced && l.cfg.UnplacedToShared:
		c.Class = l.sharedClass(pod)
		return c, nil
	case b.Reason != nil:
		cpus, _ := b.ContainerCPUs(name)
		return nil, refuse(b.Reason.Code, cpus.String(), b.Reason.Message)
	}
	c.sandboxRelease = Release{Isolate: intent.ReleaseIsolate, ExcludeReserve: intent.ExcludeReserve}
	if intent.BindAll() {
		// Refused rather than sent to the shared pool: the contract rejects
		// it, as the extender does, and a pod that asks for every CPU and
		// silently gets the pool would hide the misconfiguration.
		if !slices.Contains(l.cfg.BindAllNamespaces, pod.Namespace) {
			return nil, refuse(policy.CodeBindAllNamespace, "", fmt.Sprintf("%s BindAllCPUs is not allowed in namespace %q (the plugin's --bind-all-namespaces: [%s]; set it as the extender's bindAllNamespaces)",
				api.AnnotationAllocSpec, pod.Namespace, strings.Join(l.cfg.BindAllNamespaces, ", ")))
		}
		c.Class = BindAll
		return c, nil
	}
	cpus, mine := b.ContainerCPUs(name)
	if !mine {
		c.Class = l.sharedClass(pod) // a shared pod, or a sidecar of an exclusive one
		return c, nil
	}
	c.Class, c.CPUs, c.Mems = Exclusive, cpus, b.Status.Mems.Set()
	return c, nil
}

// ClassifyExisting classifies a container found at synchronize. A pod
// whose annotations cannot be honoured as written but that holds a valid
// alloc-status for this node (an upgrade that refuses a value the old
// version took) is still enforced as that alloc-status says, as the
// extender keeps counting it: the containers it names are exclusive, the
// others shared. The reason is returned in unparsed, for the caller to
// report; err is Classify's otherwise.
func (l *Ledger) ClassifyExisting(pod Pod, name string, milli int64) (c *Container, unparsed *policy.Reason, err error) {
	c, err = l.Classify(pod, name, milli)
	if err == nil {
		return c, nil, nil
	}
	b := l.read(pod)
	if !b.Held || b.Reason == nil {
		return nil, nil, err
	}
	// Release switches that do not parse are the contract's defaults
	// (ReadBound's), until the API server says otherwise.
	intent := b.Request.Intent
	c = &Container{Pod: pod, podKey: pod.Key(), Name: name, Milli: milli, CPUs: cpuset.New(), Mems: cpuset.New(),
		sandboxRelease: Release{Isolate: intent.ReleaseIsolate, ExcludeReserve: intent.ExcludeReserve}}
	if cpus, mine := b.ContainerCPUs(name); mine {
		c.Class, c.CPUs, c.Mems = Exclusive, cpus, b.Status.Mems.Set()
	} else {
		c.Class = l.sharedClass(pod)
	}
	return c, b.Reason, nil
}

// sharedClass is the class of a pod's containers that run in the shared
// pool, whatever made them shared (a shared pod, a sidecar of an exclusive
// pod, an unplaced exclusive pod sent to the pool): pods of the system
// namespaces also get the reserved CPUs (contract section 5).
func (l *Ledger) sharedClass(pod Pod) Class {
	if slices.Contains(l.cfg.SystemNamespaces, pod.Namespace) {
		return System
	}
	return Shared
}

// enforced is the alloc-status the node enforces for a pod (policy.ReadBound):
// a valid one for this node, unless the pod's annotations say it is not
// exclusive; annotations that do not parse do not void it.
func (l *Ledger) enforced(pod Pod) (api.AllocStatus, bool) {
	b := l.read(pod)
	return b.Status, b.Held
}

// numaNodes are the NUMA nodes of the node's online CPUs.
func (l *Ledger) numaNodes() cpuset.CPUSet {
	ids := make([]int, 0, len(l.topo.Source.CPUs))
	for _, cpu := range l.topo.Source.CPUs {
		ids = append(ids, cpu.NUMA)
	}
	return cpuset.New(ids...)
}

// Container returns a tracked container.
func (l *Ledger) Container(id string) (*Container, bool) {
	c, ok := l.containers[id]
	return c, ok
}

// Containers returns the tracked containers sorted by ID.
func (l *Ledger) Containers() []*Container { return byID(l.containers) }

// byID lists containers sorted by ID.
func byID(m map[string]*Container) []*Container {
	return slices.SortedFunc(maps.Values(m), func(a, b *Container) int { return strings.Compare(a.ID, b.ID) })
}

// SetLimits changes the capacity parameters (the node's node-policy).
// Nothing already held is freed: only later requests see the new formula.
func (l *Ledger) SetLimits(limits api.Limits) {
	l.cfg.Limits = limits
	l.node.Limits = limits
}

// Limits are the capacity parameters in force.
func (l *Ledger) Limits() api.Limits { return l.cfg.Limits }

// Capacity is the node's position under the capacity formula.
func (l *Ledger) Capacity() policy.Capacity { return l.node.Capacity() }
