package plugin

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/nri/pkg/api"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/cpuset"

	corepin "github.com/corepin/corepin/api"
)

// drain empties the plugin's pending signal and reports whether it was set.
func drain(p *Plugin) bool {
	select {
	case <-p.Pending():
		return true
	default:
		return false
	}
}

// updateMap is a batch of updates as container ID -> cpus.
func updateMap(upd []*api.ContainerUpdate) map[string]string {
	out := map[string]string{}
	for _, u := range upd {
		out[u.GetContainerId()] = cpusOf(u)
	}
	return out
}

// TestUnsolicitedBatchNeverOverwritesAHandlersReply: the plugin's own
// goroutine computes a batch under the lock and sends it after releasing
// it. Whatever happens while the batch is in flight (a CreateContainer
// shrinks the pool in its reply, which the runtime applies first; the
// runtime fails an update; the whole call fails), the containers the batch
// did not leave on their current target are sent it by the next batch.
func TestUnsolicitedBatchNeverOverwritesAHandlersReply(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		// send plays the runtime: it may run a handler before "applying"
		// the batch, and answer with failures or an error.
		send func(p *Plugin, batch []*api.ContainerUpdate) ([]*api.ContainerUpdate, error)
		// again: the next batch (container -> cpus); nil: no next batch.
		again map[string]string
		// listed: the containers logged as to send again.
		listed string
	}{
		{name: "no handler in between: nothing to send again",
			send: func(*Plugin, []*api.ContainerUpdate) ([]*api.ContainerUpdate, error) { return nil, nil }},
		{name: "an exclusive create shrinks the pool while a grow is in flight",
			send: func(p *Plugin, _ []*api.ContainerUpdate) ([]*api.ContainerUpdate, error) {
				_, reply, err := p.CreateContainer(ctx, exclusivePod("s-b", "b", "2-3"), ctr("c-b", "s-b", "engine", 2000, ""))
				if err != nil || updateMap(reply)["c-web"] != "1,4-7" {
					t.Fatalf("handler in between: %v %v", reply, err)
				}
				return nil, nil // the runtime applied the reply, then the stale batch
			},
			again: map[string]string{"c-web": "1,4-7"}, listed: "[c-web]"},
		{name: "a failed update is sent again",
			send:  func(_ *Plugin, batch []*api.ContainerUpdate) ([]*api.ContainerUpdate, error) { return batch, nil },
			again: map[string]string{"c-web": "1-7"}, listed: "[c-web]"},
		{name: "a failed call sends the whole batch again",
			send: func(*Plugin, []*api.ContainerUpdate) ([]*api.ContainerUpdate, error) {
				return nil, errors.New("connection closed")
			},
			again: map[string]string{"c-web": "1-7"}, listed: "[c-web]"},
		// The drift check reads c-web's cgroup before the runtime applied
		// the batch: it is sent its target again for the drift check, which
		// logged it; the batch does not list it.
		{name: "the drift check marks a container while the batch is in flight",
			send: func(p *Plugin, _ []*api.ContainerUpdate) ([]*api.ContainerUpdate, error) {
				p.CheckDrift(func(c *Container) (cpuset.CPUSet, error) { return cpuset.New(1, 4, 5, 6, 7), nil })
				return nil, nil
			},
			again: map[string]string{"c-web": "1-7"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newTestPlugin(t)
			logs := captureLog(p)
			web := ctr("c-web", "s-web", "app", 500, "")
			web.Linux.CgroupsPath = "/kubepods/web" // read by the drift check
			if _, _, err := p.CreateContainer(ctx, sandbox("s-web", "default", "web", nil), web); err != nil {
				t.Fatal(err)
			}
			if _, _, err := p.CreateContainer(ctx, exclusivePod("s-a", "a", "4-5"), ctr("c-a", "s-a", "engine", 2000, "")); err != nil {
				t.Fatal(err)
			}
			_ = p.RemovePodSandbox(ctx, exclusivePod("s-a", "a", "4-5")) // grow c-web back, from the goroutine
			drain(p)
			var inFlight map[string]string
			sent, _, _ := p.PushPending(func(batch []*api.ContainerUpdate) ([]*api.ContainerUpdate, error) {
				inFlight = updateMap(batch)
				return tc.send(p, batch)
			})
			if sent != 1 || inFlight["c-web"] != "1-7" {
				t.Fatalf("batch in flight %v, want c-web grown to 1-7", inFlight)
			}
			if signalled := drain(p); signalled != (tc.again != nil) {
				t.Fatalf("next batch signalled %v, want %v", signalled, tc.again != nil)
			}
			next := updateMap(p.PendingUpdates())
			if tc.again == nil {
				tc.again = map[string]string{}
			}
			if len(next) != len(tc.again) || !equalMaps(next, tc.again) {
				t.Fatalf("next batch %v, want %v", next, tc.again)
			}
			listed := ""
			if _, after, ok := strings.Cut(logs.String(), `msg="Updates to send again`); ok {
				_, listed, _ = strings.Cut(after, "containers=")
				listed, _, _ = strings.Cut(listed, "\n")
			}
			if listed != tc.listed {
				t.Fatalf("listed as to send again %q, want %q", listed, tc.listed)
			}
		})
	}
}

// captureLog makes the plugin log into the returned buffer (one goroutine).
func captureLog(p *Plugin) *bytes.Buffer {
	var buf bytes.Buffer
	p.log = slog.New(slog.NewTextHandler(&buf, nil))
	return &buf
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// withUID sets a sandbox's pod UID.
func withUID(sb *api.PodSandbox, uid string) *api.PodSandbox {
	sb.Uid = uid
	return sb
}

// TestRecreatedPodIsNotMergedWithTheOldOne: a pod deleted and re-created
// under the same namespace/name (new UID, new sandbox) while the old
// sandbox's exclusive container still runs is a different pod: its CPUs
// are checked against the old one's, at creation and at synchronize.
func TestRecreatedPodIsNotMergedWithTheOldOne(t *testing.T) {
	ctx := context.Background()
	old := func() *api.PodSandbox { return withUID(exclusivePod("s-old", "db", "2-3"), "uid-old") }
	for _, tc := range []struct {
		name     string
		newCPUs  string
		refused  string // empty: admitted
		e        int    // E with both sandboxes
		eWithout int    // E once the old sandbox is removed
	}{
		{name: "overlapping CPUs are refused", newCPUs: "3-4",
			refused: `corepin: pod default/db container engine cpus "3-4": CPUs 3-4 for pod default/db on node node-a: CPU 3 is held by pod default/db (another pod of the same name, uid-old, whose containers still run)`,
			e:       2, eWithout: 0},
		{name: "the same CPUs are refused", newCPUs: "2-3", refused: "CPU 2 is held by pod default/db (another pod of the same name", e: 2, eWithout: 0},
		{name: "disjoint CPUs are admitted and kept when the old pod goes", newCPUs: "4-5", e: 4, eWithout: 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newTestPlugin(t)
			if _, _, err := p.CreateContainer(ctx, old(), ctr("c-old", "s-old", "engine", 2000, "")); err != nil {
				t.Fatal(err)
			}
			_, _, err := p.CreateContainer(ctx, withUID(exclusivePod("s-new", "db", tc.newCPUs), "uid-new"), ctr("c-new", "s-new", "engine", 2000, ""))
			switch {
			case tc.refused == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.refused != "" && (err == nil || !strings.Contains(err.Error(), tc.refused)):
				t.Fatalf("error %v, want %q", err, tc.refused)
			}
			if e := p.Capacity().E; e != tc.e {
				t.Fatalf("E = %d with both sandboxes, want %d", e, tc.e)
			}
			_ = p.RemovePodSandbox(ctx, old())
			if e := p.Capacity().E; e != tc.eWithout {
				t.Fatalf("E = %d after the old sandbox went, want %d", e, tc.eWithout)
			}
		})
	}

	// At synchronize the two are two pods: the one created later is a
	// conflict, quarantined, not merged into the first.
	for _, tc := range []struct {
		name        string
		oldUID      string
		newUID      string
		quarantined string
		e           int
	}{
		{name: "by UID", oldUID: "uid-old", newUID: "uid-new", quarantined: "3-4", e: 2},
		{name: "by sandbox ID when the runtime reports no UID", quarantined: "3-4", e: 2},
	} {
		t.Run("synchronize "+tc.name, func(t *testing.T) {
			p := newTestPlugin(t)
			pods := []*api.PodSandbox{withUID(exclusivePod("s-old", "db", "2-3"), tc.oldUID), withUID(exclusivePod("s-new", "db", "3-4"), tc.newUID)}
			_, err := p.Synchronize(ctx, pods, []*api.Container{
				createdAt(ctr("c-old", "s-old", "engine", 2000, "2-3"), 1), createdAt(ctr("c-new", "s-new", "engine", 2000, "3-4"), 2)})
			if err != nil {
				t.Fatal(err)
			}
			if q := inLedger(p, (*Ledger).Quarantined).String(); q != tc.quarantined {
				t.Fatalf("quarantined %q, want %q", q, tc.quarantined)
			}
			if e := p.Capacity().E; e != tc.e {
				t.Fatalf("E = %d, want %d", e, tc.e)
			}
			if pool := p.SharedPool().String(); pool != "1,5-7" {
				t.Fatalf("shared pool %s, want 1,5-7 (neither pod's CPUs)", pool)
			}
		})
	}
}

