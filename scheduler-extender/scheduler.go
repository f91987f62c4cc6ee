package extender

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unique"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	extenderv1 "k8s.io/kube-scheduler/extender/v1"

	"github.com/corepin/corepin/api"
	"github.com/corepin/corepin/policy"
)

// Binder commits a bind decision to the cluster: the extender's server talks
// to the API server, the simulator records it in memory.
type Binder interface {
	// Bind binds the pod to the node (pods/binding). For an exclusive pod
	// allocStatus is the corepin.io/alloc-status to write, and the pod must
	// carry it no later than it carries the node: the kubelet copies a
	// pod's annotations into its sandbox once. It is empty for shared pods.
	Bind(ctx context.Context, pod *v1.Pod, node, allocStatus string) error
}

// Scheduler is the extender's view of the cluster: one policy.Node per node,
// with every pod placed on it, including pods assumed by a bind whose result
// the informers have not shown yet. It is the single owner of that state.
//
// One mutex guards it. Filter and prioritize read under the read lock; a bind
// allocates and assumes under the write lock (microseconds), then talks to
// the API server without it, so concurrent binds never see the same free CPU.
type Scheduler struct {
	cfg       api.Config
	selectors []labels.Selector

	mu    sync.RWMutex
	nodes map[string]*nodeState
	// engines maps a node name to nodes[name].node: filter and prioritize
	// read it for thousands of nodes per pod, one pointer less to chase.
	engines map[string]*policy.Node
	// podNode maps a pod key to the node it is placed on.
	podNode map[string]string
	// assumed are pods placed by Bind and not yet confirmed by UpsertPod,
	// each with its deadline (zero while its bind is in flight): one owner
	// for the flag and its expiry, as kube-scheduler's cache keeps them.
	assumed map[string]time.Time
	// assumeTTL is how long a bound pod stays assumed without the
	// informers confirming it.
	assumeTTL time.Duration
	// res are the CPUReservations, held on the nodes above like pods
	// (reservations.go).
	res reservations
	// topologies interns parsed topologies by annotation value: identical
	// nodes share one immutable index (and, through the handles, one copy
	// of the annotation in the informer store: see Transform).
	topologies map[unique.Handle[string]]*policy.Topology
	// resizing maps a pod key to the alloc-status a resize chose for it
	// and is writing (resize.go): its new CPUs stay held until the
	// informers show that value.
	resizing map[string]string
}

type nodeState struct {
	node *policy.Node
	// topology is the annotation value the node's Topo was built from.
	topology unique.Handle[string]
	// attentionSeen is true once the node object carries corepin.io/attention.
	attentionSeen bool
	// unplaced are exclusive pods seen bound to the node before its
	// topology was known (informers deliver pods and nodes in any order):
	// they are placed as soon as the topology arrives.
	unplaced map[string]*policy.Placement
	// order is the node's pods as /preempt ranks them (preempt.go).
	order atomic.Pointer[preemptOrder]
	// gone: the node object was deleted; the state only keeps what is
	// still placed there (DeleteNode).
	gone bool
}

// DefaultAssumeTTL is how long a bound pod the informers have not shown
// bound stays assumed; SetAssumeTTL changes it.
const DefaultAssumeTTL = 2 * time.Minute

// NewScheduler returns an empty Scheduler. cfg must be valid.
func NewScheduler(cfg api.Config) (*Scheduler, error) {
	if err := cfg.Validate("config"); err != nil {
		return nil, err
	}
	s := &Scheduler{cfg: cfg, nodes: map[string]*nodeState{}, engines: map[string]*policy.Node{}, podNode: map[string]string{},
		assumed: map[string]time.Time{}, assumeTTL: DefaultAssumeTTL, topologies: map[unique.Handle[string]]*policy.Topology{}}
	for _, p := range cfg.Pipelines {
		sel := labels.Everything()
		if p.Selector != nil {
			var err error
			if sel, err = metav1.LabelSelectorAsSelector(p.Selector); err != nil {
				return nil, err
			}
		}
		s.selectors = append(s.selectors, sel)
	}
	return s, nil
}

