//go:build e2e

// Package e2e runs the seed scenario on a real cluster with corepin
// installed from deploy/: the single-node cluster of hack/cluster.sh (what
// `make test-e2e` and CI use), or any cluster in $KUBECONFIG such as kind
// (`make test-kind`). Everything is asserted from what users see: the
// annotations on the pods, and the CPUs read inside the containers.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/remotecommand"
	"k8s.io/utils/cpuset"
	"sigs.k8s.io/yaml"

	"github.com/corepin/corepin/api"
	"github.com/corepin/corepin/test/integration/framework"
)

type cluster struct {
	client     kubernetes.Interface
	config     *rest.Config
	kubeconfig string
	repo       string
}

func connect(t *testing.T) *cluster {
	t.Helper()
	path := os.Getenv("KUBECONFIG")
	if path == "" {
		path = "/var/lib/corepin-cluster/admin.kubeconfig"
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		t.Fatalf("no cluster (run `make test-e2e`, or set KUBECONFIG): %v", err)
	}
	_, file, _, _ := runtime.Caller(0)
	return &cluster{client: kubernetes.NewForConfigOrDie(cfg), config: cfg, kubeconfig: path, repo: filepath.Join(filepath.Dir(file), "..", "..")}
}

// example reads a manifest from examples/.
func (c *cluster) example(t *testing.T, name string, into any) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(c.repo, "examples", name))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict(data, into); err != nil {
		t.Fatalf("examples/%s: %v", name, err)
	}
}

// status runs `/workload status` in a pod's first container. An exec that
// fails (the kubelet or containerd restarting) is returned for the caller's
// Eventually to retry.
func (c *cluster) status(t *testing.T, pod v1.Pod) (framework.CPUStatus, error) {
	t.Helper()
	req := c.client.CoreV1().RESTClient().Post().Resource("pods").Namespace(pod.Namespace).Name(pod.Name).SubResource("exec").
		VersionedParams(&v1.PodExecOptions{Container: pod.Spec.Containers[0].Name, Command: []string{"/workload", "status"}, Stdout: true, Stderr: true}, scheme.ParameterCodec)
	ex, err := remotecommand.NewSPDYExecutor(c.config, "POST", req.URL())
	if err != nil {
		return framework.CPUStatus{}, err
	}
	var out, errOut bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := ex.StreamWithContext(ctx, remotecommand.StreamOptions{Stdout: &out, Stderr: &errOut}); err != nil {
		return framework.CPUStatus{}, fmt.Errorf("exec in %s: %v %s", pod.Name, err, errOut.String())
	}
	return framework.ParseStatus(t, out.String()), nil
}

func (c *cluster) pods(t *testing.T, selector string) []v1.Pod {
	t.Helper()
	list, err := c.client.CoreV1().Pods("default").List(context.Background(), metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		t.Fatal(err)
	}
	return list.Items
}

func running(pods []v1.Pod, n int) bool {
	count := 0
	for _, p := range pods {
		if p.Status.Phase == v1.PodRunning && p.DeletionTimestamp == nil {
			count++
		}
	}
	return count == n
}

