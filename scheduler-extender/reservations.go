package extender

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	extenderv1 "k8s.io/kube-scheduler/extender/v1"

	"github.com/corepin/corepin/api"
	"github.com/corepin/corepin/policy"
)

// reservations are the Scheduler's CPUReservations (contract section 7). A
// Reserved one is a placement on its node like a pod's, under a key no pod
// can have, so its CPUs count in E and no pod gets them; a pod that
// consumes it takes the very CPUs over in one step under the write lock.
type reservations struct {
	byKey map[string]*reservation
	// consumerOf maps the key of a pod placed on a reservation's CPUs to
	// the reservation's key.
	consumerOf map[string]string
	// boundBefore maps a reservation's key to the pod seen bound on its
	// CPUs before the reservation itself was seen (informers deliver in
	// any order after a restart): the reservation is then consumed.
	boundBefore map[string]consumer
	// notify, when set, is told the key of a reservation whose state
	// changed under the Scheduler (consumed, released): the controller
	// writes its status. It must not block.
	notify func(key string)
	// assumed are corepin-placer's placements in flight, by reservation
	// key (reservation_assume.go).
	assumed map[string]*assumedReservation
}

type consumer struct {
	key string
	uid types.UID
}

// reservation is one CPUReservation as the Scheduler holds it.
type reservation struct {
	key string // namespace/name
	uid types.UID
	// req is the template's request, its Key the placement's.
	req     policy.Request
	filters []string
	// badTemplate says why the template is not a pod corepin can place.
	badTemplate string
	// nodeName is spec.nodeName: the only node considered, when set.
	nodeName string
	ttl      time.Duration
	created  time.Time

	phase  api.ReservationPhase
	status api.AllocStatus // the CPUs, while Reserved or once Consumed
	// reservedAt and deadline: the TTL runs from reservedAt once placed,
	// from creation before; kept with the state, as an assumed pod's.
	reservedAt, deadline time.Time
	// held: its placement is on status.Node (or waits there for the
	// node's topology, as a pod would).
	held bool
	// consumer is the pod placed on its CPUs; consumed is set once that
	// pod's bind succeeded or the pod was seen bound: then the CPUs are
	// the pod's, and go with it.
	consumer consumer
	consumed bool
	reason   string
}

// reservationPrefix keeps reservation placements apart from pods: a pod
// key is namespace/name, and no namespace contains a colon.
const reservationPrefix = "cpureservation:"

func placementKey(key string) string { return reservationPrefix + key }

// ReservationView is what the controller reads of a reservation.
type ReservationView struct {
	Phase      api.ReservationPhase
	Status     api.AllocStatus
	ReservedAt time.Time
	Deadline   time.Time
	Consumer   string
	ConsumerID types.UID
	Reason     string
}

func (r *reservation) view() ReservationView {
	v := ReservationView{Phase: r.phase, Status: r.status, ReservedAt: r.reservedAt, Deadline: r.deadline, Reason: r.reason}
	if r.consumed {
		v.Consumer, v.ConsumerID = r.consumer.key, r.consumer.uid
	}
	return v
}

func (rs *reservations) init() {
	if rs.byKey == nil {
		rs.byKey, rs.consumerOf, rs.boundBefore = map[string]*reservation{}, map[string]string{}, map[string]consumer{}
		rs.assumed = map[string]*assumedReservation{}
	}
}

func (rs *reservations) changed(key string) {
	if rs.notify != nil {
		rs.notify(key)
	}
}

// SetReservationNotify sets what is told the key of a reservation whose
// state the Scheduler changed by itself (a pod consumed it). fn must not
// block: it runs under the Scheduler's lock.
func (s *Scheduler) SetReservationNotify(fn func(key string)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.res.notify = fn
}

