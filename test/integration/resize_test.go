//go:build integration

package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	cri "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/utils/cpuset"

	"github.com/corepin/corepin/api"
	"github.com/corepin/corepin/test/integration/framework"
)

// resizeCPU resizes a pod's container through the pod's resize subresource,
// as `kubectl patch --subresource resize` does: requests and limits alike,
// so that the pod keeps its QoS class.
func resizeCPU(t testing.TB, c kubernetes.Interface, name, cpu string) {
	t.Helper()
	ctx := context.Background()
	pod, err := c.CoreV1().Pods("default").Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	q := resource.MustParse(cpu)
	pod.Spec.Containers[0].Resources.Limits[v1.ResourceCPU] = q
	pod.Spec.Containers[0].Resources.Requests[v1.ResourceCPU] = q
	if _, err := c.CoreV1().Pods("default").UpdateResize(ctx, name, pod, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("resize %s to %s CPUs: %v", name, cpu, err)
	}
}

// TestResizeThroughAPIServer runs corepin-extender against a real
// kube-apiserver: resizing a bound exclusive pod through its resize
// subresource gets it a new alloc-status on the same node, written by
// server-side apply as corepin-extender; a grow past the exclusive limit
// and a resize to a fraction keep the old alloc-status and are told as
// CorepinResizeInfeasible events.
func TestResizeThroughAPIServer(t *testing.T) {
	cp := framework.StartControlPlane(t)
	c := cp.Client
	ctx := context.Background()
	// 8 CPUs: exclusive limit floor(2/3*8) = 5.
	cp.CreateNodes(t, "1s-vm", nil, "node-a")
	cp.CreatePod(t, framework.BoundPod("db", "2", framework.AllocStatusFor(cpuset.New(2, 3))))
	cp.CreatePod(t, framework.BoundPod("other", "1", framework.AllocStatusFor(cpuset.New(5))))
	cp.StartExtender(t)

	resizeCPU(t, c, "db", "3")
	var pod *v1.Pod
	framework.Eventually(t, 30*time.Second, "db's alloc-status resized to 3 CPUs", func() (bool, error) {
		var err error
		pod, err = c.CoreV1().Pods("default").Get(ctx, "db", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		st, err := api.ParseAllocStatus(pod.Annotations[api.AnnotationAllocStatus])
		return err == nil && st.CPUs.Size() == 3, fmt.Errorf("alloc-status %s", pod.Annotations[api.AnnotationAllocStatus])
	})
	st := framework.AllocStatus(t, pod)
	if cpus := st.CPUs.Set(); st.Node != "node-a" || !cpuset.New(2, 3).IsSubsetOf(cpus) || cpus.Contains(5) || !st.Containers["engine"].Set().Equals(cpus) {
		t.Fatalf("resized alloc-status %s: want node-a, 2-3 kept, not other's 5", pod.Annotations[api.AnnotationAllocStatus])
	}
	managed := false
	for _, m := range pod.ManagedFields {
		managed = managed || m.Manager == "corepin-extender" && m.Operation == metav1.ManagedFieldsOperationApply && strings.Contains(string(m.FieldsV1.Raw), api.AnnotationAllocStatus)
	}
	if !managed {
		t.Fatalf("alloc-status not applied by corepin-extender: %+v", pod.ManagedFields)
	}

	// db 3 + other 1 = 4 held; other to 3 needs 2 more: 6 > 5.
	resizeCPU(t, c, "other", "3")
	cp.WaitEvent(t, 30*time.Second, "other", "CorepinResizeInfeasible", "engine 1 -> 3 CPUs on node node-a", "exclusive limit 5 reached", "keeps CPUs 5")
	if got := framework.AllocStatus(t, cp.GetPod(t, "other")); got.CPUs.Set().String() != "5" {
		t.Fatalf("an infeasible resize changed the alloc-status to %s", got.CPUs.Set())
	}

	resizeCPU(t, c, "db", "1500m")
	cp.WaitEvent(t, 30*time.Second, "db", "CorepinResizeInfeasible", `container "engine" to 1500m CPUs refused`)
	if got := framework.AllocStatus(t, cp.GetPod(t, "db")); !got.CPUs.Set().Equals(st.CPUs.Set()) {
		t.Fatalf("a resize to a fraction changed the alloc-status to %s", got.CPUs.Set())
	}
}

// updateCPU is the kubelet's half of a resize: CRI UpdateContainerResources
// with the container's new CPU limit.
func updateCPU(ctrd *framework.Containerd, id string, milli int64) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := ctrd.Runtime.UpdateContainerResources(ctx, &cri.UpdateContainerResourcesRequest{ContainerId: id,
		Linux: &cri.LinuxContainerResources{CpuPeriod: 100000, CpuQuota: milli * 100, CpuShares: milli * 1024 / 1000}})
	return err
}

