package policy

import (
	"fmt"
	"slices"
	"sort"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/cpuset"

	"github.com/corepin/corepin/api"
)

// Placement is one pod placed on a node: its exclusive CPUs (if any) and
// what it adds to the shared side of the capacity rules.
type Placement struct {
	// Key identifies the placement on the node. The extender uses
	// namespace/name; the node plugin the pod's UID, so that a pod
	// re-created under the same name is never merged with the old one.
	Key string
	// Name is how messages name the pod (namespace/name); Key when empty.
	Name string
	App  string
	// Policy is the alloc-spec cpu policy; it matters for stacking.
	Policy api.CPUPolicy
	// CPUs are the exclusive CPUs its running containers hold; empty for
	// shared and BindAllCPUs pods.
	CPUs cpuset.CPUSet
	// Granted are the exclusive CPUs the pod was admitted with, its stopped
	// containers' included (the node plugin's pod sandboxes). Those no
	// running container holds count against the exclusive limit
	// (Capacity.Dormant), since the kubelet restarts a container on them,
	// but stay in the shared pool; taking them back is not growth (Grow).
	Granted cpuset.CPUSet
	// SharedMilli is the pod's shared amount in millicores.
	SharedMilli int64
	// MaxPerNode is the pod's own max-per-node limit, 0 for none.
	MaxPerNode int
	// Priority is the pod's spec.priority (0 when unset): preemption takes
	// only pods of a lower priority than the preemptor's (Victims).
	Priority int32
	// Terminating marks a pod being deleted: it holds its CPUs until it is
	// gone, which the extender confirms with the API server for the node
	// a preemptor waits for.
	Terminating bool
	// UID is the pod's UID where Key is not (the extender's placements),
	// so that a preemption answer can name the pod to kube-scheduler.
	UID types.UID
}

// name is how messages name the pod.
func (p *Placement) name() string {
	if p.Name != "" {
		return p.Name
	}
	return p.Key
}

// Exclusive reports whether the placement holds exclusive CPUs.
func (p *Placement) Exclusive() bool { return p.CPUs.Size() > 0 }

// PlacementFor describes req placed with the given exclusive CPUs.
func PlacementFor(req Request, cpus cpuset.CPUSet) *Placement {
	return &Placement{
		Key: req.Key, App: req.Intent.App, Policy: req.Intent.Spec.CPU,
		CPUs: cpus, SharedMilli: req.SharedMilli(), MaxPerNode: req.Intent.MaxPerNode,
	}
}

// Node is the engine's state of one node: its topology, its limits and the
// pods placed on it. It is not safe for concurrent use; its owner (the
// extender's cache, the plugin's ledger) serialises access.
type Node struct {
	Name   string
	Limits api.Limits
	// Topo is nil when the node has published no usable topology; such a
	// node takes shared pods but no exclusive ones.
	Topo *Topology
	// Attention, when set, says why the node takes no new exclusive pods
	// (for example an incompatible topology change).
	Attention string

	pods map[string]*Placement
	// owner maps a cpu index to the placement holding it exclusively.
	owner []*Placement
	held  int // E
	// grants counts, per cpu index, the placements granted it; nil until a
	// placement with Granted CPUs is added (the extender never has one).
	grants []int
	sumS   int64 // S, millicores
	maxS   int64 // M, millicores
	// maxCount is how many pods have SharedMilli == maxS: M is recomputed
	// only when the last of them goes.
	maxCount int
	// apps counts the pods of each app, for max-per-node.
	apps map[string]int
	// free summarises, per NUMA node, what filters need without a scan of
	// the CPUs; it is rebuilt on every Add and Remove (writes are rare,
	// filters of thousands of nodes per pod are not). On machines with up to
	// four NUMA nodes it lives in freeBuf, next to the counters filters read,
	// which saves a cache miss per node when thousands are filtered.
	free    []numaSummary
	freeBuf [4]numaSummary
	// lazy marks a private copy (Victims' scratch node): attach and detach
	// only mark the summary stale (dirty) and its owner rebuilds it before
	// reading. Nodes others read concurrently are never lazy.
	lazy, dirty bool
	// base, on Victims' scratch node, is the node it is a view of: pods
	// and apps are base's (read only) less the placements in gone; only
	// attach, detach and the checks are used on such a view.
	base *Node
	gone []*Placement
	// changes counts the pods attached and detached (Changes).
	changes uint64
}

// Changes counts the pods added to and removed from the node so far: what
// a caller derives from the node's pods (the extender's preemption order)
// stays valid while it is unchanged.
func (n *Node) Changes() uint64 { return n.changes }

// hasPod reports whether a pod of that key is placed.
func (n *Node) hasPod(key string) bool {
	if n.base == nil {
		_, ok := n.pods[key]
		return ok
	}
	p, ok := n.base.pods[key]
	return ok && !slices.Contains(n.gone, p)
}

// appCount is how many pods of the app are placed.
func (n *Node) appCount(app string) int {
	if n.base == nil {
		return n.apps[app]
	}
	count := n.base.apps[app]
	for _, p := range n.gone {
		if p.App == app {
			count--
		}
	}
	return count
}