// TestLiftedQuotaFoundAtSynchronize: a container found at synchronize with
// its CFS quota lifted gets it back from the pod spec's limit when its pod
// is not released, whether the release was unset while the plugin was
// away or never known to it.
func TestLiftedQuotaFoundAtSynchronize(t *testing.T) {
	ctx := context.Background()
	limit := map[string]int64{"engine": 2000}
	for _, tc := range []struct {
		name     string
		release  *Release // the API server's view; nil: none (no API access)
		sandbox  map[string]string
		shared   bool
		quota    int64 // found on the container (-1: lifted)
		noQuota  bool  // the runtime reports none (a kubelet with cpuCFSQuota: false)
		cpus     string
		want     string // cpus of the update; "": no update
		restored int64  // quota restored; 0: not touched
	}{
		{name: "release unset while away: quota restored from the limit", release: &Release{ExcludeReserve: true, LimitMilli: limit},
			quota: -1, cpus: "1-7", want: "2-3", restored: 200000},
		{name: "release unset while away, cpuset already pinned: quota restored", release: &Release{ExcludeReserve: true, LimitMilli: limit},
			quota: -1, cpus: "2-3", want: "2-3", restored: 200000},
		{name: "still released: left lifted", release: &Release{Isolate: true, ExcludeReserve: true, LimitMilli: limit},
			quota: -1, cpus: "1-7"},
		{name: "released in the sandbox annotations: left lifted", sandbox: map[string]string{"corepin.io/release-isolate-mode": "true"},
			quota: -1, cpus: "1-7"},
		{name: "no limit in the spec: nothing to restore", release: &Release{ExcludeReserve: true, LimitMilli: map[string]int64{}},
			quota: -1, cpus: "2-3"},
		{name: "without the API server it cannot be told: cpuset repaired only", quota: -1, cpus: "1-7", want: "2-3"},
		{name: "quota in place: untouched", release: &Release{ExcludeReserve: true, LimitMilli: limit}, quota: 200000, cpus: "2-3"},
		{name: "a shared container is never restored", release: &Release{ExcludeReserve: true, LimitMilli: limit}, shared: true,
			quota: -1, cpus: "1-7"},
		// A kubelet with cpuCFSQuota: false sets no quota for a limit: that
		// is not a quota lifted by the plugin, and none is imposed.
		{name: "no quota, a limit in the spec, pinned: untouched", release: &Release{ExcludeReserve: true, LimitMilli: limit},
			noQuota: true, cpus: "2-3"},
		{name: "no quota, a limit in the spec, cpuset wrong: cpuset repaired only", release: &Release{ExcludeReserve: true, LimitMilli: limit},
			noQuota: true, cpus: "1-7", want: "2-3"},
		{name: "quota 0, a limit in the spec: untouched", release: &Release{ExcludeReserve: true, LimitMilli: limit},
			quota: 0, cpus: "2-3"},
		{name: "a quota below -1 is not the plugin's: untouched", release: &Release{ExcludeReserve: true, LimitMilli: limit},
			quota: -2, cpus: "2-3"},
		{name: "no quota, released: left as it is", release: &Release{Isolate: true, ExcludeReserve: true, LimitMilli: limit},
			noQuota: true, cpus: "1-7"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newTestPlugin(t)
			if tc.release != nil {
				p.SetRelease("default", "db", *tc.release)
			}
			sb := exclusivePod("s-db", "db", "2-3")
			if tc.shared {
				sb = sandbox("s-db", "default", "db", nil)
			}
			for k, v := range tc.sandbox {
				sb.Annotations[k] = v
			}
			running := ctr("c-db", "s-db", "engine", 0, tc.cpus)
			if !tc.noQuota {
				running.Linux.Resources.Cpu.Quota = api.Int64(tc.quota)
				running.Linux.Resources.Cpu.Period = api.UInt64(100000)
			}
			upd, err := p.Synchronize(ctx, []*api.PodSandbox{sb}, []*api.Container{running})
			if err != nil {
				t.Fatal(err)
			}
			if tc.want == "" {
				if len(upd) != 0 {
					t.Fatalf("updates %v, want none", upd)
				}
				return
			}
			if len(upd) != 1 || cpusOf(upd[0]) != tc.want {
				t.Fatalf("updates %v, want c-db on %s", upd, tc.want)
			}
			q, set := quotaOf(upd[0])
			if tc.restored == 0 && set || tc.restored != 0 && q != tc.restored {
				t.Fatalf("quota %d (set %v), want %d", q, set, tc.restored)
			}
		})
	}
}

// TestAllocStatusMemsMustBeNUMANodesOfTheNode: an exclusive container's
// alloc-status mems are empty or exactly the NUMA nodes of its CPUs (the
// engine's one mems rule; the test node has NUMA node 0 only); otherwise it
// is refused and nothing is held.
func TestAllocStatusMemsMustBeNUMANodesOfTheNode(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name, mems string
		refused    string // empty: admitted
	}{
		{name: "the node's NUMA node", mems: `"0"`},
		{name: "no mems (numa None)", mems: `""`},
		{name: "mems absent", mems: ""},
		{name: "NUMA nodes the node does not have", mems: `"5-7"`,
			refused: `corepin: pod default/m container engine cpus "2-3": corepin.io/alloc-status mems "5-7" are not the NUMA nodes of its CPUs 2-3 (0)`},
		{name: "one of them missing", mems: `"0-1"`, refused: `mems "0-1" are not the NUMA nodes of its CPUs 2-3 (0)`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newTestPlugin(t)
			status := `{"node":"node-a","cpus":"2-3","containers":{"engine":"2-3"}`
			if tc.mems != "" {
				status += `,"mems":` + tc.mems
			}
			sb := sandbox("s-m", "default", "m", map[string]string{corepin.AnnotationCPUMode: "exclusive", corepin.AnnotationAllocStatus: status + "}"})
			_, _, err := p.CreateContainer(ctx, sb, ctr("c-m", "s-m", "engine", 2000, ""))
			if tc.refused == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.refused) {
				t.Fatalf("error %v, want %q", err, tc.refused)
			}
			if e := p.Capacity().E; e != 0 {
				t.Fatalf("E = %d after a refusal, want 0", e)
			}
			if got := testutil.ToFloat64(p.metrics.refusals.WithLabelValues("bad-annotation")); got != 1 {
				t.Fatalf("refusals{bad-annotation} = %v, want 1", got)
			}
		})
	}
}

