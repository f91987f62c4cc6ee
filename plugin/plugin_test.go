package plugin

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/containerd/nri/pkg/api"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/cpuset"

	corepin "github.com/corepin/corepin/api"
	"github.com/corepin/corepin/policy"
)

// newTestPlugin is a node of 8 CPUs without SMT, CPU 0 reserved (P = 7,
// exclusive limit floor(2/3*7) = 4).
func newTestPlugin(t *testing.T) *Plugin {
	t.Helper()
	src := corepin.Topology{Version: 1, Reserved: corepin.NewCPUList(cpuset.New(0))}
	for i := 0; i < 8; i++ {
		src.CPUs = append(src.CPUs, corepin.CPUInfo{ID: i, Core: i})
	}
	topo, err := policy.NewTopology(src)
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{NodeName: "node-a", SystemNamespaces: []string{"kube-system"}, Limits: corepin.DefaultLimits()}
	return New(NewLedger(cfg, topo), slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
}

// inLedger runs f on the plugin's ledger under the plugin's lock.
func inLedger[T any](p *Plugin, f func(*Ledger) T) T {
	p.mu.Lock()
	defer p.mu.Unlock()
	return f(p.ledger)
}

// containerOf is a copy of a tracked container, taken under the lock.
func containerOf(p *Plugin, id string) (Container, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c, ok := p.ledger.Container(id); ok {
		return *c, true
	}
	return Container{}, false
}

// goneWay is one way a container goes; gone returns the handler's updates,
// pending says the plugin's own goroutine sends them instead.
type goneWay struct {
	name    string
	gone    func(p *Plugin) []*api.ContainerUpdate
	pending bool
}

// goneWays are the ways container c of sandbox sb goes: stopped, removed
// without a stop, its sandbox stopped or removed.
func goneWays(ctx context.Context, sb *api.PodSandbox, c *api.Container) []goneWay {
	return []goneWay{
		{"StopContainer", func(p *Plugin) []*api.ContainerUpdate { upd, _ := p.StopContainer(ctx, sb, c); return upd }, false},
		{"RemoveContainer without a stop", func(p *Plugin) []*api.ContainerUpdate { _ = p.RemoveContainer(ctx, sb, c); return nil }, true},
		{"StopPodSandbox", func(p *Plugin) []*api.ContainerUpdate { _ = p.StopPodSandbox(ctx, sb); return nil }, true},
		{"RemovePodSandbox", func(p *Plugin) []*api.ContainerUpdate { _ = p.RemovePodSandbox(ctx, sb); return nil }, true},
	}
}

func sandbox(id, ns, name string, annotations map[string]string) *api.PodSandbox {
	return &api.PodSandbox{Id: id, Namespace: ns, Name: name, Annotations: annotations}
}

func ctr(id, sandboxID, name string, milli int64, cpus string) *api.Container {
	c := &api.Container{Id: id, PodSandboxId: sandboxID, Name: name, State: api.ContainerState_CONTAINER_RUNNING,
		Linux: &api.LinuxContainer{Resources: &api.LinuxResources{Cpu: &api.LinuxCPU{Cpus: cpus}}}}
	if milli > 0 {
		c.Linux.Resources.Cpu.Quota = api.Int64(milli * 100)
		c.Linux.Resources.Cpu.Period = api.UInt64(100000)
	}
	return c
}

func exclusivePod(id, name, cpus string) *api.PodSandbox {
	return sandbox(id, "default", name, map[string]string{
		corepin.AnnotationCPUMode:     "exclusive",
		corepin.AnnotationAllocStatus: `{"node":"node-a","cpus":"` + cpus + `","containers":{"engine":"` + cpus + `"},"mems":"0"}`,
	})
}

func cpusOf(u *api.ContainerUpdate) string { return u.GetLinux().GetResources().GetCpu().GetCpus() }

func TestCreateExclusiveShrinksSharedFirst(t *testing.T) {
	p := newTestPlugin(t)
	ctx := context.Background()
	web := sandbox("s-web", "default", "web", nil)
	adj, upd, err := p.CreateContainer(ctx, web, ctr("c-web", "s-web", "app", 500, ""))
	if err != nil || len(upd) != 0 {
		t.Fatalf("shared create: %v, %d updates", err, len(upd))
	}
	if got := adj.GetLinux().GetResources().GetCpu().GetCpus(); got != "1-7" {
		t.Fatalf("shared container cpus %q, want the pool 1-7", got)
	}
	sys := sandbox("s-dns", "kube-system", "dns", nil)
	adj, _, _ = p.CreateContainer(ctx, sys, ctr("c-dns", "s-dns", "dns", 100, ""))
	if got := adj.GetLinux().GetResources().GetCpu().GetCpus(); got != "0-7" {
		t.Fatalf("system container cpus %q, want pool + reserved 0-7", got)
	}

	db := exclusivePod("s-db", "db", "2-3")
	adj, upd, err = p.CreateContainer(ctx, db, ctr("c-db", "s-db", "engine", 2000, ""))
	if err != nil {
		t.Fatal(err)
	}
	if got := adj.GetLinux().GetResources().GetCpu(); got.GetCpus() != "2-3" || got.GetMems() != "0" {
		t.Fatalf("exclusive adjustment %v", got)
	}
	want := map[string]string{"c-web": "1,4-7", "c-dns": "0-1,4-7"}
	if len(upd) != len(want) {
		t.Fatalf("updates %v, want %v", upd, want)
	}
	for _, u := range upd {
		if want[u.GetContainerId()] != cpusOf(u) {
			t.Fatalf("update %s -> %s, want %s", u.GetContainerId(), cpusOf(u), want[u.GetContainerId()])
		}
	}
	// A sidecar of the exclusive pod runs in the (shrunk) shared pool.
	adj, _, err = p.CreateContainer(ctx, db, ctr("c-side", "s-db", "exporter", 100, ""))
	if err != nil || adj.GetLinux().GetResources().GetCpu().GetCpus() != "1,4-7" {
		t.Fatalf("sidecar: %v %v", adj, err)
	}

	upd, err = p.StopContainer(ctx, db, ctr("c-db", "s-db", "engine", 2000, "2-3"))
	if err != nil {
		t.Fatal(err)
	}
	grown := map[string]string{"c-web": "1-7", "c-dns": "0-7", "c-side": "1-7"}
	for _, u := range upd {
		if grown[u.GetContainerId()] != cpusOf(u) {
			t.Fatalf("after stop, %s -> %s: pool not grown back to %s", u.GetContainerId(), cpusOf(u), grown[u.GetContainerId()])
		}
	}
	if len(upd) != 3 || p.SharedPool().String() != "1-7" {
		t.Fatalf("after stop: %d updates, pool %s", len(upd), p.SharedPool())
	}
}

func TestRefusals(t *testing.T) {
	p := newTestPlugin(t)
	ctx := context.Background()
	if _, _, err := p.CreateContainer(ctx, exclusivePod("s1", "db-1", "2-3"), ctr("c1", "s1", "engine", 2000, "")); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		sb   *api.PodSandbox
		want string
	}{
		{"overlap", exclusivePod("s2", "db-2", "3-4"), "corepin: pod default/db-2 container engine cpus \"3-4\": CPUs 3-4 for pod default/db-2 on node node-a: CPU 3 is held by pod default/db-1"},
		{"reserved", exclusivePod("s3", "db-3", "0"), "CPU 0 is reserved"},
		{"offline", exclusivePod("s4", "db-4", "9"), "CPU 9 is not online"},
		{"over the limit", exclusivePod("s5", "db-5", "4-6"), "exclusive limit 4 reached (needs 3, holds 2)"},
		{"not placed", sandbox("s6", "default", "db-6", map[string]string{corepin.AnnotationCPUMode: "exclusive"}), "not placed by the corepin scheduler extender"},
		{"malformed", sandbox("s7", "default", "db-7", map[string]string{corepin.AnnotationCPUMode: "exclusive", corepin.AnnotationAllocStatus: "{"}), "corepin.io/alloc-status"},
		{"other node", sandbox("s8", "default", "db-8", map[string]string{corepin.AnnotationCPUMode: "exclusive",
			corepin.AnnotationAllocStatus: `{"node":"node-b","cpus":"5","containers":{"engine":"5"},"mems":""}`}), `alloc-status is for node "node-b"`},
	} {
		_, upd, err := p.CreateContainer(ctx, tc.sb, ctr("c-"+tc.name, tc.sb.Id, "engine", 1000, ""))
		if err == nil || !strings.HasPrefix(err.Error(), "corepin: ") || !strings.Contains(err.Error(), tc.want) || upd != nil {
			t.Errorf("%s: error %v, want %q", tc.name, err, tc.want)
		}
	}
	for kind, want := range map[string]float64{"conflict": 3, "exclusive-limit": 1, "not-placed": 1, "bad-annotation": 1, "wrong-node": 1} {
		if got := testutil.ToFloat64(p.metrics.refusals.WithLabelValues(kind)); got != want {
			t.Errorf("corepin_nri_refusals_total{reason=%q} = %v, want %v", kind, got, want)
		}
	}
	// Nothing refused changed anybody's cores.
	if pool := p.SharedPool().String(); pool != "1,4-7" || len(inLedger(p, (*Ledger).Containers)) != 1 {
		t.Fatalf("after refusals: pool %s, %d containers", pool, len(inLedger(p, (*Ledger).Containers)))
	}
}