// exclusiveEverything is a node policy that lets exclusive CPUs take every
// CPU (ratio 1, headroom 0), so that a 2-CPU machine can grow an exclusive
// container from 1 to 2.
var exclusiveEverything = map[string]string{api.AnnotationNodePolicy: `{"maxExclusiveRatio": 1, "sharedHeadroom": 0}`}

// TestResizeWithContainerd runs corepin-nri with a real containerd and a
// real kube-apiserver, the test acting for the kubelet (CRI
// UpdateContainerResources) and for the extender (the alloc-status patch).
// Sized for 2 CPUs and more: the node's policy lets exclusive CPUs take
// every CPU (ratio 1, headroom 0), so an exclusive container can grow by
// one. A shared container grows within section 4's rules and is refused
// past them, keeping its quota and cpuset; the exclusive container moves
// to its new CPUs when the second of the new amount and the alloc-status
// arrives, whichever order they come in.
func TestResizeWithContainerd(t *testing.T) {
	host := framework.SplitHostCPUs(t)
	n, one, pool := host.N, host.Exclusive, host.Pool
	two := cpuset.New(n-2, n-1)
	ctx := context.Background()

	cp := framework.StartControlPlane(t)
	cp.CreateNode(t, "node-a", n, exclusiveEverything)
	ctrd := framework.StartContainerd(t)
	plugin := ctrd.StartPlugin(t, "--kubeconfig", cp.Kubeconfig, "--drift-interval", "0")

	created := cp.CreatePod(t, framework.BoundPod("db", "1", framework.AllocStatusFor(one)))
	webID, webCfg := ctrd.RunPod(t, "default", "web", nil)
	web := ctrd.RunContainer(t, webID, webCfg, "app", 500)
	dbID, dbCfg := ctrd.RunPodUID(t, "default", "db", string(created.UID), framework.AllocStatusFor(one))
	db := ctrd.RunContainer(t, dbID, dbCfg, "engine", 1000)
	if got := ctrd.ExecStatus(t, web); !got.Allowed.Equals(pool) {
		t.Fatalf("shared container: %+v, want %s", got, pool)
	}

	t.Run("a shared container grows within the rules and is refused past them", func(t *testing.T) {
		// E = 1: P - ceil(S/2) >= 1 holds for S = 1.5 on 2 CPUs.
		if err := updateCPU(ctrd, web, 1500); err != nil {
			t.Fatalf("grow to 1.5 CPUs: %v\n%s", err, framework.Tail(plugin.Log, 20))
		}
		if got := ctrd.ExecStatus(t, web); got.Quota != "150000" || !got.Allowed.Equals(pool) {
			t.Fatalf("after the grow: %+v, want quota 150000 on %s", got, pool)
		}
		// S = 2P: P - ceil(S/2) = 0 < E.
		err := updateCPU(ctrd, web, int64(2*n)*1000)
		want := fmt.Sprintf("resize from 1.5 to %d CPUs refused: the node holds 1 exclusive CPUs", 2*n)
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "contract section 4") {
			t.Fatalf("grow past the rules: %v, want %q", err, want)
		}
		if got := ctrd.ExecStatus(t, web); got.Quota != "150000" || !got.Allowed.Equals(pool) {
			t.Fatalf("after the refusal: %+v, want it kept at quota 150000 on %s", got, pool)
		}
		ctrd.RemovePod(t, webID) // what follows needs every CPU
	})

	patchStatus := func(cpus cpuset.CPUSet) {
		t.Helper()
		patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]string{
			api.AnnotationAllocStatus: framework.AllocStatusFor(cpus)[api.AnnotationAllocStatus]}}})
		if _, err := cp.Client.CoreV1().Pods("default").Patch(ctx, "db", types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	t.Run("an exclusive grow waits for its alloc-status", func(t *testing.T) {
		if err := updateCPU(ctrd, db, 2000); err != nil {
			t.Fatalf("grow to 2: %v\n%s", err, framework.Tail(plugin.Log, 20))
		}
		if got := ctrd.ExecStatus(t, db); !got.Allowed.Equals(one) || got.Quota != "200000" {
			t.Fatalf("before the alloc-status: %+v, want %s with the new quota 200000", got, one)
		}
		patchStatus(two)
		framework.Eventually(t, 20*time.Second, "db on "+two.String(), func() (bool, error) {
			got := ctrd.ExecStatus(t, db)
			return got.Allowed.Equals(two) && got.Cgroup.Equals(two), fmt.Errorf("db sees %+v", got)
		})
	})
	t.Run("an exclusive shrink applies with the update when the alloc-status came first", func(t *testing.T) {
		patchStatus(one)
		time.Sleep(time.Second) // the watch delivers it; the container stays until its amount says 1
		if got := ctrd.ExecStatus(t, db); !got.Allowed.Equals(two) {
			t.Fatalf("moved before the update: %+v", got)
		}
		if err := updateCPU(ctrd, db, 1000); err != nil {
			t.Fatalf("shrink to 1: %v\n%s", err, framework.Tail(plugin.Log, 20))
		}
		if got := ctrd.ExecStatus(t, db); !got.Allowed.Equals(one) || !got.Cgroup.Equals(one) || got.Quota != "100000" {
			t.Fatalf("after the shrink: %+v, want %s with quota 100000", got, one)
		}
	})
	t.Run("an exclusive resize to a fraction is refused", func(t *testing.T) {
		err := updateCPU(ctrd, db, 1500)
		if err == nil || !strings.Contains(err.Error(), "resize to 1.5 CPUs refused") {
			t.Fatalf("resize to 1.5: %v", err)
		}
		if got := ctrd.ExecStatus(t, db); !got.Allowed.Equals(one) || got.Quota != "100000" {
			t.Fatalf("after the refusal: %+v", got)
		}
	})
}