// Config returns the configuration.
func (s *Scheduler) Config() api.Config { return s.cfg }

// NodeUpdate says what UpsertNode concluded, for the caller to publish.
type NodeUpdate struct {
	// Attention is set when this update made the node need attention: the
	// caller records it on the node (annotation and event).
	Attention string
	// Problems are non-fatal issues with the node's annotations, each
	// saying what is wrong ("invalid corepin.io/topology: ...").
	Problems []string
}

// UpsertNode adds or refreshes a node from its object. A topology change is
// accepted only as a compatible grow; anything else keeps the old topology
// (so held CPUs stay accounted) and marks the node as needing attention until
// an operator removes the corepin.io/attention annotation.
func (s *Scheduler) UpsertNode(obj *v1.Node) NodeUpdate {
	s.mu.Lock()
	defer s.mu.Unlock()
	var upd NodeUpdate
	limits := s.cfg.Limits()
	policyErr := ""
	if p, err := api.ParseNodePolicy(obj.Annotations[api.AnnotationNodePolicy]); err != nil {
		policyErr = "invalid " + err.Error()
		upd.Problems = append(upd.Problems, policyErr)
	} else {
		limits = p.Apply(limits)
	}
	value := intern(obj.Annotations[api.AnnotationTopology])
	old := s.nodes[obj.Name]
	topo, topoErr := s.internTopology(value)
	if topoErr != nil {
		upd.Problems = append(upd.Problems, "invalid "+topoErr.Error())
	}
	attention := obj.Annotations[api.AnnotationNodeAttention]
	// The operator resolves an attention by removing the annotation the
	// extender wrote: the node's current topology becomes the baseline.
	resolved := old != nil && old.attentionSeen && attention == ""
	switch {
	case old == nil || old.node.Topo == nil || old.topology == value || resolved:
	case topo == nil:
		// The annotation went missing or bad: keep what we know.
		topo, value = old.node.Topo, old.topology
	default:
		if err := api.CompatibleGrow(old.node.Topo.Source, topo.Source); err != nil || attention != "" {
			if attention == "" {
				attention = "incompatible topology change: " + err.Error()
				upd.Attention = attention
			}
			topo, value = old.node.Topo, old.topology
		}
	}
	node := policy.NewNode(obj.Name, topo, limits)
	node.Attention = attention
	switch {
	case node.Attention != "":
	case topoErr != nil && node.Topo == nil:
		node.Attention = "invalid " + topoErr.Error()
	case policyErr != "":
		node.Attention = policyErr
	}
	st := &nodeState{node: node, topology: value, attentionSeen: obj.Annotations[api.AnnotationNodeAttention] != ""}
	if old != nil {
		for _, p := range old.node.Pods() {
			st.place(p)
		}
		for _, p := range old.unplaced {
			st.place(p)
		}
		for key := range st.unplaced {
			upd.Problems = append(upd.Problems, fmt.Sprintf("pod %s: its exclusive CPUs do not fit the node's topology", key))
		}
	}
	s.setNode(obj.Name, st)
	return upd
}

func (s *Scheduler) setNode(name string, st *nodeState) {
	s.nodes[name] = st
	s.engines[name] = st.node
}

func (s *Scheduler) internTopology(value unique.Handle[string]) (*policy.Topology, error) {
	if value == noHandle {
		return nil, nil
	}
	if t, ok := s.topologies[value]; ok {
		return t, nil
	}
	src, err := api.ParseTopology(value.Value())
	if err != nil {
		return nil, err
	}
	t, err := policy.NewTopology(src)
	if err != nil {
		return nil, err
	}
	s.topologies[value] = t
	return t, nil
}