func TestSynchronizeRepairs(t *testing.T) {
	p := newTestPlugin(t)
	pods := []*api.PodSandbox{exclusivePod("s-db", "db", "2-3"), sandbox("s-web", "default", "web", nil), exclusivePod("s-bad", "bad", "3")}
	containers := []*api.Container{
		createdAt(ctr("c-db", "s-db", "engine", 2000, "2-3"), 100),
		createdAt(ctr("c-web", "s-web", "app", 500, "0-7"), 300),   // created while the plugin was down: unpinned
		createdAt(ctr("c-bad", "s-bad", "engine", 1000, "3"), 200), // conflicts with db, created after it: left where it is
	}
	upd, err := p.Synchronize(context.Background(), pods, containers)
	if err != nil {
		t.Fatal(err)
	}
	if len(upd) != 1 || upd[0].GetContainerId() != "c-web" || cpusOf(upd[0]) != "1,4-7" {
		t.Fatalf("synchronize updates %v", upd)
	}
	if p.Capacity().E != 2 {
		t.Fatalf("E = %d after synchronize, want 2", p.Capacity().E)
	}
}

func quotaOf(u *api.ContainerUpdate) (int64, bool) {
	q := u.GetLinux().GetResources().GetCpu().GetQuota().Get()
	if q == nil {
		return 0, false
	}
	return *q, true
}

