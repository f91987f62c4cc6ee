//go:build integration

package integration

import (
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"k8s.io/utils/cpuset"

	"github.com/corepin/corepin/api"
	"github.com/corepin/corepin/test/integration/framework"
)

// TestPluginWithContainerd runs corepin-nri against a real containerd and
// runc, creating pods through CRI, and checks the CPUs from inside the
// containers. Sized from this machine: the last CPU is exclusive (the
// exclusive limit on 2 CPUs is floor(2/3*2) = 1), the rest is the pool.
func TestPluginWithContainerd(t *testing.T) {
	host := framework.SplitHostCPUs(t)
	all, exclusiveCPU, pool := host.All, host.Exclusive, host.Pool

	parent := t
	ctrd := framework.StartContainerd(t)
	plugin := ctrd.StartPlugin(t)

	webID, webCfg := ctrd.RunPod(t, "default", "web", nil)
	web := ctrd.RunContainer(t, webID, webCfg, "app", 500)
	if got := ctrd.ExecStatus(t, web); !got.Allowed.Equals(all) {
		t.Fatalf("shared container before any exclusive one: %s, want %s", got.Allowed, all)
	}

	dbID, dbCfg := ctrd.RunPod(t, "default", "db", framework.AllocStatusFor(exclusiveCPU))
	db, err := ctrd.CreateContainer(dbID, dbCfg, "engine", 1000)
	if err != nil {
		t.Fatalf("exclusive create refused: %v\n%s", err, framework.Tail(plugin.Log, 20))
	}
	// The shrink is applied with the creation, before the container starts.
	if got := ctrd.ExecStatus(t, web); !got.Allowed.Equals(pool) || !got.Cgroup.Equals(pool) {
		t.Fatalf("shared container after the exclusive create: %+v, want %s", got, pool)
	}
	ctrd.StartContainer(t, db)
	if first := ctrd.FirstLog(t, dbCfg, "engine"); !first.Allowed.Equals(exclusiveCPU) {
		t.Fatalf("exclusive container's first instruction saw %s, want %s", first.Allowed, exclusiveCPU)
	}
	if got := ctrd.ExecStatus(t, db); !got.Allowed.Equals(exclusiveCPU) || !got.Cgroup.Equals(exclusiveCPU) {
		t.Fatalf("exclusive container: %+v, want %s", got, exclusiveCPU)
	}

	t.Run("overlapping and malformed allocations are refused", func(t *testing.T) {
		id, cfg := ctrd.RunPod(t, "default", "db-2", framework.AllocStatusFor(exclusiveCPU))
		_, err := ctrd.CreateContainer(id, cfg, "engine", 1000)
		if err == nil || !strings.Contains(err.Error(), "corepin: pod default/db-2 container engine") || !strings.Contains(err.Error(), "held by pod default/db") {
			t.Fatalf("overlap: %v", err)
		}
		bad := map[string]string{api.AnnotationCPUMode: "exclusive", api.AnnotationAllocStatus: `{"node":"node-a","cpus":"0-x"}`}
		id, cfg = ctrd.RunPod(t, "default", "db-3", bad)
		if _, err := ctrd.CreateContainer(id, cfg, "engine", 1000); err == nil || !strings.Contains(err.Error(), api.AnnotationAllocStatus) {
			t.Fatalf("malformed: %v", err)
		}
		if got := ctrd.ExecStatus(t, db); !got.Allowed.Equals(exclusiveCPU) {
			t.Fatalf("a refused pod moved the exclusive container to %s", got.Allowed)
		}
	})

	t.Run("kill -9 of the plugin and its restart change no cpuset", func(t *testing.T) {
		plugin.Kill()
		plugin = ctrd.StartPlugin(parent) // lives beyond this subtest
		if got := ctrd.ExecStatus(t, web); !got.Allowed.Equals(pool) {
			t.Fatalf("shared container after the plugin restart: %s, want %s", got.Allowed, pool)
		}
		if got := ctrd.ExecStatus(t, db); !got.Allowed.Equals(exclusiveCPU) {
			t.Fatalf("exclusive container after the plugin restart: %s", got.Allowed)
		}
	})

	t.Run("removing the exclusive pod grows the pool back", func(t *testing.T) {
		ctrd.RemovePod(t, dbID)
		framework.Eventually(t, 30*time.Second, "shared pool grown back", func() (bool, error) {
			got := ctrd.ExecStatus(t, web)
			return got.Allowed.Equals(all), fmt.Errorf("shared container sees %s", got.Allowed)
		})
	})

	t.Run("after a containerd restart the plugin is back and enforcing", func(t *testing.T) {
		ctrd.Restart()
		framework.Eventually(t, 60*time.Second, "plugin resynchronized", func() (bool, error) {
			return strings.Count(framework.Tail(plugin.Log, 200), "Synchronized") >= 2, nil
		})
		id, cfg := ctrd.RunPod(t, "default", "db-4", framework.AllocStatusFor(exclusiveCPU))
		c := ctrd.RunContainer(t, id, cfg, "engine", 1000)
		if got := ctrd.ExecStatus(t, c); !got.Allowed.Equals(exclusiveCPU) {
			t.Fatalf("exclusive container after the containerd restart: %s", got.Allowed)
		}
		if got := ctrd.ExecStatus(t, web); !got.Allowed.Equals(pool) {
			t.Fatalf("shared container after the containerd restart: %s", got.Allowed)
		}
	})
}

