package extender

import (
	"cmp"
	"context"
	"fmt"
	"hash/fnv"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"
)

// Reasons of the events the extender records on pods.
const (
	// ReasonNodesRejected: filter rejected nodes for an exclusive pod; the
	// message counts the rejected nodes by reason.
	ReasonNodesRejected = "CorepinNodesRejected"
	// ReasonBindConflict: a bind lost a race (the node's CPUs were taken
	// since filter, or the API server refused the write as a conflict);
	// kube-scheduler retries the pod.
	ReasonBindConflict = "CorepinBindConflict"
)

const (
	// maxEventMessage bounds an event's message (events.k8s.io/v1 limits
	// a note to 1 KiB; core events are truncated the same way).
	maxEventMessage = 1024
	// maxReasonInMessage bounds one engine reason quoted in a message.
	maxReasonInMessage = 240

	defaultEventQueue    = 64
	defaultDedupeEntries = 4096
	defaultDedupeWindow  = 10 * time.Minute
	defaultRejectedDelay = 2 * time.Second
	defaultHeld          = 1024
)

// PodEventsConfig tunes PodEvents; zero values take the defaults.
type PodEventsConfig struct {
	// Queue is how many pods' events may wait for the worker; more are
	// dropped (and counted), never waited for. Default 64.
	Queue int
	// Entries bounds the dedupe memory: at most this many pods are
	// remembered, the least recently rejected forgotten first. Default 4096.
	Entries int
	// Window is how long an identical summary for the same pod is not
	// recorded again. Default 10 minutes.
	Window time.Duration
	// Delay is how long a rejection waits before the worker looks whether
	// its pod still has no node. Default 2 seconds.
	Delay time.Duration
	// Held bounds the rejections waiting out Delay; more are dropped (and
	// counted). Default 1024.
	Held int
}

// PodEvents records corepin's events on pods off the request path: the
// HTTP handlers hand over what happened without blocking (a pod's key on a
// client-go delaying work queue, what happened beside it, at most Queue
// pods waiting), and one worker builds the messages, deduplicates them and
// passes them to the EventRecorder (itself asynchronous: the broadcaster
// retries its writes to the API server, so no write fails here).
//
// A rejection is recorded only for a pod that still has no node Delay after
// the filter: filter rejects some nodes for most exclusive pods on a busy
// cluster, and kube-scheduler binds nearly all of them to another node a
// few milliseconds later. A Warning on each of those told the operator of
// no problem and cost the API server one write per pod. The pods that do
// wait are the ones the event is for, and kube-scheduler's own
// FailedScheduling event already comes at once. The worker summarises a
// rejection as soon as it gets it (dropping the filter's per-node map) and
// puts the pod back on the queue after Delay.
//
// The queue holds a pod once however often it is rejected before the
// worker gets to it: the latest rejection is the one summarised.
//
// Deduplication: a pod retried every few seconds by kube-scheduler gets a
// CorepinNodesRejected event only when its summary changes, or once per
// Window while it stays the same (the broadcaster's correlator then counts
// the repeat on the existing event). The memory for that is one small
// entry per pending exclusive pod with rejections, bounded by Entries and
// dropped as soon as the pod is placed, bound or deleted (Forget), or after
// Window (Expire).
type PodEvents struct {
	recorder record.EventRecorder
	metrics  *Metrics
	window   time.Duration
	delay    time.Duration
	maxHeld  int
	maxQueue int
	now      func() time.Time

	queue workqueue.TypedDelayingInterface[eventKey]
	// qmu guards waiting: what the handlers handed over, by the key on the
	// queue, until the worker takes it.
	qmu     sync.Mutex
	waiting map[eventKey]*podEventItem

	// held is the worker's own: summarised rejections waiting out the
	// delay, by pod; each comes back on the queue as a kindDue key with its
	// seq (a key left over from an entry decided early finds another seq).
	held    map[eventKey]*podEventItem
	heldSeq uint64

	// mu makes a pod's state check and its entry's insertion one step.
	mu sync.Mutex
	// entries maps a pod key to its dedupeEntry, least recently rejected
	// evicted first, each kept for the window (by e.now).
	entries *cache.LRUExpireCache
}

type podEventKind uint8

const (
	kindRejected podEventKind = iota
	kindConflict
	kindBarrier
	// kindRecord: an event recorded at once, as given (eventReason, reason).
	kindRecord
	// kindDue: a held rejection whose delay is over.
	kindDue
)

// eventKey is what the work queue holds: comparable, so a pod rejected
// again before the worker gets to it is queued once.
type eventKey struct {
	kind            podEventKind
	namespace, name string
	uid             types.UID
	// seq tells barriers apart, and a kindDue key from the held entry it
	// was queued for.
	seq uint64
}