func TestReleaseIsolateMode(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name           string
		excludeReserve bool
		wide           string
	}{
		{"without the reserved CPUs", true, "1-7"},
		{"with the reserved CPUs", false, "0-7"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newTestPlugin(t)
			if _, _, err := p.CreateContainer(ctx, sandbox("s-web", "default", "web", nil), ctr("c-web", "s-web", "app", 500, "")); err != nil {
				t.Fatal(err)
			}
			if _, _, err := p.CreateContainer(ctx, exclusivePod("s-db", "db", "2-3"), ctr("c-db", "s-db", "engine", 2000, "")); err != nil {
				t.Fatal(err)
			}
			p.SetRelease("default", "db", Release{Isolate: true, ExcludeReserve: tc.excludeReserve, LimitMilli: map[string]int64{"engine": 2000}})
			select {
			case <-p.Pending():
			default:
				t.Fatal("flipping release-isolate-mode did not ask for updates")
			}
			upd := p.PendingUpdates()
			if len(upd) != 1 || upd[0].GetContainerId() != "c-db" || cpusOf(upd[0]) != tc.wide {
				t.Fatalf("release updates %v, want c-db widened to %s", upd, tc.wide)
			}
			if q, ok := quotaOf(upd[0]); !ok || q != -1 {
				t.Fatalf("release left the CFS quota at %d (set %v), want -1 (lifted)", q, ok)
			}
			// The CPUs stay held: the shared pool does not grow.
			if pool := p.SharedPool().String(); pool != "1,4-7" {
				t.Fatalf("pool %s while released, want 1,4-7", pool)
			}
			// A repeated event with the same switch changes nothing.
			p.SetRelease("default", "db", Release{Isolate: true, ExcludeReserve: tc.excludeReserve})
			if upd := p.PendingUpdates(); len(upd) != 0 {
				t.Fatalf("a repeated switch issued %v", upd)
			}

			p.SetRelease("default", "db", Release{ExcludeReserve: true, LimitMilli: map[string]int64{"engine": 2000}})
			upd = p.PendingUpdates()
			if len(upd) != 1 || cpusOf(upd[0]) != "2-3" {
				t.Fatalf("restore updates %v, want c-db back on 2-3", upd)
			}
			q, _ := quotaOf(upd[0])
			period := upd[0].GetLinux().GetResources().GetCpu().GetPeriod().Get()
			if q != 200000 || period == nil || *period != 100000 {
				t.Fatalf("restored quota %d/%v, want the original 200000/100000", q, period)
			}
		})
	}
}

func TestReleasedAtCreationAndAfterRestart(t *testing.T) {
	ctx := context.Background()
	p := newTestPlugin(t)
	sb := exclusivePod("s-db", "db", "2-3")
	sb.Annotations[corepin.AnnotationReleaseIsolateMode] = "true"
	adj, _, err := p.CreateContainer(ctx, sb, ctr("c-db", "s-db", "engine", 2000, ""))
	if err != nil {
		t.Fatal(err)
	}
	cpu := adj.GetLinux().GetResources().GetCpu()
	if cpu.GetCpus() != "1-7" || cpu.GetQuota().Get() == nil || *cpu.GetQuota().Get() != -1 {
		t.Fatalf("a pod created released got %v", cpu)
	}

	// The plugin restarts while the pod is released: the container's quota
	// is -1 now. Unset on the API server, the quota comes back from the pod
	// spec's limit.
	p = newTestPlugin(t)
	p.SetRelease("default", "db", Release{Isolate: true, ExcludeReserve: true, LimitMilli: map[string]int64{"engine": 2000}})
	running := ctr("c-db", "s-db", "engine", 0, "1-7")
	running.Linux.Resources.Cpu.Quota = api.Int64(-1)
	running.Linux.Resources.Cpu.Period = api.UInt64(100000)
	upd, err := p.Synchronize(ctx, []*api.PodSandbox{sb}, []*api.Container{running})
	if err != nil || len(upd) != 0 {
		t.Fatalf("synchronize of a released container: %v %v", upd, err)
	}
	p.SetRelease("default", "db", Release{ExcludeReserve: true, LimitMilli: map[string]int64{"engine": 2000}})
	upd = p.PendingUpdates()
	if len(upd) != 1 || cpusOf(upd[0]) != "2-3" {
		t.Fatalf("restore after restart: %v", upd)
	}
	if q, _ := quotaOf(upd[0]); q != 200000 {
		t.Fatalf("quota restored to %d, want 200000 from the limit", q)
	}
}