// TestSystemNamespaceGetsTheReservedCPUsWheneverShared: a container of a
// system-namespace pod that runs in the shared pool gets the reserved CPUs
// too, whatever made it shared (pool 1,4-7 while default/db holds 2-3).
func TestSystemNamespaceGetsTheReservedCPUsWheneverShared(t *testing.T) {
	ctx := context.Background()
	exclusiveSys := func(ns string) *api.PodSandbox {
		return sandbox("s-x", ns, "agent", map[string]string{corepin.AnnotationCPUMode: "exclusive",
			corepin.AnnotationAllocStatus: `{"node":"node-a","cpus":"4-5","containers":{"engine":"4-5"},"mems":"0"}`})
	}
	for _, tc := range []struct {
		name     string
		unplaced bool
		sb       *api.PodSandbox
		cname    string
		cpus     string
		class    Class
	}{
		{name: "shared pod", sb: sandbox("s-x", "kube-system", "dns", nil), cname: "dns", cpus: "0-1,4-7", class: System},
		{name: "sidecar of an exclusive pod", sb: exclusiveSys("kube-system"), cname: "sidecar", cpus: "0-1,6-7", class: System},
		{name: "sidecar of an exclusive pod elsewhere", sb: exclusiveSys("default"), cname: "sidecar", cpus: "1,6-7", class: Shared},
		{name: "unplaced exclusive pod sent to the pool", unplaced: true,
			sb: sandbox("s-x", "kube-system", "u", map[string]string{corepin.AnnotationCPUMode: "exclusive"}), cname: "engine", cpus: "0-1,4-7", class: System},
		{name: "unplaced exclusive pod elsewhere", unplaced: true,
			sb: sandbox("s-x", "default", "u", map[string]string{corepin.AnnotationCPUMode: "exclusive"}), cname: "engine", cpus: "1,4-7", class: Shared},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newTestPlugin(t)
			p.ledger.cfg.UnplacedToShared = tc.unplaced
			if _, _, err := p.CreateContainer(ctx, exclusivePod("s-db", "db", "2-3"), ctr("c-db", "s-db", "engine", 2000, "")); err != nil {
				t.Fatal(err)
			}
			if tc.cname == "sidecar" {
				if _, _, err := p.CreateContainer(ctx, tc.sb, ctr("c-eng", "s-x", "engine", 2000, "")); err != nil {
					t.Fatal(err)
				}
			}
			adj, _, err := p.CreateContainer(ctx, tc.sb, ctr("c-x", "s-x", tc.cname, 100, ""))
			if err != nil {
				t.Fatal(err)
			}
			if got := adj.GetLinux().GetResources().GetCpu().GetCpus(); got != tc.cpus {
				t.Fatalf("cpuset %q, want %q", got, tc.cpus)
			}
			if c, _ := containerOf(p, "c-x"); c.Class != tc.class {
				t.Fatalf("class %v, want %v", c.Class, tc.class)
			}
		})
	}
}

// TestLiveSwitchReachesEveryPinnedContainer: flipping a pod's switches on
// the API server asks the plugin's goroutine for the updates of every
// container they affect: exclusive ones (both switches) and BindAllCPUs
// ones (exclude-reserve-cpuset).
func TestLiveSwitchReachesEveryPinnedContainer(t *testing.T) {
	ctx := context.Background()
	bindAll := sandbox("s-x", "perf", "x", map[string]string{corepin.AnnotationAllocSpec: `{"cpu":"BindAllCPUs"}`})
	for _, tc := range []struct {
		name    string
		sb      *api.PodSandbox
		release Release
		want    map[string]string // the pending batch; empty: none signalled
	}{
		{name: "BindAllCPUs: reserved CPUs let in", sb: bindAll, release: Release{ExcludeReserve: false}, want: map[string]string{"c-x": "0-7"}},
		{name: "BindAllCPUs: same switch, nothing", sb: bindAll, release: Release{ExcludeReserve: true}, want: map[string]string{}},
		{name: "exclusive: released", sb: exclusivePod("s-x", "x", "2-3"), release: Release{Isolate: true, ExcludeReserve: true}, want: map[string]string{"c-x": "1-7"}},
		{name: "shared: nothing to change", sb: sandbox("s-x", "perf", "x", nil), release: Release{Isolate: true, ExcludeReserve: false}, want: map[string]string{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newTestPlugin(t)
			p.ledger.cfg.BindAllNamespaces = []string{"perf"}
			if _, _, err := p.CreateContainer(ctx, tc.sb, ctr("c-x", "s-x", "engine", 2000, "")); err != nil {
				t.Fatal(err)
			}
			drain(p)
			p.SetRelease(tc.sb.Namespace, tc.sb.Name, tc.release)
			if signalled := drain(p); signalled != (len(tc.want) > 0) {
				t.Fatalf("pending signalled %v, want %v", signalled, len(tc.want) > 0)
			}
			if got := updateMap(p.PendingUpdates()); !equalMaps(got, tc.want) {
				t.Fatalf("pending batch %v, want %v", got, tc.want)
			}
		})
	}
}

// TestContainersThatExistAtSynchronize: every container that is not
// stopped exists for the ledger; a paused or unknown-state exclusive
// container keeps its CPUs out of the pool and away from other pods.
func TestContainersThatExistAtSynchronize(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		state   api.ContainerState
		e       int
		pool    string
		refused bool // another pod asking for the same CPUs
	}{
		{api.ContainerState_CONTAINER_RUNNING, 2, "1,4-7", true},
		{api.ContainerState_CONTAINER_CREATED, 2, "1,4-7", true},
		{api.ContainerState_CONTAINER_PAUSED, 2, "1,4-7", true},
		{api.ContainerState_CONTAINER_UNKNOWN, 2, "1,4-7", true},
		{api.ContainerState_CONTAINER_STOPPED, 0, "1-7", false},
	} {
		t.Run(tc.state.String(), func(t *testing.T) {
			p := newTestPlugin(t)
			c := ctr("c-db", "s-db", "engine", 2000, "2-3")
			c.State = tc.state
			if _, err := p.Synchronize(ctx, []*api.PodSandbox{exclusivePod("s-db", "db", "2-3")}, []*api.Container{c}); err != nil {
				t.Fatal(err)
			}
			if e, pool := p.Capacity().E, p.SharedPool().String(); e != tc.e || pool != tc.pool {
				t.Fatalf("E = %d, pool %s; want %d, %s", e, pool, tc.e, tc.pool)
			}
			_, _, err := p.CreateContainer(ctx, exclusivePod("s-x", "x", "2-3"), ctr("c-x", "s-x", "engine", 2000, ""))
			if (err != nil) != tc.refused {
				t.Fatalf("another pod on 2-3: %v, want refused %v", err, tc.refused)
			}
		})
	}
}

// TestGaugesFollowEveryStop: stopping any container, not only an
// exclusive one, refreshes the gauges.
func TestGaugesFollowEveryStop(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name  string
		sb    *api.PodSandbox
		class Class
	}{
		{"shared", sandbox("s-x", "default", "x", nil), Shared},
		{"system", sandbox("s-x", "kube-system", "x", nil), System},
		{"exclusive", exclusivePod("s-x", "x", "2-3"), Exclusive},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newTestPlugin(t)
			gauge := p.metrics.containers.WithLabelValues(tc.class.String())
			if _, _, err := p.CreateContainer(ctx, tc.sb, ctr("c-x", "s-x", "engine", 2000, "")); err != nil {
				t.Fatal(err)
			}
			if got := testutil.ToFloat64(gauge); got != 1 {
				t.Fatalf("corepin_nri_containers{class=%q} = %v after the create, want 1", tc.class, got)
			}
			if _, err := p.StopContainer(ctx, tc.sb, ctr("c-x", "s-x", "engine", 2000, "")); err != nil {
				t.Fatal(err)
			}
			if got := testutil.ToFloat64(gauge); got != 0 {
				t.Fatalf("corepin_nri_containers{class=%q} = %v after the stop, want 0", tc.class, got)
			}
		})
	}
}

