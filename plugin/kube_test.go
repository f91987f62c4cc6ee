package plugin

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	corepin "github.com/corepin/corepin/api"
)

func eventually(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestWatchPodsFollowsTheReleaseSwitch drives the release switch through a
// pod informer (client-go fake): annotate, and the exclusive container's
// update is pending; a malformed value leaves the pod pinned.
func TestWatchPodsFollowsTheReleaseSwitch(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	p := newTestPlugin(t)
	if _, _, err := p.CreateContainer(ctx, exclusivePod("s-db", "db", "2-3"), ctr("c-db", "s-db", "engine", 2000, "")); err != nil {
		t.Fatal(err)
	}
	pod := &v1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "db", Annotations: map[string]string{corepin.AnnotationCPUMode: "exclusive"}},
		Spec: v1.PodSpec{NodeName: "node-a", Containers: []v1.Container{{Name: "engine",
			Resources: v1.ResourceRequirements{Limits: v1.ResourceList{v1.ResourceCPU: resource.MustParse("2")}}}}}}
	client := fake.NewClientset(pod)
	WatchPods(ctx, client, "node-a", p, log)

	set := func(value string) {
		t.Helper()
		pod.Annotations[corepin.AnnotationReleaseIsolateMode] = value
		if _, err := client.CoreV1().Pods("default").Update(ctx, pod, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	waitUpdate := func(want string) {
		t.Helper()
		var got []string
		eventually(t, "the container update to "+want, func() bool {
			select {
			case <-p.Pending():
			case <-time.After(20 * time.Millisecond):
			}
			for _, u := range p.PendingUpdates() {
				got = append(got, cpusOf(u))
			}
			return len(got) > 0 && got[len(got)-1] == want
		})
	}
	set("true")
	waitUpdate("1-7")
	set("banana") // malformed: pinned again, and logged
	waitUpdate("2-3")
	set("true")
	waitUpdate("1-7")
	delete(pod.Annotations, corepin.AnnotationReleaseIsolateMode)
	if _, err := client.CoreV1().Pods("default").Update(ctx, pod, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitUpdate("2-3")
}

// TestPublishSharedPool checks the node annotation follows the pool.
func TestPublishSharedPool(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	p := newTestPlugin(t)
	client := fake.NewClientset(&v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-a"}})
	go PublishSharedPool(ctx, client, "node-a", p, time.Millisecond, log)
	published := func() string {
		n, err := client.CoreV1().Nodes().Get(ctx, "node-a", metav1.GetOptions{})
		if err != nil {
			return ""
		}
		s, err := corepin.ParseSharedPoolStatus(n.Annotations[corepin.AnnotationSharedPool])
		if err != nil {
			return ""
		}
		return s.CPUs.String()
	}
	eventually(t, "the initial pool published", func() bool { return published() == "1-7" })
	if _, _, err := p.CreateContainer(ctx, exclusivePod("s-db", "db", "2-3"), ctr("c-db", "s-db", "engine", 2000, "")); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the shrunk pool published", func() bool { return published() == "1,4-7" })
}