// UpsertReservation records a reservation as the API server shows it. A
// Reserved one not held yet (the extender restarted) is held again on its
// node from its status, like a bound pod from its alloc-status; a Consumed
// or Expired one holds nothing. Phases the extender itself moved on (it
// placed the reservation and its status write is on its way) are kept.
func (s *Scheduler) UpsertReservation(obj *api.CPUReservation) error {
	pod := obj.Pod()
	req, reqErr := s.request(pod)
	req.Key = placementKey(obj.Key())
	s.mu.Lock()
	defer s.mu.Unlock()
	s.res.init()
	// Before the reservation holds its CPUs, most often the very ones
	// assumed; under the one write lock nobody sees them free between.
	s.endAssumptionLocked(obj)
	key := obj.Key()
	r := s.res.byKey[key]
	if r != nil && r.uid != obj.UID {
		// Deleted and created again under the name: a new reservation.
		s.releaseLocked(r)
		r = nil
	}
	if r == nil {
		r = &reservation{key: key, uid: obj.UID, phase: api.ReservationPending, created: obj.CreationTimestamp.Time}
		if r.created.IsZero() {
			r.created = time.Now() // not from an API server: its TTL runs from now
		}
		s.res.byKey[key] = r
	}
	r.req, r.filters, r.nodeName, r.ttl = req, s.pipeline(pod), obj.Spec.NodeName, obj.TTL()
	if !r.reservedAt.IsZero() {
		r.deadline = r.reservedAt.Add(r.ttl)
	} else {
		r.deadline = r.created.Add(r.ttl)
	}
	r.badTemplate = ""
	if reqErr != nil {
		r.badTemplate = fmt.Sprintf("CPUReservation %s: spec.template: %v", key, reqErr)
	}
	switch phase := obj.Phase(); phase {
	case api.ReservationReserved:
		// Phases only move forward: an older Reserved read after this
		// extender expired or handed the CPUs over changes nothing.
		if r.phase != api.ReservationPending && r.phase != api.ReservationUnschedulable {
			return nil
		}
		status, err := obj.Status.AllocStatus()
		if err != nil {
			return fmt.Errorf("CPUReservation %s is Reserved but its %w", key, err)
		}
		r.phase, r.status = api.ReservationReserved, status
		if obj.Status.ReservedAt != nil {
			r.reservedAt = obj.Status.ReservedAt.Time
			r.deadline = r.reservedAt.Add(r.ttl)
		}
		if c, ok := s.res.boundBefore[key]; ok {
			delete(s.res.boundBefore, key)
			r.consumer, r.consumed, r.phase = c, true, api.ReservationConsumed
			s.res.consumerOf[c.key] = key
			s.res.changed(key)
			return nil
		}
		return s.holdLocked(r)
	case api.ReservationConsumed, api.ReservationExpired:
		if r.phase != phase {
			s.releaseLocked(r)
			r.phase = phase
			if obj.Status.ConsumedBy != nil && phase == api.ReservationConsumed {
				r.consumed = true
			}
		}
	case api.ReservationUnschedulable:
		if r.phase == api.ReservationPending {
			r.phase, r.reason = phase, obj.Status.Reason
		}
	}
	return nil
}

// holdLocked puts a Reserved reservation's placement on its node.
func (s *Scheduler) holdLocked(r *reservation) error {
	node := r.status.Node
	st, ok := s.nodes[node]
	if !ok {
		// Not known yet: held as a pod bound there would be.
		st = &nodeState{node: policy.NewNode(node, nil, s.cfg.Limits())}
		s.setNode(node, st)
	}
	p := policy.PlacementFor(r.req, r.status.CPUs.Set())
	p.Name = "CPUReservation " + r.key
	r.held = true
	if st.node.Topo == nil {
		st.place(p)
		return nil
	}
	if err := s.addDecidedLocked(st, p); err != nil {
		st.place(p) // kept aside, as a pod whose CPUs do not fit
		return fmt.Errorf("CPUReservation %s: its CPUs %s on %s cannot be held: %w", r.key, r.status.CPUs.Set(), node, err)
	}
	return nil
}