// BenchmarkContainerCreateStart measures container create+start through
// CRI on a real containerd with corepin-nri connected against without it,
// in one run (rounds alternate, so both see the same machine), and reports
// the ratio (target at most 1.10). A shared web container runs throughout,
// so every exclusive creation carries a shrink update.
//
//	go test -tags integration -run '^$' -bench ContainerCreateStart -benchtime 1x ./test/integration/
func BenchmarkContainerCreateStart(b *testing.B) {
	const rounds, perRound = 8, 6
	ctrd := framework.StartContainerd(b)
	webID, webCfg := ctrd.RunPod(b, "default", "web", nil)
	ctrd.RunContainer(b, webID, webCfg, "app", 500)
	exclusiveCPU := cpuset.New(runtime.NumCPU() - 1)

	round := func(name string, annotations map[string]string) time.Duration {
		id, cfg := ctrd.RunPod(b, "default", name, annotations)
		var spent time.Duration
		for i := 0; i < perRound; i++ {
			start := time.Now()
			c, err := ctrd.CreateContainer(id, cfg, fmt.Sprintf("engine-%d", i), 1000)
			if err != nil {
				b.Fatal(err)
			}
			ctrd.StartContainer(b, c)
			spent += time.Since(start)
		}
		ctrd.RemovePod(b, id)
		return spent
	}
	b.ResetTimer()
	for n := 0; n < b.N; n++ {
		var without, with, withExclusive time.Duration
		var plugin *framework.Process
		for r := 0; r < rounds; r++ {
			without += round(fmt.Sprintf("bare-%d-%d", n, r), nil)
			plugin = ctrd.StartPlugin(b)
			with += round(fmt.Sprintf("pinned-%d-%d", n, r), nil)
			// engine-0 is exclusive (its creation shrinks the pool under
			// web); the pod's other containers run in the shared pool.
			withExclusive += round(fmt.Sprintf("excl-%d-%d", n, r), exclusiveFirst(exclusiveCPU))
			plugin.Kill()
		}
		per := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 / float64(rounds*perRound) }
		b.ReportMetric(per(without), "ms/container-bare")
		b.ReportMetric(per(with), "ms/container-corepin")
		b.ReportMetric(per(withExclusive), "ms/container-corepin-exclusive-pod")
		b.ReportMetric(float64(with)/float64(without), "ratio")
		b.ReportMetric(float64(withExclusive)/float64(without), "ratio-exclusive-pod")
	}
}

// exclusiveFirst is an exclusive pod whose container engine-0 holds cpus;
// its other containers run in the shared pool.
func exclusiveFirst(cpus cpuset.CPUSet) map[string]string {
	return map[string]string{
		api.AnnotationCPUMode:     "exclusive",
		api.AnnotationAllocStatus: fmt.Sprintf(`{"node":"node-a","cpus":%q,"containers":{"engine-0":%q},"mems":"0"}`, cpus, cpus),
	}
}