// TestInitContainersAreNotCountedInTheSharedSum: an init container that
// runs to completion counts 0 in S and M (docs/annotations.md), once the
// API server has told the plugin which containers of the pod are init
// containers; a native sidecar (restartPolicy Always) counts like any
// shared container. On the test node (P = 7, h = 2) a 3-CPU shared pod
// leaves room for 1 exclusive CPU (P - h*M = 1); counted 0, for 4.
func TestInitContainersAreNotCountedInTheSharedSum(t *testing.T) {
	ctx := context.Background()
	initOnly := Release{ExcludeReserve: true, Init: map[string]bool{"migrate": true}}
	for _, tc := range []struct {
		name string
		api  *Release // what the API server says of default/w; nil: nothing (no API access)
		// late: the API server's word arrives after the container was created.
		late     bool
		s, m     int64
		admitted bool // a 2-CPU exclusive pod afterwards
	}{
		{name: "init container: not counted", api: &initOnly, s: 0, m: 0, admitted: true},
		{name: "init container known after it started: not counted", api: &initOnly, late: true, s: 0, m: 0, admitted: true},
		{name: "native sidecar: counted", api: &Release{ExcludeReserve: true}, s: 3000, m: 3000},
		{name: "without the API server: counted", s: 3000, m: 3000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newTestPlugin(t)
			if tc.api != nil && !tc.late {
				p.SetRelease("default", "w", *tc.api)
			}
			if _, _, err := p.CreateContainer(ctx, sandbox("s-w", "default", "w", nil), ctr("c-init", "s-w", "migrate", 3000, "")); err != nil {
				t.Fatal(err)
			}
			if tc.api != nil && tc.late {
				p.SetRelease("default", "w", *tc.api)
			}
			if c := p.Capacity(); c.S != tc.s || c.M != tc.m {
				t.Fatalf("S = %d, M = %d; want %d, %d", c.S, c.M, tc.s, tc.m)
			}
			_, _, err := p.CreateContainer(ctx, exclusivePod("s-db", "db", "2-3"), ctr("c-db", "s-db", "engine", 2000, ""))
			if (err == nil) != tc.admitted {
				t.Fatalf("exclusive 2 CPUs: %v, want admitted %v", err, tc.admitted)
			}
			// The init container still runs in the shared pool.
			if c, ok := containerOf(p, "c-init"); !ok || c.Class != Shared {
				t.Fatalf("init container not tracked as shared: %v", c)
			}
		})
	}
}

// TestRecreatedPodDoesNotInheritTheOldPodsRelease: default/db is released
// on the API server, deleted and re-created under the same name (a new
// UID). The kubelet creates the new pod's container before the informer
// delivers Delete(old) and Add(new, not released). With both UIDs known
// the old pod's switch is not the new pod's: its container is created
// pinned. Without one of them the plugin cannot tell the two apart and the
// container starts released, but the informer's Delete(old) + Add(new)
// then restores it (the switch it computes did not change, the container's
// pinning did).
func TestRecreatedPodDoesNotInheritTheOldPodsRelease(t *testing.T) {
	ctx := context.Background()
	limit := map[string]int64{"engine": 2000}
	for _, tc := range []struct {
		name                      string
		apiOldUID, apiNewUID      string // the UIDs the informer reports
		sandboxOldUID, sandboxUID string // the UIDs the runtime reports
		createdCPUs               string // the new container's cpuset at creation
		createdQuota              int64  // its quota at creation (-1: lifted; 0: not set)
		restore                   bool   // Delete(old) + Add(new) must restore it
	}{
		{name: "UIDs known: created pinned", apiOldUID: "uid-old", apiNewUID: "uid-new", sandboxOldUID: "uid-old", sandboxUID: "uid-new",
			createdCPUs: "2-3"},
		{name: "the informer reports no UID: created released, restored by Delete+Add", sandboxOldUID: "uid-old", sandboxUID: "uid-new",
			createdCPUs: "1-7", createdQuota: -1, restore: true},
		{name: "the runtime reports no UID: created released, restored by Delete+Add", apiOldUID: "uid-old", apiNewUID: "uid-new",
			createdCPUs: "1-7", createdQuota: -1, restore: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newTestPlugin(t)
			oldSB := func() *api.PodSandbox { return withUID(exclusivePod("s-old", "db", "2-3"), tc.sandboxOldUID) }
			if _, _, err := p.CreateContainer(ctx, oldSB(), ctr("c-old", "s-old", "engine", 2000, "")); err != nil {
				t.Fatal(err)
			}
			p.SetRelease("default", "db", Release{UID: tc.apiOldUID, Isolate: true, ExcludeReserve: true, LimitMilli: limit})
			if _, _, err := p.PushPending(func([]*api.ContainerUpdate) ([]*api.ContainerUpdate, error) { return nil, nil }); err != nil {
				t.Fatal(err)
			}
			_ = p.RemovePodSandbox(ctx, oldSB())
			drain(p)

			adj, _, err := p.CreateContainer(ctx, withUID(exclusivePod("s-new", "db", "2-3"), tc.sandboxUID), ctr("c-new", "s-new", "engine", 2000, ""))
			if err != nil {
				t.Fatal(err)
			}
			cpu := adj.GetLinux().GetResources().GetCpu()
			if cpu.GetCpus() != tc.createdCPUs || cpu.GetQuota().GetValue() != tc.createdQuota {
				t.Fatalf("new pod's container created on %s quota %d, want %s quota %d", cpu.GetCpus(), cpu.GetQuota().GetValue(), tc.createdCPUs, tc.createdQuota)
			}

			p.ForgetRelease("default", "db", tc.apiOldUID)                                                     // Delete(old)
			p.SetRelease("default", "db", Release{UID: tc.apiNewUID, ExcludeReserve: true, LimitMilli: limit}) // Add(new), not released
			if signalled := drain(p); signalled != tc.restore {
				t.Fatalf("Delete(old) + Add(new): pending signalled %v, want %v", signalled, tc.restore)
			}
			upd := p.PendingUpdates()
			if !tc.restore {
				if len(upd) != 0 {
					t.Fatalf("pending batch %v, want none", updateMap(upd))
				}
				return
			}
			if len(upd) != 1 || upd[0].GetContainerId() != "c-new" || cpusOf(upd[0]) != "2-3" {
				t.Fatalf("pending batch %v, want c-new back on 2-3", updateMap(upd))
			}
			if q, _ := quotaOf(upd[0]); q != 200000 {
				t.Fatalf("c-new's quota restored to %d, want 200000", q)
			}
		})
	}
}

// TestAnotherPodsSwitchIsIgnored: what the API server says of default/db
// under another UID (the old pod's, still in the informer's cache; or the
// new pod's, while the old pod's containers still run) neither releases a
// container, nor restores its quota from that pod's limit, nor takes its
// init containers out of the shared sum.
func TestAnotherPodsSwitchIsIgnored(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name    string
		uid     string // the UID of the switch; the sandbox's is uid-a
		lifted  bool
		initS   int64 // S with a 3-CPU init container "migrate"
		quota   int64 // quota restored when a lifted container is found at synchronize
		updates int   // updates at that synchronize
	}{
		{name: "the pod's own UID", uid: "uid-a", lifted: true, initS: 0, quota: 0},
		{name: "no UID on the switch: today's lookup by name", uid: "", lifted: true, initS: 0, quota: 0},
		{name: "another pod's UID: ignored", uid: "uid-b", lifted: false, initS: 3000, quota: -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newTestPlugin(t)
			r := Release{UID: tc.uid, Isolate: true, ExcludeReserve: true, LimitMilli: map[string]int64{"engine": 2000}, Init: map[string]bool{"migrate": true}}
			p.SetRelease("default", "db", r)
			if _, _, err := p.CreateContainer(ctx, withUID(exclusivePod("s-db", "db", "2-3"), "uid-a"), ctr("c-db", "s-db", "engine", 2000, "")); err != nil {
				t.Fatal(err)
			}
			if _, _, err := p.CreateContainer(ctx, withUID(exclusivePod("s-db", "db", "2-3"), "uid-a"), ctr("c-init", "s-db", "migrate", 3000, "")); err != nil {
				t.Fatal(err)
			}
			lifted := inLedger(p, func(l *Ledger) bool { c, _ := l.Container("c-db"); return l.Lifted(c) })
			if got := lifted; got != tc.lifted {
				t.Fatalf("lifted %v, want %v", got, tc.lifted)
			}
			if s := p.Capacity().S; s != tc.initS {
				t.Fatalf("S = %d, want %d", s, tc.initS)
			}

			// After a restart, the container is found lifted (-1) and the
			// switch is unset: its quota comes from the limit only if the
			// switch is its pod's.
			p = newTestPlugin(t)
			p.SetRelease("default", "db", Release{UID: tc.uid, ExcludeReserve: true, LimitMilli: map[string]int64{"engine": 2000}})
			running := ctr("c-db", "s-db", "engine", 0, "2-3")
			running.Linux.Resources.Cpu.Quota = api.Int64(-1)
			running.Linux.Resources.Cpu.Period = api.UInt64(100000)
			upd, err := p.Synchronize(ctx, []*api.PodSandbox{withUID(exclusivePod("s-db", "db", "2-3"), "uid-a")}, []*api.Container{running})
			if err != nil {
				t.Fatal(err)
			}
			want := 1
			if tc.quota == -1 {
				want = 0 // not known to be lifted by the plugin: left as it is
			}
			if len(upd) != want {
				t.Fatalf("updates at synchronize %v, want %d", updateMap(upd), want)
			}
			if want == 1 {
				if q, _ := quotaOf(upd[0]); q != 200000 {
					t.Fatalf("quota restored to %d, want 200000", q)
				}
			}
		})
	}
}

