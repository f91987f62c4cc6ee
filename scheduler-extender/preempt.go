package extender

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/http"
	"runtime"
	"slices"
	"strings"
	"sync"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"
	extenderv1 "k8s.io/kube-scheduler/extender/v1"

	"github.com/corepin/corepin/policy"
)

// preemptChunk is how many nodes one piece of Preempt's work holds: a
// node's victim search costs tens of filter checks. The pieces are many
// more than the CPUs, so that a worker the machine holds back does not hold
// back the whole call: the others take its share.
const preemptChunk = 64

// victimBufferPool keeps victimBuffers between pieces and calls.
var victimBufferPool = sync.Pool{New: func() any { return new(victimBuffers) }}

// Preempt answers kube-scheduler's preemption call (contract section 9).
// proposed holds, for each candidate node, the victims kube-scheduler's own
// plugins need there (by UID; possibly none). For each proposed node the
// extender knows, the answer names the fewest pods on it of a lower priority
// than pod's whose removal lets pod fit by every rule (policy.Node.Victims,
// on a copy of the node), preferring the lowest priorities, then the fewest
// exclusive CPUs, then the pods kube-scheduler proposed. A node where no set
// is enough, or that the extender does not know, is left out; so is a node
// where pod fits already by corepin's rules and kube-scheduler proposed no
// pod there (kube-scheduler refuses a node with no victim); where it did
// propose some, the answer is its own proposal, since corepin needs none.
//
// Victims are not removed from the cache: they keep their CPUs until the API
// server has deleted them, so the preemptor is only ever bound onto free
// cores. A malformed pod gets no node and the parse error.
func (s *Scheduler) Preempt(pod *v1.Pod, proposed map[string]*extenderv1.MetaVictims) (map[string]*extenderv1.MetaVictims, error) {
	out := map[string]*extenderv1.MetaVictims{}
	req, err := s.request(pod)
	if err != nil {
		return out, err
	}
	priority := PodPriority(pod)
	names := make([]string, 0, len(proposed))
	for name := range proposed {
		names = append(names, name)
	}
	answers := make([]*extenderv1.MetaVictims, len(names))
	s.mu.RLock()
	// The one node where a placement has the preemptor's key, if any
	// ("" matches no node): looked up once, not on every node.
	selfNode := s.podNode[req.Key]
	pieces := (len(names) + preemptChunk - 1) / preemptChunk
	workqueue.ParallelizeUntil(context.Background(), min(runtime.GOMAXPROCS(0), pieces), pieces, func(piece int) {
		buf := victimBufferPool.Get().(*victimBuffers)
		defer victimBufferPool.Put(buf)
		for i := piece * preemptChunk; i < min((piece+1)*preemptChunk, len(names)); i++ {
			if st, ok := s.nodes[names[i]]; ok {
				var self *policy.Placement
				if names[i] == selfNode {
					self, _ = st.node.Pod(req.Key)
				}
				answers[i] = buf.victimsOn(st.node, st.preemptOrder(), self, req, priority, proposed[names[i]])
			}
		}
	})
	s.mu.RUnlock()
	// Sized for every node answering, as most do: a map of a thousand
	// entries grown from empty was rehashed as it grew.
	out = make(map[string]*extenderv1.MetaVictims, len(names))
	for i, a := range answers {
		if a != nil {
			out[names[i]] = a
		}
	}
	return out, nil
}

// preemptOrder is a node's pods in the order Preempt prefers victims
// (lowest priority, then fewest exclusive CPUs, then key; kube-scheduler's
// proposal, which changes from call to call, is merged in per call), with
// their UIDs indexed. It is built once per change of the node's pods
// (policy.Node.Changes), not on every call: gathering, ranking and sorting
// 30 pods per node took three quarters of a call's time. Pods without a UID
// are left out: kube-scheduler could not be told about them.
type preemptOrder struct {
	node    *policy.Node
	changes uint64
	pods    []rankedPod
	byUID   map[types.UID]int32
}

type rankedPod struct {
	// rank is the priority and then the exclusive CPUs in one number,
	// lowest first (rankOf).
	rank uint64
	p    *policy.Placement
}

