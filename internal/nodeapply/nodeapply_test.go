package nodeapply

import (
	"context"
	"encoding/json"
	"maps"
	"testing"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/corepin/corepin/api"
)

func annotations(t *testing.T, client kubernetes.Interface, name string) map[string]string {
	t.Helper()
	n, err := client.CoreV1().Nodes().Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return n.Annotations
}

func wantAnnotations(t *testing.T, client kubernetes.Interface, name string, want map[string]string) {
	t.Helper()
	if got := annotations(t, client, name); !maps.Equal(got, want) {
		t.Fatalf("node %s annotations %v, want %v", name, got, want)
	}
}

// kubectlAnnotate writes as `kubectl annotate` does: a merge patch, under a
// manager of its own (a nil value removes the key).
func kubectlAnnotate(t *testing.T, client kubernetes.Interface, name string, annotations map[string]*string) {
	t.Helper()
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": annotations}})
	if _, err := client.CoreV1().Nodes().Patch(context.Background(), name, types.MergePatchType, patch, metav1.PatchOptions{FieldManager: "kubectl-annotate"}); err != nil {
		t.Fatal(err)
	}
}

func ptr(s string) *string { return &s }

// The plugin's writers run apart: each one's apply leaves the others' keys
// alone, and a key a writer stops sending is removed.
func TestWritersKeepEachOthersKeys(t *testing.T) {
	ctx := context.Background()
	client := fake.NewClientset(&v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-a", UID: "uid-a",
		Annotations: map[string]string{"example.com/owner": "team-a"}}})
	topology := New(client, "node-a", "", ManagerTopology)
	pool := New(client, "node-a", "", ManagerSharedPool)
	done := New(client, "node-a", "uid-a", ManagerReleaseAllDone)

	steps := []struct {
		name  string
		write func() error
		want  map[string]string
	}{
		{"topology published", func() error {
			_, err := topology.Apply(ctx, map[string]string{api.AnnotationTopology: "t1"})
			return err
		}, map[string]string{"example.com/owner": "team-a", api.AnnotationTopology: "t1"}},
		{"pool published beside it", func() error {
			_, err := pool.Apply(ctx, map[string]string{api.AnnotationSharedPool: "p1"})
			return err
		}, map[string]string{"example.com/owner": "team-a", api.AnnotationTopology: "t1", api.AnnotationSharedPool: "p1"}},
		{"topology republished: the pool stays", func() error {
			_, err := topology.Apply(ctx, map[string]string{api.AnnotationTopology: "t2"})
			return err
		}, map[string]string{"example.com/owner": "team-a", api.AnnotationTopology: "t2", api.AnnotationSharedPool: "p1"}},
		{"release-all done", func() error {
			_, err := done.Apply(ctx, map[string]string{api.AnnotationReleaseAllDone: "2026-12-02T15:00:00Z"})
			return err
		}, map[string]string{"example.com/owner": "team-a", api.AnnotationTopology: "t2", api.AnnotationSharedPool: "p1",
			api.AnnotationReleaseAllDone: "2026-12-02T15:00:00Z"}},
		{"release-all not done: removed, nothing else", func() error {
			return done.Remove(ctx, nil, api.AnnotationReleaseAllDone)
		}, map[string]string{"example.com/owner": "team-a", api.AnnotationTopology: "t2", api.AnnotationSharedPool: "p1"}},
		{"removing an absent key is no error", func() error {
			return done.Remove(ctx, nil, api.AnnotationReleaseAllDone)
		}, map[string]string{"example.com/owner": "team-a", api.AnnotationTopology: "t2", api.AnnotationSharedPool: "p1"}},
	}
	for _, s := range steps {
		if err := s.write(); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		wantAnnotations(t, client, "node-a", s.want)
	}
}

// A key is the writer's by contract: a value a person wrote over it is
// replaced, and Remove removes a key that another manager holds too (a
// person's, or one a merge-patching version wrote), leaving keep.
func TestWritersOwnTheirKeys(t *testing.T) {
	ctx := context.Background()
	client := fake.NewClientset(&v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-a", UID: "uid-a"}})
	topology := New(client, "node-a", "", ManagerTopology)
	if _, err := topology.Apply(ctx, map[string]string{api.AnnotationTopology: "t1"}); err != nil {
		t.Fatal(err)
	}
	kubectlAnnotate(t, client, "node-a", map[string]*string{api.AnnotationTopology: ptr("edited")})
	if _, err := topology.Apply(ctx, map[string]string{api.AnnotationTopology: "t1"}); err != nil {
		t.Fatal(err)
	}
	wantAnnotations(t, client, "node-a", map[string]string{api.AnnotationTopology: "t1"})

	// A done the plugin wrote and a person wrote again (the same value:
	// both hold it), then a done only a person wrote.
	done := New(client, "node-a", "", ManagerReleaseAllDone)
	if _, err := done.Apply(ctx, map[string]string{api.AnnotationReleaseAllDone: "2026-12-02T15:00:00Z"}); err != nil {
		t.Fatal(err)
	}
	kubectlAnnotate(t, client, "node-a", map[string]*string{api.AnnotationReleaseAllDone: ptr("2026-12-02T15:00:00Z")})
	command := New(client, "node-a", "", ManagerReleaseAllCommand)
	if err := command.Remove(ctx, map[string]string{api.AnnotationReleaseAll: "true"}, api.AnnotationReleaseAllDone); err != nil {
		t.Fatal(err)
	}
	wantAnnotations(t, client, "node-a", map[string]string{api.AnnotationTopology: "t1", api.AnnotationReleaseAll: "true"})
	kubectlAnnotate(t, client, "node-a", map[string]*string{api.AnnotationReleaseAllDone: ptr("by hand")})
	if err := done.Remove(ctx, nil, api.AnnotationReleaseAllDone); err != nil {
		t.Fatal(err)
	}
	wantAnnotations(t, client, "node-a", map[string]string{api.AnnotationTopology: "t1", api.AnnotationReleaseAll: "true"})
	// --clear: release-all goes, the topology stays.
	if err := command.Remove(ctx, nil, api.AnnotationReleaseAll, api.AnnotationReleaseAllDone); err != nil {
		t.Fatal(err)
	}
	wantAnnotations(t, client, "node-a", map[string]string{api.AnnotationTopology: "t1"})
}

// A writer that has not seen the node yet looks it up first: no node, no
// write, and no Node created. (That an apply naming a UID is refused once
// its node is deleted is the API server's: test/integration checks it.)
func TestNoNodeNoWrite(t *testing.T) {
	ctx := context.Background()
	client := fake.NewClientset()
	_, err := New(client, "node-gone", "", ManagerSharedPool).Apply(ctx, map[string]string{api.AnnotationSharedPool: "p1"})
	if !Gone(err) {
		t.Fatalf("apply to a missing node: %v, want a not-found error", err)
	}
	const want = "looking up node node-gone to write corepin.io/shared-pool: "
	if got := err.Error(); len(got) < len(want) || got[:len(want)] != want {
		t.Fatalf("error %q, want it to start %q", got, want)
	}
	nodes, err := client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil || len(nodes.Items) != 0 {
		t.Fatalf("nodes after the refused write: %v (%v), want none", nodes.Items, err)
	}
}