// corepinctl builds corepinctl from this checkout and runs it against the cluster.
func (c *cluster) corepinctl(t *testing.T, args ...string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "corepinctl")
	build := exec.Command("go", "build", "-o", bin, "./cmd/corepinctl")
	build.Dir = c.repo
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build corepinctl: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, append(args, "--kubeconfig", c.kubeconfig)...).CombinedOutput()
	if err != nil {
		t.Fatalf("corepinctl %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// shell runs hack/cluster.sh with args (restarts of the local cluster).
func (c *cluster) shell(t *testing.T, args ...string) {
	t.Helper()
	cmd := exec.Command(filepath.Join(c.repo, "hack", "cluster.sh"), args...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("hack/cluster.sh %v: %v\n%s", args, err, out)
	}
}

func TestSeedScenario(t *testing.T) {
	c := connect(t)
	ctx := context.Background()
	var web appsv1.Deployment
	c.example(t, "web.yaml", &web)
	var db, spread v1.Pod
	c.example(t, "db-samecorefirst.yaml", &db)
	c.example(t, "db-spread.yaml", &spread)
	// The examples left by `make demo` too: a pending db-spread would take
	// the cores the scenario expects to see freed.
	cleanup := func() {
		policy := metav1.DeletePropagationForeground
		_ = c.client.AppsV1().Deployments("default").Delete(ctx, web.Name, metav1.DeleteOptions{PropagationPolicy: &policy})
		_ = c.client.CoreV1().Pods("default").Delete(ctx, db.Name, metav1.DeleteOptions{})
		_ = c.client.CoreV1().Pods("default").Delete(ctx, spread.Name, metav1.DeleteOptions{})
		framework.Eventually(t, 120*time.Second, "example pods gone", func() (bool, error) {
			return len(c.pods(t, "app.kubernetes.io/name in (web, db-samecore, db-spread)")) == 0, nil
		})
	}
	cleanup()
	t.Cleanup(cleanup)
	// The scenario is one node's: on the kind bed, the first worker's.
	if workers := c.workers(t); len(workers) > 1 {
		on := map[string]string{"kubernetes.io/hostname": workers[0]}
		web.Spec.Template.Spec.NodeSelector, db.Spec.NodeSelector = on, on
	}

	if _, err := c.client.AppsV1().Deployments("default").Create(ctx, &web, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	framework.Eventually(t, 120*time.Second, "web pods running", func() (bool, error) {
		return running(c.pods(t, "app.kubernetes.io/name=web"), 2), nil
	})
	webPods := c.pods(t, "app.kubernetes.io/name=web")
	// The node the shared pods run on (the only one on the local cluster;
	// on kind, the worker): its shared pool is what they must see.
	nodeName := webPods[0].Spec.NodeName
	for _, p := range webPods {
		if p.Spec.NodeName != nodeName {
			t.Fatalf("web pods on %s and %s: the scenario needs one node for shared pods", nodeName, p.Spec.NodeName)
		}
	}
	all, _ := c.topology(t, nodeName)
	expectShared := func(t *testing.T, want cpuset.CPUSet) {
		t.Helper()
		framework.Eventually(t, 30*time.Second, "shared pods on "+want.String(), func() (bool, error) {
			for _, p := range webPods {
				got, err := c.status(t, p)
				if err != nil {
					return false, err
				}
				if !got.Allowed.Equals(want) || !got.Cgroup.Equals(want) {
					return false, fmt.Errorf("%s sees %+v", p.Name, got)
				}
			}
			return true, nil
		})
	}
	expectShared(t, all)

	if _, err := c.client.CoreV1().Pods("default").Create(ctx, &db, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	framework.Eventually(t, 120*time.Second, "db running", func() (bool, error) {
		return running(c.pods(t, "app.kubernetes.io/name=db-samecore"), 1), nil
	})
	dbPod := c.pods(t, "app.kubernetes.io/name=db-samecore")[0]
	status, err := api.ParseAllocStatus(dbPod.Annotations[api.AnnotationAllocStatus])
	if err != nil {
		t.Fatalf("db has no valid alloc-status: %v", err)
	}
	exclusive := status.Containers["engine"].CPUSet
	if exclusive.Size() != 1 || status.Node != dbPod.Spec.NodeName || status.Node != nodeName {
		t.Fatalf("alloc-status %+v on node %s", status, dbPod.Spec.NodeName)
	}
	pool := all.Difference(exclusive)
	expectDB := func(t *testing.T, want cpuset.CPUSet, quota string) {
		t.Helper()
		framework.Eventually(t, 30*time.Second, "db on "+want.String(), func() (bool, error) {
			got, err := c.status(t, dbPod)
			if err != nil {
				return false, err
			}
			return got.Allowed.Equals(want) && (quota == "" || got.Quota == quota), fmt.Errorf("db sees %+v", got)
		})
	}
	expectDB(t, exclusive, "100000")
	expectShared(t, pool)

	t.Run("corepinctl node shows the db pod's CPUs", func(t *testing.T) {
		out := c.corepinctl(t, "node", nodeName)
		for _, id := range exclusive.List() {
			re := fmt.Sprintf(`(?m)cpu +%d  exclusive  default/%s \(engine\)$`, id, regexp.QuoteMeta(dbPod.Name))
			if !regexp.MustCompile(re).MatchString(out) {
				t.Errorf("CPU %d is not shown exclusive to %s (%s):\n%s", id, dbPod.Name, re, out)
			}
		}
		for _, id := range pool.List() {
			if re := fmt.Sprintf(`(?m)cpu +%d  (shared|stacked)$`, id); !regexp.MustCompile(re).MatchString(out) {
				t.Errorf("CPU %d is not shown shared (%s):\n%s", id, re, out)
			}
		}
		if re := fmt.Sprintf(`(?m)^  Shared pool +%s \(%d\)`, regexp.QuoteMeta(pool.String()), pool.Size()); !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("no shared pool line %s:\n%s", re, out)
		}
	})

	t.Run("release-isolate-mode widens and restores", func(t *testing.T) {
		annotate := func(value *string) {
			patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]*string{api.AnnotationReleaseIsolateMode: value}}})
			if _, err := c.client.CoreV1().Pods("default").Patch(ctx, dbPod.Name, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		on := "true"
		annotate(&on)
		expectDB(t, all, "-1")
		annotate(nil)
		expectDB(t, exclusive, "100000")
		expectShared(t, pool)
	})

	t.Run("a pod cannot set its own alloc-status", func(t *testing.T) {
		forged := db.DeepCopy()
		forged.Name = "forged"
		forged.Annotations = map[string]string{api.AnnotationCPUMode: "exclusive",
			api.AnnotationAllocStatus: fmt.Sprintf(`{"node":%q,"cpus":%q,"containers":{"engine":%q},"mems":"0"}`, status.Node, exclusive, exclusive)}
		_, err := c.client.CoreV1().Pods("default").Create(ctx, forged, metav1.CreateOptions{})
		if err == nil {
			_ = c.client.CoreV1().Pods("default").Delete(ctx, forged.Name, metav1.DeleteOptions{})
			t.Fatal("a pod carrying its own alloc-status was admitted")
		}
		if !strings.Contains(err.Error(), "may only be set by the corepin scheduler extender") {
			t.Fatalf("refused, but not by the admission policy: %v", err)
		}
	})

	uids := map[types.UID]bool{dbPod.UID: true}
	for _, p := range webPods {
		uids[p.UID] = true
	}
	// After each restart every pod is the same pod, never restarted, on the
	// same CPUs.
	unchanged := func(t *testing.T) {
		t.Helper()
		for _, p := range append(c.pods(t, "app.kubernetes.io/name=web"), c.pods(t, "app.kubernetes.io/name=db-samecore")...) {
			if !uids[p.UID] {
				t.Fatalf("pod %s was recreated", p.Name)
			}
			for _, s := range p.Status.ContainerStatuses {
				if s.RestartCount != 0 {
					t.Fatalf("container %s/%s restarted %d times", p.Name, s.Name, s.RestartCount)
				}
			}
		}
		expectDB(t, exclusive, "")
		expectShared(t, pool)
	}
	for _, component := range []string{"kubelet", "containerd"} {
		t.Run("restart "+component, func(t *testing.T) {
			if os.Getenv("KUBECONFIG") != "" {
				t.Skip("restarts need the local cluster of hack/cluster.sh")
			}
			c.shell(t, "restart", component)
			time.Sleep(5 * time.Second)
			c.nodeReady(t, status.Node)
			unchanged(t)
		})
	}
	t.Run("restart the node plugin", func(t *testing.T) {
		plugins, err := c.client.CoreV1().Pods("corepin-system").List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=corepin-nri"})
		if err != nil || len(plugins.Items) == 0 {
			t.Fatalf("plugin pods: %v %v", plugins, err)
		}
		old := plugins.Items[0]
		if err := c.client.CoreV1().Pods("corepin-system").Delete(ctx, old.Name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		framework.Eventually(t, 120*time.Second, "a new plugin pod ready", func() (bool, error) {
			list, err := c.client.CoreV1().Pods("corepin-system").List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=corepin-nri"})
			if err != nil {
				return false, err
			}
			for _, p := range list.Items {
				if p.UID != old.UID && p.Status.Phase == v1.PodRunning {
					for _, cs := range p.Status.ContainerStatuses {
						if cs.Ready {
							return true, nil
						}
					}
				}
			}
			return false, nil
		})
		unchanged(t)
	})

	t.Run("deleting the exclusive pod grows the pool back", func(t *testing.T) {
		if err := c.client.CoreV1().Pods("default").Delete(ctx, dbPod.Name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		expectShared(t, all)
		framework.Eventually(t, 30*time.Second, "shared pool annotation grown back", func() (bool, error) {
			n, err := c.client.CoreV1().Nodes().Get(ctx, status.Node, metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			s, err := api.ParseSharedPoolStatus(n.Annotations[api.AnnotationSharedPool])
			return err == nil && s.CPUs.Equals(all), fmt.Errorf("shared-pool %+v %v", s, err)
		})
	})
}
