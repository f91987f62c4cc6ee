package plugin

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/containerd/nri/pkg/api"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/cpuset"
	"k8s.io/utils/lru"

	corepin "github.com/corepin/corepin/api"
	"github.com/corepin/corepin/policy"
)

// Plugin is the NRI plugin. Its handlers are thin: parse the NRI objects,
// decide through the Ledger, answer with adjustments and updates.
type Plugin struct {
	mu      sync.Mutex
	ledger  *Ledger
	log     *slog.Logger
	metrics *Metrics
	// pending asks the plugin's own goroutine to push updates that no
	// handler could return (a pod removed without a StopContainer, a
	// release switch flipped, drift found).
	pending chan struct{}
	// poolChanged tells the publisher the shared pool changed.
	poolChanged chan struct{}
	lastPool    cpuset.CPUSet
	// events, when set, reports refusals and conflicts on the pods.
	events record.EventRecorder
	// checkConfig validates the configuration the runtime hands a
	// pre-installed plugin (may be nil).
	checkConfig func(string) error
	// baseLimits are the capacity parameters before the node's
	// corepin.io/node-policy (the defaults, or the plugin's settings).
	baseLimits corepin.Limits
	// health is the NRI connection's state for the probes.
	health *health
	// synced: a Synchronize has built the ledger from the runtime's
	// containers (release-all is not done before). inFlight counts
	// unsolicited batches sent but not yet answered.
	synced   bool
	inFlight int
	// releaseChanged tells the release-all reporter to look again.
	releaseChanged chan struct{}
	// nriName is the plugin's NRI name (INDEX-NAME); seenConflicts the
	// other-plugin conflicts already reported (conflict.go).
	nriName       string
	seenConflicts *lru.Cache
}

// New returns a plugin over a ledger. metrics may be nil.
func New(ledger *Ledger, log *slog.Logger, metrics *Metrics) *Plugin {
	if metrics == nil {
		metrics = NewMetrics()
	}
	p := &Plugin{ledger: ledger, log: log, metrics: metrics,
		pending: make(chan struct{}, 1), poolChanged: make(chan struct{}, 1), baseLimits: ledger.Limits(), health: newHealth(time.Now),
		releaseChanged: make(chan struct{}, 1)}
	p.changed()
	return p
}

// SetConfigCheck sets the validation of the configuration the runtime
// passes in Configure (a pre-installed plugin's conf.d file).
func (p *Plugin) SetConfigCheck(check func(config string) error) { p.checkConfig = check }

// Pending signals that updates are waiting that no handler could return;
// the owner then calls PushPending(stub.UpdateContainers) from its own
// goroutine (never from a handler: that deadlocks with the runtime's lock).
func (p *Plugin) Pending() <-chan struct{} { return p.pending }

// PoolChanged signals that the shared pool changed (for publishing).
func (p *Plugin) PoolChanged() <-chan struct{} { return p.poolChanged }

