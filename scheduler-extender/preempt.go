package extender

import (
	"errors"
	"fmt"
	"net/http"
	"slices"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
	extenderv1 "k8s.io/kube-scheduler/extender/v1"

	"github.com/corepin/corepin/policy"
)

// preemptChunk is the fewest nodes worth a goroutine of their own in
// Preempt: a node's victim search costs tens of filter checks.
const preemptChunk = 64

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
	eachChunkOf(len(names), preemptChunk, func(lo, hi int) {
		var buf victimBuffers
		for i := lo; i < hi; i++ {
			if n, ok := s.engines[names[i]]; ok {
				answers[i] = buf.victimsOn(n, req, priority, proposed[names[i]])
			}
		}
	})
	s.mu.RUnlock()
	for i, a := range answers {
		if a != nil {
			out[names[i]] = a
		}
	}
	return out, nil
}

// candidate is a pod that may be preempted.
type candidate struct {
	p   *policy.Placement
	key string
}

// sortKey orders a candidate (cands[idx]): rank is its priority, then its
// exclusive CPUs, then whether kube-scheduler did not propose it, in one
// number (lowest first); the name breaks ties, pfx being 8 bytes of it
// after what all candidates' names share, so that most ties are told apart
// without comparing strings. It holds no pointer: sorting moves no pointer
// (no write barrier) and compares inline.
type sortKey struct {
	rank, pfx uint64
	idx       int
}

func rankOf(p *policy.Placement, proposed bool) uint64 {
	r := uint64(uint32(p.Priority)^1<<31)<<32 | uint64(min(p.CPUs.Size(), 1<<30))<<1
	if !proposed {
		r |= 1
	}
	return r
}

// victimBuffers are reused from node to node within one chunk.
type victimBuffers struct {
	search policy.VictimSearch
	pods   []*policy.Placement
	cands  []candidate
	keys   []sortKey
	sorted []*policy.Placement
	uids   map[types.UID]bool
}

// proposedSet is the UIDs kube-scheduler proposed on one node: a short list
// scanned, or a map once it is long.
type proposedSet struct {
	list []*extenderv1.MetaPod
	set  map[types.UID]bool
}

func (ps proposedSet) has(uid types.UID) bool {
	if ps.set != nil {
		return ps.set[uid]
	}
	for _, m := range ps.list {
		if m != nil && types.UID(m.UID) == uid {
			return true
		}
	}
	return false
}

// sortKeys orders the keys of cands: an insertion sort up to the few
// dozen pods a node holds (three times as fast as slices.SortFunc on the
// candidates themselves), slices.SortFunc beyond.
func sortKeys(keys []sortKey, cands []candidate) {
	before := func(x, y *sortKey) bool {
		switch {
		case x.rank != y.rank:
			return x.rank < y.rank
		case x.pfx != y.pfx:
			return x.pfx < y.pfx
		}
		return cands[x.idx].key < cands[y.idx].key
	}
	if len(keys) > 64 {
		slices.SortFunc(keys, func(x, y sortKey) int {
			switch {
			case before(&x, &y):
				return -1
			case before(&y, &x):
				return 1
			}
			return 0
		})
		return
	}
	for i := 1; i < len(keys); i++ {
		k := keys[i]
		j := i
		for ; j > 0 && before(&k, &keys[j-1]); j-- {
			keys[j] = keys[j-1]
		}
		keys[j] = k
	}
}

// commonPrefix is the length of the prefix a and b share.
func commonPrefix(a, b string) int {
	n := min(len(a), len(b))
	for i := 0; i < n; i++ {
		if a[i] != b[i] {
			return i
		}
	}
	return n
}

// prefix8 packs the first 8 bytes of s, zero-padded, so that comparing two
// of them compares those bytes as strings.Compare would.
func prefix8(s string) uint64 {
	var v uint64
	for i := 0; i < 8; i++ {
		v <<= 8
		if i < len(s) {
			v |= uint64(s[i])
		}
	}
	return v
}

// victimsOn is one node's answer, nil for none.
func (b *victimBuffers) victimsOn(n *policy.Node, req policy.Request, priority int32, proposal *extenderv1.MetaVictims) *extenderv1.MetaVictims {
	var ps proposedSet
	if proposal != nil {
		ps.list = proposal.Pods
		if len(ps.list) > 8 {
			if b.uids == nil {
				b.uids = map[types.UID]bool{}
			}
			clear(b.uids)
			for _, m := range ps.list {
				if m != nil {
					b.uids[types.UID(m.UID)] = true
				}
			}
			ps.set = b.uids
		}
	}
	b.pods = n.AppendPods(b.pods[:0])
	b.cands, b.keys = b.cands[:0], b.keys[:0]
	for _, p := range b.pods {
		// A pod without a UID cannot be named to kube-scheduler; the
		// preemptor (assumed by a bind that failed) is no victim of its own.
		if p.Priority < priority && p.UID != "" && p.Key != req.Key {
			b.keys = append(b.keys, sortKey{rank: rankOf(p, ps.has(p.UID)), idx: len(b.cands)})
			b.cands = append(b.cands, candidate{p: p, key: p.Key})
		}
	}
	if len(b.cands) == 0 {
		return nil
	}
	shared := len(b.cands[0].key)
	for _, c := range b.cands[1:] {
		shared = commonPrefix(b.cands[0].key[:shared], c.key)
	}
	for i := range b.keys {
		b.keys[i].pfx = prefix8(b.cands[i].key[shared:])
	}
	sortKeys(b.keys, b.cands)
	b.sorted = b.sorted[:0]
	for _, k := range b.keys {
		b.sorted = append(b.sorted, b.cands[k.idx].p)
	}
	victims, ok := b.search.Victims(n, req, b.sorted)
	if !ok {
		return nil
	}
	var numPDB int64
	if proposal != nil {
		numPDB = proposal.NumPDBViolations
	}
	if len(victims) == 0 {
		// corepin needs no room here; kube-scheduler's own plugins do.
		for _, k := range b.keys {
			if k.rank&1 == 0 {
				victims = append(victims, b.cands[k.idx].p)
			}
		}
		if len(victims) == 0 {
			return nil
		}
	}
	answer := &extenderv1.MetaVictims{Pods: make([]*extenderv1.MetaPod, len(victims))}
	kept := int64(0)
	for i, p := range victims {
		answer.Pods[i] = &extenderv1.MetaPod{UID: string(p.UID)}
		if ps.has(p.UID) {
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
	Pod                   *wirePod                    `json:"Pod"`
	NodeNameToVictims     map[string]*wireVictims     `json:"NodeNameToVictims"`
	NodeNameToMetaVictims map[string]*wireMetaVictims `json:"NodeNameToMetaVictims"`
}

// wireMetaVictims is extenderv1.MetaVictims as decodePreemptionArgs
// builds it.
type wireMetaVictims struct {
	Pods             []*extenderv1.MetaPod
	NumPDBViolations int64
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
		out := make(map[string]*extenderv1.MetaVictims, len(a.NodeNameToMetaVictims))
		for node, v := range a.NodeNameToMetaVictims {
			if v == nil {
				out[node] = nil
				continue
			}
			for i, m := range v.Pods {
				if m == nil || m.UID == "" {
					return nil, fmt.Errorf("malformed request body: NodeNameToMetaVictims[%q].Pods[%d].UID is empty", node, i)
				}
			}
			out[node] = &extenderv1.MetaVictims{Pods: v.Pods, NumPDBViolations: v.NumPDBViolations}
		}
		return out, nil
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
