package extender

import (
	"errors"
	"fmt"
	"slices"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/cpuset"

	"github.com/corepin/corepin/api"
	"github.com/corepin/corepin/policy"
)

// assumedReservation is a placement corepin-placer made in its own view of
// a member cluster for a CPUReservation it is creating there: until that
// cluster's extender answers, the CPUs count as held, so concurrent
// placements choose other CPUs, as kube-scheduler assumes a pod while it
// binds. It is held under its own placement key, apart from the
// reservation the informer shows, so a late event of an earlier object of
// the same name cannot take it over.
type assumedReservation struct {
	node string
	// req is the template's request under the assumed key: a placement
	// decided in the cluster on these CPUs moves the assumption to others.
	req policy.Request
	// uid is the created object's, once the API server answered: the
	// informer showing that object decided (Reserved, Unschedulable)
	// ends the assumption.
	uid types.UID
}

// assumedPrefix keeps assumed placements apart from pods and from the
// reservations the informer shows (no namespace contains a colon).
const assumedPrefix = "cpureservation-assumed:"

func assumedKey(key string) string { return assumedPrefix + key }

// ErrPlacementInFlight is AssumeReservation's answer for a reservation whose
// placement is already in flight in this view.
var ErrPlacementInFlight = errors.New("a placement of this CPUReservation is already in flight")

// AssumeReservation allocates the reservation's CPUs on node in this view
// and holds them until ForgetAssumedReservation, or until the informer shows
// the created object (its UID set by AssumedReservationCreated) Reserved or
// Unschedulable. A placement the cluster decided on those CPUs meanwhile
// moves it to others of the node, or leaves it holding none when the node
// is full (addDecidedLocked). An error says the node no longer fits (a concurrent
// placement took the CPUs) or the template cannot be placed.
func (s *Scheduler) AssumeReservation(obj *api.CPUReservation, node string) (api.AllocStatus, error) {
	req, err := s.request(obj.Pod())
	if err != nil {
		return api.AllocStatus{}, fmt.Errorf("spec.template: %w", err)
	}
	key := obj.Key()
	req.Key = assumedKey(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.res.init()
	if _, ok := s.res.assumed[key]; ok {
		return api.AllocStatus{}, fmt.Errorf("CPUReservation %s: %w", key, ErrPlacementInFlight)
	}
	st, ok := s.nodes[node]
	if !ok {
		return api.AllocStatus{}, errUnknownNode
	}
	alloc, err := st.node.Allocate(req)
	if err != nil {
		return api.AllocStatus{}, err
	}
	if err := st.node.Add(assumedPlacement(key, req, alloc.CPUs)); err != nil {
		return api.AllocStatus{}, err
	}
	s.res.assumed[key] = &assumedReservation{node: node, req: req}
	return alloc.Status(node), nil
}

func assumedPlacement(key string, req policy.Request, cpus cpuset.CPUSet) *policy.Placement {
	p := policy.PlacementFor(req, cpus)
	p.Name = "CPUReservation " + key + " (placement in flight)"
	return p
}

// AssumedReservationCreated records the UID of the object created for an
// assumed reservation. The informer may have shown that object decided
// already (the extender answered before the create returned here): the
// assumption ends now, or it would hold CPUs beside the reservation's.
func (s *Scheduler) AssumedReservationCreated(key string, uid types.UID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.res.assumed[key]
	if a == nil {
		return
	}
	a.uid = uid
	if r := s.res.byKey[key]; r != nil && r.uid == uid && r.phase != api.ReservationPending {
		s.forgetAssumedLocked(key)
	}
}

// ForgetAssumedReservation drops an assumed reservation's CPUs (the
// placement ended, whatever its result); it reports whether one was held.
func (s *Scheduler) ForgetAssumedReservation(key string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.forgetAssumedLocked(key)
}

func (s *Scheduler) forgetAssumedLocked(key string) bool {
	a, ok := s.res.assumed[key]
	if !ok {
		return false
	}
	delete(s.res.assumed, key)
	if st := s.nodes[a.node]; st != nil {
		st.node.Remove(assumedKey(key))
		delete(st.unplaced, assumedKey(key))
		s.dropGoneLocked(a.node)
	}
	return true
}

// endAssumptionLocked runs as the informer shows obj: once the very object
// the placer created is decided, the reservation the informer shows holds
// (or not) the CPUs, and the assumption goes.
func (s *Scheduler) endAssumptionLocked(obj *api.CPUReservation) {
	a := s.res.assumed[obj.Key()]
	if a == nil || a.uid == "" || a.uid != obj.UID || obj.Phase() == api.ReservationPending {
		return
	}
	s.forgetAssumedLocked(obj.Key())
}

// ReservationAssumed reports whether key's placement is still assumed.
func (s *Scheduler) ReservationAssumed(key string) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	_, ok := s.res.assumed[key]
	return ok
}

// AssumedReservations is the number of assumed reservations held.
func (s *Scheduler) AssumedReservations() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.res.assumed)
}

// addDecidedLocked adds to st a placement the cluster decided (a reservation
// its extender reserved, a pod it bound). Its CPUs are the cluster's choice,
// not always those this view assumed for a placement in flight: an
// assumption in the way moves to other free CPUs of the node, as only how
// many CPUs are in flight matters to the next choice.
func (s *Scheduler) addDecidedLocked(st *nodeState, p *policy.Placement) error {
	err := st.node.Add(p)
	if err == nil || !p.Exclusive() || len(s.res.assumed) == 0 {
		return err
	}
	var moved []string
	for key, a := range s.res.assumed {
		if a.node != st.node.Name {
			continue
		}
		if q, ok := st.node.Pod(assumedKey(key)); ok && !q.CPUs.Intersection(p.CPUs).IsEmpty() {
			st.node.Remove(assumedKey(key))
			moved = append(moved, key)
		}
	}
	if len(moved) == 0 {
		return err
	}
	err = st.node.Add(p)
	slices.Sort(moved)
	for _, key := range moved {
		a := s.res.assumed[key]
		if alloc, allocErr := st.node.Allocate(a.req); allocErr == nil && st.node.Add(assumedPlacement(key, a.req, alloc.CPUs)) == nil {
			continue
		}
		// No room left: the node is full in the cluster, which will refuse
		// this placement; it holds nothing here until the placer forgets it.
		a.node = ""
	}
	return err
}
