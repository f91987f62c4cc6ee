//go:build integration

package integration

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	cri "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/utils/cpuset"

	"github.com/corepin/corepin/api"
	"github.com/corepin/corepin/test/integration/framework"
)

// TestPluginResyncKeepsUnparsedPodsCPUs: after an upgrade, a pod the old
// version pinned has an annotation the new one refuses (max-per-node "01").
// The new plugin synchronizes against a real containerd where the old
// pinning is in place (the exclusive container on its CPU, the shared one
// on the rest): the shared container must not be widened onto the
// exclusive CPU, which stays refused to other pods, and the pod is
// reported. With a valid alloc-status its CPUs are kept; with one that no
// longer parses either, the CPUs the container runs on are.
func TestPluginResyncKeepsUnparsedPodsCPUs(t *testing.T) {
	host := framework.SplitHostCPUs(t)
	exclusiveCPU, pool := host.Exclusive, host.Pool
	for _, tc := range []struct {
		name, allocStatus string
	}{
		{"valid alloc-status", fmt.Sprintf(`{"node":"node-a","cpus":%q,"containers":{"engine":%q},"mems":"0"}`, exclusiveCPU, exclusiveCPU)},
		// "mems" is a CPU list: "node0" is what a stricter parser refuses.
		{"alloc-status that no longer parses", fmt.Sprintf(`{"node":"node-a","cpus":%q,"containers":{"engine":%q},"mems":"node0"}`, exclusiveCPU, exclusiveCPU)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctrd := framework.StartContainerd(t)
			// The state the old version left: created with no plugin
			// connected, then pinned through CRI as it would have.
			webID, webCfg := ctrd.RunPod(t, "default", "web", nil)
			web := ctrd.RunContainer(t, webID, webCfg, "app", 500)
			dbID, dbCfg := ctrd.RunPod(t, "default", "db", map[string]string{
				api.AnnotationCPUMode:     "exclusive",
				api.AnnotationApp:         "db",
				api.AnnotationMaxPerNode:  "01",
				api.AnnotationAllocStatus: tc.allocStatus,
			})
			db := ctrd.RunContainer(t, dbID, dbCfg, "engine", 1000)
			pin(t, ctrd, db, exclusiveCPU, 1000)
			pin(t, ctrd, web, pool, 500)
			if got := ctrd.ExecStatus(t, web); !got.Allowed.Equals(pool) {
				t.Fatalf("web before the plugin: %s, want %s", got.Allowed, pool)
			}

			metricsAddr := fmt.Sprintf("127.0.0.1:%d", framework.FreePort(t))
			plugin := ctrd.StartPlugin(t, "--metrics-addr", metricsAddr)
			// The updates of synchronize are applied as the plugin
			// registers: watch for a while that none widens web.
			for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
				if got := ctrd.ExecStatus(t, web); !got.Allowed.Equals(pool) {
					t.Fatalf("shared container moved to %s after synchronize, want %s (CPU %s is db's)\n%s",
						got.Allowed, pool, exclusiveCPU, framework.Tail(plugin.Log, 20))
				}
			}
			if got := ctrd.ExecStatus(t, db); !got.Allowed.Equals(exclusiveCPU) {
				t.Fatalf("db after synchronize: %s, want %s", got.Allowed, exclusiveCPU)
			}
			id, cfg := ctrd.RunPod(t, "default", "db-2", framework.AllocStatusFor(exclusiveCPU))
			if _, err := ctrd.CreateContainer(id, cfg, "engine", 1000); err == nil || !strings.Contains(err.Error(), "corepin: pod default/db-2 container engine") {
				t.Fatalf("another pod on db's CPU: %v, want refused", err)
			}
			if got := ctrd.ExecStatus(t, web); !got.Allowed.Equals(pool) {
				t.Fatalf("shared container after the refusal: %s, want %s", got.Allowed, pool)
			}
			log := framework.Tail(plugin.Log, 200)
			if !strings.Contains(log, "default/db") || !strings.Contains(log, api.AnnotationMaxPerNode) {
				t.Errorf("the plugin's log names neither the pod nor the annotation:\n%s", log)
			}
			if m := scrape(t, "http://"+metricsAddr+"/metrics"); !strings.Contains(m, "corepin_nri_sync_conflicts_total 1") {
				t.Errorf("/metrics lacks corepin_nri_sync_conflicts_total 1")
			}
		})
	}
}