// TestResizeEndToEnd chains both halves on a real kube-apiserver and a
// real containerd: the pod's resize subresource, corepin-extender's new
// alloc-status, and the kubelet's CRI update (the test acting for the
// kubelet), after which the container runs on the CPUs the extender chose.
// The node's policy lets exclusive CPUs take every CPU, so that a 2-CPU
// machine can grow a container from 1 to 2.
func TestResizeEndToEnd(t *testing.T) {
	host := framework.SplitHostCPUs(t)
	one := host.Exclusive
	ctx := context.Background()
	cp := framework.StartControlPlane(t)
	cp.CreateNode(t, "node-a", host.N, exclusiveEverything)
	ctrd := framework.StartContainerd(t)
	plugin := ctrd.StartPlugin(t, "--kubeconfig", cp.Kubeconfig, "--drift-interval", "0")
	framework.Eventually(t, 30*time.Second, "the node's topology published", func() (bool, error) {
		if exited, err := plugin.Exited(); exited {
			t.Fatalf("corepin-nri exited: %v\n%s", err, framework.Tail(plugin.Log, 20))
		}
		node, err := cp.Client.CoreV1().Nodes().Get(ctx, "node-a", metav1.GetOptions{})
		return err == nil && node.Annotations[api.AnnotationTopology] != "", err
	})
	created := cp.CreatePod(t, framework.BoundPod("db", "1", framework.AllocStatusFor(one)))
	cp.StartExtender(t)
	dbID, dbCfg := ctrd.RunPodUID(t, "default", "db", string(created.UID), framework.AllocStatusFor(one))
	db := ctrd.RunContainer(t, dbID, dbCfg, "engine", 1000)

	resizeCPU(t, cp.Client, "db", "2")
	var want cpuset.CPUSet
	framework.Eventually(t, 30*time.Second, "the extender's alloc-status for 2 CPUs", func() (bool, error) {
		st := framework.AllocStatus(t, cp.GetPod(t, "db"))
		want = st.CPUs.Set()
		return want.Size() == 2 && one.IsSubsetOf(want), fmt.Errorf("alloc-status CPUs %s", want)
	})
	if err := updateCPU(ctrd, db, 2000); err != nil {
		t.Fatalf("the kubelet's update: %v\n%s", err, framework.Tail(plugin.Log, 20))
	}
	framework.Eventually(t, 20*time.Second, "db on "+want.String(), func() (bool, error) {
		got := ctrd.ExecStatus(t, db)
		return got.Allowed.Equals(want) && got.Cgroup.Equals(want) && got.Quota == "200000", fmt.Errorf("db sees %+v", got)
	})
}
