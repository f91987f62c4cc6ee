package plugin

// What the API server says: the pods' live release switches and the node's
// release-all, which override the sandboxes' annotations.

import "maps"

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
	// AllocStatus is the pod's corepin.io/alloc-status on the API server
	// ("" when it has none): an in-place resize changes it after the
	// sandbox copied it (resize.go).
	AllocStatus string
}

// apiView is what the API server said; it outlives an NRI reconnect.
type apiView struct {
	// release holds the live release switch of pods the API server told us
	// about, by pod key; it overrides the sandbox's annotations.
	release map[string]Release
	// releaseAll is the node's corepin.io/release-all (an uninstall): every
	// container the ledger knows, tracked or left where it is, runs on
	// every online CPU with every NUMA node's memory and the CFS quota the
	// kubelet gave it. Placements are still recorded, so that unsetting it
	// pins everything back as a synchronize would.
	releaseAll bool
	// queues holds, by pod key, the IO-queue guarantee of ioQueueSpread
	// pods as computed when the pod watch first showed them bound
	// (ioqueue.go); dropped with the pod.
	queues map[string]boundQueues
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