// heldKey is the key under which a pod's rejection is held.
func (k eventKey) heldKey() eventKey {
	return eventKey{kind: kindRejected, namespace: k.namespace, name: k.name, uid: k.uid}
}

type podEventItem struct {
	ref v1.ObjectReference
	// total and failed for kindRejected: failed is the filter's reply,
	// which the handler no longer touches once it is queued. The worker
	// turns them into msg and sum (the message and its hash) and drops
	// the map before holding the item until due.
	total  int
	failed Rejections
	msg    string
	sum    uint64
	due    time.Time
	seq    uint64
	// node and reason for kindConflict; reason is the message of a
	// kindRecord, eventReason its reason.
	node, reason string
	eventReason  string
	done         chan struct{} // kindBarrier
	// force (kindBarrier): decide every held rejection now, due or not.
	force bool
}

type dedupeEntry struct {
	uid     types.UID
	summary uint64
}

// eventsClock is the dedupe cache's clock: PodEvents.now, which tests set.
type eventsClock struct{ e *PodEvents }

func (c eventsClock) Now() time.Time { return c.e.now() }

// PodState is what the worker needs to know about a pod, once the delay is
// over, before it records a rejection: whether it still waits for a node.
type PodState uint8

// Pod states, see PodState.
const (
	// PodPending: the cache shows the pod, not bound.
	PodPending PodState = iota
	// PodUnknown: the cache does not show the pod: after the delay, it
	// was deleted (possibly after it was bound).
	PodUnknown
	// PodDone: the pod is placed, bound or gone, or the cache shows
	// another pod under that name.
	PodDone
)

// NewPodEvents returns PodEvents recording through recorder; metrics may
// be nil. Call Run to start its worker.
func NewPodEvents(recorder record.EventRecorder, metrics *Metrics, cfg PodEventsConfig) *PodEvents {
	if cfg.Queue <= 0 {
		cfg.Queue = defaultEventQueue
	}
	if cfg.Entries <= 0 {
		cfg.Entries = defaultDedupeEntries
	}
	if cfg.Window <= 0 {
		cfg.Window = defaultDedupeWindow
	}
	if cfg.Delay <= 0 {
		cfg.Delay = defaultRejectedDelay
	}
	if cfg.Held <= 0 {
		cfg.Held = defaultHeld
	}
	e := &PodEvents{recorder: recorder, metrics: metrics, window: cfg.Window,
		delay: cfg.Delay, maxHeld: cfg.Held, maxQueue: cfg.Queue, now: time.Now,
		queue:   workqueue.NewTypedDelayingQueueWithConfig(workqueue.TypedDelayingQueueConfig[eventKey]{Name: "corepin_pod_events"}),
		waiting: map[eventKey]*podEventItem{}, held: map[eventKey]*podEventItem{}}
	e.entries = cache.NewLRUExpireCacheWithClock(cfg.Entries, eventsClock{e})
	return e
}

func podRef(pod *v1.Pod) v1.ObjectReference {
	return v1.ObjectReference{Kind: "Pod", APIVersion: "v1", Namespace: pod.Namespace, Name: pod.Name, UID: pod.UID}
}

// NodesRejected queues a CorepinNodesRejected event for an exclusive pod:
// total nodes were asked about and failed are those rejected. It is
// recorded if the pod still has no node after the delay. It never blocks;
// failed must not be changed afterwards.
func (e *PodEvents) NodesRejected(pod *v1.Pod, total int, failed Rejections) {
	e.send(kindRejected, &podEventItem{ref: podRef(pod), total: total, failed: failed}, ReasonNodesRejected)
}

// BindConflict queues a CorepinBindConflict event on the pod. It never blocks.
func (e *PodEvents) BindConflict(pod *v1.Pod, node string, err error) {
	e.send(kindConflict, &podEventItem{ref: podRef(pod), node: node, reason: err.Error()}, ReasonBindConflict)
}

// send hands item to the worker, replacing what is still waiting for the
// same pod, or drops it when Queue pods already wait.
func (e *PodEvents) send(kind podEventKind, item *podEventItem, reason string) {
	key := eventKey{kind: kind, namespace: item.ref.Namespace, name: item.ref.Name, uid: item.ref.UID}
	e.qmu.Lock()
	if _, ok := e.waiting[key]; !ok && len(e.waiting) >= e.maxQueue {
		e.qmu.Unlock()
		e.count(reason, "dropped")
		klog.V(2).InfoS("Pod event dropped: queue full", "pod", klog.KRef(item.ref.Namespace, item.ref.Name), "reason", reason)
		return
	}
	e.waiting[key] = item
	e.qmu.Unlock()
	e.queue.Add(key)
}