func TestDriftIsCorrected(t *testing.T) {
	ctx := context.Background()
	p := newTestPlugin(t)
	web := ctr("c-web", "s-web", "app", 500, "")
	web.Linux.CgroupsPath = "/kubepods/pod1/c-web"
	if _, _, err := p.CreateContainer(ctx, sandbox("s-web", "default", "web", nil), web); err != nil {
		t.Fatal(err)
	}
	actual := map[string]string{"c-web": "1-7"}
	read := func(c *Container) (cpuset.CPUSet, error) { return cpuset.Parse(actual[c.ID]) }
	if n := p.CheckDrift(read); n != 0 {
		t.Fatalf("%d drifted with nothing changed", n)
	}
	actual["c-web"] = "0-7" // someone rewrote it
	if n := p.CheckDrift(read); n != 1 {
		t.Fatalf("%d drifted, want 1", n)
	}
	upd := p.PendingUpdates()
	if len(upd) != 1 || cpusOf(upd[0]) != "1-7" {
		t.Fatalf("drift correction %v", upd)
	}
	if got := testutil.ToFloat64(p.metrics.driftCorrections); got != 1 {
		t.Fatalf("drift corrections metric %v, want 1", got)
	}
}

func TestRefusalsAndConflictsAreEvents(t *testing.T) {
	ctx := context.Background()
	p := newTestPlugin(t)
	events := record.NewFakeRecorder(10)
	p.SetEventRecorder(events)
	if _, _, err := p.CreateContainer(ctx, exclusivePod("s1", "db-1", "2-3"), ctr("c1", "s1", "engine", 2000, "")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := p.CreateContainer(ctx, exclusivePod("s2", "db-2", "3"), ctr("c2", "s2", "engine", 1000, "")); err == nil {
		t.Fatal("overlap accepted")
	}
	want := `Warning CorepinRefused corepin: pod default/db-2 container engine cpus "3": `
	if got := nextEvent(t, events); !strings.HasPrefix(got, want) || !strings.Contains(got, "held by pod default/db-1") {
		t.Fatalf("event %q, want %q...", got, want)
	}
	pods := []*api.PodSandbox{exclusivePod("s1", "db-1", "2-3"), exclusivePod("s2", "db-2", "3")}
	if _, err := p.Synchronize(ctx, pods, []*api.Container{ctr("c1", "s1", "engine", 2000, "2-3"), ctr("c2", "s2", "engine", 1000, "3")}); err != nil {
		t.Fatal(err)
	}
	if got := nextEvent(t, events); !strings.HasPrefix(got, "Warning CorepinConflict container left on its CPUs") {
		t.Fatalf("conflict event %q", got)
	}
}

// nextEvent is the next event recorded, failing the test after 5 s.
func nextEvent(t *testing.T, events *record.FakeRecorder) string {
	t.Helper()
	select {
	case ev := <-events.Events:
		return ev
	case <-time.After(5 * time.Second):
		t.Fatal("no event recorded within 5 s")
		return ""
	}
}

// createdAt sets a container's creation time (nanoseconds, as NRI reports it).
func createdAt(c *api.Container, at int64) *api.Container {
	c.CreatedAt = at
	return c
}

// TestSynchronizeKeepsRunningExclusive: at synchronize the containers that
// exist are facts. An exclusive container is never dropped for capacity,
// a container left out for a conflict keeps all its CPUs out of the shared
// pool, and which of two conflicting containers is kept does not depend on
// the order the runtime lists them in.
func TestSynchronizeKeepsRunningExclusive(t *testing.T) {
	for _, tc := range []struct {
		name       string
		pods       []*api.PodSandbox
		containers []*api.Container
		// web is the shared container's cpuset after synchronize.
		web string
		e   int
		// kept maps a CPU to the pod that must hold it.
		kept map[int]string
		// conflicts is how many containers were left out.
		conflicts float64
	}{
		{
			// P = 7; a shared 2000m container makes the limit min(4, 7-2*2, 7-1) = 3 < E = 4.
			name: "over the exclusive limit",
			pods: []*api.PodSandbox{exclusivePod("s-db", "db", "2-5"), sandbox("s-web", "default", "web", nil)},
			containers: []*api.Container{
				createdAt(ctr("c-web", "s-web", "app", 2000, "1-7"), 100),
				createdAt(ctr("c-db", "s-db", "engine", 4000, "2-5"), 200),
			},
			web: "1,6-7", e: 4, kept: map[int]string{2: "default/db", 5: "default/db"},
		},
		{
			name: "partial overlap, the first created is kept",
			pods: []*api.PodSandbox{exclusivePod("s-a", "a", "2-3"), exclusivePod("s-b", "b", "3-4"), sandbox("s-web", "default", "web", nil)},
			containers: []*api.Container{
				createdAt(ctr("c-b", "s-b", "engine", 2000, "3-4"), 200),
				createdAt(ctr("c-a", "s-a", "engine", 2000, "2-3"), 100),
				ctr("c-web", "s-web", "app", 500, "1-7"),
			},
			web: "1,5-7", e: 2, kept: map[int]string{2: "default/a", 3: "default/a"}, conflicts: 1,
		},
		{
			name: "partial overlap, b created first",
			pods: []*api.PodSandbox{exclusivePod("s-a", "a", "2-3"), exclusivePod("s-b", "b", "3-4"), sandbox("s-web", "default", "web", nil)},
			containers: []*api.Container{
				createdAt(ctr("c-a", "s-a", "engine", 2000, "2-3"), 200),
				createdAt(ctr("c-b", "s-b", "engine", 2000, "3-4"), 100),
				ctr("c-web", "s-web", "app", 500, "1-7"),
			},
			web: "1,5-7", e: 2, kept: map[int]string{3: "default/b", 4: "default/b"}, conflicts: 1,
		},
		{
			name: "partial overlap, same creation time: by pod key",
			pods: []*api.PodSandbox{exclusivePod("s-b", "b", "3-4"), exclusivePod("s-a", "a", "2-3"), sandbox("s-web", "default", "web", nil)},
			containers: []*api.Container{
				ctr("c-1", "s-b", "engine", 2000, "3-4"),
				ctr("c-2", "s-a", "engine", 2000, "2-3"),
				ctr("c-web", "s-web", "app", 500, "1-7"),
			},
			web: "1,5-7", e: 2, kept: map[int]string{2: "default/a", 3: "default/a"}, conflicts: 1,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newTestPlugin(t)
			upd, err := p.Synchronize(context.Background(), tc.pods, tc.containers)
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]string{}
			for _, u := range upd {
				got[u.GetContainerId()] = cpusOf(u)
			}
			if got["c-web"] != tc.web {
				t.Errorf("web -> %q, want %q (updates %v)", got["c-web"], tc.web, got)
			}
			// No shared container may be given a CPU a running exclusive container is on.
			running, exclusive := cpuset.New(), map[string]bool{}
			for _, sb := range tc.pods {
				exclusive[sb.GetId()] = sb.GetAnnotations()[corepin.AnnotationCPUMode] == "exclusive"
			}
			for _, c := range tc.containers {
				if exclusive[c.GetPodSandboxId()] {
					cur, _ := currentCPUs(c)
					running = running.Union(cur)
				}
			}
			if pool := p.SharedPool(); !pool.Intersection(running).IsEmpty() {
				t.Errorf("shared pool %s includes CPUs %s of running exclusive containers", pool, pool.Intersection(running))
			}
			if e := p.Capacity().E; e != tc.e {
				t.Errorf("E = %d, want %d", e, tc.e)
			}
			for cpu, pod := range tc.kept {
				if h := inLedger(p, func(l *Ledger) string { h, _ := l.Holder(cpu); return h }); h != pod {
					t.Errorf("CPU %d held by %v, want %s", cpu, h, pod)
				}
			}
			if got := testutil.ToFloat64(p.metrics.conflicts); got != tc.conflicts {
				t.Errorf("conflicts %v, want %v", got, tc.conflicts)
			}
		})
	}
}