// rankOf is a pod's priority, then its exclusive CPUs, in one number that
// orders as they do; bit 0 is left for the caller.
func rankOf(p *policy.Placement) uint64 {
	return priorityRank(p.Priority) | uint64(min(p.CPUs.Size(), 1<<30))<<1
}

// priorityRank is the smallest rank of a pod of priority p.
func priorityRank(p int32) uint64 { return uint64(uint32(p)^1<<31) << 32 }

func newPreemptOrder(n *policy.Node) *preemptOrder {
	o := &preemptOrder{node: n, changes: n.Changes(), pods: make([]rankedPod, 0, n.Len())}
	for _, p := range n.AppendPods(nil) {
		if p.UID != "" {
			o.pods = append(o.pods, rankedPod{rank: rankOf(p), p: p})
		}
	}
	slices.SortFunc(o.pods, func(a, b rankedPod) int {
		if c := cmp.Compare(a.rank, b.rank); c != 0 {
			return c
		}
		return strings.Compare(a.p.Key, b.p.Key)
	})
	o.byUID = make(map[types.UID]int32, len(o.pods))
	for i, rp := range o.pods {
		o.byUID[rp.p.UID] = int32(i)
	}
	return o
}

// preemptOrder returns the node's order, building it if the node's pods
// changed since it was built. Callers hold the scheduler's lock (read is
// enough: concurrent callers may each build it, and store equal orders).
func (st *nodeState) preemptOrder() *preemptOrder {
	o := st.order.Load()
	if o == nil || o.node != st.node || o.changes != st.node.Changes() {
		o = newPreemptOrder(st.node)
		st.order.Store(o)
	}
	return o
}

// victimBuffers are reused from node to node within one chunk.
type victimBuffers struct {
	search policy.VictimSearch
	// proposed marks, by index in the node's order, the pods
	// kube-scheduler proposed.
	proposed []bool
	sorted   []*policy.Placement
	// sortedProposed is proposed for sorted's pods.
	sortedProposed []bool
}

// victimsOn is one node's answer, nil for none.
// self is the placement under the preemptor's key on n, if any.
func (b *victimBuffers) victimsOn(n *policy.Node, o *preemptOrder, self *policy.Placement, req policy.Request, priority int32, proposal *extenderv1.MetaVictims) *extenderv1.MetaVictims {
	// The pods of a lower priority than the preemptor's come first.
	end, _ := slices.BinarySearchFunc(o.pods, priorityRank(priority), func(rp rankedPod, r uint64) int { return cmp.Compare(rp.rank, r) })
	if end == 0 {
		return nil
	}
	b.proposed = slices.Grow(b.proposed[:0], end)[:end]
	clear(b.proposed)
	if proposal != nil {
		for _, m := range proposal.Pods {
			if m == nil {
				continue
			}
			if i, ok := o.byUID[types.UID(m.UID)]; ok && int(i) < end {
				b.proposed[i] = true
			}
		}
	}
	// Within each run of equal rank the proposed pods go first, both parts
	// in key order. The preemptor (assumed by a bind that failed) is no
	// victim of its own: told apart by pointer, which reads no placement.
	b.sorted, b.sortedProposed = b.sorted[:0], b.sortedProposed[:0]
	for lo := 0; lo < end; {
		hi := lo + 1
		for hi < end && o.pods[hi].rank == o.pods[lo].rank {
			hi++
		}
		for _, want := range [2]bool{true, false} {
			for i := lo; i < hi; i++ {
				if b.proposed[i] == want && o.pods[i].p != self {
					b.sorted = append(b.sorted, o.pods[i].p)
					b.sortedProposed = append(b.sortedProposed, want)
				}
			}
		}
		lo = hi
	}
	if len(b.sorted) == 0 {
		return nil
	}
	// b.sorted holds the node's own placements, each once (the order
	// was built from them for this state of the node).
	victims, ok := b.search.VictimsAmongPlaced(n, req, b.sorted)
	if !ok {
		return nil
	}
	var numPDB int64
	if proposal != nil {
		numPDB = proposal.NumPDBViolations
	}
	if len(victims) == 0 {
		// corepin needs no room here; kube-scheduler's own plugins do.
		for i, p := range b.sorted {
			if b.sortedProposed[i] {
				victims = append(victims, p)
			}
		}
		if len(victims) == 0 {
			return nil
		}
	}
	answer := &extenderv1.MetaVictims{Pods: make([]*extenderv1.MetaPod, len(victims))}
	metas := make([]extenderv1.MetaPod, len(victims))
	kept := int64(0)
	for i, p := range victims {
		metas[i].UID = string(p.UID)
		answer.Pods[i] = &metas[i]
		if i, ok := o.byUID[p.UID]; ok && int(i) < end && b.proposed[i] {
			kept++
		}
	}
	// corepin reads no PodDisruptionBudget: the violations kube-scheduler
	// counted are among the pods it proposed, of which the answer keeps
	// kept.
	answer.NumPDBViolations = min(numPDB, kept)
	return answer
}

