package plugin

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"

	"github.com/containerd/nri/pkg/api"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"k8s.io/utils/cpuset"

	corepin "github.com/corepin/corepin/api"
	"github.com/corepin/corepin/policy"
)

// newNUMAPlugin is a node of 8 CPUs on two NUMA nodes (0-3, 4-7), CPU 0
// reserved, kube-system a system namespace and perf-lab allowed
// BindAllCPUs.
func newNUMAPlugin(t *testing.T) *Plugin {
	t.Helper()
	src := corepin.Topology{Version: 1, Reserved: corepin.NewCPUList(cpuset.New(0))}
	for i := 0; i < 8; i++ {
		src.CPUs = append(src.CPUs, corepin.CPUInfo{ID: i, Core: i, NUMA: i / 4})
	}
	topo, err := policy.NewTopology(src)
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{NodeName: "node-a", SystemNamespaces: []string{"kube-system"}, BindAllNamespaces: []string{"perf-lab"}, Limits: corepin.DefaultLimits()}
	return New(NewLedger(cfg, topo), slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
}

// pinning is what a container runs with, as the runtime has it.
type pinning struct {
	cpus, mems string
	quota      int64 // 0: none set
}

// runtimeState plays the runtime: what each container runs with, changed
// by creation adjustments and by updates (replies and unsolicited batches),
// failing the unsolicited updates of the containers in failing as
// containerd v2.4.2 does over ttrpc (an error, no list).
type runtimeState struct {
	t       *testing.T
	ctrs    map[string]pinning
	failing map[string]bool
	sent    int
}

func (r *runtimeState) apply(batch []*api.ContainerUpdate) {
	for _, u := range batch {
		cpu := u.GetLinux().GetResources().GetCpu()
		c, ok := r.ctrs[u.GetContainerId()]
		if !ok {
			r.t.Fatalf("update of unknown container %s", u.GetContainerId())
		}
		if s := cpu.GetCpus(); s != "" {
			c.cpus = s
		}
		if s := cpu.GetMems(); s != "" {
			c.mems = s
		}
		if q := cpu.GetQuota().Get(); q != nil {
			c.quota = *q
		}
		r.ctrs[u.GetContainerId()] = c
	}
}

func (r *runtimeState) send(batch []*api.ContainerUpdate) ([]*api.ContainerUpdate, error) {
	r.sent += len(batch)
	for _, u := range batch {
		if r.failing[u.GetContainerId()] && !u.IgnoreFailure {
			return nil, errors.New("NRI update of some containers failed")
		}
	}
	r.apply(batch)
	return nil, nil
}

func (r *runtimeState) create(p *Plugin, sb *api.PodSandbox, c *api.Container) error {
	r.t.Helper()
	adj, upd, err := p.CreateContainer(context.Background(), sb, c)
	if err != nil {
		return err
	}
	cpu := adj.GetLinux().GetResources().GetCpu()
	got := pinning{cpus: cpu.GetCpus(), mems: cpu.GetMems()}
	if q := c.GetLinux().GetResources().GetCpu().GetQuota().Get(); q != nil {
		got.quota = *q
	}
	if q := cpu.GetQuota().Get(); q != nil {
		got.quota = *q
	}
	r.ctrs[c.GetId()] = got
	r.apply(upd)
	return nil
}

// push runs the plugin's own goroutine until nothing is pending.
func (r *runtimeState) push(p *Plugin) {
	r.t.Helper()
	for i := 0; i < 10; i++ {
		if _, _, err := p.PushPending(r.send); err == nil && !drain(p) {
			return
		}
	}
	r.t.Fatal("updates still pending after 10 batches")
}

func (r *runtimeState) expect(what string, want map[string]pinning) {
	r.t.Helper()
	for id, w := range want {
		got := r.ctrs[id]
		if w.mems == "" {
			got.mems = "" // not asserted
		}
		if got != w {
			r.t.Errorf("%s: %s runs with %+v, want %+v", what, id, got, w)
		}
	}
}

func withAnnotations(sb *api.PodSandbox, kv ...string) *api.PodSandbox {
	if sb.Annotations == nil {
		sb.Annotations = map[string]string{}
	}
	for i := 0; i+1 < len(kv); i += 2 {
		sb.Annotations[kv[i]] = kv[i+1]
	}
	return sb
}

func foundWith(c *api.Container, mems string, quota int64, at int64) *api.Container {
	c.Linux.Resources.Cpu.Mems = mems
	if quota != 0 {
		c.Linux.Resources.Cpu.Quota = api.Int64(quota)
		c.Linux.Resources.Cpu.Period = api.UInt64(100000)
	}
	c.CreatedAt = at
	return c
}

// The node under test: one container of each kind, as the plugin pins
// them (pool 1,6-7: online 0-7 less reserved 0 and the exclusive 2-5).
var (
	releaseAllPods = []*api.PodSandbox{
		sandbox("s-web", "default", "web", nil),
		sandbox("s-dns", "kube-system", "dns", nil),
		exclusivePod("s-db", "db", "2-3"),
		sandbox("s-cache", "default", "cache", map[string]string{corepin.AnnotationCPUMode: "exclusive",
			corepin.AnnotationAllocStatus: `{"node":"node-a","cpus":"4-5","containers":{"engine":"4-5"},"mems":"1"}`}),
		sandbox("s-perf", "perf-lab", "perf", map[string]string{corepin.AnnotationAllocSpec: `{"cpu":"BindAllCPUs"}`}),
	}
	// Only at synchronize: a later pod claiming db's CPUs (quarantined,
	// found on them) and one whose annotations do not parse (left where
	// it is, in the pool).
	releaseAllLeft = []*api.PodSandbox{
		exclusivePod("s-db2", "db-2", "2-3"),
		sandbox("s-odd", "default", "odd", map[string]string{corepin.AnnotationCPUMode: "banana"}),
	}
	cacheReleased = Release{Isolate: true, ExcludeReserve: true, LimitMilli: map[string]int64{"engine": 2000}}
	pinned        = map[string]pinning{
		"c-web":   {cpus: "1,6-7", quota: 50000},
		"c-dns":   {cpus: "0-1,6-7", quota: 10000},
		"c-db":    {cpus: "2-3", mems: "0", quota: 200000},
		"c-cache": {cpus: "1-7", mems: "1", quota: -1}, // released: every CPU but the reserved, quota lifted
		"c-perf":  {cpus: "1-7", quota: 50000},
	}
	pinnedLeft = map[string]pinning{
		"c-db2": {cpus: "2-3", mems: "0", quota: 100000},
		"c-odd": {cpus: "1,6-7", quota: 10000},
	}
	// Under release-all: the whole node, every NUMA node's memory, the
	// kubelet's quota.
	released = map[string]pinning{
		"c-web":   {cpus: "0-7", quota: 50000},
		"c-dns":   {cpus: "0-7", quota: 10000},
		"c-db":    {cpus: "0-7", mems: "0-1", quota: 200000},
		"c-cache": {cpus: "0-7", mems: "0-1", quota: 200000},
		"c-perf":  {cpus: "0-7", quota: 50000},
		"c-db2":   {cpus: "0-7", mems: "0-1", quota: 100000},
		"c-odd":   {cpus: "0-7", quota: 10000},
	}
)

func releaseAllContainers() []*api.Container {
	return []*api.Container{
		foundWith(ctr("c-web", "s-web", "app", 500, "1,6-7"), "", 0, 1),
		foundWith(ctr("c-dns", "s-dns", "dns", 100, "0-1,6-7"), "", 0, 2),
		foundWith(ctr("c-db", "s-db", "engine", 2000, "2-3"), "0", 0, 3),
		foundWith(ctr("c-cache", "s-cache", "engine", 0, "1-7"), "1", -1, 4),
		foundWith(ctr("c-perf", "s-perf", "app", 500, "1-7"), "", 0, 5),
		foundWith(ctr("c-db2", "s-db2", "engine", 1000, "2-3"), "0", 0, 6),
		foundWith(ctr("c-odd", "s-odd", "app", 100, "1,6-7"), "", 0, 7),
	}
}

func merged(maps ...map[string]pinning) map[string]pinning {
	out := map[string]pinning{}
	for _, m := range maps {
		for k, v := range m {
			out[k] = v
		}
	}
	return out
}

// TestReleaseAll: the node's corepin.io/release-all moves every container
// the plugin knows (exclusive, shared, released, system-namespace,
// BindAllCPUs, quarantined and untracked) to every online CPU and every
// NUMA node's memory, restores the CFS quota release-isolate-mode lifted,
// and is done once the runtime confirmed every update; removed, every
// container is pinned back as at synchronize. The same whether the
// plugin was running when it was set or restarted under it.
func TestReleaseAll(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		// start brings the plugin up with release-all off (false) or on.
		restartedUnder bool
	}{
		{"set while the plugin runs", false},
		{"plugin restarted under it", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newNUMAPlugin(t)
			rt := &runtimeState{t: t, ctrs: map[string]pinning{}, failing: map[string]bool{}}
			found := releaseAllContainers()
			initial := merged(pinned, pinnedLeft)
			if tc.restartedUnder {
				initial = released
				found[3].Linux.Resources.Cpu.Quota = api.Int64(-1) // restarted before the quota was restored
				for _, c := range found {
					c.Linux.Resources.Cpu.Cpus = "0-7"
					if c.Linux.Resources.Cpu.Mems != "" {
						c.Linux.Resources.Cpu.Mems = "0-1"
					}
				}
			}
			for _, c := range found {
				q := int64(0)
				if v := c.Linux.Resources.Cpu.Quota.Get(); v != nil {
					q = *v
				}
				rt.ctrs[c.Id] = pinning{cpus: c.Linux.Resources.Cpu.Cpus, mems: c.Linux.Resources.Cpu.Mems, quota: q}
			}
			p.SetRelease("default", "cache", cacheReleased)
			if tc.restartedUnder {
				p.SetReleaseAll(true)
			}
			if req, done := p.ReleaseAll(); req != tc.restartedUnder || done {
				t.Fatalf("before synchronize: requested %v done %v", req, done)
			}
			upd, err := p.Synchronize(ctx, append(append([]*api.PodSandbox{}, releaseAllPods...), releaseAllLeft...), found)
			if err != nil {
				t.Fatal(err)
			}
			if tc.restartedUnder && len(upd) != 0 {
				t.Fatalf("synchronize under release-all replied %v: its updates go unsolicited, confirmed", updateMap(upd))
			}
			rt.apply(upd)
			if !tc.restartedUnder {
				rt.expect("pinned", initial)
				drain(p)
				p.SetReleaseAll(true)
				if _, done := p.ReleaseAll(); done {
					t.Fatal("done before any update was sent")
				}
			}
			rt.push(p)
			rt.expect("release-all", released)
			if req, done := p.ReleaseAll(); !req || !done {
				t.Fatalf("after the updates: requested %v done %v", req, done)
			}
			if got := testutil.ToFloat64(p.metrics.releaseAll); got != 1 {
				t.Errorf("corepin_nri_release_all %v, want 1", got)
			}
			// Nothing re-pins meanwhile: the drift check, a pod that stops.
			if n := p.CheckDrift(func(*Container) (cpuset.CPUSet, error) { return cpuset.New(1), nil }); n != 0 {
				t.Fatalf("the drift check corrected %d containers under release-all", n)
			}
			if upd, err := p.StopContainer(ctx, releaseAllPods[2], found[2]); err != nil || len(upd) != 0 {
				t.Fatalf("an exclusive stop under release-all replied %v %v", updateMap(upd), err)
			}
			delete(rt.ctrs, "c-db")
			rt.push(p)
			rest := merged(released)
			delete(rest, "c-db")
			rt.expect("after a stop", rest)

			p.SetReleaseAll(false)
			rt.push(p)
			want := merged(pinned, pinnedLeft)
			if tc.restartedUnder {
				// Found on every CPU, the containers left where they are
				// stay there: a synchronize leaves them as found.
				want["c-db2"], want["c-odd"] = released["c-db2"], released["c-odd"]
			}
			delete(want, "c-db")
			rt.expect("release-all removed", want)
			if req, done := p.ReleaseAll(); req || done {
				t.Fatalf("removed: requested %v done %v", req, done)
			}
		})
	}
}