// TestQuarantineUntilGone: a container left out at synchronize holds its
// CPUs against new exclusive containers too, and gives them back to the
// shared pool only when it goes; a node found over its limit is reported.
func TestQuarantineUntilGone(t *testing.T) {
	ctx := context.Background()
	for _, tc := range goneWays(ctx, exclusivePod("s-b", "b", "3-4"), ctr("c-b", "s-b", "engine", 2000, "3-4"))[:3] {
		t.Run(tc.name, func(t *testing.T) {
			p := newTestPlugin(t)
			events := record.NewFakeRecorder(10)
			p.SetEventRecorder(events)
			pods := []*api.PodSandbox{exclusivePod("s-a", "a", "2-3"), exclusivePod("s-b", "b", "3-4"), sandbox("s-web", "default", "web", nil)}
			if _, err := p.Synchronize(ctx, pods, []*api.Container{
				createdAt(ctr("c-a", "s-a", "engine", 2000, "2-3"), 1),
				createdAt(ctr("c-b", "s-b", "engine", 2000, "3-4"), 2),
				createdAt(ctr("c-web", "s-web", "app", 500, "1-7"), 3),
			}); err != nil {
				t.Fatal(err)
			}
			if got := testutil.ToFloat64(p.metrics.quarantined); got != 2 {
				t.Fatalf("quarantined cpus metric %v, want 2", got)
			}
			if ev := nextEvent(t, events); !strings.Contains(ev, "CorepinConflict") || !strings.Contains(ev, "3-4 are kept out of the shared pool") {
				t.Fatalf("event %q", ev)
			}
			_, _, err := p.CreateContainer(ctx, exclusivePod("s-c", "c", "4"), ctr("c-c", "s-c", "engine", 1000, ""))
			if err == nil || !strings.Contains(err.Error(), "CPU 4 is held by container engine of pod default/b") {
				t.Fatalf("an exclusive container on a quarantined CPU: %v", err)
			}
			upd := tc.gone(p)
			if tc.pending {
				upd = p.PendingUpdates()
			}
			if len(upd) != 1 || upd[0].GetContainerId() != "c-web" || cpusOf(upd[0]) != "1,4-7" {
				t.Fatalf("after the quarantined container went: %v, want c-web grown to 1,4-7", upd)
			}
			if _, _, err := p.CreateContainer(ctx, exclusivePod("s-c", "c", "4"), ctr("c-c", "s-c", "engine", 1000, "")); err != nil {
				t.Fatalf("CPU 4 still refused after the quarantined container went: %v", err)
			}
		})
	}
}