// TestForgetRelease: the informer's Delete drops the pod's switch; its
// containers fall back to their sandbox's annotations (and are corrected
// if that changes their pinning), its init containers count in the shared
// sum again. A Delete for another pod of the same name keeps the switch.
func TestForgetRelease(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name       string
		release    Release
		forgetUID  string
		s          int64             // S after the Delete
		signalled  bool              // a batch asked for
		want       map[string]string // the pending batch
		stillKnown bool              // the switch is still recorded
	}{
		{name: "init containers count again", release: Release{UID: "uid-a", ExcludeReserve: true, Init: map[string]bool{"migrate": true}},
			forgetUID: "uid-a", s: 3000, want: map[string]string{}},
		{name: "a released pod goes back to its sandbox's switch", release: Release{UID: "uid-a", Isolate: true, ExcludeReserve: true},
			forgetUID: "uid-a", s: 3000, signalled: true, want: map[string]string{"c-db": "2-3"}},
		{name: "a Delete without UID drops it", release: Release{UID: "uid-a", Isolate: true, ExcludeReserve: true},
			s: 3000, signalled: true, want: map[string]string{"c-db": "2-3"}},
		{name: "another pod's Delete keeps it", release: Release{UID: "uid-a", Isolate: true, ExcludeReserve: true, Init: map[string]bool{"migrate": true}},
			forgetUID: "uid-old", s: 0, want: map[string]string{}, stillKnown: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newTestPlugin(t)
			p.SetRelease("default", "db", tc.release)
			sb := func() *api.PodSandbox { return withUID(exclusivePod("s-db", "db", "2-3"), "uid-a") }
			if _, _, err := p.CreateContainer(ctx, sb(), ctr("c-db", "s-db", "engine", 2000, "")); err != nil {
				t.Fatal(err)
			}
			if _, _, err := p.CreateContainer(ctx, sb(), ctr("c-init", "s-db", "migrate", 3000, "")); err != nil {
				t.Fatal(err)
			}
			drain(p)
			p.ForgetRelease("default", "db", tc.forgetUID)
			if s := p.Capacity().S; s != tc.s {
				t.Fatalf("S = %d after the Delete, want %d", s, tc.s)
			}
			if signalled := drain(p); signalled != tc.signalled {
				t.Fatalf("pending signalled %v, want %v", signalled, tc.signalled)
			}
			if got := updateMap(p.PendingUpdates()); !equalMaps(got, tc.want) {
				t.Fatalf("pending batch %v, want %v", got, tc.want)
			}
			if known := inLedger(p, func(l *Ledger) bool { _, ok := l.release["default/db"]; return ok }); known != tc.stillKnown {
				t.Fatalf("switch still recorded %v, want %v", known, tc.stillKnown)
			}
		})
	}
}

// TestNoQuotaImposedWhereTheKubeletSetsNone: on a node whose kubelet runs
// with cpuCFSQuota: false a container with a CPU limit has no CFS quota.
// Released and then unset, it gets no quota back (the pod spec's limit
// stands only for a quota found lifted, -1, at synchronize).
func TestNoQuotaImposedWhereTheKubeletSetsNone(t *testing.T) {
	ctx := context.Background()
	limit := map[string]int64{"engine": 2000}
	released := Release{Isolate: true, ExcludeReserve: true, LimitMilli: limit}
	unset := Release{ExcludeReserve: true, LimitMilli: limit}
	for _, tc := range []struct {
		name string
		// found: the container exists at synchronize on cpus 1-7 while its
		// pod is released, with quota foundQuota (0: none). Otherwise it is
		// created without a quota, released (createdReleased) or released
		// afterwards.
		found           bool
		foundQuota      int64
		createdReleased bool
		restored        int64 // the quota the unset restores (0: none set)
	}{
		{name: "created released without a quota", createdReleased: true},
		{name: "created pinned without a quota, then released"},
		{name: "found released without a quota", found: true},
		{name: "found released with the plugin's -1: the limit stands for the original", found: true, foundQuota: -1, restored: 200000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newTestPlugin(t)
			sb := exclusivePod("s-db", "db", "2-3")
			switch {
			case tc.found:
				p.SetRelease("default", "db", released)
				running := ctr("c-db", "s-db", "engine", 0, "1-7")
				if tc.foundQuota != 0 {
					running.Linux.Resources.Cpu.Quota = api.Int64(tc.foundQuota)
					running.Linux.Resources.Cpu.Period = api.UInt64(100000)
				}
				if upd, err := p.Synchronize(ctx, []*api.PodSandbox{sb}, []*api.Container{running}); err != nil || len(upd) != 0 {
					t.Fatalf("synchronize of a released container: %v %v", updateMap(upd), err)
				}
			case tc.createdReleased:
				p.SetRelease("default", "db", released)
				if _, _, err := p.CreateContainer(ctx, sb, ctr("c-db", "s-db", "engine", 0, "")); err != nil {
					t.Fatal(err)
				}
			default:
				p.SetRelease("default", "db", unset)
				if _, _, err := p.CreateContainer(ctx, sb, ctr("c-db", "s-db", "engine", 0, "")); err != nil {
					t.Fatal(err)
				}
				p.SetRelease("default", "db", released)
				if upd := p.PendingUpdates(); len(upd) != 1 || cpusOf(upd[0]) != "1-7" {
					t.Fatalf("release: %v, want c-db on 1-7", updateMap(upd))
				}
			}
			p.SetRelease("default", "db", unset)
			upd := p.PendingUpdates()
			if len(upd) != 1 || cpusOf(upd[0]) != "2-3" {
				t.Fatalf("unset: %v, want c-db back on 2-3", updateMap(upd))
			}
			if q, set := quotaOf(upd[0]); q != tc.restored || set != (tc.restored != 0) {
				t.Fatalf("quota restored %d (set %v), want %d", q, set, tc.restored)
			}
		})
	}
}

// containerd plays containerd v2.4.2's handling of an unsolicited
// UpdateContainers (internal/nri/domain.go updateContainers and
// internal/cri/nri UpdateContainer): a container it no longer has is
// skipped; a failed update is reported only when it does not ignore
// failures, with an error for the whole call. overTTRPC: as the plugin gets
// it through the NRI stub, where a call that returns an error loses its
// reply (the failed list). applied records the cpus each container got.
type containerd struct {
	failing, gone map[string]bool
	overTTRPC     bool
	applied       map[string]string
	calls         int
}

func (r *containerd) send(batch []*api.ContainerUpdate) ([]*api.ContainerUpdate, error) {
	r.calls++
	var failed []*api.ContainerUpdate
	for _, u := range batch {
		switch id := u.GetContainerId(); {
		case r.gone[id]:
		case r.failing[id]:
			if !u.IgnoreFailure {
				failed = append(failed, u)
			}
		default:
			r.applied[id] = cpusOf(u)
		}
	}
	if len(failed) == 0 {
		return nil, nil
	}
	if r.overTTRPC {
		return nil, errors.New("NRI update of some containers failed")
	}
	return failed, errors.New("NRI update of some containers failed")
}