// take returns what waits under key, nil if the worker took it already.
func (e *PodEvents) take(key eventKey) *podEventItem {
	e.qmu.Lock()
	defer e.qmu.Unlock()
	item := e.waiting[key]
	delete(e.waiting, key)
	return item
}

func (e *PodEvents) count(reason, result string) {
	if e.metrics != nil {
		e.metrics.PodEvents.WithLabelValues(reason, result).Inc()
	}
}

// Run records queued events until ctx is done, then shuts the queue down:
// what is queued by then is still handled, the rejections still waiting
// out their delay are not. state tells what the cache knows of a pod; nil
// treats every pod as PodPending.
func (e *PodEvents) Run(ctx context.Context, state func(namespace, name string, uid types.UID) PodState) {
	go func() {
		<-ctx.Done()
		e.queue.ShutDown()
	}()
	for e.processNext(state) {
	}
}

// processNext handles the next key, waiting for one; false once the queue
// is shut down and empty.
func (e *PodEvents) processNext(state func(namespace, name string, uid types.UID) PodState) bool {
	key, shutdown := e.queue.Get()
	if shutdown {
		return false
	}
	defer e.queue.Done(key)
	e.process(key, state)
	return true
}

// process handles one key: a conflict is recorded at once, a rejection is
// summarised and held until due, a due one decided, a barrier (tests) is
// released once what came before it is handled.
func (e *PodEvents) process(key eventKey, state func(namespace, name string, uid types.UID) PodState) {
	if key.kind == kindDue {
		if item := e.held[key.heldKey()]; item != nil && item.seq == key.seq {
			delete(e.held, key.heldKey())
			e.decide(item, state)
		}
		return
	}
	item := e.take(key)
	if item == nil {
		return
	}
	switch key.kind {
	case kindBarrier:
		if item.force {
			e.decideHeld(state, true)
		}
		close(item.done)
	case kindConflict:
		msg := truncate(fmt.Sprintf("bind to node %s lost a race, kube-scheduler retries the pod: %s", item.node, item.reason), maxEventMessage)
		e.recorder.Eventf(&item.ref, v1.EventTypeWarning, ReasonBindConflict, "%s", msg)
		e.count(ReasonBindConflict, "recorded")
	case kindRecord:
		e.recorder.Eventf(&item.ref, v1.EventTypeWarning, item.eventReason, "%s", truncate(item.reason, maxEventMessage))
		e.count(item.eventReason, "recorded")
	case kindRejected:
		item.msg = RejectionSummary(item.total, item.failed)
		h := fnv.New64a()
		_, _ = h.Write([]byte(item.msg))
		item.sum = h.Sum64()
		item.failed = nil
		if old := e.held[key]; old != nil {
			// Already waiting: the newer summary, the first deadline.
			old.msg, old.sum = item.msg, item.sum
			return
		}
		if len(e.held) >= e.maxHeld {
			e.decideHeld(state, false) // an overdue one may free a place
		}
		if len(e.held) >= e.maxHeld {
			e.count(ReasonNodesRejected, "dropped")
			klog.V(2).InfoS("Pod event dropped: too many waiting", "pod", klog.KRef(item.ref.Namespace, item.ref.Name), "reason", ReasonNodesRejected)
			return
		}
		e.heldSeq++
		item.seq, item.due = e.heldSeq, e.now().Add(e.delay)
		e.held[key] = item
		due := key
		due.kind, due.seq = kindDue, item.seq
		e.queue.AddAfter(due, e.delay)
	}
}

// decideHeld decides the held rejections that are due (all of them with
// force), oldest first; their keys still to come off the queue find
// nothing.
func (e *PodEvents) decideHeld(state func(namespace, name string, uid types.UID) PodState, force bool) {
	now := e.now()
	var due []*podEventItem
	for key, item := range e.held {
		if force || !item.due.After(now) {
			due = append(due, item)
			delete(e.held, key)
		}
	}
	slices.SortFunc(due, func(a, b *podEventItem) int { return cmp.Compare(a.seq, b.seq) })
	for _, item := range due {
		e.decide(item, state)
	}
}

