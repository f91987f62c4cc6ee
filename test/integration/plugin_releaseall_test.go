//go:build integration

package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/cpuset"

	"github.com/corepin/corepin/api"
	"github.com/corepin/corepin/test/integration/framework"
)

// TestPluginReleaseAll is the uninstall path with a real containerd and a
// real kube-apiserver: `corepin-nri release-all` (the chart's pre-delete
// hook) annotates the node that runs a corepin-nri pod and returns once
// its plugin reports corepin.io/release-all-done; by then every container
// (exclusive and released, shared, system-namespace) runs on every CPU
// with the quota the kubelet gave it, read inside the containers. A
// container created meanwhile gets every CPU too, the plugin restarted
// under it pins nothing back, and `release-all --clear` (a reinstall)
// pins everything again.
func TestPluginReleaseAll(t *testing.T) {
	host := framework.SplitHostCPUs(t)
	all, exclusiveCPU, pool := host.All, host.Exclusive, host.Pool
	ctx := context.Background()

	cp := framework.StartControlPlane(t)
	cp.CreateNode(t, "node-a", host.N, nil)
	ctrd := framework.StartContainerd(t)
	bin := framework.RepoBinary(t, "corepin-nri")
	start := func() *framework.Process {
		t.Helper()
		// A drift check every second: it must not re-pin anything under release-all.
		return ctrd.StartPlugin(t, "--kubeconfig", cp.Kubeconfig, "--drift-interval", "1s")
	}
	plugin := start()
	// The DaemonSet's pod on node-a, as release-all finds it (no kubelet:
	// it stays Pending, which release-all does not mind).
	if _, err := cp.Client.CoreV1().Pods("default").Create(ctx, &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "corepin-nri-a", Labels: map[string]string{"app.kubernetes.io/name": "corepin-nri"}},
		Spec:       v1.PodSpec{NodeName: "node-a", Containers: []v1.Container{{Name: "corepin-nri", Image: "corepin/corepin-nri:dev"}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	// db: exclusive on the last CPU, released (every CPU, quota lifted);
	// web: shared; dns: a system namespace's.
	annotations := framework.AllocStatusFor(exclusiveCPU)
	created := cp.CreatePod(t, framework.BoundPod("db", "1", annotations))
	run := func(namespace, name, uid string, annotations map[string]string, container string, milli int64) string {
		t.Helper()
		podID, cfg := ctrd.RunPodUID(t, namespace, name, uid, annotations)
		return ctrd.RunContainer(t, podID, cfg, container, milli)
	}
	web := run("default", "web", "web-uid", nil, "app", 500)
	dns := run("kube-system", "dns", "dns-uid", nil, "dns", 100)
	db := run("default", "db", string(created.UID), annotations, "engine", 1000)
	type want struct {
		cpus  cpuset.CPUSet
		quota string
	}
	expect := func(what string, wants map[string]want) {
		t.Helper()
		framework.Eventually(t, 15*time.Second, what, func() (bool, error) {
			for id, w := range wants {
				if got := ctrd.ExecStatus(t, id); !got.Allowed.Equals(w.cpus) || got.Quota != w.quota {
					return false, fmt.Errorf("%s sees %+v, want %s quota %s", id, got, w.cpus, w.quota)
				}
			}
			return true, nil
		})
	}
	expect("pinned", map[string]want{web: {pool, "50000"}, dns: {pool, "10000"}, db: {exclusiveCPU, "100000"}})
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]string{api.AnnotationReleaseIsolateMode: "true"}}})
	if _, err := cp.Client.CoreV1().Pods("default").Patch(ctx, "db", types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	pinned := map[string]want{web: {pool, "50000"}, dns: {pool, "10000"}, db: {all, "-1"}}
	expect("db released", pinned)

	releaseAll := func(args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, append([]string{"release-all", "--kubeconfig", cp.Kubeconfig, "--namespace", "default"}, args...)...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("corepin-nri release-all %s: %v\n%s\n%s", strings.Join(args, " "), err, out, framework.Tail(plugin.Log, 20))
		}
		return string(out)
	}
	began := time.Now()
	out := releaseAll("--timeout", "60s")
	t.Logf("release-all returned after %v:\n%s", time.Since(began).Round(time.Millisecond), out)
	// Done means done: no waiting here.
	wide := map[string]want{web: {all, "50000"}, dns: {all, "10000"}, db: {all, "100000"}}
	for id, w := range wide {
		if got := ctrd.ExecStatus(t, id); !got.Allowed.Equals(w.cpus) || got.Quota != w.quota {
			t.Fatalf("after release-all reported done, %s sees %+v, want %s quota %s", id, got, w.cpus, w.quota)
		}
	}
	node, err := cp.Client.CoreV1().Nodes().Get(ctx, "node-a", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := time.Parse(time.RFC3339, node.Annotations[api.AnnotationReleaseAllDone]); err != nil || node.Annotations[api.AnnotationReleaseAll] != "true" {
		t.Fatalf("node annotations %v: want release-all true and an RFC 3339 release-all-done", node.Annotations)
	}
	for key, manager := range map[string]string{api.AnnotationReleaseAll: "corepin-nri-release-all-command", api.AnnotationReleaseAllDone: "corepin-nri-release-all"} {
		if owners := annotationOwners(t, node, key); len(owners) != 1 || owners[0] != manager+" Apply" {
			t.Errorf("%s held by %q, want only %q", key, owners, manager+" Apply")
		}
	}

	// A container created now gets every CPU; the drift check (every
	// second) and a plugin restart pin nothing back.
	late := run("default", "late", "late-uid", nil, "app", 200)
	wide[late] = want{all, "20000"}
	expect("created under release-all", wide)
	plugin.Stop()
	plugin = start()
	time.Sleep(3 * time.Second)
	for id, w := range wide {
		if got := ctrd.ExecStatus(t, id); !got.Allowed.Equals(w.cpus) || got.Quota != w.quota {
			t.Fatalf("after the plugin restarted under release-all, %s sees %+v, want %s quota %s", id, got, w.cpus, w.quota)
		}
	}
	framework.Eventually(t, 15*time.Second, "release-all-done reported again", func() (bool, error) {
		n, err := cp.Client.CoreV1().Nodes().Get(ctx, "node-a", metav1.GetOptions{})
		return err == nil && n.Annotations[api.AnnotationReleaseAllDone] != "", err
	})

	// A reinstall clears it: everything pinned as before, db still released.
	releaseAll("--clear")
	pinned[late] = want{pool, "20000"}
	expect("pinned again after --clear", pinned)
	framework.Eventually(t, 15*time.Second, "release-all-done removed", func() (bool, error) {
		n, err := cp.Client.CoreV1().Nodes().Get(ctx, "node-a", metav1.GetOptions{})
		return err == nil && n.Annotations[api.AnnotationReleaseAllDone] == "" && n.Annotations[api.AnnotationReleaseAll] == "", fmt.Errorf("%v", n.Annotations)
	})
}