// TestPluginRestartInSandboxAfterContainerdRestart: an exclusive
// container exits; while it is stopped containerd restarts (the plugin
// reconnects and synchronizes, and containerd lists no exited container)
// and the node's exclusive limit falls below what the pod holds (a large
// shared pod started there: shared pods are not capacity-checked on the
// node). The kubelet then restarts the container in its sandbox: it must be
// created, on its CPUs (it was refused as growth, and the pod crash-looped).
func TestPluginRestartInSandboxAfterContainerdRestart(t *testing.T) {
	host := framework.SplitHostCPUs(t)
	all, exclusiveCPU, pool := host.All, host.Exclusive, host.Pool

	ctrd := framework.StartContainerd(t)
	plugin := ctrd.StartPlugin(t)
	webID, webCfg := ctrd.RunPod(t, "default", "web", nil)
	web := ctrd.RunContainer(t, webID, webCfg, "app", 500)
	dbID, dbCfg := ctrd.RunPod(t, "default", "db", framework.AllocStatusFor(exclusiveCPU))
	db := ctrd.RunContainer(t, dbID, dbCfg, "engine", 1000)
	if got := ctrd.ExecStatus(t, db); !got.Allowed.Equals(exclusiveCPU) {
		t.Fatalf("db: %s, want %s", got.Allowed, exclusiveCPU)
	}

	// The container exits; the pool grows back over its CPU.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := ctrd.Runtime.StopContainer(ctx, &cri.StopContainerRequest{ContainerId: db, Timeout: 10}); err != nil {
		t.Fatal(err)
	}
	framework.Eventually(t, 20*time.Second, "pool grown back while db is stopped", func() (bool, error) {
		got := ctrd.ExecStatus(t, web)
		return got.Allowed.Equals(all), fmt.Errorf("web sees %s", got.Allowed)
	})

	ctrd.Restart()
	framework.Eventually(t, 60*time.Second, "plugin resynchronized", func() (bool, error) {
		return strings.Count(framework.Tail(plugin.Log, 300), "msg=Synchronized") >= 2, nil
	})
	// A shared pod of half the node: P - h*M <= 0, no room for any
	// exclusive CPU by the formula.
	batchID, batchCfg := ctrd.RunPod(t, "default", "batch", nil)
	batch, err := ctrd.CreateContainer(batchID, batchCfg, "app", int64((host.N+1)/2*1000))
	if err != nil {
		t.Fatal(err)
	}
	ctrd.StartContainer(t, batch)

	// The kubelet restarts the container in its sandbox (next attempt).
	again, err := createAttempt(ctrd, dbID, dbCfg, "engine", 1, 1000)
	if err != nil {
		t.Fatalf("restart of db's container in its sandbox refused: %v\n%s", err, framework.Tail(plugin.Log, 20))
	}
	ctrd.StartContainer(t, again)
	if got := ctrd.ExecStatus(t, again); !got.Allowed.Equals(exclusiveCPU) {
		t.Fatalf("restarted db container: %s, want %s", got.Allowed, exclusiveCPU)
	}
	for _, c := range []string{web, batch} {
		if got := ctrd.ExecStatus(t, c); !got.Allowed.Equals(pool) {
			t.Fatalf("shared container %s after db's restart: %s, want %s", c, got.Allowed, pool)
		}
	}
	// The fallen limit still holds for new pods.
	id, cfg := ctrd.RunPod(t, "default", "db-2", framework.AllocStatusFor(cpuset.New(0)))
	if _, err := ctrd.CreateContainer(id, cfg, "engine", 1000); err == nil || !strings.Contains(err.Error(), "exclusive limit 0 reached") {
		t.Fatalf("a new exclusive pod under the fallen limit: %v, want refused", err)
	}
}

// pin sets a running container's cpuset through CRI, as a plugin's update
// would (the CPU limit passed again, so the quota stays).
func pin(t *testing.T, ctrd *framework.Containerd, id string, cpus cpuset.CPUSet, milli int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res := &cri.LinuxContainerResources{CpusetCpus: cpus.String(), CpuPeriod: 100000, CpuQuota: milli * 100, CpuShares: milli * 1024 / 1000}
	if _, err := ctrd.Runtime.UpdateContainerResources(ctx, &cri.UpdateContainerResourcesRequest{ContainerId: id, Linux: res}); err != nil {
		t.Fatalf("pinning %s to %s: %v", id, cpus, err)
	}
}

// createAttempt creates a container as the kubelet restarts one in its
// sandbox: same name, the next attempt.
func createAttempt(ctrd *framework.Containerd, podID string, pod *cri.PodSandboxConfig, name string, attempt uint32, milli int64) (string, error) {
	cfg := &cri.ContainerConfig{
		Metadata: &cri.ContainerMetadata{Name: name, Attempt: attempt},
		Image:    &cri.ImageSpec{Image: framework.WorkloadImage},
		LogPath:  fmt.Sprintf("%s-%d.log", name, attempt),
		Linux: &cri.LinuxContainerConfig{Resources: &cri.LinuxContainerResources{
			CpuPeriod: 100000, CpuQuota: milli * 100, CpuShares: milli * 1024 / 1000}},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	resp, err := ctrd.Runtime.CreateContainer(ctx, &cri.CreateContainerRequest{PodSandboxId: podID, Config: cfg, SandboxConfig: pod})
	if err != nil {
		return "", err
	}
	return resp.ContainerId, nil
}
