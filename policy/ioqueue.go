package policy

import (
	"fmt"
	"slices"
	"strings"

	"k8s.io/utils/cpuset"

	"github.com/corepin/corepin/api"
)

// QueueCoverage is what an ioQueueSpread pod's CPUs cover of a node's IO
// queues, next to what the engine's choice is sure to cover there.
type QueueCoverage struct {
	// Covered are the queues the pod's CPUs serve, in topology order.
	Covered []string
	// Reachable are the queues served by the CPUs the engine could pick
	// for the pod: its own and those of cores no other pod holds anything
	// on, in the NUMA nodes of its CPUs.
	Reachable []string
	// Picks is how many units (cores) the engine picked for the pod queue
	// by queue; 0 where its choice is not made that way throughout (an
	// uneven SameCoreFirst split, see QueueCoverageOf).
	Picks int
	// Guaranteed = min(Picks, len(Reachable)): the fewest distinct queues
	// the engine's choice covers.
	Guaranteed int
}

// QueueCoverageOf measures, on n, the CPUs of the pod whose placement is
// keyed key (its own holdings count as free; busy are CPUs held outside
// n's running placements, such as the plugin's quarantined containers and
// other pods' grants) against the engine's IO-queue rule (allocate.go:
// each pick takes the candidate core that adds the most queues the pod
// lacks). Every such pick adds a queue while a candidate
// still serves one the pod lacks, so the pod covers at least
// min(picks, reachable queues). The bound holds for:
//   - Spread: one pick per CPU (one thread per core, the core's first
//     free thread);
//   - SameCoreFirst where every core of the pod's NUMA nodes has the same
//     number z of allocatable threads and the pod holds whole cores: n/z
//     picks, each a whole core (no partial core is ever needed).
//
// Otherwise Picks is 0 and nothing is guaranteed. Only cores with every
// thread free count as reachable: a core another pod holds a thread of
// may not have been a candidate (SameCoreFirst, same app), and a Spread
// pod's thread there is not the one the engine compared. cpus must be
// online; ok is false when the node has no IO queues.
func (n *Node) QueueCoverageOf(key string, spec api.AllocSpec, cpus, busy cpuset.CPUSet) (cov QueueCoverage, ok bool, err error) {
	t := n.Topo
	if t == nil || !t.HasIOQueues() {
		return QueueCoverage{}, false, nil
	}
	idx, err := t.indexes(cpus)
	if err != nil {
		return QueueCoverage{}, false, err
	}
	mine := make(map[int]bool, len(idx))
	numas := make(map[int]bool, 2)
	for _, i := range idx {
		mine[i] = true
		numas[t.numaOf[i]] = true
	}
	free := func(i int) bool {
		if mine[i] {
			return true
		}
		p := n.owner[i]
		return (p == nil || p.Key == key) && !busy.Contains(t.cpus[i].ID)
	}
	spread := spec.CPU == api.Spread
	covered := make([]bool, len(t.queues))
	reach := make([]bool, len(t.queues))
	mark := func(set []bool, threads []int) {
		for _, i := range threads {
			for _, q := range t.queuesOf[i] {
				set[q] = true
			}
		}
	}
	mark(covered, idx)
	size, even, whole := -1, true, true
	owned := 0
	for _, c := range t.cores {
		if !numas[c.numa] || len(c.cpus) == 0 {
			continue
		}
		if size < 0 {
			size = len(c.cpus)
		} else if size != len(c.cpus) {
			even = false
		}
		var own []int
		all := true
		for _, i := range c.cpus {
			if mine[i] {
				own = append(own, i)
			}
			all = all && free(i)
		}
		switch {
		case len(own) > 0:
			owned++
			whole = whole && len(own) == len(c.cpus)
			mark(reach, own)
		case !all:
		case spread:
			mark(reach, c.cpus[:1])
		default:
			mark(reach, c.cpus)
		}
	}
	switch {
	case spread:
		cov.Picks = len(idx)
	case even && whole && size > 0 && len(idx)%size == 0:
		cov.Picks = owned
	}
	for q, name := range t.queues {
		if covered[q] {
			cov.Covered = append(cov.Covered, name)
		}
		if reach[q] {
			cov.Reachable = append(cov.Reachable, name)
		}
	}
	cov.Guaranteed = min(cov.Picks, len(cov.Reachable))
	return cov, true, nil
}

// CheckQueueSpread refuses, for a pod asking ioQueueSpread, CPUs that cover
// fewer distinct IO queues of n's topology than the engine guarantees for
// the pod there (QueueCoverageOf). The node plugin runs it on its own view
// of the node's queues: CPUs chosen on a stale or different copy of them
// are caught before the container runs. A node without IO queues, or CPUs
// that are not online (refused elsewhere), pass.
func (n *Node) CheckQueueSpread(key string, spec api.AllocSpec, cpus, busy cpuset.CPUSet) error {
	return n.CheckQueueSpreadAtMost(key, spec, cpus, busy, -1)
}

// CheckQueueSpreadAtMost is CheckQueueSpread requiring at most most queues
// (most < 0: no bound): the guarantee the node plugin computed when it
// first saw the pod bound. CPUs freed since (a pod gone) can lower what is
// required, never raise it above what the extender could give then.
func (n *Node) CheckQueueSpreadAtMost(key string, spec api.AllocSpec, cpus, busy cpuset.CPUSet, most int) error {
	if !spec.IOQueueSpread || cpus.IsEmpty() {
		return nil
	}
	cov, ok, err := n.QueueCoverageOf(key, spec, cpus, busy)
	if err != nil || !ok {
		return nil
	}
	want, bound := cov.Guaranteed, ""
	if most >= 0 && most < want {
		want, bound = most, fmt.Sprintf("; %d when the pod was bound", most)
	}
	if len(cov.Covered) >= want {
		return nil
	}
	missed := slices.DeleteFunc(slices.Clone(cov.Reachable), func(q string) bool { return slices.Contains(cov.Covered, q) })
	return Reasonf(CodeIOQueue, "ioQueueSpread: CPUs %s serve %d IO queue(s) of this node [%s], the engine guarantees %d here "+
		"(%d picks, queues [%s] on CPUs free for the pod%s); the CPUs were chosen on another view of the node's IO queues",
		cpus, len(cov.Covered), listNames(cov.Covered), want, cov.Picks, listNames(missed), bound)
}

// listNames joins queue names, at most 8 of them.
func listNames(names []string) string {
	if len(names) > 8 {
		return strings.Join(names[:8], ", ") + fmt.Sprintf(", ... (%d in all)", len(names))
	}
	return strings.Join(names, ", ")
}