// DeleteNode forgets a node object. What is still placed on it (pods the
// pod GC has not deleted yet, Reserved reservations, binds in flight) stays
// there, without a topology, as pods seen before their node do: a node
// deleted and registered again (a kubelet re-registering) gets them all
// back, and none of their CPUs is given away meanwhile. The node is gone
// from NodeNames, and from the cache once the last of them goes. It returns
// how many placements it kept.
func (s *Scheduler) DeleteNode(name string) (kept int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st, ok := s.nodes[name]; ok {
		left := &nodeState{node: policy.NewNode(name, nil, s.cfg.Limits()), gone: true}
		for _, p := range st.node.Pods() {
			left.place(p)
		}
		for _, p := range st.unplaced {
			left.place(p)
		}
		kept = len(left.unplaced)
		s.setNode(name, left)
		s.dropGoneLocked(name)
	}
	// Interned topologies no node uses any more are dropped lazily.
	if len(s.topologies) > 2*len(s.nodes)+16 {
		s.topologies = map[unique.Handle[string]]*policy.Topology{}
		for _, st := range s.nodes {
			if st.node.Topo != nil {
				s.topologies[st.topology] = st.node.Topo
			}
		}
	}
	return kept
}

// dropGoneLocked forgets a deleted node once nothing is placed on it.
func (s *Scheduler) dropGoneLocked(name string) {
	if st := s.nodes[name]; st != nil && st.gone && len(st.unplaced) == 0 && st.node.Len() == 0 {
		delete(s.nodes, name)
		delete(s.engines, name)
	}
}

// PodKey is namespace/name.
func PodKey(pod *v1.Pod) string { return pod.Namespace + "/" + pod.Name }

// UpsertPod records a pod as the API server shows it. A pod with a node and
// not finished is placed there: its exclusive CPUs from alloc-status, its
// shared amount from its containers. It confirms a pod assumed by Bind. The
// error reports a pod whose alloc-status cannot be honoured (it is then
// counted as shared so that it disturbs nobody's cores).
func (s *Scheduler) UpsertPod(pod *v1.Pod) error {
	key := PodKey(pod)
	finished := pod.Status.Phase == v1.PodSucceeded || pod.Status.Phase == v1.PodFailed
	nodeName := pod.Spec.NodeName
	s.mu.Lock()
	defer s.mu.Unlock()
	if finished {
		s.removeLocked(key)
		return nil
	}
	if nodeName == "" {
		// Not bound yet. A pod we assumed stays assumed until it is bound
		// or its bind fails (Forget).
		return nil
	}
	if s.resizeInFlight(key, pod) {
		return nil
	}
	placement, perr := PlacementFromPod(pod)
	if cur, ok := s.podNode[key]; ok {
		if cur == nodeName && s.nodes[cur] != nil {
			if p, ok := s.nodes[cur].node.Pod(key); ok && samePlacement(p, placement) {
				s.consumeForBoundLocked(pod, placement)
				delete(s.assumed, key)
				return perr
			}
		}
		s.removeLocked(key)
	}
	// After the old placement went (its removal gives a reservation back)
	// and before the new one is added (on the reservation's CPUs).
	s.consumeForBoundLocked(pod, placement)
	st, ok := s.nodes[nodeName]
	if !ok {
		// The node is not known yet; the pod is recorded when it is
		// re-listed after the node appears (informer resync), and a
		// nodeless placement would have nothing to account against.
		st = &nodeState{node: policy.NewNode(nodeName, nil, s.cfg.Limits())}
		s.setNode(nodeName, st)
	}
	if st.node.Topo == nil && placement.Exclusive() {
		st.place(placement) // held until the node's topology arrives
	} else if err := s.addDecidedLocked(st, placement); err != nil {
		shared := *placement
		shared.CPUs = policy.NoCPUs()
		if addErr := st.node.Add(&shared); addErr != nil {
			s.unconsumeLocked(key) // not recorded: it consumes nothing
			return fmt.Errorf("pod %s: %w", key, addErr)
		}
		perr = fmt.Errorf("pod %s: its %s cannot be honoured: %w", key, api.AnnotationAllocStatus, err)
	}
	s.podNode[key] = nodeName
	delete(s.assumed, key)
	return perr
}

