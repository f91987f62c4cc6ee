package policy

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"k8s.io/utils/cpuset"

	"github.com/corepin/corepin/api"
)

// queuesOn gives each listed CPU set one queue, named prefix-N.
func queuesOn(prefix string, sets ...string) func(*api.Topology) {
	return func(t *api.Topology) {
		for n, s := range sets {
			t.IOQueues = append(t.IOQueues, api.IOQueue{Name: fmt.Sprintf("%s-%d", prefix, n), CPUs: api.NewCPUList(mustSet(s))})
		}
	}
}

// queuePerCPU gives every online CPU (every step-th) its own queue, as a
// NIC with one queue per CPU and irqbalance off publishes.
func queuePerCPU(step int) func(*api.Topology) {
	return func(t *api.Topology) {
		for n, c := range t.CPUs {
			if n%step == 0 {
				t.IOQueues = append(t.IOQueues, api.IOQueue{Name: fmt.Sprintf("rx-%d", c.ID), CPUs: api.NewCPUList(mustSet(fmt.Sprint(c.ID)))})
			}
		}
	}
}

// queuePerCore gives the first cores of each listed core index one queue
// on both threads (an IRQ affined to a core's siblings).
func queuePerCore(n int) func(*api.Topology) {
	return func(t *api.Topology) {
		byCore := map[int][]int{}
		var order []int
		for _, c := range t.CPUs {
			if _, ok := byCore[c.Core]; !ok {
				order = append(order, c.Core)
			}
			byCore[c.Core] = append(byCore[c.Core], c.ID)
		}
		for q := 0; q < n && q < len(order); q++ {
			ids := byCore[order[len(order)-1-q]] // the last cores: far from reserved ones
			var parts []string
			for _, id := range ids {
				parts = append(parts, fmt.Sprint(id))
			}
			t.IOQueues = append(t.IOQueues, api.IOQueue{Name: fmt.Sprintf("nvme0q%d", q), CPUs: api.NewCPUList(mustSet(strings.Join(parts, ",")))})
		}
	}
}

func TestCheckQueueSpread(t *testing.T) {
	qs := api.AllocSpec{IOQueueSpread: true, CPU: api.SameCoreFirst}
	spread := api.AllocSpec{IOQueueSpread: true, CPU: api.Spread}
	for _, tc := range []struct {
		name   string
		topo   string
		queues func(*api.Topology)
		others map[string]string // other pods' CPUs, placed first
		busy   string            // CPUs held outside the placements
		spec   api.AllocSpec
		cpus   string
		want   string // "" passes; else a substring of the refusal
	}{
		{name: "two CPUs on two queues", topo: "1s-vm", queues: queuesOn("q", "0", "1", "2", "3"), spec: qs, cpus: "0-1"},
		{name: "two CPUs on one queue while three are free", topo: "1s-vm", queues: queuesOn("q", "0", "1", "2", "3"), spec: qs, cpus: "0,4",
			want: "CPUs 0,4 serve 1 IO queue(s) of this node [q-0], the engine guarantees 2 here (2 picks, queues [q-1, q-2, q-3]"},
		{name: "no queue at all", topo: "1s-vm", queues: queuesOn("q", "0", "1"), spec: qs, cpus: "6-7", want: "serve 0 IO queue(s)"},
		{name: "the other queues are held by other pods", topo: "1s-vm", queues: queuesOn("q", "0", "1", "2", "3"),
			others: map[string]string{"x": "1-3"}, spec: qs, cpus: "0,4"},
		{name: "CPUs held outside the placements are not free", topo: "1s-vm", queues: queuesOn("q", "0", "1", "2", "3"),
			busy: "1-3", spec: qs, cpus: "0,4"},
		{name: "a queue on a core another pod holds a thread of is not reachable", topo: "2s-smt-server", queues: queuesOn("q", "0", "1"),
			others: map[string]string{"x": "17"}, spec: qs, cpus: "0,16"},
		{name: "SameCoreFirst whole cores on two queue cores", topo: "2s-smt-server", queues: queuePerCore(4), spec: qs, cpus: "14-15,30-31"},
		{name: "SameCoreFirst whole cores, one on no queue", topo: "2s-smt-server", queues: queuePerCore(4), spec: qs, cpus: "2,15,18,31",
			want: "engine guarantees 2 here (2 picks, queues [nvme0q1, nvme0q2, nvme0q3]"},
		{name: "Spread two threads of two queue cores", topo: "2s-smt-server", queues: queuePerCore(4), spec: spread, cpus: "14-15"},
		{name: "Spread one queue core and one without", topo: "2s-smt-server", queues: queuePerCore(4), spec: spread, cpus: "3,15",
			want: "serve 1 IO queue(s) of this node [nvme0q0]"},
		{name: "Spread covers every queue of its NUMA node", topo: "2s-smt-server", queues: queuesOn("q", "0", "8"), spec: spread, cpus: "0-3"},
		{name: "queues of another NUMA node do not count", topo: "2s-smt-server", queues: queuesOn("q", "0", "1"), spec: qs, cpus: "9,25"},
		{name: "a queue of the pod's own NUMA node counts", topo: "2s-smt-server", queues: queuesOn("q", "0", "8"), spec: qs, cpus: "9,25",
			want: "guarantees 1 here (1 picks, queues [q-1]"},
		{name: "reserved CPUs' queues are not reachable", topo: "seed-104", queues: queuesOn("eth0", "0", "4"), spec: qs, cpus: "5,57",
			want: "[eth0-1] on CPUs free for the pod"},
		{name: "an odd SameCoreFirst count guarantees nothing", topo: "2s-smt-server", queues: queuePerCore(4), spec: qs, cpus: "2-4"},
		{name: "uneven cores (an offline sibling) guarantee nothing to SameCoreFirst", topo: "xeon-4208-2s-cpu5-offline", queues: queuesOn("q", "0", "1"), spec: qs, cpus: "2,18"},
		{name: "without ioQueueSpread nothing is checked", topo: "1s-vm", queues: queuesOn("q", "0", "1"), spec: api.AllocSpec{}, cpus: "6-7"},
		{name: "a node without queues checks nothing", topo: "1s-vm", spec: qs, cpus: "6-7"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var n *Node
			if tc.queues != nil {
				n = newTestNode(t, tc.topo, tc.queues)
			} else {
				n = newTestNode(t, tc.topo)
			}
			for key, cpus := range tc.others {
				if err := n.Add(&Placement{Key: key, App: key, Policy: api.SameCoreFirst, CPUs: mustSet(cpus)}); err != nil {
					t.Fatal(err)
				}
			}
			err := n.CheckQueueSpread("pod", tc.spec, mustSet(tc.cpus), mustSet(tc.busy))
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.want != "" && err == nil:
				t.Fatalf("passed, want a refusal with %q", tc.want)
			case tc.want != "" && !strings.Contains(err.Error(), tc.want):
				t.Fatalf("refusal %q, want it to contain %q", err, tc.want)
			case err != nil && CodeOf(err) != CodeIOQueue:
				t.Fatalf("code %s, want %s", CodeOf(err), CodeIOQueue)
			}
		})
	}
}

