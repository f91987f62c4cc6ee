//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/cpuset"

	"github.com/corepin/corepin/api"
	"github.com/corepin/corepin/test/integration/framework"
)

// onKind: the suite runs against the kind test bed of hack/kind.sh, whose
// nodes are Docker containers named like the nodes.
func onKind() bool { return os.Getenv("COREPIN_E2E_BED") == "kind" }

// workers are the nodes pods can land on (no control-plane taint).
func (c *cluster) workers(t *testing.T) []string {
	t.Helper()
	nodes, err := c.client.CoreV1().Nodes().List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, n := range nodes.Items {
		tainted := false
		for _, taint := range n.Spec.Taints {
			tainted = tainted || taint.Effect == v1.TaintEffectNoSchedule
		}
		if !tainted {
			names = append(names, n.Name)
		}
	}
	return names
}

// testPod is a pod of the workload image through corepin-scheduler;
// cpus "1" makes it exclusive-able, "100m" shared.
func testPod(name, app, cpus string, annotations map[string]string) *v1.Pod {
	q := v1.ResourceList{v1.ResourceCPU: resource.MustParse(cpus), v1.ResourceMemory: resource.MustParse("16Mi")}
	return &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", Annotations: annotations,
			Labels: map[string]string{"app.kubernetes.io/name": app, "corepin-e2e": "multinode"}},
		Spec: v1.PodSpec{
			SchedulerName:                 "corepin-scheduler",
			AutomountServiceAccountToken:  new(bool),
			TerminationGracePeriodSeconds: new(int64),
			Containers: []v1.Container{{Name: "engine", Image: "corepin/workload:dev",
				ImagePullPolicy: v1.PullNever, Resources: v1.ResourceRequirements{Requests: q, Limits: q}}},
		},
	}
}

func exclusive(extra map[string]string) map[string]string {
	a := map[string]string{api.AnnotationCPUMode: "exclusive"}
	for k, v := range extra {
		a[k] = v
	}
	return a
}

func (c *cluster) create(t *testing.T, pods ...*v1.Pod) {
	t.Helper()
	for _, p := range pods {
		if _, err := c.client.CoreV1().Pods(p.Namespace).Create(context.Background(), p, metav1.CreateOptions{}); err != nil {
			t.Fatalf("creating %s: %v", p.Name, err)
		}
	}
}

func (c *cluster) get(t *testing.T, name string) *v1.Pod {
	t.Helper()
	p, err := c.client.CoreV1().Pods("default").Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func (c *cluster) deleteAll(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	_ = c.client.CoreV1().Pods("default").DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{LabelSelector: "corepin-e2e=multinode"})
	framework.Eventually(t, 120*time.Second, "the test's pods gone", func() (bool, error) {
		return len(c.pods(t, "corepin-e2e=multinode")) == 0, nil
	})
}

func (c *cluster) waitRunning(t *testing.T, names ...string) {
	t.Helper()
	for _, name := range names {
		framework.Eventually(t, 120*time.Second, name+" running", func() (bool, error) {
			p := c.get(t, name)
			for _, s := range p.Status.ContainerStatuses {
				if s.Ready {
					return true, nil
				}
			}
			return false, fmt.Errorf("%s is %s on %q", name, p.Status.Phase, p.Spec.NodeName)
		})
	}
}

// pendingReason waits for the scheduler's FailedScheduling event on a pod
// and returns its message.
func (c *cluster) pendingReason(t *testing.T, name string) string {
	t.Helper()
	var msg string
	framework.Eventually(t, 60*time.Second, name+" FailedScheduling", func() (bool, error) {
		if p := c.get(t, name); p.Spec.NodeName != "" {
			return false, fmt.Errorf("%s was bound to %s", name, p.Spec.NodeName)
		}
		events, err := c.client.CoreV1().Events("default").List(context.Background(), metav1.ListOptions{
			FieldSelector: "involvedObject.name=" + name + ",reason=FailedScheduling"})
		if err != nil || len(events.Items) == 0 {
			return false, err
		}
		msg = events.Items[len(events.Items)-1].Message
		return true, nil
	})
	return msg
}

func (c *cluster) allocStatus(t *testing.T, name string) api.AllocStatus {
	t.Helper()
	p := c.get(t, name)
	s, err := api.ParseAllocStatus(p.Annotations[api.AnnotationAllocStatus])
	if err != nil {
		t.Fatalf("%s has no valid alloc-status: %v", name, err)
	}
	if s.Node != p.Spec.NodeName {
		t.Fatalf("%s: alloc-status for %s, bound to %s", name, s.Node, p.Spec.NodeName)
	}
	return s
}