func samePlacement(a, b *policy.Placement) bool {
	return a.CPUs.Equals(b.CPUs) && a.SharedMilli == b.SharedMilli && a.App == b.App && a.MaxPerNode == b.MaxPerNode && a.Policy == b.Policy &&
		a.Priority == b.Priority && a.UID == b.UID && a.Terminating == b.Terminating
}

// PodPriority is the pod's spec.priority, 0 when unset (as kube-scheduler
// reads it).
func PodPriority(pod *v1.Pod) int32 {
	if pod.Spec.Priority != nil {
		return *pod.Spec.Priority
	}
	return 0
}

// DeletePod forgets a pod and frees its CPUs. It reports whether it was known.
func (s *Scheduler) DeletePod(key string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.removeLocked(key)
}

// PodRef names a placed pod.
type PodRef struct {
	Key string
	UID types.UID
}

// TerminatingOn lists the pods on a node that are being deleted.
func (s *Scheduler) TerminatingOn(node string) []PodRef {
	s.mu.RLock()
	defer s.mu.RUnlock()
	n, ok := s.engines[node]
	if !ok {
		return nil
	}
	var out []PodRef
	for _, p := range n.AppendPods(nil) {
		if p.Terminating {
			out = append(out, PodRef{Key: p.Key, UID: p.UID})
		}
	}
	return out
}

// ForgetGone forgets a pod the API server no longer has (the informer
// will say so shortly), if the cache still holds that very pod (same UID).
func (s *Scheduler) ForgetGone(ref PodRef) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	name, ok := s.podNode[ref.Key]
	if !ok || s.nodes[name] == nil {
		return false
	}
	if p, ok := s.nodes[name].node.Pod(ref.Key); !ok || p.UID != ref.UID {
		return false
	}
	return s.removeLocked(ref.Key)
}

// place adds a placement to the node, or keeps it unplaced while the node
// has no topology or the placement does not fit it.
func (st *nodeState) place(p *policy.Placement) {
	if st.node.Topo != nil {
		if err := st.node.Add(p); err == nil {
			return
		}
	}
	if st.unplaced == nil {
		st.unplaced = map[string]*policy.Placement{}
	}
	st.unplaced[p.Key] = p
}

func (s *Scheduler) removeLocked(key string) bool {
	name, ok := s.podNode[key]
	if !ok {
		return false
	}
	if st := s.nodes[name]; st != nil {
		st.node.Remove(key)
		delete(st.unplaced, key)
		s.dropGoneLocked(name)
	}
	delete(s.podNode, key)
	delete(s.assumed, key)
	delete(s.resizing, key)
	s.unconsumeLocked(key)
	return true
}

// PlacementFromPod builds a pod's placement by the engine's one reading of
// a bound pod (policy.ReadBound). A pod whose annotations cannot be honoured
// as written is still counted, its valid alloc-status' CPUs held, and the
// error says why.
func PlacementFromPod(pod *v1.Pod) (*policy.Placement, error) {
	bound := policy.ReadBound(policy.BoundPodOf(pod), nil)
	placement := bound.Placement()
	placement.UID, placement.Priority, placement.Terminating = pod.UID, PodPriority(pod), pod.DeletionTimestamp != nil
	if bound.Reason != nil {
		return placement, fmt.Errorf("pod %s: %w", PodKey(pod), bound.Reason)
	}
	return placement, nil
}

// pipeline returns the filters for a pod: those of the first pipeline whose
// selector matches its labels, else all of them.
func (s *Scheduler) pipeline(pod *v1.Pod) []string {
	for i, sel := range s.selectors {
		if sel.Matches(labels.Set(pod.Labels)) {
			return s.cfg.Pipelines[i].Filters
		}
	}
	return api.AllFilters
}

