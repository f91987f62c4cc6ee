//go:build integration

package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/cpuset"

	"github.com/corepin/corepin/api"
	"github.com/corepin/corepin/test/integration/framework"
)

// TestPluginWithAPIServer runs corepin-nri with a real containerd and a
// real kube-apiserver: it publishes the node's topology and shared pool,
// follows release-isolate-mode from `kubectl annotate`-style patches
// (cpuset widened and CFS quota lifted, then both restored), and corrects
// a cpuset rewritten behind its back (drift), counting it in /metrics.
func TestPluginWithAPIServer(t *testing.T) {
	host := framework.SplitHostCPUs(t)
	all, exclusiveCPU, pool := host.All, host.Exclusive, host.Pool
	ctx := context.Background()

	cp := framework.StartControlPlane(t)
	cp.CreateNode(t, "node-a", host.N, nil)
	ctrd := framework.StartContainerd(t)
	metricsAddr := fmt.Sprintf("127.0.0.1:%d", framework.FreePort(t))
	ctrd.StartPlugin(t, "--kubeconfig", cp.Kubeconfig, "--metrics-addr", metricsAddr, "--drift-interval", "0")
	published := func(key string) string {
		node, err := cp.Client.CoreV1().Nodes().Get(ctx, "node-a", metav1.GetOptions{})
		if err != nil {
			return ""
		}
		return node.Annotations[key]
	}
	waitPool := func(want cpuset.CPUSet) {
		t.Helper()
		framework.Eventually(t, 20*time.Second, "shared pool "+want.String()+" published", func() (bool, error) {
			s, err := api.ParseSharedPoolStatus(published(api.AnnotationSharedPool))
			return err == nil && s.CPUs.Equals(want), fmt.Errorf("published pool %+v, %v", s, err)
		})
	}
	waitPool(all)
	if _, err := api.ParseTopology(published(api.AnnotationTopology)); err != nil {
		t.Fatalf("published topology: %v", err)
	}
	// Each annotation is its own writer's, by server-side apply.
	node, err := cp.Client.CoreV1().Nodes().Get(ctx, "node-a", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for key, manager := range map[string]string{api.AnnotationTopology: "corepin-nri-topology", api.AnnotationSharedPool: "corepin-nri-shared-pool"} {
		if owners := annotationOwners(t, node, key); len(owners) != 1 || owners[0] != manager+" Apply" {
			t.Errorf("%s held by %q, want only %q", key, owners, manager+" Apply")
		}
	}

	// The db pod exists on the API server (bound to node-a, no kubelet) and
	// in containerd under the same name and UID (the kubelet passes the API
	// server's UID to the runtime; the plugin ignores a release switch
	// whose UID is not its sandbox's).
	annotations := framework.AllocStatusFor(exclusiveCPU)
	created := cp.CreatePod(t, framework.BoundPod("db", "1", annotations))
	webID, webCfg := ctrd.RunPod(t, "default", "web", nil)
	web := ctrd.RunContainer(t, webID, webCfg, "app", 500)
	dbID, dbCfg := ctrd.RunPodUID(t, "default", "db", string(created.UID), annotations)
	db := ctrd.RunContainer(t, dbID, dbCfg, "engine", 1000)
	if got := ctrd.ExecStatus(t, db); !got.Allowed.Equals(exclusiveCPU) || got.Quota != "100000" {
		t.Fatalf("exclusive container before release: %+v, want %s with quota 100000", got, exclusiveCPU)
	}
	waitPool(pool)

	annotate := func(value *string) time.Time {
		t.Helper()
		patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]*string{api.AnnotationReleaseIsolateMode: value}}})
		if _, err := cp.Client.CoreV1().Pods("default").Patch(ctx, "db", types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
		return time.Now()
	}
	waitStatus := func(what string, want cpuset.CPUSet, quota string, since time.Time) {
		t.Helper()
		framework.Eventually(t, 10*time.Second, what, func() (bool, error) {
			got := ctrd.ExecStatus(t, db)
			return got.Allowed.Equals(want) && got.Quota == quota, fmt.Errorf("db sees %+v", got)
		})
		// The requirement is 1 s; on this shared machine the figure is
		// logged, not asserted (exec itself takes a good part of it).
		t.Logf("%s after %v", what, time.Since(since).Round(time.Millisecond))
	}
	on := "true"
	waitStatus("released: every CPU, quota lifted", all, "-1", annotate(&on))
	if got := ctrd.ExecStatus(t, web); !got.Allowed.Equals(pool) {
		t.Fatalf("releasing db moved the shared container to %s", got.Allowed)
	}
	waitStatus("restored: its own CPU and quota", exclusiveCPU, "100000", annotate(nil))

	// A refusal is an event on the pod, next to kubelet's own error.
	id2, cfg2 := ctrd.RunPod(t, "default", "db-2", framework.AllocStatusFor(exclusiveCPU))
	if _, err := ctrd.CreateContainer(id2, cfg2, "engine", 1000); err == nil {
		t.Fatal("an overlapping allocation was accepted")
	}
	framework.Eventually(t, 20*time.Second, "CorepinRefused event on db-2", func() (bool, error) {
		events, err := cp.Client.CoreV1().Events("default").List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=db-2"})
		if err != nil {
			return false, err
		}
		for _, e := range events.Items {
			if e.Reason == "CorepinRefused" && strings.HasPrefix(e.Message, "corepin: pod default/db-2 container engine") {
				return true, nil
			}
		}
		return false, fmt.Errorf("events: %v", events.Items)
	})

	// Drift: rewrite the shared container's cpuset on the host, as a stray
	// agent would, then ask the plugin to check.
	file := filepath.Join("/sys/fs/cgroup/cpuset", ctrd.CgroupParent, "web", web, "cpuset.cpus")
	if _, err := os.Stat(file); err != nil {
		t.Skipf("no cgroup v1 cpuset file for the drift check: %v", err)
	}
	if err := os.WriteFile(file, []byte(all.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := ctrd.ExecStatus(t, web); !got.Cgroup.Equals(all) {
		t.Fatalf("the drift was not made: %+v", got)
	}
	resp, err := http.Post("http://"+metricsAddr+"/drift", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if strings.TrimSpace(string(body)) != `{"drifted":1}` {
		t.Fatalf("POST /drift answered %q, want one container drifted", body)
	}
	framework.Eventually(t, 10*time.Second, "drift corrected", func() (bool, error) {
		got := ctrd.ExecStatus(t, web)
		return got.Cgroup.Equals(pool) && got.Allowed.Equals(pool), fmt.Errorf("web sees %+v", got)
	})
	metrics := scrape(t, "http://"+metricsAddr+"/metrics")
	for _, want := range []string{
		"corepin_nri_drift_corrections_total 1",
		fmt.Sprintf("corepin_nri_shared_pool_cpus %d", pool.Size()),
		"corepin_nri_exclusive_cpus 1",
		`corepin_nri_container_updates_total{reason="release"} 1`,
		`corepin_nri_container_updates_total{reason="restore"} 1`,
		`corepin_nri_container_updates_total{reason="repair"} 1`, // the drift correction
		`corepin_nri_handler_duration_seconds_count{handler="CreateContainer"}`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	for _, probe := range []string{"/livez", "/readyz", "/healthz"} {
		resp, err := http.Get("http://" + metricsAddr + probe)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("%s answered %d %q while connected", probe, resp.StatusCode, body)
		}
	}
}

// TestPluginRefusesStaticCPUManager starts the plugin beside a kubelet
// state file that says "static": it must exit saying why, with an event on
// the node.
func TestPluginRefusesStaticCPUManager(t *testing.T) {
	cp := framework.StartControlPlane(t)
	cp.CreateNode(t, "node-s", 2, nil)
	kubelet := t.TempDir()
	if err := os.WriteFile(filepath.Join(kubelet, "cpu_manager_state"), []byte(`{"policyName":"static","defaultCpuSet":"0-1","checksum":1}`), 0o644); err != nil {
		t.Fatal(err)
	}
	p := framework.Start(t, t.TempDir(), "corepin-nri-static", framework.RepoBinary(t, "corepin-nri"),
		"--nri-socket", filepath.Join(t.TempDir(), "none.sock"), "--node-name", "node-s", "--kubelet-root", kubelet, "--kubeconfig", cp.Kubeconfig)
	framework.Eventually(t, 30*time.Second, "corepin-nri exits", func() (bool, error) {
		exited, _ := p.Exited()
		return exited, nil
	})
	if log := framework.Tail(p.Log, 20); !strings.Contains(log, "static CPU manager") || !strings.Contains(log, "cpuManagerPolicy: none") {
		t.Fatalf("exit message does not say why:\n%s", log)
	}
	events, err := cp.Client.CoreV1().Events("default").List(context.Background(), metav1.ListOptions{FieldSelector: "involvedObject.name=node-s"})
	if err != nil || len(events.Items) != 1 || events.Items[0].Reason != "CorepinStaticCPUManager" {
		t.Fatalf("node events %v, %v; want one CorepinStaticCPUManager", events, err)
	}
}

func scrape(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return string(body)
}