// releaseLocked takes a reservation's placement off its node.
func (s *Scheduler) releaseLocked(r *reservation) {
	if !r.held {
		return
	}
	r.held = false
	if st := s.nodes[r.status.Node]; st != nil {
		st.node.Remove(placementKey(r.key))
		delete(st.unplaced, placementKey(r.key))
		s.dropGoneLocked(r.status.Node)
	}
}

// DeleteReservation forgets a reservation and frees its CPUs (a consumed
// one's CPUs are its pod's and stay with it).
func (s *Scheduler) DeleteReservation(key string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.res.byKey[key]
	if !ok {
		return false
	}
	s.releaseLocked(r)
	delete(s.res.byKey, key)
	delete(s.res.boundBefore, key)
	return true
}

// Reservation returns what the Scheduler holds of a reservation.
func (s *Scheduler) Reservation(key string) (ReservationView, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	r, ok := s.res.byKey[key]
	if !ok {
		return ReservationView{}, false
	}
	return r.view(), true
}

// ReservationCounts is the number of reservations in each phase.
func (s *Scheduler) ReservationCounts() map[api.ReservationPhase]int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	counts := map[api.ReservationPhase]int{}
	for _, r := range s.res.byKey {
		counts[r.phase]++
	}
	return counts
}

// WaitingReservations lists the reservations not placed yet (Pending or
// Unschedulable), sorted: the controller tries them again when the
// cluster changes.
func (s *Scheduler) WaitingReservations() []string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var out []string
	for key, r := range s.res.byKey {
		if r.phase == api.ReservationPending || r.phase == api.ReservationUnschedulable {
			out = append(out, key)
		}
	}
	slices.Sort(out)
	return out
}

// ExpireReservation releases a reservation whose TTL ran out by now, unless
// a pod took its CPUs, and reports whether it did.
func (s *Scheduler) ExpireReservation(key string, now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.res.byKey[key]
	if !ok || r.consumer.key != "" || now.Before(r.deadline) {
		return false
	}
	switch r.phase {
	case api.ReservationPending, api.ReservationUnschedulable, api.ReservationReserved:
	default:
		return false
	}
	s.releaseLocked(r)
	if r.phase == api.ReservationReserved {
		r.reason = fmt.Sprintf("not consumed within ttlSeconds %d of reservedAt: CPUs %s on %s released", int(r.ttl.Seconds()), r.status.CPUs.Set(), r.status.Node)
	} else {
		r.reason = fmt.Sprintf("not placed within ttlSeconds %d: %s", int(r.ttl.Seconds()), r.reason)
	}
	r.phase = api.ReservationExpired
	return true
}

// PlaceReservation places a Pending or Unschedulable reservation by the path
// pods take: filter over its candidate nodes, prioritize, then allocate on
// the best node under the write lock (the next best when a bind took the
// CPUs meanwhile). It returns the new phase: Reserved, or Unschedulable
// with the per-node reasons; anything else it leaves alone.
func (s *Scheduler) PlaceReservation(key string, now time.Time) (ReservationView, error) {
	s.mu.RLock()
	r, ok := s.res.byKey[key]
	if !ok {
		s.mu.RUnlock()
		return ReservationView{}, fmt.Errorf("CPUReservation %s unknown to the extender", key)
	}
	if r.phase != api.ReservationPending && r.phase != api.ReservationUnschedulable {
		v := r.view()
		s.mu.RUnlock()
		return v, nil
	}
	req, filters, nodeName := r.req, r.filters, r.nodeName
	s.mu.RUnlock()
	if bad := s.reservationRequestError(key); bad != "" {
		return s.setUnschedulable(key, bad), nil
	}
	names := []string{nodeName}
	if nodeName == "" {
		names = s.NodeNames()
	}
	fits, failed := s.filterRequest(req, filters, names)
	if len(fits) == 0 {
		return s.setUnschedulable(key, fitSummary(len(names), failed)), nil
	}
	scores := s.prioritizeRequest(req, fits)
	slices.SortStableFunc(scores, func(a, b extenderv1.HostPriority) int {
		if c := cmp.Compare(b.Score, a.Score); c != 0 {
			return c
		}
		return strings.Compare(a.Host, b.Host)
	})
	lost := Rejections{}
	for _, h := range scores {
		v, err := s.reserveOn(key, req, h.Host, now)
		if err == nil {
			return v, nil
		}
		lost[h.Host] = asReason(err)
	}
	maps.Copy(failed, lost)
	return s.setUnschedulable(key, fitSummary(len(names), failed)), nil
}

