package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/corepin/corepin/api"
	"github.com/corepin/corepin/internal/nodeapply"
)

func pluginPod(name, node string, ready bool) *v1.Pod {
	status := v1.ConditionFalse
	if ready {
		status = v1.ConditionTrue
	}
	return &v1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "corepin-system", Name: name, Labels: map[string]string{"app.kubernetes.io/name": "corepin-nri"}},
		Spec:   v1.PodSpec{NodeName: node},
		Status: v1.PodStatus{Phase: v1.PodRunning, Conditions: []v1.PodCondition{{Type: v1.PodReady, Status: status}}}}
}

// plugins plays the node plugins of the nodes in answering: each writes
// release-all-done once its node carries release-all, as the plugin's
// reporter does.
func plugins(ctx context.Context, client kubernetes.Interface, answering ...string) {
	for ctx.Err() == nil {
		for _, node := range answering {
			n, err := client.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
			if err == nil && n.Annotations[api.AnnotationReleaseAll] == "true" && n.Annotations[api.AnnotationReleaseAllDone] == "" {
				now := time.Now().UTC().Format(time.RFC3339)
				_, _ = nodeapply.New(client, node, n.UID, nodeapply.ManagerReleaseAllDone).Apply(ctx, map[string]string{api.AnnotationReleaseAllDone: now})
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func node(name string, annotations map[string]string) *v1.Node {
	return &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: annotations}}
}

// TestReleaseAllCommand: release-all annotates the nodes that run a
// corepin-nri pod (and no other), waits for each to report done and fails
// naming the ones that do not (a done left from an earlier request does
// not count); --clear removes both annotations everywhere.
func TestReleaseAllCommand(t *testing.T) {
	o := releaseAllOptions{namespace: "corepin-system", selector: "app.kubernetes.io/name=corepin-nri", timeout: 2 * time.Second, interval: 10 * time.Millisecond}
	for _, tc := range []struct {
		name      string
		answering []string
		wantErr   []string // substrings; none: success
	}{
		{"every plugin reports", []string{"node-a", "node-b"}, nil},
		{"one plugin does not", []string{"node-a"}, []string{"1 of 2 nodes not released", "node-b did not report corepin.io/release-all-done within 2s (plugin pod corepin-nri-b: Running, not ready)", "helm uninstall --no-hooks"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			client := fake.NewClientset(
				node("node-a", nil),
				node("node-b", map[string]string{api.AnnotationReleaseAllDone: "2020-01-01T00:00:00Z"}), // stale
				node("node-c", nil),
				pluginPod("corepin-nri-a", "node-a", true), pluginPod("corepin-nri-b", "node-b", false),
				pluginPod("corepin-nri-z", "node-z", false), // its node deleted: nothing to wait for
				&v1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "corepin-system", Name: "scheduler", Labels: map[string]string{"app.kubernetes.io/name": "corepin-scheduler"}},
					Spec: v1.PodSpec{NodeName: "node-c"}},
			)
			go plugins(ctx, client, tc.answering...)
			var out bytes.Buffer
			err := releaseAll(ctx, client, o, &out)
			switch {
			case tc.wantErr == nil && err != nil:
				t.Fatalf("%v\n%s", err, out.String())
			case tc.wantErr != nil && err == nil:
				t.Fatalf("succeeded with %v not reporting:\n%s", tc.answering, out.String())
			}
			if err != nil {
				t.Log(err)
			}
			for _, want := range tc.wantErr {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error lacks %q:\n%v", want, err)
				}
			}
			if err != nil && strings.Contains(err.Error(), "node-a ") {
				t.Errorf("the error names node-a, which reported:\n%v", err)
			}
			for _, name := range []string{"node-a", "node-b", "node-c"} {
				n, _ := client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
				if got, want := n.Annotations[api.AnnotationReleaseAll], map[string]string{"node-a": "true", "node-b": "true"}[name]; got != want {
					t.Errorf("%s: release-all %q, want %q", name, got, want)
				}
			}
			if !strings.Contains(out.String(), "node-z: the node is gone, nothing to release") {
				t.Errorf("output:\n%s", out.String())
			}
			if err != nil && strings.Contains(err.Error(), "node-z") {
				t.Errorf("the error names node-z, which is gone:\n%v", err)
			}
			if tc.wantErr == nil && !strings.Contains(out.String(), "all 2 nodes released") {
				t.Errorf("output:\n%s", out.String())
			}

			cancel()
			out.Reset()
			if err := clearReleaseAll(context.Background(), client, &out); err != nil {
				t.Fatal(err)
			}
			for _, name := range []string{"node-a", "node-b", "node-c"} {
				n, _ := client.CoreV1().Nodes().Get(context.Background(), name, metav1.GetOptions{})
				if len(n.Annotations) != 0 {
					t.Errorf("%s after --clear: %v", name, n.Annotations)
				}
			}
			if !strings.Contains(out.String(), "removed from 2 nodes: node-a, node-b") {
				t.Errorf("--clear output: %s", out.String())
			}
		})
	}
	t.Run("no plugin pods", func(t *testing.T) {
		var out bytes.Buffer
		if err := releaseAll(context.Background(), fake.NewClientset(node("node-a", nil)), o, &out); err != nil || !strings.Contains(out.String(), "nothing to release") {
			t.Fatalf("%v %s", err, out.String())
		}
	})
}

func TestReleaseAllCommandLine(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := releaseAllMain([]string{"--timeout", "soon"}, &stdout, &stderr); code != 2 || !strings.Contains(stderr.String(), "timeout") {
		t.Errorf("a bad --timeout: exit %d, %s", code, stderr.String())
	}
	stderr.Reset()
	if code := releaseAllMain([]string{"extra"}, &stdout, &stderr); code != 2 || !strings.Contains(stderr.String(), "unexpected arguments") {
		t.Errorf("an extra argument: exit %d, %s", code, stderr.String())
	}
}