// request parses the pod and applies the cluster-wide admission rules.
func (s *Scheduler) request(pod *v1.Pod) (policy.Request, error) {
	req, err := policy.NewRequest(pod)
	if err != nil {
		return req, err
	}
	// max-per-node counts the pods of one app; without an app identity it
	// would silently limit nothing. Checked here, for new placements only:
	// a pod already bound keeps being counted whatever its annotations.
	if req.Intent.MaxPerNode > 0 && req.Intent.App == "" {
		return req, fmt.Errorf("pod %s: %s=%q needs an app identity: set %s or the label %s or %s",
			req.Key, api.AnnotationMaxPerNode, pod.Annotations[api.AnnotationMaxPerNode], api.AnnotationApp, api.LabelAppName, api.LabelApp)
	}
	if req.Intent.BindAll() && !contains(s.cfg.BindAllNamespaces, pod.Namespace) {
		return req, fmt.Errorf("pod %s: %s: BindAllCPUs is not allowed in namespace %q (the extender's bindAllNamespaces: [%s])",
			req.Key, api.AnnotationAllocSpec, pod.Namespace, strings.Join(s.cfg.BindAllNamespaces, ", "))
	}
	return req, nil
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// Filter splits the candidate nodes into those where the pod fits and those
// where it does not, with the engine's reason for each. A pod that is itself
// malformed gets an error and no node.
func (s *Scheduler) Filter(pod *v1.Pod, nodeNames []string) ([]string, Rejections, error) {
	req, err := s.request(pod)
	if err != nil {
		return nil, nil, err
	}
	if name, ok := pod.Annotations[api.AnnotationReservation]; ok {
		return s.filterConsumer(pod, req, name, nodeNames)
	}
	fits, failed := s.filterRequest(req, s.pipeline(pod), nodeNames)
	return fits, failed, nil
}

// filterRequest is Filter for a parsed request: pods and reservations alike.
func (s *Scheduler) filterRequest(req policy.Request, filters []string, nodeNames []string) ([]string, Rejections) {
	reasons := make([]error, len(nodeNames))
	s.mu.RLock()
	eachChunk(len(nodeNames), func(lo, hi int) {
		for i, name := range nodeNames[lo:hi] {
			n, ok := s.engines[name]
			if !ok {
				reasons[lo+i] = errUnknownNode
				continue
			}
			reasons[lo+i] = n.Check(req, filters)
		}
	})
	s.mu.RUnlock()
	fits := make([]string, 0, len(nodeNames))
	failed := Rejections{}
	for i, name := range nodeNames {
		if reasons[i] != nil {
			failed[name] = asReason(reasons[i])
			continue
		}
		fits = append(fits, name)
	}
	return fits, failed
}

var errUnknownNode = policy.Reasonf(policy.CodeUnknownNode, "node unknown to the corepin extender (not in its cache yet)")

// Rejections are the filter's reasons by node: the Code labels metrics and
// groups the CorepinNodesRejected event, the message goes to kube-scheduler.
type Rejections map[string]*policy.Reason

// FailedNodes is the rejections as kube-scheduler reads them.
func (r Rejections) FailedNodes() extenderv1.FailedNodesMap {
	out := make(extenderv1.FailedNodesMap, len(r))
	for node, reason := range r {
		out[node] = reason.Message
	}
	return out
}

// asReason is err's Reason, or err under CodeOther.
func asReason(err error) *policy.Reason {
	var r *policy.Reason
	if errors.As(err, &r) && r.Message == err.Error() {
		return r
	}
	return &policy.Reason{Code: policy.CodeOf(err), Message: err.Error(), Err: err}
}

// Prioritize scores each node 0-10 for the pod.
func (s *Scheduler) Prioritize(pod *v1.Pod, nodeNames []string) (extenderv1.HostPriorityList, error) {
	req, err := s.request(pod)
	if err != nil {
		return nil, err
	}
	return s.prioritizeRequest(req, nodeNames), nil
}

// prioritizeRequest is Prioritize for a parsed request.
func (s *Scheduler) prioritizeRequest(req policy.Request, nodeNames []string) extenderv1.HostPriorityList {
	strategy := s.cfg.Strategy()
	out := make(extenderv1.HostPriorityList, len(nodeNames))
	s.mu.RLock()
	defer s.mu.RUnlock()
	eachChunk(len(nodeNames), func(lo, hi int) {
		for i, name := range nodeNames[lo:hi] {
			score := 0
			if n, ok := s.engines[name]; ok {
				score = n.Score(req, strategy)
			}
			out[lo+i] = extenderv1.HostPriority{Host: name, Score: int64(score)}
		}
	})
	return out
}

// chunkNodes is the fewest nodes worth a goroutine of their own: below it
// the handoff costs more than the checks (about 0.2 µs per node).
const chunkNodes = 1024

// eachChunk calls fn over [0, n) in consecutive chunks, in parallel on up to
// GOMAXPROCS goroutines, and returns when all are done. kube-scheduler waits
// for filter and prioritize once per pod with thousands of candidate nodes;
// splitting the walk is what keeps that wait short on large clusters.
// fn must only read shared state and write to its own indexes.
func eachChunk(n int, fn func(lo, hi int)) { eachChunkOf(n, chunkNodes, fn) }

// eachChunkOf is eachChunk with chunks of at least least items. The chunks
// go to workqueue.ParallelizeUntil as its pieces; a walk too short to split
// runs on the caller's goroutine, without a handoff.
func eachChunkOf(n, least int, fn func(lo, hi int)) {
	parts := min(runtime.GOMAXPROCS(0), n/least)
	if parts <= 1 {
		fn(0, n)
		return
	}
	size := (n + parts - 1) / parts
	workqueue.ParallelizeUntil(context.Background(), parts, (n+size-1)/size, func(chunk int) {
		lo := chunk * size
		fn(lo, min(lo+size, n))
	})
}

// Bind chooses the pod's CPUs on the node against everything placed or
// assumed there, assumes the result, and binds through binder with the
// alloc-status of an exclusive pod. On any failure the assumption is
// dropped and the error returned, so kube-scheduler retries the pod: a lost
// race never yields overlapping cores. The status is nil for shared pods.
func (s *Scheduler) Bind(ctx context.Context, pod *v1.Pod, nodeName string, binder Binder) (*api.AllocStatus, error) {
	req, err := s.request(pod)
	if err != nil {
		return nil, err
	}
	status, err := s.assume(pod, req, nodeName)
	if err != nil {
		return nil, err
	}
	var allocStatus string
	if status != nil {
		allocStatus = status.String()
	}
	if err := binder.Bind(ctx, pod, nodeName, allocStatus); err != nil {
		s.Forget(req.Key)
		return nil, apiError(fmt.Errorf("pod %s: %w", req.Key, err))
	}
	s.finishBinding(req.Key, time.Now())
	s.consumed(req.Key)
	return status, nil
}

// conflictError marks a Bind error as a lost race (see IsBindConflict).
type conflictError struct{ error }

func (e conflictError) Unwrap() error { return e.error }

// IsBindConflict reports whether a Bind error means the bind lost a race:
// the node no longer has room for the pod (another pod took the CPUs since
// filter), or the API server refused the write as a conflict (the pod was
// changed or bound meanwhile). kube-scheduler retries such a pod; any other
// error is a malformed pod, an unknown node or an API failure.
func IsBindConflict(err error) bool {
	var c conflictError
	return errors.As(err, &c)
}

// apiError marks API conflicts as lost races.
func apiError(err error) error {
	if apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err) {
		return conflictError{err}
	}
	return err
}