// docker runs a command in the kind node container of that name.
func docker(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("docker", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("docker %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// nodeCPUs is what a node says of itself: online minus reserved, and the
// shared pool its plugin publishes.
func (c *cluster) nodeCPUs(t *testing.T, node string) (all, pool cpuset.CPUSet) {
	all, pool, _ = c.nodeCPUsReserved(t, node)
	return all, pool
}

func (c *cluster) nodeCPUsReserved(t *testing.T, node string) (all, pool, reserved cpuset.CPUSet) {
	t.Helper()
	all, reserved = c.topology(t, node)
	n, err := c.client.CoreV1().Nodes().Get(context.Background(), node, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	shared, err := api.ParseSharedPoolStatus(n.Annotations[api.AnnotationSharedPool])
	if err != nil {
		t.Fatalf("%s has no valid shared-pool: %v", node, err)
	}
	return all, shared.CPUs.CPUSet, reserved
}

// topology is what the node's plugin published: its online CPUs less the
// reserved ones, and the reserved ones.
func (c *cluster) topology(t *testing.T, node string) (all, reserved cpuset.CPUSet) {
	t.Helper()
	n, err := c.client.CoreV1().Nodes().Get(context.Background(), node, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	topo, err := api.ParseTopology(n.Annotations[api.AnnotationTopology])
	if err != nil {
		t.Fatalf("the node plugin has not published the topology of %s: %v", node, err)
	}
	var online []int
	for _, cpu := range topo.CPUs {
		online = append(online, cpu.ID)
	}
	return cpuset.New(online...).Difference(topo.Reserved.CPUSet), topo.Reserved.CPUSet
}

// nodeContainers reads, inside a kind node, the CPUs every running
// container's first process may use: pod UID/container name -> CPUs.
func nodeContainers(t *testing.T, node string) map[string]cpuset.CPUSet {
	t.Helper()
	script := `for id in $(crictl ps -q); do
  crictl inspect -o go-template --template '{{.info.pid}} {{index .status.labels "io.kubernetes.pod.uid"}}/{{.status.metadata.name}}{{"\n"}}' "$id"
done | while read -r pid name; do echo "$name $(awk '/Cpus_allowed_list/ {print $2}' /proc/$pid/status)"; done`
	out := docker(t, "exec", node, "bash", "-c", script)
	got := map[string]cpuset.CPUSet{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(line)
		if len(f) != 2 {
			continue
		}
		set, err := cpuset.Parse(f[1])
		if err != nil {
			t.Fatalf("%s: %q: %v", node, line, err)
		}
		got[f[0]] = set
	}
	return got
}

// checkNodes: on every node, no two exclusive containers share a CPU, each
// has exactly its alloc-status, and every other container of a user pod
// runs on that node's shared pool, which is the published one and is
// online minus reserved minus the exclusive CPUs. System pods (kube-system,
// corepin-system) run on the pool plus reserved.
func (c *cluster) checkNodes(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	pods, err := c.client.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, node := range c.workers(t) {
		framework.Eventually(t, 30*time.Second, "cpusets on "+node, func() (bool, error) {
			all, pool, reserved := c.nodeCPUsReserved(t, node)
			running := nodeContainers(t, node)
			held := cpuset.New()
			for _, p := range pods.Items {
				if p.Spec.NodeName != node || p.Status.Phase != v1.PodRunning {
					continue
				}
				status, _ := api.ParseAllocStatus(p.Annotations[api.AnnotationAllocStatus])
				for _, ctr := range p.Spec.Containers {
					got, ok := running[string(p.UID)+"/"+ctr.Name]
					if !ok {
						continue // not running at this instant
					}
					want := pool
					if set, ok := status.Containers[ctr.Name]; ok && p.Annotations[api.AnnotationReleaseIsolateMode] != "true" {
						want = set.CPUSet
						if !held.Intersection(want).IsEmpty() {
							return false, fmt.Errorf("%s: %s/%s on %s shares a CPU with another exclusive container", node, p.Name, ctr.Name, want)
						}
						held = held.Union(want)
					} else if p.Namespace == "kube-system" || p.Namespace == "corepin-system" {
						want = pool.Union(reserved) // systemNamespaces
					}
					if !got.Equals(want) {
						return false, fmt.Errorf("%s: %s/%s runs on %s, want %s", node, p.Name, ctr.Name, got, want)
					}
				}
			}
			if want := all.Difference(held); !pool.Equals(want) {
				return false, fmt.Errorf("%s publishes shared pool %s; online-reserved-exclusive is %s", node, pool, want)
			}
			return true, nil
		})
	}
}

// nodeReady waits for the node's kubelet to report Ready again.
func (c *cluster) nodeReady(t *testing.T, node string) {
	t.Helper()
	framework.Eventually(t, 180*time.Second, node+" Ready", func() (bool, error) {
		n, err := c.client.CoreV1().Nodes().Get(context.Background(), node, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		for _, cond := range n.Status.Conditions {
			if cond.Type == v1.NodeReady {
				return cond.Status == v1.ConditionTrue && time.Since(cond.LastHeartbeatTime.Time) < 30*time.Second, nil
			}
		}
		return false, nil
	})
}

// TestMultiNode is the kind bed's own scenario: choosing among nodes, and
// each node keeping its pods' cores through restarts of its parts.
func TestMultiNode(t *testing.T) {
	c := connect(t)
	workers := c.workers(t)
	if len(workers) < 2 {
		if onKind() {
			t.Fatalf("the kind bed has workers %v; it should have two", workers)
		}
		t.Skipf("one schedulable node (%v): the multi-node scenario runs on the kind bed (make test-kind)", workers)
	}
	c.deleteAll(t)
	t.Cleanup(func() { c.deleteAll(t) })

	t.Run("max-per-node spreads an app over the workers", func(t *testing.T) {
		rule := map[string]string{api.AnnotationMaxPerNode: "1"}
		c.create(t, testPod("mpn-0", "mpn", "1", exclusive(rule)), testPod("mpn-1", "mpn", "1", exclusive(rule)))
		c.waitRunning(t, "mpn-0", "mpn-1")
		a, b := c.allocStatus(t, "mpn-0"), c.allocStatus(t, "mpn-1")
		if a.Node == b.Node {
			t.Fatalf("both replicas on %s", a.Node)
		}
		// A 2-CPU worker holds one exclusive CPU, so a third exclusive
		// replica is also refused for capacity; a shared one of the same
		// app meets only the rule.
		c.create(t, testPod("mpn-2", "mpn", "100m", rule))
		if msg := c.pendingReason(t, "mpn-2"); !strings.Contains(msg, `max-per-node 1 reached for app "mpn"`) {
			t.Fatalf("mpn-2 is pending for another reason: %s", msg)
		}
		c.checkNodes(t)
		c.deleteAll(t)
	})

	var first, second api.AllocStatus
	t.Run("with one worker full the next exclusive pod lands on the other", func(t *testing.T) {
		c.create(t, testPod("db-a", "db-a", "1", exclusive(nil)))
		c.waitRunning(t, "db-a")
		first = c.allocStatus(t, "db-a")
		c.create(t, testPod("db-b", "db-b", "1", exclusive(nil)))
		c.waitRunning(t, "db-b")
		second = c.allocStatus(t, "db-b")
		if first.Node == second.Node {
			t.Fatalf("db-a and db-b both on %s (%s and %s)", first.Node, first.CPUs, second.CPUs)
		}
		c.create(t, testPod("web-a", "web", "100m", nil), testPod("web-b", "web", "100m", nil))
		c.waitRunning(t, "web-a", "web-b")
		c.checkNodes(t)
	})
	if t.Failed() {
		return
	}
	dbA := c.get(t, "db-a")
	expectDB := func(t *testing.T, want cpuset.CPUSet, quota string) {
		t.Helper()
		framework.Eventually(t, 30*time.Second, "db-a on "+want.String(), func() (bool, error) {
			got, err := c.status(t, *c.get(t, "db-a"))
			if err != nil {
				return false, err
			}
			return got.Allowed.Equals(want) && (quota == "" || got.Quota == quota), fmt.Errorf("db-a sees %+v", got)
		})
	}

	t.Run("the release switch on a worker", func(t *testing.T) {
		all, _ := c.nodeCPUs(t, first.Node)
		annotate := func(value *string) {
			patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]*string{api.AnnotationReleaseIsolateMode: value}}})
			if _, err := c.client.CoreV1().Pods("default").Patch(context.Background(), "db-a", types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		on := "true"
		annotate(&on)
		expectDB(t, all, "-1")
		annotate(nil)
		expectDB(t, first.Containers["engine"].CPUSet, "100000")
		c.checkNodes(t)
	})

	// After a restart of a node's parts, every pod is the same pod, none
	// restarted, on the same CPUs.
	uids := map[string]types.UID{}
	for _, name := range []string{"db-a", "db-b", "web-a", "web-b"} {
		uids[name] = c.get(t, name).UID
	}
	unchanged := func(t *testing.T) {
		t.Helper()
		for name, uid := range uids {
			p := c.get(t, name)
			if p.UID != uid {
				t.Fatalf("%s was recreated", name)
			}
			for _, s := range p.Status.ContainerStatuses {
				if s.RestartCount != 0 {
					t.Fatalf("%s/%s restarted %d times", name, s.Name, s.RestartCount)
				}
			}
		}
		if s := c.allocStatus(t, "db-a"); s.CPUs.String() != first.CPUs.String() || s.Node != first.Node {
			t.Fatalf("db-a moved: %+v, was %+v", s, first)
		}
		expectDB(t, first.Containers["engine"].CPUSet, "")
		c.checkNodes(t)
	}
	pluginPod := func(t *testing.T, node string) v1.Pod {
		t.Helper()
		var found v1.Pod
		framework.Eventually(t, 180*time.Second, "corepin-nri ready on "+node, func() (bool, error) {
			list, err := c.client.CoreV1().Pods("corepin-system").List(context.Background(),
				metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=corepin-nri", FieldSelector: "spec.nodeName=" + node})
			if err != nil {
				return false, err
			}
			for _, p := range list.Items {
				for _, cs := range p.Status.ContainerStatuses {
					if cs.Ready && p.DeletionTimestamp == nil {
						found = p
						return true, nil
					}
				}
			}
			return false, nil
		})
		return found
	}

	t.Run("restart the node plugin on a worker", func(t *testing.T) {
		old := pluginPod(t, first.Node)
		if err := c.client.CoreV1().Pods("corepin-system").Delete(context.Background(), old.Name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		framework.Eventually(t, 120*time.Second, "a new plugin pod", func() (bool, error) {
			return pluginPod(t, first.Node).UID != old.UID, nil
		})
		unchanged(t)
	})
	for _, unit := range []string{"containerd", "kubelet"} {
		t.Run("restart "+unit+" in a worker", func(t *testing.T) {
			if !onKind() {
				t.Skip("systemd units of kind nodes")
			}
			docker(t, "exec", first.Node, "systemctl", "restart", unit)
			time.Sleep(5 * time.Second)
			c.nodeReady(t, first.Node)
			pluginPod(t, first.Node)
			unchanged(t)
		})
	}

	t.Run("a worker's node container restarted", func(t *testing.T) {
		if !onKind() {
			t.Skip("kind nodes only")
		}
		// Removed, so that seeing it again shows it was published anew.
		patch := []byte(`{"metadata":{"annotations":{"` + api.AnnotationTopology + `":null}}}`)
		if _, err := c.client.CoreV1().Nodes().Patch(context.Background(), first.Node, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
		docker(t, "restart", first.Node)
		c.nodeReady(t, first.Node)
		pluginPod(t, first.Node)
		framework.Eventually(t, 120*time.Second, "topology published again on "+first.Node, func() (bool, error) {
			n, err := c.client.CoreV1().Nodes().Get(context.Background(), first.Node, metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			_, err = api.ParseTopology(n.Annotations[api.AnnotationTopology])
			return err == nil, err
		})
		// The node's containers all started again; the pods are the same
		// pods on the same node, db-a on its cores.
		if p := c.get(t, "db-a"); p.UID != dbA.UID || p.Spec.NodeName != first.Node {
			t.Fatalf("db-a is now %s on %s", p.UID, p.Spec.NodeName)
		}
		c.waitRunning(t, "db-a")
		expectDB(t, first.Containers["engine"].CPUSet, "100000")
		c.checkNodes(t)
		if s := c.allocStatus(t, "db-b"); s.CPUs.String() != second.CPUs.String() {
			t.Fatalf("db-b's CPUs changed: %s, were %s", s.CPUs, second.CPUs)
		}
		t.Logf("db-a restarted %s times with its node", strconv.Itoa(int(c.get(t, "db-a").Status.ContainerStatuses[0].RestartCount)))
	})

	// The chart's lifecycle with pinned pods running: the kind bed
	// installs corepin with Helm (hack/kind.sh), these are its last steps.
	helm := func(t *testing.T, args ...string) string {
		t.Helper()
		out, err := exec.Command(os.Getenv("HELM"), append(args, "--kubeconfig", c.kubeconfig)...).CombinedOutput()
		if err != nil {
			t.Fatalf("helm %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	if os.Getenv("HELM") == "" || exec.Command(os.Getenv("HELM"), "status", "corepin", "-n", "corepin-system", "--kubeconfig", c.kubeconfig).Run() != nil {
		if onKind() && os.Getenv("COREPIN_INSTALL") != "kustomize" {
			t.Fatal("the kind bed installs corepin with Helm, but $HELM has no release corepin in corepin-system")
		}
		return
	}
	for name := range uids {
		uids[name] = c.get(t, name).UID // the node restart recreated nothing, but count restarts from here
	}
	restarts := func(name string) int32 { return c.get(t, name).Status.ContainerStatuses[0].RestartCount }
	before := map[string]int32{}
	for name := range uids {
		before[name] = restarts(name)
	}
	t.Run("helm upgrade rolls corepin and keeps the pinned pods' CPUs", func(t *testing.T) {
		oldPlugin := pluginPod(t, first.Node)
		helm(t, "upgrade", "corepin", c.repo+"/deploy/chart/corepin", "--namespace", "corepin-system", "--reuse-values",
			"--set", "nodePlugin.resources.requests.memory=48Mi", "--set", "scheduler.kubeScheduler.logLevel=3",
			"--wait", "--timeout", "180s")
		if p := pluginPod(t, first.Node); p.UID == oldPlugin.UID {
			t.Fatal("the upgrade did not roll the node plugin")
		}
		for name, uid := range uids {
			if p := c.get(t, name); p.UID != uid || restarts(name) != before[name] {
				t.Fatalf("%s was recreated or restarted by the upgrade", name)
			}
		}
		if s := c.allocStatus(t, "db-a"); s.CPUs.String() != first.CPUs.String() {
			t.Fatalf("db-a's CPUs changed: %s, were %s", s.CPUs, first.CPUs)
		}
		expectDB(t, first.Containers["engine"].CPUSet, "100000")
		c.checkNodes(t)
		// and corepin still places pods after it
		c.create(t, testPod("web-c", "web", "100m", nil))
		c.waitRunning(t, "web-c")
	})

	t.Run("helm uninstall gives every container the whole node and restarts no pod", func(t *testing.T) {
		online := map[string]cpuset.CPUSet{}
		pinned := 0
		for _, node := range c.workers(t) {
			set, err := cpuset.Parse(strings.TrimSpace(docker(t, "exec", node, "cat", "/sys/devices/system/cpu/online")))
			if err != nil {
				t.Fatal(err)
			}
			online[node] = set
			for _, got := range nodeContainers(t, node) {
				if !got.Equals(set) {
					pinned++
				}
			}
		}
		if pinned == 0 {
			t.Fatal("no container is pinned before the uninstall: nothing to check")
		}
		// No reset: the chart's pre-delete hook has every node's plugin
		// release every container before the plugin goes.
		helm(t, "uninstall", "corepin", "--namespace", "corepin-system", "--wait", "--timeout", "180s")
		framework.Eventually(t, 120*time.Second, "corepin's DaemonSet and Deployment gone", func() (bool, error) {
			ds, err := c.client.AppsV1().DaemonSets("corepin-system").List(context.Background(), metav1.ListOptions{})
			if err != nil {
				return true, nil // the namespace is gone too
			}
			deps, _ := c.client.AppsV1().Deployments("corepin-system").List(context.Background(), metav1.ListOptions{})
			return len(ds.Items) == 0 && len(deps.Items) == 0, fmt.Errorf("%d daemonsets, %d deployments left", len(ds.Items), len(deps.Items))
		})
		for name, uid := range uids {
			if p := c.get(t, name); p.UID != uid || restarts(name) != before[name] {
				t.Fatalf("%s was recreated or restarted by the uninstall", name)
			}
		}
		for _, node := range c.workers(t) {
			n, err := c.client.CoreV1().Nodes().Get(context.Background(), node, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if n.Annotations[api.AnnotationReleaseAll] != "true" || n.Annotations[api.AnnotationReleaseAllDone] == "" {
				t.Errorf("%s: %s=%q %s=%q: want true, and the time its plugin reported it done", node, api.AnnotationReleaseAll,
					n.Annotations[api.AnnotationReleaseAll], api.AnnotationReleaseAllDone, n.Annotations[api.AnnotationReleaseAllDone])
			}
			for name, got := range nodeContainers(t, node) {
				if !got.Equals(online[node]) {
					t.Errorf("%s: container %s on %s after helm uninstall, online %s", node, name, got, online[node])
				}
			}
		}
	})
}
