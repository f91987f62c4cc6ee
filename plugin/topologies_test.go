package plugin

import (
	"context"
	"io"
	"log/slog"
	"maps"
	"strings"
	"testing"

	"github.com/containerd/nri/pkg/api"

	corepin "github.com/corepin/corepin/api"
	"github.com/corepin/corepin/internal/testtopo"
	"github.com/corepin/corepin/policy"
)

// topologyPlugin is a plugin on the named machine with reserved held back
// (as a kubelet's reservation: whole cores).
func topologyPlugin(t *testing.T, name, reserved string) *Plugin {
	t.Helper()
	src := testtopo.MustLoad(name)
	set, err := corepin.ParseCPUList(reserved)
	if err != nil {
		t.Fatal(err)
	}
	src.Reserved = corepin.NewCPUList(set)
	topo, err := policy.NewTopology(src)
	if err != nil {
		t.Fatalf("%s with %s reserved: %v", name, reserved, err)
	}
	cfg := Config{NodeName: "node-a", SystemNamespaces: []string{"kube-system"}, Limits: corepin.DefaultLimits()}
	return New(NewLedger(cfg, topo), slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
}

// placedOn is an exclusive pod whose alloc-status gives its engine cpus
// and memory nodes mems.
func placedOn(id, name, cpus, mems string) *api.PodSandbox {
	return sandbox(id, "default", name, map[string]string{
		corepin.AnnotationCPUMode:     "exclusive",
		corepin.AnnotationAllocStatus: `{"node":"node-a","cpus":"` + cpus + `","containers":{"engine":"` + cpus + `"},"mems":"` + mems + `"}`,
	})
}

// updatesOf maps container ID to the cpuset each update gives it.
func updatesOf(upd []*api.ContainerUpdate) map[string]string {
	out := map[string]string{}
	for _, u := range upd {
		out[u.GetContainerId()] = cpusOf(u)
	}
	return out
}

// TestNodeStateOnNamedTopologies runs the node's state through the
// plugin's handlers on machines whose CPU numbering is not 0..N-1 with
// siblings N+k: AMD EPYC (siblings N and N+16, several L3 groups), Azure
// (siblings adjacent), a KVM guest with sparse ids, and a Xeon with an
// offline CPU (its sibling alone on its core). On each: what cpuset a
// shared, a system and an exclusive container get; the shrink handed back
// with the exclusive create, before it starts; the refusals of CPUs that
// cannot be given (held, reserved, not online, over the limit), which
// change nothing; the release switch; a restarted plugin's rebuild from the
// runtime's list; and the growth back once the exclusive container stops.
func TestNodeStateOnNamedTopologies(t *testing.T) {
	type refusal struct{ cpus, mems, want string }
	for _, tc := range []struct {
		topo     string
		reserved string // a whole core
		pool     string // online minus reserved
		system   string // pool plus reserved
		db       string // whole cores: siblings together
		shrunk   string // pool minus db
		// shrunkSystem: the shrunk pool plus reserved
		shrunkSystem string
		refused      []refusal
	}{
		{
			topo: "epyc-7313p", reserved: "0,16",
			pool: "1-15,17-31", system: "0-31",
			db: "2-3,18-19", shrunk: "1,4-15,17,20-31", shrunkSystem: "0-1,4-17,20-31",
			refused: []refusal{
				{"19-20", "0", "CPU 19 is held by pod default/db"},
				{"16", "0", "CPU 16 is reserved"}, // cpu 0's sibling
				{"32", "0", "CPU 32 is not online"},
				{"4-15,20-24", "0", "exclusive limit 20 reached (needs 17, holds 4)"}, // P = 30, floor(2/3 P) = 20
			},
		},
		{
			topo: "azure-d16s-v5", reserved: "0-1",
			pool: "2-15", system: "0-15",
			db: "2-3", shrunk: "4-15", shrunkSystem: "0-1,4-15",
			refused: []refusal{
				{"3-4", "0", "CPU 3 is held by pod default/db"},
				{"1", "0", "CPU 1 is reserved"}, // cpu 0's sibling, numbered next to it
				{"16", "0", "CPU 16 is not online"},
				{"4-11", "0", "exclusive limit 9 reached (needs 8, holds 2)"}, // P = 14, floor(2/3 P) = 9
			},
		},
		{
			topo: "kvm-hotplug-sparse", reserved: "0",
			pool: "1-3,8-11", system: "0-3,8-11",
			db: "8-9", shrunk: "1-3,10-11", shrunkSystem: "0-3,10-11",
			refused: []refusal{
				{"9-10", "0", "CPU 9 is held by pod default/db"},
				{"0", "0", "CPU 0 is reserved"},
				{"4", "0", "CPU 4 is not online"},                               // in the hole between the ids
				{"1-3,10", "0", "exclusive limit 4 reached (needs 4, holds 2)"}, // P = 7, floor(2/3 P) = 4
			},
		},
		{
			topo: "xeon-4208-2s-cpu5-offline", reserved: "0,16",
			pool: "1-4,6-15,17-31", system: "0-4,6-31",
			db: "21", shrunk: "1-4,6-15,17-20,22-31", shrunkSystem: "0-4,6-20,22-31", // 21: alone on its core, cpu 5 offline
			refused: []refusal{
				{"5,21", "0", "CPU 5 is not online"},
				{"20-21", "0", "CPU 21 is held by pod default/db"},
				{"16", "0", "CPU 16 is reserved"},
				// A CPU of the second socket with the first one's memory.
				{"8", "0", `corepin.io/alloc-status mems "0" are not the NUMA nodes of its CPUs 8 (1)`},
				{"1-4,6-15,17-20,22", "0-1", "exclusive limit 19 reached (needs 19, holds 1)"}, // P = 29, floor(2/3 P) = 19
			},
		},
	} {
		t.Run(tc.topo, func(t *testing.T) {
			ctx := context.Background()
			p := topologyPlugin(t, tc.topo, tc.reserved)
			cpus := func(adj *api.ContainerAdjustment) string { return adj.GetLinux().GetResources().GetCpu().GetCpus() }

			web := sandbox("s-web", "default", "web", nil)
			adj, upd, err := p.CreateContainer(ctx, web, ctr("c-web", "s-web", "app", 500, ""))
			if err != nil || len(upd) != 0 || cpus(adj) != tc.pool {
				t.Fatalf("shared container: cpus %q, %d updates, %v; want the pool %s and no update", cpus(adj), len(upd), err, tc.pool)
			}
			dns := sandbox("s-dns", "kube-system", "dns", nil)
			if adj, _, err = p.CreateContainer(ctx, dns, ctr("c-dns", "s-dns", "dns", 100, "")); err != nil || cpus(adj) != tc.system {
				t.Fatalf("system container: cpus %q, %v; want the pool and the reserved CPUs %s", cpus(adj), err, tc.system)
			}

			db := placedOn("s-db", "db", tc.db, "0")
			adj, upd, err = p.CreateContainer(ctx, db, ctr("c-db", "s-db", "engine", 1000, ""))
			if err != nil {
				t.Fatal(err)
			}
			if got := adj.GetLinux().GetResources().GetCpu(); got.GetCpus() != tc.db || got.GetMems() != "0" {
				t.Fatalf("exclusive container: cpus %q mems %q, want %s on memory node 0", got.GetCpus(), got.GetMems(), tc.db)
			}
			want := map[string]string{"c-web": tc.shrunk, "c-dns": tc.shrunkSystem}
			if got := updatesOf(upd); !maps.Equal(got, want) {
				t.Fatalf("the shrink handed back with the exclusive create: %v, want %v", got, want)
			}
			if got := p.SharedPool().String(); got != tc.shrunk {
				t.Fatalf("shared pool %s after the exclusive create, want %s", got, tc.shrunk)
			}
			// A sidecar of the exclusive pod runs in the shrunk pool.
			if adj, _, err = p.CreateContainer(ctx, db, ctr("c-side", "s-db", "exporter", 100, "")); err != nil || cpus(adj) != tc.shrunk {
				t.Fatalf("sidecar: cpus %q, %v; want the shrunk pool %s", cpus(adj), err, tc.shrunk)
			}

			for i, r := range tc.refused {
				id := "s-bad-" + r.cpus
				_, upd, err := p.CreateContainer(ctx, placedOn(id, "bad", r.cpus, r.mems), ctr("c-bad", id, "engine", 1000, ""))
				if err == nil || !strings.HasPrefix(err.Error(), "corepin: pod default/bad container engine") || !strings.Contains(err.Error(), r.want) || upd != nil {
					t.Errorf("refusal %d, cpus %s: %v, %d updates; want an error saying %q", i, r.cpus, err, len(upd), r.want)
				}
			}
			if got := p.SharedPool().String(); got != tc.shrunk || len(inLedger(p, (*Ledger).Containers)) != 4 {
				t.Fatalf("after the refusals: pool %s, %d containers; want %s and the 4 admitted", got, len(inLedger(p, (*Ledger).Containers)), tc.shrunk)
			}

			// What the API says: db released runs on every online CPU but
			// the reserved ones while its own stay held; restored, it is
			// back on them.
			p.SetRelease("default", "db", Release{Isolate: true, ExcludeReserve: true, LimitMilli: map[string]int64{"engine": 1000}})
			if got := updatesOf(p.PendingUpdates()); !maps.Equal(got, map[string]string{"c-db": tc.pool}) {
				t.Fatalf("release updates %v, want c-db on %s", got, tc.pool)
			}
			if got := p.SharedPool().String(); got != tc.shrunk {
				t.Fatalf("shared pool %s while db is released, want %s still", got, tc.shrunk)
			}
			p.SetRelease("default", "db", Release{ExcludeReserve: true, LimitMilli: map[string]int64{"engine": 1000}})
			if got := updatesOf(p.PendingUpdates()); !maps.Equal(got, map[string]string{"c-db": tc.db}) {
				t.Fatalf("restore updates %v, want c-db back on %s", got, tc.db)
			}

			// The plugin restarted: rebuilt from the runtime's list, with
			// web found on every CPU (created while it was down), only web
			// is moved, into the shrunk pool.
			restarted := topologyPlugin(t, tc.topo, tc.reserved)
			upd, err = restarted.Synchronize(ctx, []*api.PodSandbox{web, dns, db}, []*api.Container{
				createdAt(ctr("c-db", "s-db", "engine", 1000, tc.db), 100),
				createdAt(ctr("c-side", "s-db", "exporter", 100, tc.shrunk), 200),
				createdAt(ctr("c-dns", "s-dns", "dns", 100, tc.shrunkSystem), 300),
				createdAt(ctr("c-web", "s-web", "app", 500, tc.system), 400),
			})
			if err != nil {
				t.Fatal(err)
			}
			if got := updatesOf(upd); !maps.Equal(got, map[string]string{"c-web": tc.shrunk}) {
				t.Fatalf("synchronize updates %v, want only c-web moved to %s", got, tc.shrunk)
			}
			if got := restarted.SharedPool().String(); got != tc.shrunk {
				t.Fatalf("shared pool %s after synchronize, want %s", got, tc.shrunk)
			}

			upd, err = p.StopContainer(ctx, db, ctr("c-db", "s-db", "engine", 1000, tc.db))
			if err != nil {
				t.Fatal(err)
			}
			want = map[string]string{"c-web": tc.pool, "c-dns": tc.system, "c-side": tc.pool}
			if got := updatesOf(upd); !maps.Equal(got, want) {
				t.Fatalf("the growth back once the exclusive container stopped: %v, want %v", got, want)
			}
			if got := p.SharedPool().String(); got != tc.pool {
				t.Fatalf("shared pool %s after the stop, want %s", got, tc.pool)
			}
		})
	}
}