// reservationRequestError is why the template cannot be placed at all (its
// annotations are malformed, or it holds no exclusive CPUs), or "".
func (s *Scheduler) reservationRequestError(key string) string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	r := s.res.byKey[key]
	if r == nil {
		return ""
	}
	if r.badTemplate != "" {
		return r.badTemplate
	}
	if !r.req.Exclusive() || r.req.ExclusiveCPUs() == 0 {
		return fmt.Sprintf("CPUReservation %s: its template is not an exclusive pod (%s: exclusive, a container with a whole CPU amount): nothing to reserve",
			key, api.AnnotationCPUMode)
	}
	return ""
}

func (s *Scheduler) setUnschedulable(key, reason string) ReservationView {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.res.byKey[key]
	if !ok {
		return ReservationView{}
	}
	if r.phase == api.ReservationPending || r.phase == api.ReservationUnschedulable {
		r.phase, r.reason = api.ReservationUnschedulable, reason
	}
	return r.view()
}

// reserveOn allocates the reservation's CPUs on node and holds them.
func (s *Scheduler) reserveOn(key string, req policy.Request, node string, now time.Time) (ReservationView, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.res.byKey[key]
	if !ok || (r.phase != api.ReservationPending && r.phase != api.ReservationUnschedulable) {
		return ReservationView{}, fmt.Errorf("CPUReservation %s changed meanwhile", key)
	}
	st, ok := s.nodes[node]
	if !ok {
		return ReservationView{}, errUnknownNode
	}
	alloc, err := st.node.Allocate(req)
	if err != nil {
		return ReservationView{}, err
	}
	p := policy.PlacementFor(req, alloc.CPUs)
	p.Name = "CPUReservation " + key
	if err := st.node.Add(p); err != nil {
		return ReservationView{}, err
	}
	r.held, r.phase, r.status, r.reason = true, api.ReservationReserved, alloc.Status(node), ""
	r.reservedAt = now.Truncate(time.Second) // as metav1.Time keeps it
	r.deadline = r.reservedAt.Add(r.ttl)
	return r.view(), nil
}

// fitSummary is "0/N nodes fit: node-a: reason; node-b: reason", the
// nodes sorted, at most maxListed of them quoted.
func fitSummary(total int, failed Rejections) string {
	const maxListed = 16
	nodes := slices.Sorted(maps.Keys(failed))
	parts := make([]string, 0, min(len(nodes), maxListed))
	for i, n := range nodes {
		if i == maxListed {
			parts = append(parts, fmt.Sprintf("and %d more", len(nodes)-maxListed))
			break
		}
		parts = append(parts, n+": "+truncate(failed[n].Message, maxReasonInMessage))
	}
	if total == 0 {
		return "0/0 nodes fit: no node known to the corepin extender"
	}
	return fmt.Sprintf("0/%d nodes fit: %s", total, strings.Join(parts, "; "))
}

// exclusiveCounts lists a request's exclusive containers and CPU counts
// ("engine=8 log=1"), sorted by name: how reasons show a difference.
func exclusiveCounts(req policy.Request) string {
	var out []string
	for _, c := range req.Containers {
		if c.Exclusive {
			out = append(out, fmt.Sprintf("%s=%d", c.Name, c.Milli/1000))
		}
	}
	sort.Strings(out)
	if len(out) == 0 {
		return "none"
	}
	return strings.Join(out, " ")
}

