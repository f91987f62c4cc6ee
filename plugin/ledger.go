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
}

// MaxFailures is how many unsolicited updates of a container may fail in a
// row before the plugin stops sending it again on its own: it is then left
// to the drift check, which marks it for one more update whenever its
// cpuset is found wrong, and to the next change of its target.
const MaxFailures = 5

// applied is the pinning a container was last given.
type applied struct {
	known bool
	// cpus as a Linux CPU list: comparing lists is what makes a reply with
	// hundreds of updates cheap.
	cpus string
	// lifted: the CFS quota is lifted (release-isolate-mode).
	lifted bool
	// mems as a Linux list: the container's own (its alloc-status'),
	// every NUMA node's under release-all, or as found at synchronize; ""
	// for a container whose mems the plugin never sets.
	mems string
}

// Release is a pod's live release switch as the API server has it. The
// sandbox's annotations are fixed when the pod is created; these follow
// `kubectl annotate`.
type Release struct {
	// UID is the pod's UID on the API server. The ledger finds a pod's
	// Release by namespace/name; a container whose pod has another UID (a
	// pod re-created under the same name before the informer caught up)
	// ignores it. Empty (here or on the sandbox): not checked.
	UID            string
	Isolate        bool
	ExcludeReserve bool
	// LimitMilli is each container's CPU limit from the pod spec, to
	// restore a quota the plugin lifted before it restarted.
	LimitMilli map[string]int64
	// Init names the pod's init containers that run to completion (the
	// spec's initContainers but native sidecars, restartPolicy Always).
	// NRI does not tell init containers from the others; they run before
	// the pod's containers and are not counted in the capacity formula's
	// shared sum, while native sidecars run for the pod's life and are.
	Init map[string]bool
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

// Ledger is the node's state. It is not safe for concurrent use; the
// plugin serialises handlers.
type Ledger struct {
	cfg        Config
	topo       *policy.Topology
	node       *policy.Node
	containers map[string]*Container
	// release holds the live release switch of pods the API server told us
	// about, by pod key; it overrides the sandbox's annotations.
	release map[string]Release
	// quarantine holds, by container ID, the exclusive containers found
	// running at synchronize that could not be admitted (their CPUs
	// conflict with a container kept before them). They keep running where
	// they are, so all their CPUs stay out of the shared pool and are given
	// to no one until they go.
	quarantine map[string]*Container
	// granted remembers, by sandbox ID, the exclusive CPUs each live pod
	// sandbox was admitted with, its stopped containers' included. The
	// kubelet restarts a container in the same sandbox; taking back CPUs
	// its pod was granted is not growth, so the restart is not refused on
	// a node that is over an exclusive limit lowered since the pod was
	// placed (the operator's change applies to new pods, as in the
	// extender). For the same reason granted CPUs that no container holds
	// at the moment count in E when anything else is admitted: the
	// extender counts them too, and the restart will take them back.
	// Dropped with the sandbox; rebuilt at synchronize from the sandboxes'
	// alloc-status (GrantSandbox), since containerd lists no exited
	// container.
	granted map[string]grant
	// pool caches the shared pool between changes.
	pool *cpuset.CPUSet
	// releaseAll is the node's corepin.io/release-all (an uninstall): every
	// container the ledger knows, tracked or left where it is, runs on
	// every online CPU with every NUMA node's memory and the CFS quota the
	// kubelet gave it. Placements are still recorded, so that unsetting it
	// pins everything back as a synchronize would.
	releaseAll bool
}

// grant is what a pod sandbox was admitted with (see Ledger.granted).
type grant struct {
	podID, name string
	cpus        cpuset.CPUSet
}

// NewLedger returns an empty ledger for a node's topology.
func NewLedger(cfg Config, topo *policy.Topology) *Ledger {
	return &Ledger{cfg: cfg, topo: topo, node: policy.NewNode(cfg.NodeName, topo, cfg.Limits), containers: map[string]*Container{}, release: map[string]Release{},
		quarantine: map[string]*Container{}, granted: map[string]grant{}}
}

// SetRelease records a pod's live release switch and reports whether any of
// its containers must change: its exclusive containers follow both
// switches, its BindAllCPUs containers follow exclude-reserve-cpuset. What
// each container was last given (its applied pinning) is compared with its
// target under the new switch, not the target before with the one after:
// a pod deleted and re-created under the same name (the informer delivers
// Delete(old) then Add(new)) can have a container still widened from the
// old pod's switch while both switches the ledger computes say pinned. A
// first switch from the API server that says what the sandbox's
// annotations said changes nothing.
func (l *Ledger) SetRelease(key string, r Release) bool {
	old := l.release[key]
	l.release[key] = r
	if !maps.Equal(old.Init, r.Init) || old.UID != r.UID {
		l.recount(key)
	}
	return l.stale(key)
}

// ForgetRelease drops a deleted pod's live switch (uid: the deleted pod's;
// a switch recorded for another pod of the same name is kept) and reports,
// as SetRelease, whether any of its containers must change: they fall back
// to their sandbox's annotations. Its init containers count in the shared
// sum again.
func (l *Ledger) ForgetRelease(key, uid string) bool {
	old, ok := l.release[key]
	if !ok || !sameUID(old.UID, uid) {
		return false
	}
	delete(l.release, key)
	if len(old.Init) > 0 {
		l.recount(key)
	}
	return l.stale(key)
}

// stale reports whether a container of the pods named key (namespace/name)
// has a known applied pinning that is not its target (or none known: it is
// pending anyway).
func (l *Ledger) stale(key string) bool {
	want := lists{l: l}
	for _, c := range l.containers {
		if c.podKey != key {
			continue
		}
		if !c.applied.known || c.applied.cpus != want.of(c) || c.applied.lifted != l.Lifted(c) {
			return true
		}
	}
	return false
}

// sameUID reports whether two pod UIDs name the same pod; an empty one (a
// runtime or a caller that does not know it) matches any.
func sameUID(a, b string) bool { return a == "" || b == "" || a == b }

// apiRelease is the API server's switch for a container's pod, unless it
// is another pod's of the same name (by UID).
func (l *Ledger) apiRelease(c *Container) (Release, bool) {
	r, ok := l.release[c.podKey]
	if !ok || !sameUID(r.UID, c.Pod.UID) {
		return Release{}, false
	}
	return r, true
}

// recount rebuilds the placements of the pods named key (namespace/name),
// whose init containers became known: they leave the shared sum.
func (l *Ledger) recount(key string) {
	ids := map[string]bool{}
	for _, c := range l.containers {
		if c.podKey == key {
			ids[c.podID] = true
		}
	}
	for id := range ids {
		_ = l.replacePod(id, false)
	}
}

// runsToCompletion reports whether a container is an init container that
// runs to completion (not counted in the shared sum), as far as the API
// server told the plugin.
func (l *Ledger) runsToCompletion(c *Container) bool {
	r, _ := l.apiRelease(c)
	return r.Init[c.Name]
}

// releaseOf is the release switch in force for a container's pod.
func (l *Ledger) releaseOf(c *Container) Release {
	if r, ok := l.apiRelease(c); ok {
		return r
	}
	return c.sandboxRelease
}

// Lifted reports whether a container runs released: an exclusive container
// whose pod has release-isolate-mode on runs on every online CPU with its
// CFS quota lifted, while its own CPUs stay held for it.
func (l *Ledger) Lifted(c *Container) bool {
	return l.isolated(c) && !l.releaseAll
}

// isolated reports whether an exclusive container's pod has
// release-isolate-mode on, whether or not release-all overrides it.
func (l *Ledger) isolated(c *Container) bool {
	return c.Class == Exclusive && l.releaseOf(c).Isolate
}

// SetReleaseAll records the node's corepin.io/release-all and reports
// whether it changed; the next Changes moves every container.
func (l *Ledger) SetReleaseAll(on bool) bool {
	if l.releaseAll == on {
		return false
	}
	l.releaseAll = on
	return true
}

// ReleaseAll reports whether the node's corepin.io/release-all is in force.
func (l *Ledger) ReleaseAll() bool { return l.releaseAll }

// FoundLifted reports whether an exclusive container found at synchronize
// with CFS quota quota (set: the runtime reports one) has its quota lifted
// by the plugin, so that the quota is restored when its pod is not
// released: its pod is released now (a quota of -1 or none), or its quota
// is exactly -1, what the plugin writes, and the pod spec gives it a CPU
// limit (a release unset while the plugin was away). No quota at all is not
// a lifted one: a kubelet with cpuCFSQuota: false sets none for any limit.
// Without the API server's pod spec a -1 cannot be told from a container
// without a limit.
func (l *Ledger) FoundLifted(c *Container, quota int64, set bool) bool {
	if c.Class != Exclusive || set && quota > 0 {
		return false
	}
	// Under release-all too: a released pod's -1 is the plugin's.
	if l.isolated(c) {
		return true
	}
	r, _ := l.apiRelease(c)
	return set && quota == -1 && r.LimitMilli[c.Name] > 0
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
	// Kind classifies the reason for metrics.
	Kind string
}

func (r *Refusal) Error() string {
	return fmt.Sprintf("corepin: pod %s container %s cpus %q: %s", r.Pod, r.Container, r.CPUs, r.Reason)
}

// Classify decides how a new container is pinned, from its pod's
// annotations. It changes nothing.
func (l *Ledger) Classify(pod Pod, name string, milli int64) (*Container, error) {
	c := &Container{Pod: pod, podKey: pod.Key(), Name: name, Milli: milli, CPUs: cpuset.New(), Mems: cpuset.New()}
	refuse := func(kind, cpus, reason string) error {
		return &Refusal{Pod: pod.Key(), Container: name, CPUs: cpus, Reason: reason, Kind: kind}
	}
	intent, err := api.ParsePodIntent(pod.Annotations, pod.Labels)
	if err != nil {
		return nil, refuse("bad-annotation", "", err.Error())
	}
	c.sandboxRelease = Release{Isolate: intent.ReleaseIsolate, ExcludeReserve: intent.ExcludeReserve}
	switch {
	case intent.BindAll():
		// Refused rather than sent to the shared pool: the contract rejects
		// it, as the extender does, and a pod that asks for every CPU and
		// silently gets the pool would hide the misconfiguration.
		if !slices.Contains(l.cfg.BindAllNamespaces, pod.Namespace) {
			return nil, refuse("bindall-namespace", "", fmt.Sprintf("%s BindAllCPUs is not allowed in namespace %q (the plugin's --bind-all-namespaces: [%s]; set it as the extender's bindAllNamespaces)",
				api.AnnotationAllocSpec, pod.Namespace, strings.Join(l.cfg.BindAllNamespaces, ", ")))
		}
		c.Class = BindAll
		return c, nil
	case !intent.Exclusive():
		c.Class = l.sharedClass(pod)
		return c, nil
	}
	value, ok := pod.Annotations[api.AnnotationAllocStatus]
	if !ok {
		if l.cfg.UnplacedToShared {
			c.Class = l.sharedClass(pod)
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
		c.Class = l.sharedClass(pod) // a sidecar of an exclusive pod
		return c, nil
	}
	if status.Node != l.cfg.NodeName {
		return nil, refuse("wrong-node", cpus.String(), fmt.Sprintf("alloc-status is for node %q, this is %q", status.Node, l.cfg.NodeName))
	}
	c.Class, c.CPUs, c.Mems = Exclusive, cpus.Set(), status.Mems.Set()
	return c, nil
}

// ClassifyExisting classifies a container found at synchronize. A pod
// whose other annotations no longer parse (an upgrade that refuses a value
// the old version took) is still enforced as its valid alloc-status for
// this node says, as the extender keeps counting it: the containers it
// names are exclusive, the others shared. The parse error is returned in
// unparsed, for the caller to report; err is Classify's otherwise.
func (l *Ledger) ClassifyExisting(pod Pod, name string, milli int64) (c *Container, unparsed, err error) {
	c, err = l.Classify(pod, name, milli)
	if err == nil {
		return c, nil, nil
	}
	_, unparsed = api.ParsePodIntent(pod.Annotations, pod.Labels)
	status, ok := l.enforced(pod)
	if unparsed == nil || !ok {
		return nil, nil, err
	}
	// The release switches are not read from annotations that do not
	// parse: the contract's defaults, until the API server says otherwise.
	c = &Container{Pod: pod, podKey: pod.Key(), Name: name, Milli: milli, CPUs: cpuset.New(), Mems: cpuset.New(),
		sandboxRelease: Release{ExcludeReserve: true}}
	if cpus, mine := status.Containers[name]; mine {
		c.Class, c.CPUs, c.Mems = Exclusive, cpus.Set(), status.Mems.Set()
	} else {
		c.Class = l.sharedClass(pod)
	}
	return c, unparsed, nil
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
		return &Refusal{Pod: c.podKey, Container: c.Name, CPUs: c.CPUs.String(), Reason: reason, Kind: "conflict"}
	}
	// mems are checked on requests only: a container that exists runs with
	// whatever mems the kernel accepted, and its CPUs must stay held.
	if checkCapacity && c.Class == Exclusive {
		if numa := l.numaNodes(); !c.Mems.IsSubsetOf(numa) {
			return &Refusal{Pod: c.podKey, Container: c.Name, CPUs: c.CPUs.String(), Kind: "bad-annotation",
				Reason: fmt.Sprintf("%s mems %q: this node has no NUMA node %s (its NUMA nodes: %s)", api.AnnotationAllocStatus, c.Mems, c.Mems.Difference(numa), numa)}
		}
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
		return refuse(err.Error())
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

// enforced is the alloc-status the node enforces for a pod: a valid one
// for this node, unless the pod's annotations say it is not exclusive.
// Annotations that do not parse do not void it: the extender keeps
// counting its CPUs (unparsedPlacement), and so does the node.
func (l *Ledger) enforced(pod Pod) (api.AllocStatus, bool) {
	if intent, err := api.ParsePodIntent(pod.Annotations, pod.Labels); err == nil && (intent.BindAll() || !intent.Exclusive()) {
		return api.AllocStatus{}, false
	}
	value, ok := pod.Annotations[api.AnnotationAllocStatus]
	if !ok {
		return api.AllocStatus{}, false
	}
	status, err := api.ParseAllocStatus(value)
	if err != nil || status.Node != l.cfg.NodeName {
		return api.AllocStatus{}, false
	}
	return status, true
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

// numaNodes are the NUMA nodes of the node's online CPUs.
func (l *Ledger) numaNodes() cpuset.CPUSet {
	ids := make([]int, 0, len(l.topo.Source.CPUs))
	for _, cpu := range l.topo.Source.CPUs {
		ids = append(ids, cpu.NUMA)
	}
	return cpuset.New(ids...)
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
func (l *Ledger) quarantined() []*Container {
	out := make([]*Container, 0, len(l.quarantine))
	for _, q := range l.quarantine {
		out = append(out, q)
	}
	slices.SortFunc(out, func(a, b *Container) int { return strings.Compare(a.ID, b.ID) })
	return out
}

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

// Change is one container whose pinning must be brought to what the
// ledger says.
type Change struct {
	Container *Container
	// CPUs is the cpuset to give it, as a Linux CPU list.
	CPUs string
	// Mems, when not "", is the cpuset.mems to give it (an exclusive
	// container's own, or every NUMA node's under release-all).
	Mems string
	// Lift or Restore the CFS quota (release-isolate-mode set or unset).
	Lift, Restore bool
	// Repair: what the container has is not known to be what the plugin
	// gave it (drift found, or found so at synchronize).
	Repair bool
	// Quota and Period to restore (Quota <= 0: leave the quota as it is).
	Quota  int64
	Period uint64
}

// lists memoises the CPU lists the containers of one class share, for one
// pass over the ledger.
type lists struct {
	l                        *Ledger
	pool, system, wide, all  string
	poolOK, systemOK, wideOK bool
	allOK                    bool
	numa                     string
	numaOK                   bool
}

// memo returns *s, computing it from f the first time.
func memo(ok *bool, s *string, f func() cpuset.CPUSet) string {
	if !*ok {
		*s, *ok = f().String(), true
	}
	return *s
}

func (v *lists) of(c *Container) string {
	if v.l.releaseAll {
		return memo(&v.allOK, &v.all, func() cpuset.CPUSet { return v.l.wide(false) })
	}
	switch c.Class {
	case Exclusive, BindAll:
		if c.Class == BindAll || v.l.releaseOf(c).Isolate {
			if v.l.releaseOf(c).ExcludeReserve {
				return memo(&v.wideOK, &v.wide, func() cpuset.CPUSet { return v.l.wide(true) })
			}
			return memo(&v.allOK, &v.all, func() cpuset.CPUSet { return v.l.wide(false) })
		}
		return c.cpuList()
	case System:
		return memo(&v.systemOK, &v.system, func() cpuset.CPUSet { return v.l.SharedPool().Union(v.l.topo.Reserved()) })
	}
	return memo(&v.poolOK, &v.pool, v.l.SharedPool)
}

// memsOf is the cpuset.mems a tracked container should have: "" for one
// whose mems the plugin never set (every class but an exclusive container
// with alloc-status mems), else its own, or every NUMA node under
// release-all.
func (v *lists) memsOf(c *Container) string {
	if c.Class != Exclusive || c.Mems.IsEmpty() {
		return ""
	}
	if v.l.releaseAll {
		return v.allNUMA()
	}
	return c.memsList()
}

func (v *lists) allNUMA() string {
	if !v.numaOK {
		v.numa, v.numaOK = v.l.numaNodes().String(), true
	}
	return v.numa
}

// target is the pinning a container should have and whether the ledger
// moves it at all. A tracked container always; one left where it is
// (quarantined, or found untracked) only under release-all, to every CPU,
// and back to where it was found once release-all is unset.
func (v *lists) target(c *Container, left bool) (applied, bool) {
	if !left {
		return applied{known: true, cpus: v.of(c), lifted: v.l.Lifted(c), mems: v.memsOf(c)}, true
	}
	switch {
	case v.l.releaseAll:
		t := applied{known: true, cpus: memo(&v.allOK, &v.all, func() cpuset.CPUSet { return v.l.wide(false) })}
		if c.leftMems != "" {
			t.mems = v.allNUMA()
		}
		return t, true
	case c.applied.known && c.left != "":
		return applied{known: true, cpus: c.left, mems: c.leftMems}, true
	}
	return applied{}, false
}

// has reports whether a container's applied pinning is target (mems only
// where the target sets them).
func (c *Container) has(target applied) bool {
	a := c.applied
	return a.known && a.cpus == target.cpus && a.lifted == target.lifted && (target.mems == "" || a.mems == target.mems)
}

// memsList is an exclusive container's own mems as a list.
func (c *Container) memsList() string {
	if c.mems == "" {
		c.mems = c.Mems.String()
	}
	return c.mems
}

// cpuList is an exclusive container's own CPUs as a list (they never change).
func (c *Container) cpuList() string {
	if c.cpus == "" {
		c.cpus = c.CPUs.String()
	}
	return c.cpus
}

// Changes lists the containers (other than skip) whose applied pinning
// differs from the ledger's, sorted by ID, and records the new pinning as
// applied: the caller hands them to the runtime. Containers left where
// they are take part under release-all and on its way out (lists.target).
func (l *Ledger) Changes(skip string) []Change {
	out := make([]Change, 0, len(l.containers))
	want := lists{l: l}
	for _, c := range l.Containers() {
		if c.ID == skip {
			continue
		}
		if ch, ok := l.change(c, false, &want); ok {
			out = append(out, ch)
		}
	}
	if len(l.quarantine) > 0 {
		for _, q := range l.quarantined() {
			if q.ID == skip {
				continue
			}
			if ch, ok := l.change(q, true, &want); ok {
				out = append(out, ch)
			}
		}
		slices.SortFunc(out, func(a, b Change) int { return strings.Compare(a.Container.ID, b.Container.ID) })
	}
	return out
}

// change is the Change bringing c to its target, if it needs one, and
// records the target as applied.
func (l *Ledger) change(c *Container, left bool, want *lists) (Change, bool) {
	t, moved := want.target(c, left)
	if !moved || c.has(t) {
		return Change{}, false
	}
	ch := Change{Container: c, CPUs: t.cpus, Repair: !c.applied.known}
	if t.mems != "" && c.applied.mems != t.mems {
		ch.Mems = t.mems
	}
	switch {
	case t.lifted && !(c.applied.known && c.applied.lifted):
		ch.Lift = true
	case !t.lifted && c.applied.lifted:
		ch.Restore = true
		ch.Quota, ch.Period = l.originalQuota(c)
	}
	if t.mems == "" {
		t.mems = c.applied.mems
	}
	c.applied = t
	return ch, true
}

// Settled reports whether every container the ledger moves has the
// pinning it should have, and none has an update failing: what
// release-all waits for before it reports done (Plugin.ReleaseAll).
func (l *Ledger) Settled() bool {
	want := lists{l: l}
	for _, c := range l.containers {
		if t, _ := want.target(c, false); !c.has(t) || c.failures > 0 {
			return false
		}
	}
	for _, q := range l.quarantine {
		if t, moved := want.target(q, true); moved && !q.has(t) || q.failures > 0 {
			return false
		}
	}
	return true
}

// originalQuota is the CFS limit to restore: the one the container was
// created with, else the pod spec's limit for a container found lifted
// (-1) at synchronize (a quota lifted before the plugin restarted), else
// none (a container created without a quota gets none).
func (l *Ledger) originalQuota(c *Container) (int64, uint64) {
	period := c.Period
	if period == 0 {
		period = 100000 // the kubelet's default CFS period
	}
	if c.Quota > 0 {
		return c.Quota, period
	}
	if !c.quotaFromLimit {
		return 0, period
	}
	r, _ := l.apiRelease(c)
	if milli := r.LimitMilli[c.Name]; milli > 0 {
		return milli * int64(period) / 1000, period
	}
	return 0, period
}

// Sent is what a batch of unsolicited updates gave each container, as the
// ledger recorded it when the batch was computed (Changes), by container ID.
type Sent map[string]applied

// sentOf records what changes gave their containers.
func sentOf(changes []Change) Sent {
	out := make(Sent, len(changes))
	for _, ch := range changes {
		out[ch.Container.ID] = ch.Container.applied
	}
	return out
}

// Delivered reconciles the ledger with a batch of unsolicited updates once
// the runtime has applied it. Such a batch is computed under the plugin's
// lock but sent after the lock is released, so a handler may run in
// between and return its own updates (a CreateContainer's shrink), which
// the runtime applies first: the batch's older cpuset then overwrites
// them. A container whose recorded pinning is no longer what the batch
// gave it is recorded as having the batch's pinning (what the runtime
// applied last), and one whose update failed (failed, by ID) as unknown,
// so that the next Changes sends either its current target again; their
// IDs are returned in stale (sorted). A container whose update failed for
// the MaxFailures-th time in a row is not sent again: it is recorded as
// having what the batch gave it (the drift check compares its cpuset with
// that, and marks it unknown again if it is wrong) and its ID returned in
// gaveUp, once; a later failure of it gives up at once, without gaveUp. An
// update that did not fail resets the container's count. A container the
// drift check marked unknown while the batch was in flight stays so (the
// next batch sends it its target, whether the drift was real or the batch
// not applied yet when its cgroup was read) and is not in stale: the drift
// check asked for that update. Containers the ledger no longer tracks are
// left alone.
func (l *Ledger) Delivered(sent Sent, failed map[string]bool) (stale, gaveUp []string) {
	for id, gave := range sent {
		c, ok := l.containers[id]
		if !ok {
			c, ok = l.quarantine[id] // moved by release-all
		}
		if !ok {
			continue
		}
		if !failed[id] {
			c.failures = 0
			switch {
			case c.applied == gave, !c.applied.known:
			default:
				c.applied = gave
				stale = append(stale, id)
			}
			continue
		}
		c.failures++
		if c.failures < MaxFailures {
			c.applied.known = false
			stale = append(stale, id)
			continue
		}
		if !c.applied.known {
			c.applied = gave
		}
		if c.failures == MaxFailures {
			gaveUp = append(gaveUp, id)
		}
	}
	slices.Sort(stale)
	slices.Sort(gaveUp)
	return stale, gaveUp
}

// Applied records the pinning a container was given or was found with;
// its mems are taken to be its own (an exclusive container's alloc-status
// mems) until the plugin or the runtime says otherwise.
func (l *Ledger) Applied(id string, cpus cpuset.CPUSet, lifted bool) {
	if c, ok := l.containers[id]; ok {
		c.applied = applied{known: true, cpus: cpus.String(), lifted: lifted}
		if c.Class == Exclusive && !c.Mems.IsEmpty() {
			c.applied.mems = c.memsList()
		}
	}
}

// Unknown forgets what a container was given, so the next Changes repairs
// it (drift found, or a container whose state the runtime did not report).
func (l *Ledger) Unknown(id string) {
	if c, ok := l.containers[id]; ok {
		c.applied.known = false
	}
}

// Container returns a tracked container.
func (l *Ledger) Container(id string) (*Container, bool) {
	c, ok := l.containers[id]
	return c, ok
}

// Containers returns the tracked containers sorted by ID.
func (l *Ledger) Containers() []*Container {
	out := make([]*Container, 0, len(l.containers))
	for _, c := range l.containers {
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b *Container) int { return strings.Compare(a.ID, b.ID) })
	return out
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