// TestOnlyUnsolicitedUpdatesReportFailures: the updates the plugin's own
// goroutine sends ask the runtime to report a failure (containerd reports
// none for an update that ignores failures); a handler's reply ignores
// them, so a container that exited meanwhile does not fail the
// CreateContainer (or stop) that moves it.
func TestOnlyUnsolicitedUpdatesReportFailures(t *testing.T) {
	ctx := context.Background()
	p := newTestPlugin(t)
	if _, err := p.Synchronize(ctx, []*api.PodSandbox{sandbox("s-web", "default", "web", nil)}, []*api.Container{ctr("c-web", "s-web", "app", 500, "")}); err != nil {
		t.Fatal(err)
	}
	_, created, err := p.CreateContainer(ctx, exclusivePod("s-a", "a", "4-5"), ctr("c-a", "s-a", "engine", 2000, ""))
	if err != nil {
		t.Fatal(err)
	}
	stopped, err := p.StopContainer(ctx, exclusivePod("s-a", "a", "4-5"), ctr("c-a", "s-a", "engine", 2000, ""))
	if err != nil {
		t.Fatal(err)
	}
	// Synchronize's reply: a container found off its target.
	synced, err := p.Synchronize(ctx, []*api.PodSandbox{sandbox("s-web", "default", "web", nil)}, []*api.Container{ctr("c-web", "s-web", "app", 500, "0-7")})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := p.CreateContainer(ctx, exclusivePod("s-b", "b", "2-3"), ctr("c-b", "s-b", "engine", 2000, "")); err != nil {
		t.Fatal(err)
	}
	_ = p.RemovePodSandbox(ctx, exclusivePod("s-b", "b", "2-3"))
	var pushed []*api.ContainerUpdate
	if _, _, err := p.PushPending(func(b []*api.ContainerUpdate) ([]*api.ContainerUpdate, error) { pushed = b; return nil, nil }); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		batch  []*api.ContainerUpdate
		ignore bool
	}{
		{"CreateContainer reply", created, true},
		{"StopContainer reply", stopped, true},
		{"Synchronize reply", synced, true},
		{"PushPending batch", pushed, false},
	} {
		if len(tc.batch) == 0 {
			t.Fatalf("%s: no update", tc.name)
		}
		for _, u := range tc.batch {
			if u.IgnoreFailure != tc.ignore {
				t.Fatalf("%s: update of %s IgnoreFailure %v, want %v", tc.name, u.GetContainerId(), u.IgnoreFailure, tc.ignore)
			}
		}
	}
}

// TestFailedUnsolicitedUpdateWithContainerd: against containerd's handling
// of an unsolicited batch, a failed update is seen and sent again once the
// runtime takes it, whether containerd's failed list reaches the plugin or
// only the call's error does (then the whole batch is sent again); a
// container containerd no longer has fails nothing.
func TestFailedUnsolicitedUpdateWithContainerd(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name      string
		failing   string // fails the first batch
		gone      string // removed from the runtime, not yet from the ledger
		overTTRPC bool
		failedN   int
		again     map[string]string // the second batch
	}{
		{name: "the failed list: the failed container is sent again", failing: "c-web", failedN: 1, again: map[string]string{"c-web": "1-7"}},
		{name: "over ttrpc, the call's error only: the whole batch is sent again", failing: "c-web", overTTRPC: true, failedN: 2,
			again: map[string]string{"c-web": "1-7", "c-api": "1-7"}},
		{name: "a container the runtime no longer has fails nothing", gone: "c-web", again: map[string]string{}},
		{name: "no failure: nothing sent again", again: map[string]string{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newTestPlugin(t)
			for _, name := range []string{"web", "api"} {
				if _, _, err := p.CreateContainer(ctx, sandbox("s-"+name, "default", name, nil), ctr("c-"+name, "s-"+name, "app", 500, "")); err != nil {
					t.Fatal(err)
				}
			}
			if _, _, err := p.CreateContainer(ctx, exclusivePod("s-a", "a", "4-5"), ctr("c-a", "s-a", "engine", 2000, "")); err != nil {
				t.Fatal(err)
			}
			_ = p.RemovePodSandbox(ctx, exclusivePod("s-a", "a", "4-5"))
			drain(p)
			rt := &containerd{failing: map[string]bool{tc.failing: true}, gone: map[string]bool{tc.gone: true}, overTTRPC: tc.overTTRPC, applied: map[string]string{}}
			sent, failedN, _ := p.PushPending(rt.send)
			if sent != 2 || failedN != tc.failedN {
				t.Fatalf("sent %d, failed %d; want 2, %d", sent, failedN, tc.failedN)
			}
			if signalled := drain(p); signalled != (len(tc.again) > 0) {
				t.Fatalf("next batch signalled %v, want %v", signalled, len(tc.again) > 0)
			}
			rt.failing = map[string]bool{}
			rt.applied = map[string]string{}
			if _, failedN, err := p.PushPending(rt.send); failedN != 0 || err != nil {
				t.Fatalf("second batch: %d failed, %v", failedN, err)
			}
			if !equalMaps(rt.applied, tc.again) {
				t.Fatalf("second batch applied %v, want %v", rt.applied, tc.again)
			}
		})
	}
}

// TestUpdateThatKeepsFailingBacksOff: a container whose unsolicited update
// fails every time is sent MaxFailures times, logged once at Warn, and then
// left to the drift check: one more update each time the drift check finds
// its cpuset wrong (none when it is right), no second warning. One update
// that goes through resets its count.
func TestUpdateThatKeepsFailingBacksOff(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name      string
		overTTRPC bool
	}{{name: "failed list"}, {name: "over ttrpc, the call's error only", overTTRPC: true}} {
		t.Run(tc.name, func(t *testing.T) {
			p := newTestPlugin(t)
			logs := captureLog(p)
			web := ctr("c-web", "s-web", "app", 500, "")
			web.Linux.CgroupsPath = "/kubepods/web"
			if _, _, err := p.CreateContainer(ctx, sandbox("s-web", "default", "web", nil), web); err != nil {
				t.Fatal(err)
			}
			if _, _, err := p.CreateContainer(ctx, exclusivePod("s-a", "a", "4-5"), ctr("c-a", "s-a", "engine", 2000, "")); err != nil {
				t.Fatal(err)
			}
			_ = p.RemovePodSandbox(ctx, exclusivePod("s-a", "a", "4-5")) // c-web: grow to 1-7
			rt := &containerd{failing: map[string]bool{"c-web": true}, overTTRPC: tc.overTTRPC, applied: map[string]string{}}
			// What the plugin's goroutine does: push while signalled.
			pushAll := func() int {
				before := rt.calls
				for i := 0; i < 3*MaxFailures && drain(p); i++ {
					_, _, _ = p.PushPending(rt.send)
				}
				return rt.calls - before
			}
			warnings := func() int { return strings.Count(logs.String(), "Container update keeps failing") }
			if n := pushAll(); n != MaxFailures {
				t.Fatalf("batches sent for an always failing container: %d, want %d", n, MaxFailures)
			}
			if w := warnings(); w != 1 {
				t.Fatalf("%d warnings, want 1:\n%s", w, logs)
			}
			if upd := p.PendingUpdates(); len(upd) != 0 {
				t.Fatalf("still pending after giving up: %v", updateMap(upd))
			}
			wrong := func(*Container) (cpuset.CPUSet, error) { return cpuset.New(1, 6, 7), nil }
			right := func(*Container) (cpuset.CPUSet, error) { return cpuset.New(1, 2, 3, 4, 5, 6, 7), nil }
			if n := p.CheckDrift(right); n != 0 || pushAll() != 0 {
				t.Fatalf("drift check with the cpuset right: %d drifted, or a batch sent", n)
			}
			for round := 0; round < 2; round++ {
				if n := p.CheckDrift(wrong); n != 1 {
					t.Fatalf("drift check with the cpuset wrong: %d drifted, want 1", n)
				}
				if n := pushAll(); n != 1 {
					t.Fatalf("batches after the drift check found it wrong: %d, want 1", n)
				}
			}
			if w := warnings(); w != 1 {
				t.Fatalf("%d warnings after the drift check's retries, want 1", w)
			}
			// It goes through at last: its count starts again.
			rt.failing = map[string]bool{}
			p.CheckDrift(wrong)
			if n := pushAll(); n != 1 || rt.applied["c-web"] != "1-7" {
				t.Fatalf("after the runtime recovered: %d batches, applied %v", n, rt.applied)
			}
			if c, _ := containerOf(p, "c-web"); c.failures != 0 {
				t.Fatalf("failures %d after a success, want 0", c.failures)
			}
		})
	}
}

