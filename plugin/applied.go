package plugin

// What was applied and delivered: the pinning each container was last
// given, the changes that bring it to its target, and the reconciliation of
// unsolicited batches with what the runtime applied.

import (
	"slices"
	"strings"

	"k8s.io/utils/cpuset"
)

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