func notify(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// changed refreshes the gauges and tells the publisher when the pool
// moved. Called with p.mu held after every change to the ledger.
func (p *Plugin) changed() {
	p.metrics.state(p.ledger)
	if pool := p.ledger.SharedPool(); !pool.Equals(p.lastPool) {
		p.lastPool = pool
		notify(p.poolChanged)
	}
	notify(p.releaseChanged)
}

// PendingUpdates returns the updates that bring every container to what
// the ledger says: the pool grown back after a pod went (reason grow), a
// release switched (release, restore) or drift corrected (repair). The
// ledger records them as applied: a caller that sends them to the runtime
// should use PushPending, which also repairs what a handler running in
// between changed.
func (p *Plugin) PendingUpdates() []*api.ContainerUpdate {
	p.mu.Lock()
	defer p.mu.Unlock()
	updates, _ := p.updates("", "grow", true)
	return updates
}

// UpdateFunc sends unsolicited updates to the runtime and returns the ones
// that failed (stub.Stub's UpdateContainers).
type UpdateFunc func([]*api.ContainerUpdate) ([]*api.ContainerUpdate, error)

// PushPending computes the pending updates (PendingUpdates), sends them
// with send outside the plugin's lock (send must not run inside a handler:
// it would deadlock with the runtime's lock), then reconciles the ledger
// with what was sent. A handler may run while the batch is in flight and
// return its own updates, which the runtime applies before the batch: a
// container the handler moved is then overwritten by the batch's older
// cpuset. Every such container, and every container whose update failed
// (all of the batch when send returns an error without naming the failed
// updates: a call that failed as a whole, or containerd's failures over
// ttrpc, which drops the list with the error), is sent its current target
// by the next batch, which is signalled on Pending. These updates do not
// ignore failures (a handler's reply does: a container that exited
// meanwhile must not fail a CreateContainer); containerd skips a container
// it no longer has. A container whose update fails MaxFailures times in a
// row is logged once and no longer sent again (Ledger.Delivered). It
// returns how many updates were sent and how many of them failed.
func (p *Plugin) PushPending(send UpdateFunc) (sent, failedN int, err error) {
	p.mu.Lock()
	updates, changes := p.updates("", "grow", true)
	batch := sentOf(changes)
	if len(updates) > 0 {
		p.inFlight++ // release-all is not done while a batch is unanswered
	}
	p.mu.Unlock()
	if len(updates) == 0 {
		return 0, 0, nil
	}
	defer notify(p.releaseChanged)
	failedUpdates, err := send(updates)
	failed := map[string]bool{}
	for _, u := range failedUpdates {
		failed[u.GetContainerId()] = true
	}
	if err != nil && len(failed) == 0 {
		// Not told which: the call failed as a whole, or containerd's
		// list of failed updates was lost with its error (ttrpc drops the
		// reply of a call that returns one).
		for id := range batch {
			failed[id] = true
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.inFlight--
	stale, gaveUp := p.ledger.Delivered(batch, failed)
	for _, id := range gaveUp {
		c, _ := p.ledger.Container(id)
		p.log.Warn("Container update keeps failing; no longer sent again until its target changes or the drift check finds its cpuset wrong",
			"pod", c.podKey, "container", c.Name, "cpus", c.applied.cpus, "failures", c.failures, "err", err)
	}
	if len(stale) > 0 {
		p.log.Info("Updates to send again: moved by a handler while a batch was in flight, or failed", "containers", stale)
		notify(p.pending)
	}
	return len(updates), len(failed), err
}

// SharedPool is the current shared pool.
func (p *Plugin) SharedPool() cpuset.CPUSet {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.ledger.SharedPool()
}

// SetRelease applies what the API server says of a pod (its release
// switches, its containers' limits, its init containers): its exclusive
// containers are widened, or restored, by the plugin's own goroutine.
func (p *Plugin) SetRelease(namespace, name string, r Release) {
	p.mu.Lock()
	defer p.mu.Unlock()
	key := namespace + "/" + name
	if p.ledger.SetRelease(key, r) {
		p.log.Info("Release switch changed", "pod", key, "releaseIsolateMode", r.Isolate, "excludeReserveCPUSet", r.ExcludeReserve)
		notify(p.pending)
	}
	if p.resizeFromAPI(key) {
		notify(p.pending)
	}
	p.changed() // init containers may have left the shared sum
}

// SetNodePolicy applies the node's corepin.io/node-policy value over the
// base limits, as the extender does (its defaults, then the fields the
// node sets). A malformed value keeps the base limits and is returned.
func (p *Plugin) SetNodePolicy(value string) error {
	limits := p.baseLimits
	np, err := corepin.ParseNodePolicy(value)
	if err == nil {
		limits = np.Apply(limits)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if old := p.ledger.Limits(); old != limits {
		p.ledger.SetLimits(limits)
		c := p.ledger.Capacity()
		p.log.Info("Capacity limits changed", "maxExclusiveRatio", limits.MaxExclusiveRatio, "sharedOvercommit", limits.SharedOvercommit,
			"sharedHeadroom", limits.SharedHeadroom, "exclusiveLimit", c.ExclusiveLimit)
		p.changed()
	}
	return err
}

// ForgetRelease drops a deleted pod's live release switch (uid: the
// deleted pod's UID; "" drops whatever is recorded under the name). Its
// containers fall back to their sandbox's annotations: any whose pinning
// then differs is corrected by the plugin's own goroutine.
func (p *Plugin) ForgetRelease(namespace, name, uid string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	key := namespace + "/" + name
	p.ledger.ForgetBound(key, uid)
	if p.ledger.ForgetRelease(key, uid) {
		p.log.Info("Release switch dropped with its pod; containers back to their sandbox's switch", "pod", key, "uid", uid)
		notify(p.pending)
	}
	p.changed() // init containers may have come back into the shared sum
}

// CheckDrift reads every pinned container's actual cpuset and marks the
// ones that differ from what the plugin gave them, for the plugin's own
// goroutine to correct. It returns how many drifted.
func (p *Plugin) CheckDrift(read func(*Container) (cpuset.CPUSet, error)) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ledger.ReleaseAll() {
		return 0 // nothing is enforced while corepin is being uninstalled
	}
	drifted := 0
	for _, c := range p.ledger.Containers() {
		if !c.applied.known || c.CgroupsPath == "" {
			continue
		}
		actual, err := read(c)
		if err != nil {
			// Gone meanwhile, or not readable here: nothing to correct.
			p.log.Debug("Cannot read a container's cpuset", "pod", c.Pod.Key(), "container", c.Name, "err", err)
			continue
		}
		if actual.String() != c.applied.cpus {
			p.log.Warn("Cpuset drifted; correcting", "pod", c.Pod.Key(), "container", c.Name, "actual", actual.String(), "want", c.applied.cpus)
			p.ledger.Unknown(c.ID)
			drifted++
		}
	}
	if drifted > 0 {
		p.metrics.driftCorrections.Add(float64(drifted))
		notify(p.pending)
	}
	return drifted
}

// Configure is called by the runtime when the plugin registers; a
// pre-installed plugin gets its conf.d file here.
func (p *Plugin) Configure(_ context.Context, config, runtime, version string) (api.EventMask, error) {
	p.log.Info("Connected to the runtime", "runtime", runtime, "version", version)
	if config != "" && p.checkConfig != nil {
		if err := p.checkConfig(config); err != nil {
			return 0, err
		}
	}
	return 0, nil // every event the plugin handles
}

func podOf(sb *api.PodSandbox) Pod {
	return Pod{Namespace: sb.GetNamespace(), Name: sb.GetName(), UID: sb.GetUid(), Annotations: sb.GetAnnotations(), Labels: sb.GetLabels()}
}

// SetEventRecorder makes refusals and conflicts Kubernetes events on the
// pod (kubectl describe pod shows them next to kubelet's own error).
func (p *Plugin) SetEventRecorder(r record.EventRecorder) { p.events = r }

// event records a warning on a pod; the recorder queues it, so a handler
// never waits for the API server.
func (p *Plugin) event(pod Pod, reason, message string) {
	if p.events == nil {
		return
	}
	ref := &v1.ObjectReference{Kind: "Pod", APIVersion: "v1", Namespace: pod.Namespace, Name: pod.Name, UID: types.UID(pod.UID)}
	p.events.Event(ref, v1.EventTypeWarning, reason, message)
}

// nodeEvent records a warning on this node.
func (p *Plugin) nodeEvent(reason, message string) {
	if p.events == nil {
		return
	}
	node := p.ledger.cfg.NodeName
	ref := &v1.ObjectReference{Kind: "Node", APIVersion: "v1", Name: node, UID: types.UID(node)}
	p.events.Event(ref, v1.EventTypeWarning, reason, message)
}

// amount is a container's CPU amount in millicores: its CFS quota over the
// period (the limit), else its CPU shares (the request).
func amount(c *api.Container) int64 {
	cpu := c.GetLinux().GetResources().GetCpu()
	if q, p := cpu.GetQuota().Get(), cpu.GetPeriod().Get(); q != nil && p != nil && *q > 0 && *p > 0 {
		return *q * 1000 / int64(*p)
	}
	if s := cpu.GetShares().Get(); s != nil && *s > 2 {
		return int64(*s) * 1000 / 1024
	}
	return 0
}

// currentMems is a container's cpuset.mems as the runtime reports it, as
// a normalised Linux list ("" when it reports none).
func currentMems(c *api.Container) string {
	set, err := corepin.ParseCPUList(c.GetLinux().GetResources().GetCpu().GetMems())
	if err != nil || set.IsEmpty() {
		return ""
	}
	return set.String()
}

// foundLeft records where a container left where it is was found, for
// release-all to move it and put it back.
func foundLeft(q *Container, c *api.Container) {
	q.leftMems = currentMems(c)
	if cur, ok := currentCPUs(c); ok {
		q.left = cur.String()
		q.applied = applied{known: true, cpus: q.left, mems: q.leftMems}
	}
}

func currentCPUs(c *api.Container) (cpuset.CPUSet, bool) {
	list := c.GetLinux().GetResources().GetCpu().GetCpus()
	if list == "" {
		return cpuset.New(), false
	}
	set, err := corepin.ParseCPUList(list)
	return set, err == nil
}

// cfs is a container's CFS quota and period; set reports whether the
// runtime gave a quota at all (none: quota 0).
func cfs(c *api.Container) (quota int64, period uint64, set bool) {
	cpu := c.GetLinux().GetResources().GetCpu()
	if q := cpu.GetQuota().Get(); q != nil {
		quota, set = *q, true
	}
	if pp := cpu.GetPeriod().Get(); pp != nil {
		period = *pp
	}
	return quota, period, set
}

// describe fills in what the plugin keeps of a container besides its class.
func describe(classified *Container, c *api.Container) {
	classified.SandboxID = c.GetPodSandboxId()
	classified.CgroupsPath = c.GetLinux().GetCgroupsPath()
	classified.Quota, classified.Period, _ = cfs(c)
}

// Synchronize rebuilds the ledger from the containers that exist, and what
// each pod sandbox was granted from its alloc-status, and returns updates
// for every container whose cpuset is not what it should be. Containers
// that exist are facts, not requests: an exclusive container is never left
// out for capacity (a node over its exclusive limit is logged, counted in
// corepin_nri_exclusive_over_limit_cpus and reported as a node event).
// Containers are taken in the order they were created (NRI's created_at;
// ties and runtimes that do not report it: by pod key, then container ID),
// so when two exclusive containers claim the same CPU the one created first
// is kept, whatever order the runtime lists them in. The other keeps
// running where it is, untracked: it is quarantined, so none of its CPUs
// goes to the shared pool or to another exclusive container until it
// stops; the conflict is logged, counted and reported on the pod, and the
// plugin still registers.
func (p *Plugin) Synchronize(_ context.Context, pods []*api.PodSandbox, containers []*api.Container) ([]*api.ContainerUpdate, error) {
	defer p.metrics.observe("Synchronize", time.Now())
	p.mu.Lock()
	defer p.mu.Unlock()
	p.ledger = p.ledger.renewed()
	sandboxes := make(map[string]Pod, len(pods))
	for _, sb := range pods {
		pod := podOf(sb)
		sandboxes[sb.GetId()] = pod
		// What each sandbox was granted survives the reconnect: its
		// stopped containers are not listed, and may be restarted.
		p.ledger.GrantSandbox(sb.GetId(), pod)
	}
	ordered := slices.Clone(containers)
	slices.SortStableFunc(ordered, func(a, b *api.Container) int {
		return cmp.Or(cmp.Compare(a.GetCreatedAt(), b.GetCreatedAt()),
			strings.Compare(sandboxes[a.GetPodSandboxId()].Key(), sandboxes[b.GetPodSandboxId()].Key()),
			strings.Compare(a.GetId(), b.GetId()))
	})
	// Containers whose annotations do not say where they belong, decided
	// once the CPUs the pooled containers were found on are known.
	type unknown struct {
		c   *api.Container
		err error
	}
	var unknowns []unknown
	pooled := cpuset.New()
	for _, c := range ordered {
		// Only a stopped container is gone: a paused one still holds its
		// CPUs (it resumes where it was), and one in an unknown state may
		// be running.
		if c.GetState() == api.ContainerState_CONTAINER_STOPPED {
			continue
		}
		pod := sandboxes[c.GetPodSandboxId()]
		classified, unparsed, err := p.ledger.ClassifyExisting(pod, c.GetName(), amount(c))
		if err != nil {
			unknowns = append(unknowns, unknown{c, err})
			continue
		}
		if unparsed != nil {
			p.metrics.conflicts.Inc()
			p.log.Error("Pod annotations cannot be honoured as written: container kept as its alloc-status says", "pod", pod.Key(), "container", c.GetName(),
				"class", classified.Class, "cpus", classified.CPUs.String(), "code", unparsed.Code, "err", unparsed)
			p.event(pod, "CorepinConflict", fmt.Sprintf("annotations cannot be honoured as written (%v): container %s kept as %s says (%s, cpus %q); a new container of the pod is refused until they are fixed",
				unparsed, c.GetName(), corepin.AnnotationAllocStatus, classified.Class, classified.CPUs.String()))
		}
		describe(classified, c)
		if cur, ok := currentCPUs(c); ok && (classified.Class == Shared || classified.Class == System) {
			pooled = pooled.Union(cur)
		}
		if err := p.ledger.AdmitExisting(c.GetId(), classified); err != nil {
			// Its CPUs conflict with a container kept before it: it keeps
			// running on them, so none of them goes to anybody else.
			p.ledger.Quarantine(c.GetId(), classified)
			foundLeft(classified, c)
			p.metrics.conflicts.Inc()
			p.log.Error("Conflict at synchronize: container left where it is, its CPUs kept out of the shared pool", "pod", pod.Key(),
				"container", c.GetName(), "cpus", classified.CPUs.String(), "err", err)
			p.event(pod, "CorepinConflict", "container left on its CPUs, not tracked by corepin until it stops (its CPUs "+
				classified.CPUs.String()+" are kept out of the shared pool): "+err.Error())
			continue
		}
		// A quota found lifted (-1) was lifted by us (the pod is released,
		// or was until its release was unset while the plugin was away): it
		// is restored from the pod spec's limit unless the pod is released.
		// No quota at all is the kubelet's (cpuCFSQuota: false), not ours.
		quota, _, set := cfs(c)
		lifted := p.ledger.FoundLifted(classified, quota, set)
		if lifted && set && quota == -1 {
			classified.quotaFromLimit = true // the original is the pod spec's limit
		}
		if cur, ok := currentCPUs(c); ok {
			p.ledger.Applied(c.GetId(), cur, lifted)
			if mems := currentMems(c); mems != "" && classified.applied.mems != "" {
				classified.applied.mems = mems // widened by release-all, say
			}
		} else {
			classified.applied.lifted = lifted // the cpuset is repaired; the quota restored if due
		}
	}
	for _, u := range unknowns {
		// Its annotations do not say where it belongs (malformed, not
		// placed, another node's): it keeps whatever cpuset it has,
		// untracked. Found outside the CPUs the pooled containers are on,
		// it was pinned there (by an earlier version that read its
		// annotations): quarantined, so they stay out of the pool.
		c, pod := u.c, sandboxes[u.c.GetPodSandboxId()]
		p.metrics.conflicts.Inc()
		if cur, ok := currentCPUs(c); ok && !pooled.IsEmpty() && cur.Intersection(pooled).IsEmpty() {
			q := &Container{Pod: pod, Name: c.GetName(), Class: Exclusive, CPUs: cur, Mems: cpuset.New()}
			describe(q, c)
			p.ledger.Quarantine(c.GetId(), q)
			foundLeft(q, c)
			p.log.Error("Container at synchronize not tracked: left where it is, its CPUs kept out of the shared pool", "pod", pod.Key(),
				"container", c.GetName(), "cpus", cur.String(), "err", u.err)
			p.event(pod, "CorepinConflict", "container left on its CPUs, not tracked by corepin until it stops (its CPUs "+
				cur.String()+" are kept out of the shared pool): "+u.err.Error())
			continue
		}
		// Recorded all the same, claiming nothing: release-all moves it.
		q := &Container{Pod: pod, Name: c.GetName(), Class: Shared, Mems: cpuset.New()}
		describe(q, c)
		p.ledger.Leave(c.GetId(), q)
		foundLeft(q, c)
		p.log.Error("Container at synchronize not tracked: left where it is", "pod", pod.Key(), "container", c.GetName(), "err", u.err)
		p.event(pod, "CorepinConflict", "container left on its CPUs, not tracked by corepin until it stops: "+u.err.Error())
	}
	if c := p.ledger.Capacity(); c.E > c.ExclusiveLimit {
		msg := fmt.Sprintf("node is over its exclusive limit: %d exclusive CPUs held by running containers, limit %d (P=%d, shared total %s, largest shared %s); no new exclusive container is admitted until it is back under",
			c.E, c.ExclusiveLimit, c.P, milli(c.S), milli(c.M))
		p.log.Warn("Over the exclusive limit at synchronize; running containers kept", "exclusive", c.E, "limit", c.ExclusiveLimit)
		p.nodeEvent("CorepinOverExclusiveLimit", msg)
	}
	updates, _ := p.updates("", "repair", false)
	p.synced = true
	p.changed()
	p.health.synchronized()
	p.log.Info("Synchronized", "containers", len(p.ledger.containers), "quarantined", p.ledger.Quarantined().String(),
		"updates", len(updates), "sharedPool", p.ledger.SharedPool().String())
	return updates, nil
}

// milli formats millicores as CPUs.
func milli(m int64) string { return strconv.FormatFloat(float64(m)/1000, 'f', -1, 64) }

// CreateContainer pins the new container and returns, with it, the updates
// that move every other container to its new cpuset, so the shared pool
// shrinks before the new container starts.
func (p *Plugin) CreateContainer(_ context.Context, sb *api.PodSandbox, c *api.Container) (*api.ContainerAdjustment, []*api.ContainerUpdate, error) {
	defer p.metrics.observe("CreateContainer", time.Now())
	p.mu.Lock()
	defer p.mu.Unlock()
	pod := podOf(sb)
	if p.ledger.ReleaseAll() {
		return p.createReleasedAll(pod, sb, c), nil, nil
	}
	classified, err := p.ledger.Classify(pod, c.GetName(), amount(c))
	if err == nil {
		describe(classified, c)
		classified.SandboxID = sb.GetId()
		err = p.ledger.CheckQueues(classified)
	}
	if err == nil {
		err = p.ledger.Admit(c.GetId(), classified)
	}
	if err != nil {
		var r *Refusal
		if errors.As(err, &r) {
			p.metrics.refusals.WithLabelValues(string(r.Code)).Inc()
			p.log.Warn("Refused container", "pod", r.Pod, "container", r.Container, "cpus", r.CPUs, "reason", r.Reason)
		}
		p.event(pod, "CorepinRefused", err.Error())
		return nil, nil, err
	}
	cpus, lifted := p.ledger.CPUsFor(classified), p.ledger.Lifted(classified)
	adjust := &api.ContainerAdjustment{}
	adjust.SetLinuxCPUSetCPUs(cpus.String())
	if classified.Class == Exclusive && classified.Mems.Size() > 0 {
		adjust.SetLinuxCPUSetMems(classified.memsList())
	}
	if lifted {
		adjust.SetLinuxCPUQuota(-1)
	}
	p.ledger.Applied(c.GetId(), cpus, lifted)
	// Everyone else's cpuset is assumed to be what the ledger last gave it.
	updates, _ := p.updates(c.GetId(), "shrink", false)
	p.changed()
	p.log.Info("Pinned container", "pod", pod.Key(), "container", c.GetName(), "class", classified.Class,
		"cpus", cpus.String(), "released", lifted, "updates", len(updates))
	return adjust, updates, nil
}

// StopContainer frees an exclusive container's CPUs and grows the others back.
func (p *Plugin) StopContainer(_ context.Context, _ *api.PodSandbox, c *api.Container) ([]*api.ContainerUpdate, error) {
	defer p.metrics.observe("StopContainer", time.Now())
	p.mu.Lock()
	defer p.mu.Unlock()
	gone, ok := p.ledger.Forget(c.GetId())
	if !ok || gone.Class != Exclusive {
		p.changed() // the container gauges and the shared sum moved
		return nil, nil
	}
	updates, _ := p.updates("", "grow", false)
	p.changed()
	p.log.Info("Freed exclusive CPUs", "pod", gone.Pod.Key(), "container", gone.Name, "cpus", gone.CPUs.String(), "updates", len(updates))
	return updates, nil
}

// RemoveContainer forgets a container (StopContainer usually did already).
func (p *Plugin) RemoveContainer(_ context.Context, _ *api.PodSandbox, c *api.Container) error {
	defer p.metrics.observe("RemoveContainer", time.Now())
	p.mu.Lock()
	defer p.mu.Unlock()
	if gone, ok := p.ledger.Forget(c.GetId()); ok && gone.Class == Exclusive {
		notify(p.pending)
	}
	p.changed()
	return nil
}

// StopPodSandbox frees the CPUs of every container of the pod: a pod
// deleted by the kubelet stops its sandbox without a StopContainer per
// container. Its grant goes with it.
func (p *Plugin) StopPodSandbox(_ context.Context, sb *api.PodSandbox) error {
	return p.forgetSandbox("StopPodSandbox", sb)
}

// RemovePodSandbox forgets the sandbox (StopPodSandbox usually did already).
func (p *Plugin) RemovePodSandbox(_ context.Context, sb *api.PodSandbox) error {
	return p.forgetSandbox("RemovePodSandbox", sb)
}

func (p *Plugin) forgetSandbox(handler string, sb *api.PodSandbox) error {
	defer p.metrics.observe(handler, time.Now())
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ledger.ForgetSandbox(sb.GetId()) {
		p.log.Info("Freed exclusive CPUs of a gone pod sandbox", "pod", podOf(sb).Key(), "handler", handler)
		notify(p.pending)
	}
	p.changed()
	return nil
}

// updates turns the ledger's pending changes (other than skip's) into NRI
// container updates, counted under reason unless they repair a container
// whose cpuset was not known to be right (drift, synchronize) or lift or
// restore a release. unsolicited: for stub.UpdateContainers, whose failures
// the runtime reports only for updates that do not ignore them; a handler's
// reply ignores them (a container that exited meanwhile must not fail the
// whole reply, a CreateContainer with it). It also returns the changes
// behind them; only PushPending keeps them (a handler's reply needs no
// delivery check, and building that record on every CreateContainer cost
// 16 KB).
func (p *Plugin) updates(skip, reason string, unsolicited bool) ([]*api.ContainerUpdate, []Change) {
	if p.ledger.ReleaseAll() && !unsolicited {
		// Under release-all every move goes through the plugin's own
		// goroutine, whose updates the runtime confirms: done is reported
		// on that, never on a handler's reply.
		notify(p.pending)
		return nil, nil
	}
	changes := p.ledger.Changes(skip)
	if len(changes) == 0 {
		return nil, nil
	}
	orderResizes(changes)
	// One allocation per message type for the whole reply: an exclusive
	// container's creation can move hundreds of shared containers.
	var (
		out       = make([]*api.ContainerUpdate, len(changes))
		updates   = make([]api.ContainerUpdate, len(changes))
		linux     = make([]api.LinuxContainerUpdate, len(changes))
		resources = make([]api.LinuxResources, len(changes))
		cpus      = make([]api.LinuxCPU, len(changes))
	)
	counts := map[string]int{}
	for i, ch := range changes {
		cpus[i].Cpus, cpus[i].Mems = ch.CPUs, ch.Mems
		resources[i].Cpu = &cpus[i]
		linux[i].Resources = &resources[i]
		u := &updates[i]
		u.ContainerId, u.Linux = ch.Container.ID, &linux[i]
		u.IgnoreFailure = !unsolicited
		why := reason
		switch {
		case ch.Lift:
			u.SetLinuxCPUQuota(-1)
			why = "release"
		case ch.Restore:
			if ch.Quota > 0 {
				u.SetLinuxCPUQuota(ch.Quota)
				u.SetLinuxCPUPeriod(int64(ch.Period))
			}
			why = "restore"
		}
		if ch.Repair {
			why = "repair"
		}
		if p.ledger.ReleaseAll() {
			why = "release-all"
		}
		counts[why]++
		out[i] = u
	}
	for why, n := range counts {
		p.metrics.updates.WithLabelValues(why).Add(float64(n))
	}
	return out, changes
}

// SetTopology adopts a re-discovered host topology when it is a compatible
// grow (every CPU the plugin knows keeps its core, socket, NUMA node and IO
// queues: CPUs brought online), as the extender accepts it: the ledger is
// rebuilt over it with every container it tracks (and every quarantined
// one) kept, and the shared containers are grown onto the new CPUs by the
// plugin's own goroutine. Anything else is refused: the plugin keeps
// enforcing the topology it has until it restarts.
func (p *Plugin) SetTopology(src corepin.Topology) error {
	topo, err := policy.NewTopology(src)
	if err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := corepin.CompatibleGrow(p.ledger.topo.Source, src); err != nil {
		return fmt.Errorf("not a compatible grow (%w): enforcing the previous topology until the plugin restarts", err)
	}
	l := p.ledger.regrown(topo)
	p.ledger = l
	p.changed()
	notify(p.pending)
	p.log.Info("Adopted the grown CPU topology", "cpus", len(src.CPUs), "sharedPool", l.SharedPool().String())
	return nil
}

// Capacity is the node's position under the capacity formula.
func (p *Plugin) Capacity() policy.Capacity {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.ledger.Capacity()
}

func (c Class) String() string {
	return [...]string{"shared", "exclusive", "system", "bindall"}[c]
}