func TestOverLimitAtSynchronizeIsReported(t *testing.T) {
	p := newTestPlugin(t)
	events := record.NewFakeRecorder(10)
	p.SetEventRecorder(events)
	pods := []*api.PodSandbox{exclusivePod("s-db", "db", "2-5"), sandbox("s-web", "default", "web", nil)}
	if _, err := p.Synchronize(context.Background(), pods, []*api.Container{
		ctr("c-web", "s-web", "app", 2000, "1-7"), ctr("c-db", "s-db", "engine", 4000, "2-5")}); err != nil {
		t.Fatal(err)
	}
	if got := testutil.ToFloat64(p.metrics.overLimit); got != 1 {
		t.Fatalf("over-limit metric %v, want 1 (E 4, limit 3)", got)
	}
	if ev := nextEvent(t, events); !strings.HasPrefix(ev, "Warning CorepinOverExclusiveLimit node is over its exclusive limit: 4 exclusive CPUs held by running containers, limit 3") {
		t.Fatalf("event %q", ev)
	}
	// Still a request-time check: no more exclusive CPUs while over.
	if _, _, err := p.CreateContainer(context.Background(), exclusivePod("s-x", "x", "6"), ctr("c-x", "s-x", "engine", 1000, "")); err == nil {
		t.Fatal("an exclusive container admitted on a node over its limit")
	}
}

// TestUpdateReasons: every update is counted under why it was issued; a
// drift correction is a repair, not a grow.
func TestUpdateReasons(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		do   func(t *testing.T, p *Plugin) []*api.ContainerUpdate
		want map[string]float64
	}{
		{"drift corrected", func(t *testing.T, p *Plugin) []*api.ContainerUpdate {
			p.CheckDrift(func(c *Container) (cpuset.CPUSet, error) { return cpuset.New(0, 1, 2, 3, 4, 5, 6, 7), nil })
			return p.PendingUpdates()
		}, map[string]float64{"repair": 2}},
		{"exclusive pod removed", func(t *testing.T, p *Plugin) []*api.ContainerUpdate {
			_ = p.RemovePodSandbox(ctx, exclusivePod("s-db", "db", "2-3"))
			return p.PendingUpdates()
		}, map[string]float64{"grow": 1}},
		{"exclusive stopped", func(t *testing.T, p *Plugin) []*api.ContainerUpdate {
			upd, _ := p.StopContainer(ctx, nil, ctr("c-db", "s-db", "engine", 2000, "2-3"))
			return upd
		}, map[string]float64{"grow": 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newTestPlugin(t)
			web := ctr("c-web", "s-web", "app", 500, "")
			web.Linux.CgroupsPath = "/kubepods/pod1/c-web"
			db := ctr("c-db", "s-db", "engine", 2000, "")
			db.Linux.CgroupsPath = "/kubepods/pod2/c-db"
			if _, _, err := p.CreateContainer(ctx, sandbox("s-web", "default", "web", nil), web); err != nil {
				t.Fatal(err)
			}
			if _, _, err := p.CreateContainer(ctx, exclusivePod("s-db", "db", "2-3"), db); err != nil {
				t.Fatal(err)
			}
			before := map[string]float64{}
			for _, r := range []string{"repair", "grow", "shrink"} {
				before[r] = testutil.ToFloat64(p.metrics.updates.WithLabelValues(r))
			}
			if upd := tc.do(t, p); len(upd) == 0 {
				t.Fatal("no updates")
			}
			for _, r := range []string{"repair", "grow", "shrink"} {
				if got := testutil.ToFloat64(p.metrics.updates.WithLabelValues(r)) - before[r]; got != tc.want[r] {
					t.Errorf("updates_total{reason=%q} grew by %v, want %v", r, got, tc.want[r])
				}
			}
		})
	}
}