// TestEngineMeetsItsQueueGuarantee: whatever the node holds, every
// ioQueueSpread pod the engine places passes the node's check on the same
// view. A guarantee the engine does not keep would refuse its own
// placements on the node.
func TestEngineMeetsItsQueueGuarantee(t *testing.T) {
	layouts := map[string]func(*api.Topology){
		"queue per CPU":         queuePerCPU(1),
		"queue every third CPU": queuePerCPU(3),
		"four queue cores":      queuePerCore(4),
	}
	rng := rand.New(rand.NewPCG(16, 3))
	guaranteed, checked := 0, 0
	for _, topo := range []string{"1s-vm", "2s-smt-server", "azure-d16s-v5", "seed-104", "epyc-7313p", "xeon-4208-2s-cpu5-offline"} {
		for layout, queues := range layouts {
			for round := range 20 {
				n := newTestNode(t, topo, queues)
				for i := range 12 {
					spec := api.AllocSpec{IOQueueSpread: rng.IntN(3) > 0, CPU: api.SameCoreFirst}
					if rng.IntN(2) == 0 {
						spec.CPU = api.Spread
					}
					key := fmt.Sprintf("p%d", i)
					req := exclusiveReq(key, fmt.Sprintf("app%d", rng.IntN(4)), 1+rng.IntN(6), spec)
					a, err := n.Allocate(req)
					if err != nil {
						continue
					}
					if spec.IOQueueSpread {
						checked++
						cov, _, _ := n.QueueCoverageOf(key, spec, a.CPUs, cpuset.New())
						if cov.Guaranteed > 0 {
							guaranteed++
						}
						if err := n.CheckQueueSpread(key, spec, a.CPUs, cpuset.New()); err != nil {
							t.Fatalf("%s, %s, round %d: the engine's own choice %s for %s (%s, %d CPUs) is refused: %v",
								topo, layout, round, a.CPUs, key, spec.CPU, req.ExclusiveCPUs(), err)
						}
					}
					if err := n.Add(PlacementFor(req, a.CPUs)); err != nil {
						t.Fatal(err)
					}
				}
			}
		}
	}
	// The check must have guaranteed something in most cases, or it proves nothing.
	if guaranteed*2 < checked {
		t.Fatalf("only %d of %d placements had a guarantee", guaranteed, checked)
	}
	t.Logf("%d placements checked, %d with a guarantee", checked, guaranteed)
}

// TestCheckQueueSpreadAtMost: the guarantee kept from bind time lowers
// what is required (CPUs freed since were not the extender's to give),
// never raises it, and a bound the CPUs miss is still refused, naming it.
func TestCheckQueueSpreadAtMost(t *testing.T) {
	qs := api.AllocSpec{IOQueueSpread: true, CPU: api.SameCoreFirst}
	n := newTestNode(t, "1s-vm", queuesOn("q", "0", "1", "2", "3"))
	cpus := mustSet("0,4") // one queue, three more free: 2 guaranteed now
	for _, tc := range []struct {
		most int
		want string // "" passes
	}{
		{most: -1, want: "the engine guarantees 2 here (2 picks, queues [q-1, q-2, q-3] on CPUs free for the pod)"},
		{most: 3, want: "the engine guarantees 2 here (2 picks, queues [q-1, q-2, q-3] on CPUs free for the pod)"},
		{most: 2, want: "the engine guarantees 2 here"},
		{most: 1},
		{most: 0},
	} {
		err := n.CheckQueueSpreadAtMost("pod", qs, cpus, cpuset.New(), tc.most)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("at most %d: refused: %v", tc.most, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("at most %d: %v, want a refusal with %q", tc.most, err, tc.want)
		}
	}
	// Bound at 1 with no queue covered: refused, the bound named.
	err := n.CheckQueueSpreadAtMost("pod", qs, mustSet("5-6"), cpuset.New(), 1)
	if want := "the engine guarantees 1 here (2 picks, queues [q-0, q-1, q-2, q-3] on CPUs free for the pod; 1 when the pod was bound)"; err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("CPUs 5-6, bound 1: %v, want %q", err, want)
	}
	if CodeOf(err) != CodeIOQueue {
		t.Fatalf("code %q", CodeOf(err))
	}
}