// decide records a held rejection if its pod still waits for a node and
// the same summary was not recorded for it within the window. A pod the
// cache does not show after the delay is gone (deleted, possibly after it
// was bound): no event for it.
func (e *PodEvents) decide(item *podEventItem, state func(namespace, name string, uid types.UID) PodState) {
	ref := &item.ref
	key := ref.Namespace + "/" + ref.Name
	// The state check and the insertion are one step under mu: a Forget for
	// the pod (bind, delete) that follows the check waits, and removes what
	// was inserted.
	e.mu.Lock()
	st := PodPending
	if state != nil {
		st = state(ref.Namespace, ref.Name, ref.UID)
	}
	if st != PodPending {
		e.entries.Remove(key)
		e.mu.Unlock()
		e.count(ReasonNodesRejected, "skipped")
		return
	}
	if v, ok := e.entries.Get(key); ok {
		if d := v.(dedupeEntry); d.uid == ref.UID && d.summary == item.sum {
			e.mu.Unlock()
			e.count(ReasonNodesRejected, "deduplicated")
			return
		}
	}
	// The cache expires an entry after its TTL, not at it: one nanosecond
	// less makes an entry exactly Window old expired.
	e.entries.Add(key, dedupeEntry{uid: ref.UID, summary: item.sum}, e.window-time.Nanosecond)
	e.setGauge()
	e.mu.Unlock()
	klog.V(2).InfoS("Nodes rejected for exclusive pod", "pod", klog.KRef(ref.Namespace, ref.Name), "summary", item.msg)
	e.recorder.Eventf(ref, v1.EventTypeWarning, ReasonNodesRejected, "%s", item.msg)
	e.count(ReasonNodesRejected, "recorded")
}

func (e *PodEvents) setGauge() {
	if e.metrics != nil {
		e.metrics.PodEventEntries.Set(float64(len(e.entries.Keys())))
	}
}

// Forget drops what is remembered of a pod (namespace/name): it was bound,
// placed or deleted.
func (e *PodEvents) Forget(key string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if _, ok := e.entries.Get(key); ok {
		e.entries.Remove(key)
		e.setGauge()
	}
}

// Expire drops the entries older than the window, by the clock the
// entries were added with (now is that clock's time on the caller's tick):
// they would not suppress an event any more.
func (e *PodEvents) Expire(time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	live := map[any]bool{}
	for _, k := range e.entries.Keys() {
		live[k] = true
	}
	e.entries.RemoveAll(func(k any) bool { return !live[k] })
	e.setGauge()
}

// Len is the number of pods remembered for deduplication.
func (e *PodEvents) Len() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.entries.Keys())
}

// RejectionSummary is the message of a CorepinNodesRejected event: how many
// of the total nodes were rejected, grouped by reason class, largest group
// first. A group whose nodes all gave the same reason quotes it; otherwise
// it names the class and quotes one node's reason as an example. The
// message is at most 1 KiB: groups that do not fit are counted at the end.
func RejectionSummary(total int, failed Rejections) string {
	type group struct {
		class, example, node string
		n                    int
		same                 bool
	}
	byClass := map[string]*group{}
	for node, r := range failed {
		class, reason := string(r.Code), r.Message
		g := byClass[class]
		if g == nil {
			byClass[class] = &group{class: class, example: reason, node: node, n: 1, same: true}
			continue
		}
		g.n++
		if reason != g.example {
			g.same = false
		}
		// The example is the first node by name, so the message does not
		// depend on the map's order.
		if node < g.node {
			g.example, g.node = reason, node
		}
	}
	groups := make([]*group, 0, len(byClass))
	for _, g := range byClass {
		groups = append(groups, g)
	}
	sort.Slice(groups, func(i, j int) bool {
		if groups[i].n != groups[j].n {
			return groups[i].n > groups[j].n
		}
		return groups[i].class < groups[j].class
	})
	var b strings.Builder
	fmt.Fprintf(&b, "%d of %d nodes rejected: ", len(failed), total)
	left := len(failed)
	for i, g := range groups {
		var part string
		if g.same {
			part = fmt.Sprintf("%d %s", g.n, truncate(g.example, maxReasonInMessage))
		} else {
			part = fmt.Sprintf("%d %s, e.g. %s: %s", g.n, g.class, g.node, truncate(g.example, maxReasonInMessage))
		}
		if i > 0 {
			part = "; " + part
		}
		// Keep room for the tail that counts what is left out.
		if b.Len()+len(part) > maxEventMessage-48 && i > 0 {
			fmt.Fprintf(&b, "; %d more for %d other reasons", left, len(groups)-i)
			break
		}
		b.WriteString(part)
		left -= g.n
	}
	return truncate(b.String(), maxEventMessage)
}

// truncate cuts s to at most n bytes on a rune boundary, marking the cut.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	const mark = "..."
	cut := n - len(mark)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + mark
}