// TestClassesAtCreation: the cpuset each kind of container gets at
// creation (pool 1,4-7 with db holding 2-3, CPU 0 reserved).
func TestClassesAtCreation(t *testing.T) {
	ctx := context.Background()
	bindAll := func(extra map[string]string) map[string]string {
		a := map[string]string{corepin.AnnotationCPUMode: "exclusive", corepin.AnnotationAllocSpec: `{"cpu":"BindAllCPUs"}`}
		for k, v := range extra {
			a[k] = v
		}
		return a
	}
	for _, tc := range []struct {
		name      string
		unplaced  bool
		bindAllNS []string // the plugin's --bind-all-namespaces
		sb        *api.PodSandbox
		cpus      string
		class     Class
		refused   string
		lifted    bool
		exclusive int // E after
	}{
		{name: "unplaced exclusive refused", sb: sandbox("s-x", "default", "x", map[string]string{corepin.AnnotationCPUMode: "exclusive"}),
			refused: "not placed by the corepin scheduler extender", exclusive: 2},
		{name: "unplaced exclusive to shared with UnplacedToShared", unplaced: true,
			sb:   sandbox("s-x", "default", "x", map[string]string{corepin.AnnotationCPUMode: "exclusive"}),
			cpus: "1,4-7", class: Shared, exclusive: 2},
		{name: "UnplacedToShared leaves placed pods exclusive", unplaced: true, sb: exclusivePod("s-x", "x", "4-5"),
			cpus: "4-5", class: Exclusive, exclusive: 4},
		{name: "BindAllCPUs: online minus reserved", bindAllNS: []string{"perf"}, sb: sandbox("s-x", "perf", "x", bindAll(nil)), cpus: "1-7", class: BindAll, exclusive: 2},
		{name: "BindAllCPUs with the reserved CPUs", bindAllNS: []string{"perf"}, sb: sandbox("s-x", "perf", "x", bindAll(map[string]string{corepin.AnnotationExcludeReserveCPUSet: "false"})),
			cpus: "0-7", class: BindAll, exclusive: 2},
		{name: "BindAllCPUs in a system namespace listed", bindAllNS: []string{"perf", "kube-system"}, sb: sandbox("s-x", "kube-system", "x", bindAll(nil)),
			cpus: "1-7", class: BindAll, exclusive: 2},
		{name: "BindAllCPUs outside bindAllNamespaces refused", bindAllNS: []string{"perf"}, sb: sandbox("s-x", "default", "x", bindAll(nil)),
			refused:   `corepin: pod default/x container engine cpus "": corepin.io/alloc-spec BindAllCPUs is not allowed in namespace "default" (the plugin's --bind-all-namespaces: [perf]`,
			exclusive: 2},
		{name: "BindAllCPUs refused by default, system namespace too", sb: sandbox("s-x", "kube-system", "x", bindAll(nil)),
			refused: `BindAllCPUs is not allowed in namespace "kube-system" (the plugin's --bind-all-namespaces: []`, exclusive: 2},
		{name: "system namespace", sb: sandbox("s-x", "kube-system", "x", nil), cpus: "0-1,4-7", class: System, exclusive: 2},
		{name: "shared", sb: sandbox("s-x", "default", "x", nil), cpus: "1,4-7", class: Shared, exclusive: 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newTestPlugin(t)
			p.ledger.cfg.UnplacedToShared = tc.unplaced
			p.ledger.cfg.BindAllNamespaces = tc.bindAllNS
			if _, _, err := p.CreateContainer(ctx, exclusivePod("s-db", "db", "2-3"), ctr("c-db", "s-db", "engine", 2000, "")); err != nil {
				t.Fatal(err)
			}
			adj, upd, err := p.CreateContainer(ctx, tc.sb, ctr("c-x", "s-x", "engine", 1000, ""))
			if tc.refused != "" {
				if err == nil || !strings.Contains(err.Error(), tc.refused) {
					t.Fatalf("error %v, want %q", err, tc.refused)
				}
			} else {
				if err != nil {
					t.Fatal(err)
				}
				cpu := adj.GetLinux().GetResources().GetCpu()
				if cpu.GetCpus() != tc.cpus {
					t.Fatalf("cpuset %q, want %q", cpu.GetCpus(), tc.cpus)
				}
				if (cpu.GetQuota().Get() != nil) != tc.lifted {
					t.Fatalf("quota adjusted: %v", cpu.GetQuota())
				}
				if c, _ := containerOf(p, "c-x"); c.Class != tc.class {
					t.Fatalf("class %v, want %v", c.Class, tc.class)
				}
				if tc.class != Exclusive && len(upd) != 0 {
					t.Fatalf("a %v container moved others: %v", tc.class, upd)
				}
			}
			if e := p.Capacity().E; e != tc.exclusive {
				t.Fatalf("E = %d, want %d", e, tc.exclusive)
			}
		})
	}
}