// assume allocates under the write lock and records the pod as assumed.
func (s *Scheduler) assume(pod *v1.Pod, req policy.Request, nodeName string) (*api.AllocStatus, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if name, ok := pod.Annotations[api.AnnotationReservation]; ok {
		return s.assumeConsumerLocked(pod, req, name, nodeName)
	}
	st, ok := s.nodes[nodeName]
	if !ok {
		return nil, fmt.Errorf("pod %s: node %s unknown to the corepin extender", req.Key, nodeName)
	}
	if cur, ok := s.podNode[req.Key]; ok {
		if _, assumed := s.assumed[req.Key]; !assumed {
			return nil, conflictError{fmt.Errorf("pod %s is already placed on node %s", req.Key, cur)}
		}
		// A retry of a bind that failed after assuming: start again.
		s.removeLocked(req.Key)
	}
	alloc, err := st.node.Allocate(req)
	if err != nil {
		return nil, conflictError{fmt.Errorf("pod %s does not fit on %s: %w", req.Key, nodeName, err)}
	}
	placement := policy.PlacementFor(req, alloc.CPUs)
	placement.UID, placement.Priority = pod.UID, PodPriority(pod)
	if err := st.node.Add(placement); err != nil {
		return nil, err
	}
	s.podNode[req.Key] = nodeName
	s.assumed[req.Key] = time.Time{} // no deadline while the bind is in flight
	if !req.Exclusive() {
		return nil, nil
	}
	status := alloc.Status(nodeName)
	return &status, nil
}