// consumerErrorLocked is why the pod cannot consume the reservation it
// names, or nil.
func (s *Scheduler) consumerErrorLocked(pod *v1.Pod, req policy.Request, name string) (*reservation, error) {
	key := pod.Namespace + "/" + name
	if name == "" {
		return nil, fmt.Errorf("pod %s: %s is empty: name a CPUReservation in namespace %s", req.Key, api.AnnotationReservation, pod.Namespace)
	}
	r, ok := s.res.byKey[key]
	if !ok {
		return nil, fmt.Errorf("pod %s: %s=%q: no CPUReservation %s", req.Key, api.AnnotationReservation, name, key)
	}
	if r.consumer.key != "" && r.consumer.key != req.Key {
		return nil, fmt.Errorf("pod %s: CPUReservation %s is already consumed by pod %s", req.Key, key, r.consumer.key)
	}
	if r.phase != api.ReservationReserved && r.consumer.key != req.Key {
		msg := fmt.Sprintf("pod %s: CPUReservation %s is %s, not Reserved", req.Key, key, r.phase)
		if r.reason != "" {
			msg += ": " + r.reason
		}
		return nil, fmt.Errorf("%s", msg)
	}
	if want, got := exclusiveCounts(r.req), exclusiveCounts(req); want != got || !req.Exclusive() {
		return nil, fmt.Errorf("pod %s: CPUReservation %s reserves exclusive containers %s, the pod's are %s", req.Key, key, want, got)
	}
	return r, nil
}

// filterConsumer is Filter for a pod that names a reservation: only the
// reserved node passes; a pod that cannot consume it gets the reason.
func (s *Scheduler) filterConsumer(pod *v1.Pod, req policy.Request, name string, nodeNames []string) ([]string, Rejections, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	r, err := s.consumerErrorLocked(pod, req, name)
	if err != nil {
		return nil, nil, err
	}
	var fits []string
	failed := Rejections{}
	for _, n := range nodeNames {
		if n == r.status.Node {
			fits = append(fits, n)
			continue
		}
		failed[n] = policy.Reasonf(policy.CodeOther, "CPUReservation %s holds the pod's CPUs on node %s", r.key, r.status.Node)
	}
	return fits, failed, nil
}

// assumeConsumerLocked hands a reservation's CPUs to the pod that names it:
// the reservation's placement goes and the pod's takes its CPUs, in one
// step under the write lock. A failed bind gives them back (unconsume).
func (s *Scheduler) assumeConsumerLocked(pod *v1.Pod, req policy.Request, name, nodeName string) (*api.AllocStatus, error) {
	s.res.init()
	if cur, ok := s.podNode[req.Key]; ok {
		if _, assumed := s.assumed[req.Key]; !assumed {
			return nil, conflictError{fmt.Errorf("pod %s is already placed on node %s", req.Key, cur)}
		}
		s.removeLocked(req.Key)
	}
	r, err := s.consumerErrorLocked(pod, req, name)
	if err != nil {
		return nil, err
	}
	if nodeName != r.status.Node {
		return nil, fmt.Errorf("pod %s: CPUReservation %s holds its CPUs on node %s, not %s", req.Key, r.key, r.status.Node, nodeName)
	}
	st, ok := s.nodes[nodeName]
	if !ok || st.node.Topo == nil {
		return nil, fmt.Errorf("pod %s: node %s unknown to the corepin extender", req.Key, nodeName)
	}
	s.releaseLocked(r)
	p := policy.PlacementFor(req, r.status.CPUs.Set())
	p.UID, p.Priority = pod.UID, PodPriority(pod)
	if err := st.node.Add(p); err != nil {
		_ = s.holdLocked(r)
		return nil, fmt.Errorf("pod %s: CPUReservation %s: %w", req.Key, r.key, err)
	}
	s.podNode[req.Key] = nodeName
	s.assumed[req.Key] = time.Time{}
	r.consumer = consumer{key: req.Key, uid: pod.UID}
	s.res.consumerOf[req.Key] = r.key
	status := r.status
	return &status, nil
}

// consumed marks the reservation a pod was bound from as Consumed.
func (s *Scheduler) consumed(podKey string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	key, ok := s.res.consumerOf[podKey]
	if !ok {
		return
	}
	if r := s.res.byKey[key]; r != nil && r.consumer.key == podKey && !r.consumed {
		r.consumed, r.phase = true, api.ReservationConsumed
		s.res.changed(key)
	}
}