// TestReleaseAllNewContainers: a container created under release-all gets
// the whole node, whatever its pod says, and none is refused; its CFS
// quota is the kubelet's even when its pod is released. Once release-all
// is removed, each is pinned as its annotations say, and one that would
// have been refused is left where it is (untracked, or quarantined).
func TestReleaseAllNewContainers(t *testing.T) {
	p := newNUMAPlugin(t)
	rt := &runtimeState{t: t, ctrs: map[string]pinning{}, failing: map[string]bool{}}
	if _, err := p.Synchronize(context.Background(), nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := rt.create(p, releaseAllPods[2], ctr("c-db", "s-db", "engine", 2000, "")); err != nil {
		t.Fatal(err)
	}
	p.SetReleaseAll(true)
	rt.push(p)
	released := withAnnotations(exclusivePod("s-hot", "hot", "6-7"), corepin.AnnotationReleaseIsolateMode, "true")
	for _, tc := range []struct {
		sb   *api.PodSandbox
		c    *api.Container
		want pinning
	}{
		{sandbox("s-web", "default", "web", nil), ctr("c-web", "s-web", "app", 500, ""), pinning{cpus: "0-7", quota: 50000}},
		{sandbox("s-dns", "kube-system", "dns", nil), ctr("c-dns", "s-dns", "dns", 100, ""), pinning{cpus: "0-7", quota: 10000}},
		{released, ctr("c-hot", "s-hot", "engine", 2000, ""), pinning{cpus: "0-7", mems: "0-1", quota: 200000}},
		// Refused outside release-all: db's CPUs, a malformed annotation,
		// an exclusive pod that was not placed, BindAllCPUs outside its
		// namespaces.
		{exclusivePod("s-db2", "db-2", "2-3"), ctr("c-db2", "s-db2", "engine", 2000, ""), pinning{cpus: "0-7", mems: "0-1", quota: 200000}},
		{sandbox("s-odd", "default", "odd", map[string]string{corepin.AnnotationCPUMode: "banana"}), ctr("c-odd", "s-odd", "app", 100, ""), pinning{cpus: "0-7", quota: 10000}},
		{sandbox("s-np", "default", "np", map[string]string{corepin.AnnotationCPUMode: "exclusive"}), ctr("c-np", "s-np", "app", 1000, ""), pinning{cpus: "0-7", quota: 100000}},
		{sandbox("s-ba", "default", "ba", map[string]string{corepin.AnnotationAllocSpec: `{"cpu":"BindAllCPUs"}`}), ctr("c-ba", "s-ba", "app", 100, ""), pinning{cpus: "0-7", quota: 10000}},
	} {
		if err := rt.create(p, tc.sb, tc.c); err != nil {
			t.Fatalf("%s refused under release-all: %v", tc.c.Id, err)
		}
		rt.expect("created under release-all", map[string]pinning{tc.c.Id: tc.want})
	}
	if _, done := p.ReleaseAll(); !done {
		t.Fatal("new containers created on the whole node leave release-all not done")
	}
	p.SetRelease("default", "hot", Release{Isolate: true, ExcludeReserve: true})
	p.SetReleaseAll(false)
	rt.push(p)
	rt.expect("release-all removed", map[string]pinning{
		"c-db":  {cpus: "2-3", mems: "0", quota: 200000},
		"c-hot": {cpus: "1-7", mems: "0", quota: -1}, // released: lifted now
		"c-web": {cpus: "1,4-5", quota: 50000},
		"c-dns": {cpus: "0-1,4-5", quota: 10000},
		// Left where they are, as a synchronize would.
		"c-db2": {cpus: "0-7", quota: 200000},
		"c-odd": {cpus: "0-7", quota: 10000},
		"c-np":  {cpus: "0-7", quota: 100000},
		"c-ba":  {cpus: "0-7", quota: 10000},
	})
	if pool := p.SharedPool().String(); pool != "1,4-5" {
		t.Fatalf("pool %s, want 1,4-5", pool)
	}
}

// TestReleaseAllDoneOnlyWhenConfirmed: done waits for the runtime to
// confirm every update; one that fails keeps it not done until it goes
// through, and it is never done before the plugin has synchronized.
func TestReleaseAllDoneOnlyWhenConfirmed(t *testing.T) {
	p := newNUMAPlugin(t)
	rt := &runtimeState{t: t, ctrs: map[string]pinning{}, failing: map[string]bool{}}
	p.SetReleaseAll(true)
	if _, done := p.ReleaseAll(); done {
		t.Fatal("done before the plugin ever synchronized")
	}
	if _, err := p.Synchronize(context.Background(), releaseAllPods[:1], releaseAllContainers()[:1]); err != nil {
		t.Fatal(err)
	}
	rt.ctrs["c-web"] = pinning{cpus: "1,6-7"}
	if _, done := p.ReleaseAll(); done {
		t.Fatal("done before the update was sent")
	}
	rt.failing["c-web"] = true
	if _, failed, _ := p.PushPending(rt.send); failed != 1 {
		t.Fatalf("%d failed", failed)
	}
	if _, done := p.ReleaseAll(); done {
		t.Fatal("done with a failed update")
	}
	delete(rt.failing, "c-web")
	rt.push(p)
	if _, done := p.ReleaseAll(); !done || rt.ctrs["c-web"].cpus != "0-7" {
		t.Fatalf("done %v, web on %s", done, rt.ctrs["c-web"].cpus)
	}
}