// preemptionArgs is extenderv1.ExtenderPreemptionArgs as this extender
// reads it, with the keys kube-scheduler sends (the type has no JSON tags):
// the pod in the fields the engine reads, and the proposed victims in either
// form, NodeNameToMetaVictims (nodeCacheCapable) or NodeNameToVictims (whole
// pods, of which only the UIDs matter here).
type preemptionArgs struct {
	Pod                   *wirePod                           `json:"Pod"`
	NodeNameToVictims     map[string]*wireVictims            `json:"NodeNameToVictims"`
	NodeNameToMetaVictims map[string]*extenderv1.MetaVictims `json:"NodeNameToMetaVictims"`
}

type wireVictims struct {
	Pods []*struct {
		Metadata struct {
			UID types.UID `json:"uid"`
		} `json:"metadata"`
	} `json:"Pods"`
	NumPDBViolations int64 `json:"NumPDBViolations"`
}

// proposal returns the proposed victims by node as UIDs, or an error naming
// the field that is missing or empty.
func (a *preemptionArgs) proposal() (map[string]*extenderv1.MetaVictims, error) {
	switch {
	case a.Pod == nil:
		return nil, errors.New(`malformed request body: no "Pod"`)
	case a.NodeNameToMetaVictims != nil:
		for node, v := range a.NodeNameToMetaVictims {
			if v == nil {
				continue
			}
			for i, m := range v.Pods {
				if m == nil || m.UID == "" {
					return nil, fmt.Errorf("malformed request body: NodeNameToMetaVictims[%q].Pods[%d].UID is empty", node, i)
				}
			}
		}
		return a.NodeNameToMetaVictims, nil
	case a.NodeNameToVictims != nil:
		out := make(map[string]*extenderv1.MetaVictims, len(a.NodeNameToVictims))
		for node, v := range a.NodeNameToVictims {
			if v == nil {
				out[node] = nil
				continue
			}
			meta := &extenderv1.MetaVictims{Pods: make([]*extenderv1.MetaPod, len(v.Pods)), NumPDBViolations: v.NumPDBViolations}
			for i, p := range v.Pods {
				if p == nil || p.Metadata.UID == "" {
					return nil, fmt.Errorf("malformed request body: NodeNameToVictims[%q].Pods[%d].metadata.uid is empty", node, i)
				}
				meta.Pods[i] = &extenderv1.MetaPod{UID: string(p.Metadata.UID)}
			}
			out[node] = meta
		}
		return out, nil
	}
	return nil, errors.New(`malformed request body: neither "NodeNameToMetaVictims" nor "NodeNameToVictims"`)
}

func (s *Server) preempt(w http.ResponseWriter, r *http.Request) {
	args, err := readPreemptionArgs(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	proposed, err := args.proposal()
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	pod := args.Pod.pod()
	answer, err := s.Sched.Preempt(pod, proposed)
	if err != nil {
		// A malformed pod: no victim makes room for it (filter refused it on
		// every node with the same reason).
		klog.V(2).InfoS("Preemption: pod refused on every node", "pod", klog.KObj(pod), "reason", err.Error())
	}
	victims := 0
	for _, v := range answer {
		victims += len(v.Pods)
	}
	klog.V(2).InfoS("Preemption answered", "pod", klog.KObj(pod), "proposedNodes", len(proposed), "nodes", len(answer), "victims", victims)
	reply(w, &extenderv1.ExtenderPreemptionResult{NodeNameToMetaVictims: answer})
}