// Forget drops an assumed pod (its bind failed or its assumption expired).
// A pod the informers have confirmed is left alone.
func (s *Scheduler) Forget(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.assumed[key]; ok {
		s.removeLocked(key)
	}
}

// SetAssumeTTL sets how long a bound pod stays assumed (DefaultAssumeTTL).
func (s *Scheduler) SetAssumeTTL(ttl time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.assumeTTL = ttl
}

// finishBinding starts an assumed pod's TTL once the API server has
// accepted its bind; a pod confirmed meanwhile is no longer assumed.
func (s *Scheduler) finishBinding(key string, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.assumed[key]; ok {
		s.assumed[key] = now.Add(s.assumeTTL)
	}
}

// Expire forgets the pods whose bind succeeded longer than the TTL ago and
// that the informers never showed bound (the pod went away unseen, for
// example), and returns their keys, sorted. Binds in flight are kept.
func (s *Scheduler) Expire(now time.Time) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var expired []string
	for key, deadline := range s.assumed {
		if !deadline.IsZero() && now.After(deadline) {
			expired = append(expired, key)
		}
	}
	slices.Sort(expired)
	for _, key := range expired {
		s.removeLocked(key)
	}
	return expired
}

// Assumed lists the pods assumed and not yet confirmed, sorted.
func (s *Scheduler) Assumed() []string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return slices.Sorted(maps.Keys(s.assumed))
}

// AssumedCount is the number of pods assumed and not yet confirmed.
func (s *Scheduler) AssumedCount() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.assumed)
}

// Placed reports whether the pod is placed on a node, bound or assumed.
func (s *Scheduler) Placed(key string) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	_, ok := s.podNode[key]
	return ok
}

// NodeNames lists the known nodes, sorted.
func (s *Scheduler) NodeNames() []string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	names := make([]string, 0, len(s.nodes))
	for name, st := range s.nodes {
		if !st.gone {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	return names
}

// NodeSnapshot returns a copy of a node's state, for inspection (corepinctl,
// invariant checks) without holding the lock.
func (s *Scheduler) NodeSnapshot(name string) (*policy.Node, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	st, ok := s.nodes[name]
	if !ok {
		return nil, false
	}
	return st.node.Clone(), true
}

// Counts returns the number of nodes and placed pods.
func (s *Scheduler) Counts() (nodes, pods int) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.nodes), len(s.podNode)
}