// TestConvergesWhileHandlersRaceFailingBatches: handlers, release
// switches and drift checks run while the plugin's goroutine pushes
// batches of which half fail; once they stop, a few batches leave nothing
// pending (run with -race).
func TestConvergesWhileHandlersRaceFailingBatches(t *testing.T) {
	ctx := context.Background()
	p := newTestPlugin(t)
	for i := 0; i < 20; i++ {
		sb := sandbox(fmt.Sprintf("s-w%d", i), "default", fmt.Sprintf("w%d", i), nil)
		if _, _, err := p.CreateContainer(ctx, sb, ctr(fmt.Sprintf("c-w%d", i), sb.Id, "app", 100, "")); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			_, _, _ = p.PushPending(func(b []*api.ContainerUpdate) ([]*api.ContainerUpdate, error) {
				time.Sleep(time.Microsecond)
				return b[:len(b)/2], nil
			})
		}
	}()
	for g := 0; g < 3; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 300; i++ {
				sb := exclusivePod(fmt.Sprintf("s-x%d", g), fmt.Sprintf("x%d", g), fmt.Sprintf("%d", 2+2*g))
				_, _, _ = p.CreateContainer(ctx, sb, ctr(fmt.Sprintf("c-x%d-%d", g, i), sb.Id, "engine", 1000, ""))
				p.SetRelease("default", fmt.Sprintf("x%d", g), Release{Isolate: i%2 == 0, ExcludeReserve: true})
				p.CheckDrift(func(*Container) (cpuset.CPUSet, error) { return cpuset.New(1), nil })
				_ = p.RemovePodSandbox(ctx, sb)
			}
		}(g)
	}
	time.Sleep(300 * time.Millisecond)
	close(stop)
	wg.Wait()
	for i := 0; i < 5; i++ {
		_, _, _ = p.PushPending(func([]*api.ContainerUpdate) ([]*api.ContainerUpdate, error) { return nil, nil })
	}
	if upd := p.PendingUpdates(); len(upd) != 0 {
		t.Fatalf("not converged: %d updates pending", len(upd))
	}
}

// TestRestartInItsSandboxIsNotGrowth: an operator lowers the node's
// exclusive limit below what a running exclusive pod holds. The pod keeps
// its CPUs, and when its container exits the kubelet restarts it in the
// same sandbox with the same alloc-status: taking back what its pod was
// granted is not growth, so the restart is admitted (it used to be refused,
// leaving the pod crash-looping), also after a compatible topology grow.
// New exclusive CPUs stay refused, and a new sandbox is a new grant.
func TestRestartInItsSandboxIsNotGrowth(t *testing.T) {
	ctx := context.Background()
	p := newTestPlugin(t)
	db := exclusivePod("s-db", "db", "2-5")
	engine := func(id string) *api.Container { return ctr(id, "s-db", "engine", 4000, "") }
	if _, _, err := p.CreateContainer(ctx, db, engine("c-db1")); err != nil {
		t.Fatal(err)
	}
	if err := p.SetNodePolicy(`{"maxExclusiveRatio": 0.3}`); err != nil { // P 7: limit 2
		t.Fatal(err)
	}
	if _, err := p.StopContainer(ctx, db, engine("c-db1")); err != nil {
		t.Fatal(err)
	}
	adjust, _, err := p.CreateContainer(ctx, db, engine("c-db2"))
	if err != nil {
		t.Fatalf("restart in its sandbox refused: %v", err)
	}
	if got := adjust.GetLinux().GetResources().GetCpu().GetCpus(); got != "2-5" {
		t.Fatalf("restarted container pinned to %q, want 2-5", got)
	}
	if _, _, err := p.CreateContainer(ctx, exclusivePod("s-x", "x", "6"), ctr("c-x", "s-x", "engine", 1000, "")); err == nil ||
		!strings.Contains(err.Error(), "exclusive limit 2 reached (needs 1, holds 4)") {
		t.Fatalf("new exclusive CPUs over the lowered limit: %v", err)
	}
	// A compatible grow rebuilds the ledger: the grant of the stopped
	// container survives it.
	if _, err := p.StopContainer(ctx, db, engine("c-db2")); err != nil {
		t.Fatal(err)
	}
	src := corepin.Topology{Version: 1, Reserved: corepin.NewCPUList(cpuset.New(0))}
	for i := 0; i < 8; i++ {
		src.CPUs = append(src.CPUs, corepin.CPUInfo{ID: i, Core: i})
	}
	if err := p.SetTopology(src); err != nil {
		t.Fatal(err)
	}
	if _, _, err := p.CreateContainer(ctx, db, engine("c-db3")); err != nil {
		t.Fatalf("restart after a topology grow refused: %v", err)
	}
	// The pod's sandbox goes; a new sandbox of the pod is a new placement.
	if _, err := p.StopContainer(ctx, db, engine("c-db3")); err != nil {
		t.Fatal(err)
	}
	if err := p.RemovePodSandbox(ctx, db); err != nil {
		t.Fatal(err)
	}
	if _, _, err := p.CreateContainer(ctx, exclusivePod("s-db-2", "db", "2-5"), ctr("c-db4", "s-db-2", "engine", 4000, "")); err == nil {
		t.Fatal("a new sandbox was admitted over the lowered limit")
	}
}

// TestStoppedGrantStillCounts: while an exclusive container is stopped,
// the CPUs its pod was granted count in E (the extender counts them, and
// the kubelet will restart it on them): a new pod cannot take the room,
// so the restart never leaves the node over a limit nobody lowered.
func TestStoppedGrantStillCounts(t *testing.T) {
	ctx := context.Background()
	p := newTestPlugin(t) // P 7, limit 4
	db := exclusivePod("s-db", "db", "2-5")
	if _, _, err := p.CreateContainer(ctx, db, ctr("c-db1", "s-db", "engine", 4000, "")); err != nil {
		t.Fatal(err)
	}
	if _, err := p.StopContainer(ctx, db, ctr("c-db1", "s-db", "engine", 4000, "")); err != nil {
		t.Fatal(err)
	}
	if got := p.SharedPool().String(); got != "1-7" {
		t.Fatalf("shared pool %s while db is stopped, want 1-7 (contract section 5: only existing containers hold CPUs)", got)
	}
	if _, _, err := p.CreateContainer(ctx, exclusivePod("s-x", "x", "6-7"), ctr("c-x", "s-x", "engine", 2000, "")); err == nil ||
		!strings.Contains(err.Error(), "exclusive limit 4 reached (needs 2, holds 4)") {
		t.Fatalf("x admitted into the room of a stopped container: %v", err)
	}
	if _, _, err := p.CreateContainer(ctx, db, ctr("c-db2", "s-db", "engine", 4000, "")); err != nil {
		t.Fatalf("db restart: %v", err)
	}
	if c := p.Capacity(); c.E > c.ExclusiveLimit {
		t.Fatalf("E %d over the limit %d", c.E, c.ExclusiveLimit)
	}
}

// TestGrantsSurviveSynchronize: containerd lists no exited container, so
// what a sandbox was granted is rebuilt at synchronize from its
// alloc-status. A container stopped when containerd restarts (the plugin
// reconnects) or when the plugin restarts is then restarted in its sandbox
// on a node over an exclusive limit lowered meanwhile, and admitted; while
// it is stopped its CPUs count in E for everybody else.
func TestGrantsSurviveSynchronize(t *testing.T) {
	ctx := context.Background()
	db := exclusivePod("s-db", "db", "2-5")
	engine := func(id string) *api.Container { return ctr(id, "s-db", "engine", 4000, "") }
	lower := func(p *Plugin) {
		t.Helper()
		if err := p.SetNodePolicy(`{"maxExclusiveRatio": 0.3}`); err != nil { // P 7: limit 2
			t.Fatal(err)
		}
	}
	for _, restart := range []string{"containerd", "plugin"} {
		t.Run(restart, func(t *testing.T) {
			p := newTestPlugin(t)
			if _, _, err := p.CreateContainer(ctx, db, engine("c-db1")); err != nil {
				t.Fatal(err)
			}
			if _, err := p.StopContainer(ctx, db, engine("c-db1")); err != nil {
				t.Fatal(err)
			}
			if restart == "plugin" {
				p = newTestPlugin(t)
			}
			lower(p)
			if _, err := p.Synchronize(ctx, []*api.PodSandbox{db}, nil); err != nil {
				t.Fatal(err)
			}
			if got := p.SharedPool().String(); got != "1-7" {
				t.Fatalf("shared pool %s while db is stopped, want 1-7", got)
			}
			if _, _, err := p.CreateContainer(ctx, exclusivePod("s-x", "x", "6"), ctr("c-x", "s-x", "engine", 1000, "")); err == nil ||
				!strings.Contains(err.Error(), "exclusive limit 2 reached (needs 1, holds 4)") {
				t.Fatalf("x while db is stopped: %v, want refused: db's CPUs count", err)
			}
			adjust, _, err := p.CreateContainer(ctx, db, engine("c-db2"))
			if err != nil {
				t.Fatalf("restart in its sandbox after the %s restarted refused: %v", restart, err)
			}
			if got := adjust.GetLinux().GetResources().GetCpu().GetCpus(); got != "2-5" {
				t.Fatalf("restarted container pinned to %q, want 2-5", got)
			}
		})
	}
}