// TestPoolGrowsBack: whichever way an exclusive container goes, the shared
// containers are grown back over its CPUs.
func TestPoolGrowsBack(t *testing.T) {
	ctx := context.Background()
	for _, tc := range goneWays(ctx, exclusivePod("s-db", "db", "2-3"), ctr("c-db", "s-db", "engine", 2000, "2-3")) {
		t.Run(tc.name, func(t *testing.T) {
			p := newTestPlugin(t)
			for _, step := range []struct {
				sb *api.PodSandbox
				c  *api.Container
			}{
				{sandbox("s-web", "default", "web", nil), ctr("c-web", "s-web", "app", 500, "")},
				{sandbox("s-dns", "kube-system", "dns", nil), ctr("c-dns", "s-dns", "dns", 100, "")},
				{exclusivePod("s-db", "db", "2-3"), ctr("c-db", "s-db", "engine", 2000, "")},
				{exclusivePod("s-db", "db", "2-3"), ctr("c-side", "s-db", "exporter", 100, "")},
			} {
				if _, _, err := p.CreateContainer(ctx, step.sb, step.c); err != nil {
					t.Fatal(err)
				}
			}
			upd := tc.gone(p)
			if tc.pending {
				select {
				case <-p.Pending():
				default:
					t.Fatal("the pool change was not signalled to the plugin's goroutine")
				}
				upd = p.PendingUpdates()
			}
			got := map[string]string{}
			for _, u := range upd {
				got[u.GetContainerId()] = cpusOf(u)
			}
			want := map[string]string{"c-web": "1-7", "c-dns": "0-7"}
			if _, ok := containerOf(p, "c-side"); ok {
				want["c-side"] = "1-7" // its sandbox is still there
			}
			if len(got) != len(want) {
				t.Fatalf("updates %v, want %v", got, want)
			}
			for id, cpus := range want {
				if got[id] != cpus {
					t.Fatalf("updates %v, want %v", got, want)
				}
			}
			if pool := p.SharedPool().String(); pool != "1-7" || p.Capacity().E != 0 {
				t.Fatalf("pool %s, E %d after the exclusive container went", pool, p.Capacity().E)
			}
		})
	}
}

// TestSetTopology: CPUs brought online join the shared pool (and can be
// placed on); any other change is refused and the old topology kept.
func TestSetTopology(t *testing.T) {
	ctx := context.Background()
	topo := func(n int, move bool) corepin.Topology {
		src := corepin.Topology{Version: 1, Reserved: corepin.NewCPUList(cpuset.New(0))}
		for i := 0; i < n; i++ {
			src.CPUs = append(src.CPUs, corepin.CPUInfo{ID: i, Core: i})
		}
		if move {
			src.CPUs[3].Core = 2
		}
		return src
	}
	for _, tc := range []struct {
		name   string
		src    corepin.Topology
		err    string
		web    string // c-web's update, "" for none
		admits string // a placement admitted after, "" for none
	}{
		{name: "grown by 4 CPUs", src: topo(12, false), web: "1,4-11", admits: "8-9"},
		{name: "same", src: topo(8, false)},
		{name: "CPU offline", src: topo(6, false), err: "CPU 6 went offline"},
		{name: "CPU moved core", src: topo(12, true), err: "CPU 3 moved from core 3"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newTestPlugin(t)
			if _, _, err := p.CreateContainer(ctx, sandbox("s-web", "default", "web", nil), ctr("c-web", "s-web", "app", 500, "")); err != nil {
				t.Fatal(err)
			}
			if _, _, err := p.CreateContainer(ctx, exclusivePod("s-db", "db", "2-3"), ctr("c-db", "s-db", "engine", 2000, "")); err != nil {
				t.Fatal(err)
			}
			err := p.SetTopology(tc.src)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want %q", err, tc.err)
				}
				if pool := p.SharedPool().String(); pool != "1,4-7" {
					t.Fatalf("pool %s after a refused change", pool)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			upd := p.PendingUpdates()
			if tc.web == "" && len(upd) != 0 || tc.web != "" && (len(upd) != 1 || upd[0].GetContainerId() != "c-web" || cpusOf(upd[0]) != tc.web) {
				t.Fatalf("updates %v, want c-web -> %q", upd, tc.web)
			}
			if e := p.Capacity().E; e != 2 {
				t.Fatalf("E = %d, want db's 2 kept", e)
			}
			if tc.admits != "" {
				if _, _, err := p.CreateContainer(ctx, exclusivePod("s-x", "x", tc.admits), ctr("c-x", "s-x", "engine", 2000, "")); err != nil {
					t.Fatalf("a placement on the new CPUs: %v", err)
				}
			}
		})
	}
}
