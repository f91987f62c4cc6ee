package extender

import (
	"context"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/record"

	"github.com/corepin/corepin/api"
)

// The cache feeds the scheduler from informers: a bound pod's CPUs are
// held, a broken topology annotation is reported once as a node event, and
// an incompatible topology change marks the node.
func TestCacheFromInformers(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pod := testPod("db", 2, true)
	pod.Spec.NodeName = "n1"
	pod.Annotations[api.AnnotationAllocStatus] = `{"node":"n1","cpus":"2-3","containers":{"main":"2-3"},"mems":"0"}`
	client := fake.NewClientset(testNode("n1", topologyJSON(8, "")), testNode("bad", `{"version":1,"cpus":[]}`), pod)
	sched := newTestScheduler(t)
	recorder := record.NewFakeRecorder(10)
	c, err := NewCache(client, sched, recorder)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	n, _ := sched.NodeSnapshot("n1")
	if n.Exclusive().String() != "2-3" {
		t.Fatalf("held %q, want 2-3", n.Exclusive())
	}
	// Bind reads pods from the cache: what it keeps is what the engine needs.
	if got, ok := c.Pod("default", "db"); !ok || got.Spec.NodeName != "n1" || got.Annotations[api.AnnotationAllocStatus] == "" ||
		got.Spec.Containers[0].Resources.Limits.Cpu().Value() != 2 {
		t.Fatalf("cached pod %+v, %v", got, ok)
	}
	if _, ok := c.Pod("default", "nope"); ok {
		t.Fatal("cache returned a pod that does not exist")
	}
	select {
	case e := <-recorder.Events:
		if !strings.Contains(e, "InvalidCorepinAnnotation") || !strings.Contains(e, "must list the online CPUs") {
			t.Fatalf("event %q", e)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no event for the node with a broken topology")
	}
	// Shrinking n1 is incompatible: the node is marked for an operator.
	shrunk := testNode("n1", topologyJSON(2, ""))
	if _, err := client.CoreV1().Nodes().Update(ctx, shrunk, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, _ := client.CoreV1().Nodes().Get(ctx, "n1", metav1.GetOptions{})
		if strings.Contains(got.Annotations[api.AnnotationNodeAttention], "CPU 2 went offline") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("node not marked: %v", got.Annotations)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Deleting the pod frees its CPUs.
	if err := client.CoreV1().Pods("default").Delete(ctx, "db", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	for deadline = time.Now().Add(10 * time.Second); ; {
		if n, _ := sched.NodeSnapshot("n1"); n.Exclusive().IsEmpty() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("deleted pod still holds CPUs")
		}
		time.Sleep(50 * time.Millisecond)
	}
}