// TestGrantedAtSynchronizeOnlyByAValidAllocStatus: a sandbox is granted
// only what its valid alloc-status for this node gives the containers it
// names, init containers that run to completion left out (they are not
// restarted once the pod runs), as at admission.
func TestGrantedAtSynchronizeOnlyByAValidAllocStatus(t *testing.T) {
	status := func(node string) map[string]string {
		return map[string]string{corepin.AnnotationCPUMode: "exclusive",
			corepin.AnnotationAllocStatus: `{"node":"` + node + `","cpus":"2-5","containers":{"engine":"2-3","migrate":"4-5"},"mems":"0"}`}
	}
	shared := status("node-a")
	shared[corepin.AnnotationCPUMode] = "shared"
	for _, tc := range []struct {
		name        string
		annotations map[string]string
		want        string
	}{
		{"valid", status("node-a"), "2-3"},
		{"another node's", status("node-b"), ""},
		{"malformed", map[string]string{corepin.AnnotationCPUMode: "exclusive", corepin.AnnotationAllocStatus: `{"node":"node-a","cpus":"2-x"}`}, ""},
		{"shared pod", shared, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newTestPlugin(t)
			p.SetRelease("default", "db", Release{Init: map[string]bool{"migrate": true}})
			if _, err := p.Synchronize(context.Background(), []*api.PodSandbox{sandbox("s-db", "default", "db", tc.annotations)}, nil); err != nil {
				t.Fatal(err)
			}
			if got := inLedger(p, func(l *Ledger) string { return l.granted["s-db"].cpus.String() }); got != tc.want {
				t.Fatalf("granted %q, want %q", got, tc.want)
			}
		})
	}
}

// TestUnparsedPodKeepsItsCPUsAtSynchronize: after an upgrade that refuses
// a value the old version took (max-per-node "01"), a pod pinned by the old
// version keeps its CPUs out of the shared pool at synchronize, as the
// extender keeps them held: those of its valid alloc-status (tracked, its
// other containers shared), else those its container is found on when they
// are outside the CPUs the pooled containers are on. It is reported, naming
// the annotation.
func TestUnparsedPodKeepsItsCPUsAtSynchronize(t *testing.T) {
	ctx := context.Background()
	db := func(allocStatus string) *api.PodSandbox {
		return sandbox("s-db", "default", "db", map[string]string{corepin.AnnotationCPUMode: "exclusive", corepin.AnnotationApp: "db",
			corepin.AnnotationMaxPerNode: "01", corepin.AnnotationAllocStatus: allocStatus})
	}
	valid := `{"node":"node-a","cpus":"2-3","containers":{"engine":"2-3"},"mems":"0"}`
	web := sandbox("s-web", "default", "web", nil)
	for _, tc := range []struct {
		name       string
		pods       []*api.PodSandbox
		containers []*api.Container
		pool       string
		e          int
		quarantine string
		tracked    int
	}{
		{
			name: "valid alloc-status: its CPUs held, its sidecar shared",
			pods: []*api.PodSandbox{db(valid), web},
			containers: []*api.Container{ctr("c-engine", "s-db", "engine", 2000, "2-3"), ctr("c-proxy", "s-db", "proxy", 500, "1,4-7"),
				ctr("c-web", "s-web", "app", 500, "1,4-7")},
			pool: "1,4-7", e: 2, tracked: 3,
		},
		{
			name:       "alloc-status that does not parse either: the CPUs it runs on",
			pods:       []*api.PodSandbox{db(`{"node":"node-a","cpus":"2-3","containers":{"engine":"2-3"},"mems":"node0"}`), web},
			containers: []*api.Container{ctr("c-engine", "s-db", "engine", 2000, "2-3"), ctr("c-web", "s-web", "app", 500, "1,4-7")},
			pool:       "1,4-7", quarantine: "2-3", tracked: 1,
		},
		{
			name:       "found on the pool: claims nothing",
			pods:       []*api.PodSandbox{db(`{"node":"node-a"`), web},
			containers: []*api.Container{ctr("c-engine", "s-db", "engine", 2000, "1-7"), ctr("c-web", "s-web", "app", 500, "1-7")},
			pool:       "1-7", tracked: 1,
		},
		{
			name:       "no pooled container to tell by: claims nothing",
			pods:       []*api.PodSandbox{db(`{"node":"node-a"`)},
			containers: []*api.Container{ctr("c-engine", "s-db", "engine", 2000, "2-3")},
			pool:       "1-7",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newTestPlugin(t)
			events := record.NewFakeRecorder(10)
			p.SetEventRecorder(events)
			logs := captureLog(p)
			upd, err := p.Synchronize(ctx, tc.pods, tc.containers)
			if err != nil {
				t.Fatal(err)
			}
			if got := p.SharedPool().String(); got != tc.pool {
				t.Fatalf("shared pool %s, want %s (updates %v)", got, tc.pool, updateMap(upd))
			}
			if e, q := p.Capacity().E, inLedger(p, (*Ledger).Quarantined).String(); e != tc.e || q != tc.quarantine {
				t.Fatalf("E = %d, quarantined %q; want %d, %q", e, q, tc.e, tc.quarantine)
			}
			if got := len(inLedger(p, (*Ledger).Containers)); got != tc.tracked {
				t.Fatalf("%d containers tracked, want %d", got, tc.tracked)
			}
			if got := updateMap(upd)["c-web"]; got != "" && got != tc.pool {
				t.Fatalf("web moved to %s", got)
			}
			if ev := nextEvent(t, events); !strings.HasPrefix(ev, "Warning CorepinConflict") || !strings.Contains(ev, `corepin.io/max-per-node="01"`) {
				t.Fatalf("event %q, want a CorepinConflict naming the annotation", ev)
			}
			if log := logs.String(); !strings.Contains(log, "pod=default/db") || !strings.Contains(log, "corepin.io/max-per-node") {
				t.Fatalf("log names neither the pod nor the annotation:\n%s", log)
			}
			if got := testutil.ToFloat64(p.metrics.conflicts); got < 1 {
				t.Fatalf("sync conflicts %v, want counted", got)
			}
			if tc.e == 0 && tc.quarantine == "" {
				return
			}
			if _, _, err := p.CreateContainer(ctx, exclusivePod("s-x", "x", "3"), ctr("c-x", "s-x", "engine", 1000, "")); err == nil {
				t.Fatal("another pod was given db's CPU 3")
			}
			if tc.e == 0 {
				return
			}
			// Stopped, its CPUs go back to the pool; a new container of
			// the pod is a request, refused until the annotation is fixed.
			if _, err := p.StopContainer(ctx, tc.pods[0], tc.containers[0]); err != nil {
				t.Fatal(err)
			}
			if got := p.SharedPool().String(); got != "1-7" {
				t.Fatalf("shared pool %s after db's engine stopped, want 1-7", got)
			}
			if _, _, err := p.CreateContainer(ctx, tc.pods[0], ctr("c-engine-2", "s-db", "engine", 2000, "")); err == nil ||
				!strings.Contains(err.Error(), `corepin.io/max-per-node="01"`) {
				t.Fatalf("engine restarted with annotations that do not parse: %v, want refused", err)
			}
		})
	}
}
