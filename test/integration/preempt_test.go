//go:build integration

package integration

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	schedulingv1 "k8s.io/api/scheduling/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/cpuset"

	"github.com/corepin/corepin/api"
	"github.com/corepin/corepin/test/integration/framework"
)

// preemptCalls reads how many /preempt requests the extender has answered
// from its /metrics.
func preemptCalls(extURL string) (int, error) {
	resp, err := http.Get(extURL + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), `corepin_extender_request_duration_seconds_count{verb="preempt"} `); ok {
			return strconv.Atoi(rest)
		}
	}
	return 0, sc.Err()
}

// terminating lists the pods that have a deletionTimestamp (poke pods
// aside).
func terminating(c kubernetes.Interface) ([]v1.Pod, error) {
	pods, err := c.CoreV1().Pods("default").List(context.Background(), metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	var out []v1.Pod
	for _, p := range pods.Items {
		if p.DeletionTimestamp != nil && !strings.HasPrefix(p.Name, "poke-") {
			out = append(out, p)
		}
	}
	return out, nil
}

// poke makes kube-scheduler try its unschedulable pods again: a pending pod
// waits for a cluster event its rejectors care about (here the deletion of
// a pod with a CPU request on a node, which NodeResourcesFit's queueing hint
// takes as room made), so a pod bound to node straight away is deleted.
func poke(t *testing.T, c kubernetes.Interface, node string, i int) {
	t.Helper()
	p := framework.NewPod(fmt.Sprintf("poke-%d", i), framework.PodOpts{CPU: "100m"})
	p.Spec.NodeName = node
	if _, err := c.CoreV1().Pods("default").Create(context.Background(), p, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := c.CoreV1().Pods("default").Delete(context.Background(), p.Name, metav1.DeleteOptions{GracePeriodSeconds: new(int64)}); err != nil {
		t.Fatal(err)
	}
}

// finishTermination does what the kubelet would for a pod being deleted:
// once its containers are gone it removes the pod (grace period 0).
func finishTermination(t *testing.T, c kubernetes.Interface, name string) {
	t.Helper()
	if err := c.CoreV1().Pods("default").Delete(context.Background(), name, metav1.DeleteOptions{GracePeriodSeconds: new(int64)}); err != nil {
		t.Fatalf("removing terminating pod %s: %v", name, err)
	}
}

// TestPreemption runs corepin-extender with its preemptVerb behind a real
// kube-scheduler (contract section 9). Two 8-CPU nodes of two NUMA nodes
// each take at most 6 exclusive CPUs (node policy maxExclusiveRatio 0.75),
// which three 2-CPU pods of a low priority fill. kube-scheduler's own
// arithmetic sees 2 CPUs free on each node, so it proposes one victim for a
// 4-CPU pod; corepin answers the two the pod needs, and the pod is bound
// once both are gone, onto cores no remaining pod holds. A pod that no set
// of lower-priority pods can make room for evicts nobody, over several
// scheduling attempts.
func TestPreemption(t *testing.T) {
	cp := framework.StartControlPlane(t)
	c := cp.Client
	ctx := context.Background()
	nodes := []string{"node-a", "node-b"}
	cp.CreateNodes(t, "8-cpu-2-numa", map[string]string{api.AnnotationNodePolicy: `{"maxExclusiveRatio": 0.75}`}, nodes...)
	for name, value := range map[string]int32{"low": 100, "high": 1000} {
		if _, err := c.SchedulingV1().PriorityClasses().Create(ctx, &schedulingv1.PriorityClass{
			ObjectMeta: metav1.ObjectMeta{Name: name}, Value: value}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	ext := cp.StartExtender(t)
	verbs := ext.Verbs()
	verbs.PreemptVerb = "preempt"
	cp.StartScheduler(t, "kube-scheduler", "", verbs)
	checker := watchInvariants(t, c, 6)
	create := func(name, class, cpu string, annotations map[string]string, labels map[string]string) {
		t.Helper()
		p := framework.NewPod(name, framework.PodOpts{CPU: cpu, Annotations: annotations, Labels: labels})
		p.Spec.PriorityClassName = class
		cp.CreatePod(t, p)
	}

	var low []string
	for i := 0; i < 6; i++ {
		name := fmt.Sprintf("low-%d", i)
		create(name, "low", "2", framework.Exclusive(), nil)
		low = append(low, name)
	}
	perNode := map[string]int{}
	for _, name := range low {
		p := cp.WaitScheduled(t, name)
		if *p.Spec.Priority != 100 {
			t.Fatalf("%s: priority %d, want the class's 100", name, *p.Spec.Priority)
		}
		perNode[p.Spec.NodeName]++
	}
	if perNode["node-a"] != 3 || perNode["node-b"] != 3 {
		t.Fatalf("low pods per node %v, want 3 on each (6 exclusive CPUs)", perNode)
	}

	var node string // where the preemptor went
	t.Run("a high-priority pod is bound once exactly the victims it needs are gone", func(t *testing.T) {
		create("urgent", "high", "4", framework.Exclusive(), map[string]string{"app": "db"})
		var victims []v1.Pod
		framework.Eventually(t, 60*time.Second, "two low pods on one node being preempted", func() (bool, error) {
			var err error
			victims, err = terminating(c)
			return len(victims) >= 2, fmt.Errorf("terminating so far: %d (%v)", len(victims), err)
		})
		node = victims[0].Spec.NodeName
		for _, v := range victims {
			if v.Spec.NodeName != node || !strings.HasPrefix(v.Name, "low-") {
				t.Fatalf("victims %s on %s and %s on %s, want low pods of one node", victims[0].Name, node, v.Name, v.Spec.NodeName)
			}
		}
		// Two and no more, and the pod waits for them: the victims keep
		// their CPUs in the extender's cache while they terminate.
		framework.Consistently(t, 3*time.Second, "while the victims terminate", func() error {
			now, err := terminating(c)
			if err != nil {
				return err
			}
			if len(now) != 2 {
				return fmt.Errorf("%d pods terminating, want the 2 victims", len(now))
			}
			if p := cp.GetPod(t, "urgent"); p.Spec.NodeName != "" {
				return fmt.Errorf("urgent bound to %s while its victims still hold their CPUs", p.Spec.NodeName)
			}
			return nil
		})
		if p := cp.GetPod(t, "urgent"); p.Status.NominatedNodeName != node {
			t.Fatalf("urgent nominated for %q, want %s", p.Status.NominatedNodeName, node)
		}
		// One victim gone: 4 exclusive CPUs held, 6 allowed, the pod needs 4.
		finishTermination(t, c, victims[0].Name)
		framework.Consistently(t, 3*time.Second, "with one victim gone", func() error {
			if p := cp.GetPod(t, "urgent"); p.Spec.NodeName != "" {
				return fmt.Errorf("urgent bound to %s while %s still holds its CPUs", p.Spec.NodeName, victims[1].Name)
			}
			if now, err := terminating(c); err != nil || len(now) != 1 {
				return fmt.Errorf("terminating: %d pods (%v), want only %s", len(now), err, victims[1].Name)
			}
			return nil
		})
		finishTermination(t, c, victims[1].Name)
		urgent := cp.WaitScheduled(t, "urgent")
		st := framework.AllocStatus(t, urgent)
		if urgent.Spec.NodeName != node || st.Node != node || st.CPUs.Size() != 4 {
			t.Fatalf("urgent on %s with %+v, want 4 CPUs on %s", urgent.Spec.NodeName, st, node)
		}
		pods, err := c.CoreV1().Pods("default").List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		remaining := 0
		for _, p := range pods.Items {
			if p.Name == "urgent" || p.Spec.NodeName == "" {
				continue
			}
			remaining++
			if p.DeletionTimestamp != nil {
				t.Fatalf("pod %s is being deleted too", p.Name)
			}
			if other := framework.AllocStatus(t, &p); other.Node == node && !other.CPUs.Intersection(st.CPUs.Set()).IsEmpty() {
				t.Fatalf("urgent got CPUs %s, of which %s are held by %s", st.CPUs, other.CPUs.Set().Intersection(st.CPUs.Set()), p.Name)
			}
		}
		if remaining != 4 {
			t.Fatalf("%d low pods left, want 4", remaining)
		}
	})
	if node == "" {
		t.FailNow()
	}
	other := nodes[0]
	if other == node {
		other = nodes[1]
	}

	// A shared pod of the app db with a high priority and max-per-node 1
	// lands on the other node (urgent, app db, holds the first); it keeps
	// the app's pods off it.
	create("db-cache", "high", "100m", map[string]string{api.AnnotationMaxPerNode: "1"}, map[string]string{"app": "db"})
	if p := cp.WaitScheduled(t, "db-cache"); p.Spec.NodeName != other {
		t.Fatalf("db-cache on %s, want %s", p.Spec.NodeName, other)
	}

	// Each pod below fits kube-scheduler's arithmetic once the low pods of
	// some node are gone, so kube-scheduler proposes that node to the
	// extender at every attempt; corepin's rules leave no set enough.
	for _, tc := range []struct {
		name, pod, cpu string
		annotations    map[string]string
		labels         map[string]string
	}{
		{"over the exclusive limit", "too-big", "7", framework.Exclusive(), nil},
		{"numa Required larger than any NUMA node", "too-wide", "5", framework.Exclusive(api.AnnotationAllocSpec, `{"numa":"Required"}`), nil},
		{"max-per-node held by pods of the same priority", "db-2", "2", framework.Exclusive(api.AnnotationMaxPerNode, "1"), map[string]string{"app": "db"}},
	} {
		t.Run("no set helps: "+tc.name, func(t *testing.T) {
			before, err := preemptCalls(ext.URL)
			if err != nil {
				t.Fatal(err)
			}
			create(tc.pod, "high", tc.cpu, tc.annotations, tc.labels)
			// Until kube-scheduler has tried three times (each attempt
			// proposes a node to the extender, whose answer leaves it
			// out), no pod may be preempted nor the pod bound.
			var poked time.Time
			pokes := 0
			framework.Eventually(t, 90*time.Second, "three preemption attempts for "+tc.pod, func() (bool, error) {
				if time.Since(poked) > 1500*time.Millisecond {
					pokes++
					poke(t, c, other, pokes)
					poked = time.Now()
				}
				now, err := terminating(c)
				if err != nil {
					return false, err
				}
				if len(now) > 0 {
					t.Fatalf("pod %s is being deleted (preempted for %s?)", now[0].Name, tc.pod)
				}
				if p := cp.GetPod(t, tc.pod); p.Spec.NodeName != "" {
					t.Fatalf("%s bound to %s", tc.pod, p.Spec.NodeName)
				}
				calls, err := preemptCalls(ext.URL)
				return err == nil && calls >= before+3, fmt.Errorf("%d preemption calls answered (%v)", calls-before, err)
			})
			// And for a moment after the last one.
			framework.Consistently(t, 2*time.Second, "no pod preempted for "+tc.pod, func() error {
				if now, err := terminating(c); err != nil || len(now) > 0 {
					return fmt.Errorf("%d pods being deleted (%v)", len(now), err)
				}
				return nil
			})
			if err := c.CoreV1().Pods("default").Delete(ctx, tc.pod, metav1.DeleteOptions{GracePeriodSeconds: new(int64)}); err != nil {
				t.Fatal(err)
			}
			framework.Eventually(t, 30*time.Second, tc.pod+" gone", func() (bool, error) {
				_, err := c.CoreV1().Pods("default").Get(ctx, tc.pod, metav1.GetOptions{})
				return err != nil, err
			})
		})
	}
	checker.assert(t)
	// The survivors' CPUs never overlapped (the checker), and urgent's
	// CPUs are those its victims left.
	held := cpuset.New()
	for _, name := range slices.Sorted(slices.Values(low)) {
		if p, err := c.CoreV1().Pods("default").Get(ctx, name, metav1.GetOptions{}); err == nil && p.Spec.NodeName == node {
			held = held.Union(framework.AllocStatus(t, p).CPUs.Set())
		}
	}
	if u := framework.AllocStatus(t, cp.GetPod(t, "urgent")); !u.CPUs.Set().Intersection(held).IsEmpty() {
		t.Fatalf("urgent's CPUs %s overlap the remaining low pods' %s", u.CPUs, held)
	}
}