// eachPod calls fn with every placement, in no particular order.
func (n *Node) eachPod(fn func(*Placement)) {
	if n.base == nil {
		for _, p := range n.pods {
			fn(p)
		}
		return
	}
	for _, p := range n.base.pods {
		if !slices.Contains(n.gone, p) {
			fn(p)
		}
	}
}

// podCount is the number of pods placed.
func (n *Node) podCount() int {
	if n.base == nil {
		return len(n.pods)
	}
	return len(n.base.pods) - len(n.gone)
}

// numaSummary counts the free capacity of one NUMA node.
type numaSummary struct {
	// wholeCPUs are the free threads of cores no pod holds (SameCoreFirst units).
	wholeCPUs int
	// freeCores are the cores no pod holds with a free thread (Spread units).
	freeCores int
	// stackable are cores with a free thread whose holders are all Spread
	// pods: Spread units for pods of other apps.
	stackable []int
}

// NewNode returns an empty node. topo may be nil.
func NewNode(name string, topo *Topology, limits api.Limits) *Node {
	n := &Node{Name: name, Limits: limits, Topo: topo, pods: map[string]*Placement{}, apps: map[string]int{}}
	if topo != nil {
		n.owner = make([]*Placement, len(topo.cpus))
		n.summarise()
	}
	return n
}

// Pod returns the placement of a pod, if any.
func (n *Node) Pod(key string) (*Placement, bool) {
	p, ok := n.pods[key]
	return p, ok
}