// consumeForBoundLocked: a pod seen bound on a reservation's CPUs consumed
// it (its bind succeeded, here or before a restart), whatever the order in
// which the informers show the two.
func (s *Scheduler) consumeForBoundLocked(pod *v1.Pod, placement *policy.Placement) {
	name, ok := pod.Annotations[api.AnnotationReservation]
	if !ok || !placement.Exclusive() {
		return
	}
	s.res.init()
	podKey, key := PodKey(pod), pod.Namespace+"/"+name
	r := s.res.byKey[key]
	if r == nil {
		s.res.boundBefore[key] = consumer{key: podKey, uid: pod.UID}
		s.res.consumerOf[podKey] = key
		return
	}
	if r.consumed || (r.consumer.key != "" && r.consumer.key != podKey) {
		return
	}
	if r.phase == api.ReservationReserved && r.status.Node == pod.Spec.NodeName && r.status.CPUs.Set().Equals(placement.CPUs) {
		s.releaseLocked(r)
		r.consumer, r.consumed, r.phase = consumer{key: podKey, uid: pod.UID}, true, api.ReservationConsumed
		s.res.consumerOf[podKey] = key
		s.res.changed(key)
	}
}

// unconsumeLocked runs as a pod is removed: a pod whose bind never
// succeeded gives its reservation's CPUs back to the reservation; a
// consumed reservation is used once, its CPUs go with the pod.
func (s *Scheduler) unconsumeLocked(podKey string) {
	key, ok := s.res.consumerOf[podKey]
	if !ok {
		return
	}
	delete(s.res.consumerOf, podKey)
	if c, ok := s.res.boundBefore[key]; ok && c.key == podKey {
		delete(s.res.boundBefore, key)
	}
	r := s.res.byKey[key]
	if r == nil || r.consumer.key != podKey || r.consumed {
		return
	}
	r.consumer = consumer{}
	_ = s.holdLocked(r)
}

// Candidate is a cluster's answer for a reservation not created yet: its
// best node and that node's score, or why no node fits.
type Candidate struct {
	Node   string
	Score  int64
	Reason string
}

// BestNode runs the reservation's template through filter and prioritize
// over the nodes (all, or spec.nodeName; none of exclude) without holding
// anything: what corepin-placer asks each member cluster's view. The error is a template
// corepin cannot place anywhere (malformed, or not exclusive).
func (s *Scheduler) BestNode(r *api.CPUReservation, exclude ...string) (Candidate, error) {
	pod := r.Pod()
	req, err := s.request(pod)
	if err != nil {
		return Candidate{}, fmt.Errorf("spec.template: %w", err)
	}
	if !req.Exclusive() || req.ExclusiveCPUs() == 0 {
		return Candidate{}, fmt.Errorf("spec.template: not an exclusive pod (%s: exclusive and a container with a whole CPU amount): nothing to reserve",
			api.AnnotationCPUMode)
	}
	req.Key = placementKey(r.Key())
	names := []string{r.Spec.NodeName}
	if r.Spec.NodeName == "" {
		names = s.NodeNames()
	}
	names = slices.DeleteFunc(names, func(n string) bool { return slices.Contains(exclude, n) })
	if len(names) == 0 && len(exclude) > 0 {
		return Candidate{Reason: "no node left but " + strings.Join(exclude, ", ")}, nil
	}
	fits, failed := s.filterRequest(req, s.pipeline(pod), names)
	if len(fits) == 0 {
		return Candidate{Reason: fitSummary(len(names), failed)}, nil
	}
	best := extenderv1.HostPriority{Score: -1}
	for _, h := range s.prioritizeRequest(req, fits) {
		if h.Score > best.Score || (h.Score == best.Score && h.Host < best.Host) {
			best = h
		}
	}
	return Candidate{Node: best.Host, Score: best.Score}, nil
}