// Pods returns the placements sorted by key.
func (n *Node) Pods() []*Placement {
	out := make([]*Placement, 0, len(n.pods))
	for _, p := range n.pods {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out
}

// AppendPods appends the placements, in no particular order, to dst.
func (n *Node) AppendPods(dst []*Placement) []*Placement {
	for _, p := range n.pods {
		dst = append(dst, p)
	}
	return dst
}

// Len is the number of pods placed.
func (n *Node) Len() int { return len(n.pods) }

// Exclusive returns the CPUs held by exclusive placements.
func (n *Node) Exclusive() cpuset.CPUSet {
	if n.Topo == nil {
		return cpuset.New()
	}
	var idx []int
	for i, p := range n.owner {
		if p != nil {
			idx = append(idx, i)
		}
	}
	return n.Topo.set(idx)
}

// SharedPool is the node's shared pool: online CPUs minus reserved minus the
// CPUs held by exclusive placements (contract section 5).
func (n *Node) SharedPool() cpuset.CPUSet {
	if n.Topo == nil {
		return cpuset.New()
	}
	var idx []int
	for i, p := range n.owner {
		if p == nil && !n.Topo.reserved[i] {
			idx = append(idx, i)
		}
	}
	return n.Topo.set(idx)
}

// Holder returns the pod holding a CPU exclusively, if any.
func (n *Node) Holder(cpu int) (*Placement, bool) {
	if n.Topo == nil {
		return nil, false
	}
	i, ok := n.Topo.byID[cpu]
	if !ok || n.owner[i] == nil {
		return nil, false
	}
	return n.owner[i], true
}

// Add records a placement. Exclusive CPUs must be online, not reserved and
// free; otherwise nothing changes and the error names the CPUs and, for a
// conflict, the pod holding them. Adding a pod twice is an error.
func (n *Node) Add(p *Placement) error {
	if _, ok := n.pods[p.Key]; ok {
		return fmt.Errorf("pod %s is already placed on node %s", p.Key, n.Name)
	}
	var idx []int
	if p.Exclusive() {
		var err error
		if idx, err = n.checkFree(p, p.CPUs); err != nil {
			return err
		}
	}
	n.attach(p, idx)
	return nil
}

// attach records p holding the cpu indexes idx, which must be free (Add
// checks them; Victims puts back what it took off).
func (n *Node) attach(p *Placement, idx []int) {
	n.changes++
	for _, i := range idx {
		n.owner[i] = p
	}
	n.held += len(idx)
	if n.base != nil {
		if i := slices.Index(n.gone, p); i >= 0 {
			n.gone = slices.Delete(n.gone, i, i+1)
		}
	} else {
		n.pods[p.Key] = p
		if p.App != "" {
			n.apps[p.App]++
		}
	}
	n.grant(p, 1)
	n.sumS += p.SharedMilli
	switch {
	case n.podCount() == 1 || p.SharedMilli > n.maxS:
		n.maxS, n.maxCount = p.SharedMilli, 1
	case p.SharedMilli == n.maxS:
		n.maxCount++
	}
	if len(idx) > 0 {
		n.changed()
	}
}

// changed brings the summary up to date after a change of owners, or marks
// it stale on a lazy copy.
func (n *Node) changed() {
	if n.lazy {
		n.dirty = true
		return
	}
	n.summarise()
}

// checkFree returns the cpu indexes of cpus if every one of them may be
// given to pod p.
func (n *Node) checkFree(p *Placement, cpus cpuset.CPUSet) ([]int, error) {
	if n.Topo == nil {
		return nil, Reasonf(CodeNoTopology, "node %s has no CPU topology, so it cannot hold exclusive CPUs %s", n.Name, cpus)
	}
	idx, err := n.Topo.indexes(cpus)
	if err != nil {
		return nil, Reasonf(CodeConflict, "CPUs %s for pod %s on node %s: %v", cpus, p.name(), n.Name, err)
	}
	for _, i := range idx {
		if n.Topo.reserved[i] {
			return nil, Reasonf(CodeConflict, "CPUs %s for pod %s on node %s: CPU %d is reserved", cpus, p.name(), n.Name, n.Topo.cpus[i].ID)
		}
		if holder := n.owner[i]; holder != nil {
			held := "pod " + holder.name()
			if holder.name() == p.name() {
				// Told apart by Key: a pod re-created under the same name
				// while the old one's containers still run.
				held = fmt.Sprintf("pod %s (another pod of the same name, %s, whose containers still run)", holder.name(), holder.Key)
			}
			return nil, Reasonf(CodeConflict, "CPUs %s for pod %s on node %s: CPU %d is held by %s", cpus, p.name(), n.Name, n.Topo.cpus[i].ID, held)
		}
	}
	return idx, nil
}

// Remove forgets a pod and frees its CPUs. It reports whether the pod was there.
func (n *Node) Remove(key string) bool {
	p, ok := n.pods[key]
	if !ok {
		return false
	}
	n.detach(p, nil)
	return true
}

// detach forgets the placed pod p, frees its CPUs and returns their cpu
// indexes appended to idx.
func (n *Node) detach(p *Placement, idx []int) []int {
	n.changes++
	freed := 0
	if p.Exclusive() {
		for i, holder := range n.owner {
			if holder == p {
				n.owner[i] = nil
				idx = append(idx, i)
				freed++
			}
		}
		n.held -= freed
	}
	n.grant(p, -1)
	n.sumS -= p.SharedMilli
	if n.base != nil {
		n.gone = append(n.gone, p)
	} else {
		delete(n.pods, p.Key)
		if p.App != "" {
			if n.apps[p.App]--; n.apps[p.App] == 0 {
				delete(n.apps, p.App)
			}
		}
	}
	if p.SharedMilli == n.maxS {
		if n.maxCount--; n.maxCount <= 0 {
			n.maxS, n.maxCount = 0, 0
			n.eachPod(func(q *Placement) {
				switch {
				case q.SharedMilli > n.maxS || n.maxCount == 0:
					n.maxS, n.maxCount = q.SharedMilli, 1
				case q.SharedMilli == n.maxS:
					n.maxCount++
				}
			})
		}
	}
	if freed > 0 {
		n.changed()
	}
	return idx
}

// summarise rebuilds the per-NUMA summary from the owners.
func (n *Node) summarise() {
	if n.Topo == nil {
		return
	}
	numas := len(n.Topo.numas)
	switch {
	case numas <= len(n.freeBuf):
		n.free = n.freeBuf[:numas]
	case cap(n.free) < numas:
		n.free = make([]numaSummary, numas)
	default:
		n.free = n.free[:numas]
	}
	for i := range n.free {
		n.free[i] = numaSummary{stackable: n.free[i].stackable[:0]}
	}
	for ci, c := range n.Topo.cores {
		free, held, spreadOnly := 0, false, true
		for _, i := range c.cpus {
			p := n.owner[i]
			switch {
			case p == nil:
				free++
			default:
				held = true
				spreadOnly = spreadOnly && p.Policy == api.Spread
			}
		}
		sum := &n.free[c.numa]
		switch {
		case free == 0:
		case !held:
			sum.wholeCPUs += free
			sum.freeCores++
		case spreadOnly:
			sum.stackable = append(sum.stackable, ci)
		}
	}
}

// Clone returns a deep copy of the node's state sharing the immutable topology.
func (n *Node) Clone() *Node {
	c := NewNode(n.Name, n.Topo, n.Limits)
	c.Attention = n.Attention
	for _, p := range n.Pods() {
		cp := *p
		_ = c.Add(&cp)
	}
	return c
}

// NoCPUs is the empty CPU set of a placement without exclusive CPUs: the
// zero CPUSet, which has no map behind it (cpuset.New() allocates one), so
// that asking a shared placement's size reads no other memory: the victim
// search asks it of every candidate it takes off a node, and on a thousand
// nodes that read was a tenth of a /preempt call.
func NoCPUs() cpuset.CPUSet { return cpuset.CPUSet{} }

// Stackable returns the free CPUs that only a Spread pod of another app may
// take: free threads of cores whose holders are all Spread pods (contract
// section 1, "stacking"). They are in the shared pool meanwhile.
func (n *Node) Stackable() cpuset.CPUSet {
	if n.Topo == nil {
		return cpuset.New()
	}
	var idx []int
	for _, sum := range n.free {
		for _, ci := range sum.stackable {
			for _, i := range n.Topo.cores[ci].cpus {
				if n.owner[i] == nil {
					idx = append(idx, i)
				}
			}
		}
	}
	return n.Topo.set(idx)
}
