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
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/cpuset"

	"github.com/corepin/corepin/api"
	"github.com/corepin/corepin/internal/nodeapply"
	"github.com/corepin/corepin/test/integration/framework"
)

// TestNodeWritesNeverCreateANode: corepin's node annotations are written
// by server-side apply, and an apply with nothing to merge into would
// create a Node. Against a real kube-apiserver: a writer whose node was
// deleted is refused by the UID it sends, and its look-up then finds no
// node; nothing creates one; a node re-created under the name refuses the
// old UID and is written by the next try. Then the same with the real
// plugin: the node deleted under it, its next shared-pool write is refused
// (nothing re-created), and once the node is back both of its annotations
// are published there again.
func TestNodeWritesNeverCreateANode(t *testing.T) {
	ctx := context.Background()
	cp := framework.StartControlPlane(t)
	gone := func(name string) {
		t.Helper()
		if _, err := cp.Client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Fatalf("node %s after the refused write: %v, want not found", name, err)
		}
	}
	deleteNode := func(name string) {
		t.Helper()
		if err := cp.Client.CoreV1().Nodes().Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}

	old := cp.CreateNode(t, "node-x", 2, nil)
	w := nodeapply.New(cp.Client, "node-x", "", nodeapply.ManagerTopology)
	if _, err := w.Apply(ctx, map[string]string{api.AnnotationTopology: "t1"}); err != nil {
		t.Fatal(err)
	}
	deleteNode("node-x")
	_, err := w.Apply(ctx, map[string]string{api.AnnotationTopology: "t2"})
	if !apierrors.IsConflict(err) || !strings.Contains(err.Error(), "uid "+string(old.UID)) || !strings.Contains(err.Error(), "no existing object was found") {
		t.Fatalf("apply to the deleted node: %v, want the UID guard's conflict naming uid %s", err, old.UID)
	}
	gone("node-x")
	// Remove applies first, so it is refused the same way.
	r := nodeapply.New(cp.Client, "node-x", old.UID, nodeapply.ManagerReleaseAllDone)
	if err := r.Remove(ctx, nil, api.AnnotationReleaseAllDone); !nodeapply.Gone(err) {
		t.Fatalf("remove from the deleted node: %v, want it gone", err)
	}
	gone("node-x")
	// The next try looks the node up: not found, no write.
	if _, err := w.Apply(ctx, map[string]string{api.AnnotationTopology: "t2"}); !apierrors.IsNotFound(err) {
		t.Fatalf("apply after the refusal: %v, want the look-up's not found", err)
	}
	gone("node-x")

	// Re-created under the name: the old UID is refused, the next try
	// finds the new node.
	_ = cp.CreateNode(t, "node-x", 2, nil)
	w = nodeapply.New(cp.Client, "node-x", old.UID, nodeapply.ManagerTopology)
	if _, err := w.Apply(ctx, map[string]string{api.AnnotationTopology: "t3"}); err == nil {
		t.Fatal("an apply naming the deleted node's UID was accepted by the node re-created under its name")
	} else {
		t.Logf("the old UID refused: %v", err)
	}
	got, err := w.Apply(ctx, map[string]string{api.AnnotationTopology: "t3"})
	if err != nil {
		t.Fatal(err)
	}
	if got.UID == old.UID || got.Annotations[api.AnnotationTopology] != "t3" {
		t.Fatalf("the re-created node: uid %s (the deleted one's %s), annotations %v", got.UID, old.UID, got.Annotations)
	}

	// The plugin.
	host := framework.SplitHostCPUs(t)
	all, exclusiveCPU := host.All, host.Exclusive
	cp.CreateNode(t, "node-a", host.N, nil)
	ctrd := framework.StartContainerd(t)
	plugin := ctrd.StartPlugin(t, "--kubeconfig", cp.Kubeconfig, "--drift-interval", "0")
	published := func(what string, want cpuset.CPUSet) {
		t.Helper()
		framework.Eventually(t, 30*time.Second, what, func() (bool, error) {
			if exited, err := plugin.Exited(); exited {
				t.Fatalf("corepin-nri exited: %v\n%s", err, framework.Tail(plugin.Log, 20))
			}
			node, err := cp.Client.CoreV1().Nodes().Get(ctx, "node-a", metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			s, err := api.ParseSharedPoolStatus(node.Annotations[api.AnnotationSharedPool])
			if err != nil || !s.CPUs.Equals(want) {
				return false, fmt.Errorf("pool %+v, %v", s, err)
			}
			_, err = api.ParseTopology(node.Annotations[api.AnnotationTopology])
			return err == nil, err
		})
	}
	published("topology and pool published", all)
	dbID, dbCfg := ctrd.RunPod(t, "default", "db", framework.AllocStatusFor(exclusiveCPU))
	if _, err := ctrd.CreateContainer(dbID, dbCfg, "engine", 1000); err != nil {
		t.Fatalf("exclusive create refused: %v\n%s", err, framework.Tail(plugin.Log, 20))
	}
	published("the shrunk pool published", all.Difference(exclusiveCPU))

	deleteNode("node-a")
	ctrd.RemovePod(t, dbID) // the pool grows back: a write to make
	framework.Eventually(t, 30*time.Second, "the pool's write refused by the UID guard", func() (bool, error) {
		log := framework.Tail(plugin.Log, 100)
		return strings.Contains(log, "Publishing the shared pool failed") && strings.Contains(log, "no existing object was found"), nil
	})
	gone("node-a")

	// Back (a kubelet registering again): the pool's retry and the node
	// watch's re-publication of the topology find it. (A bare create: the
	// plugin writes to it at once.)
	if _, err := cp.Client.CoreV1().Nodes().Create(ctx, &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-a"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	published("topology and pool published on the re-created node", all)
}

// annotationOwners lists the field managers that hold the node's
// annotation key, each as "manager operation", from its managedFields
// (what `kubectl get node -o yaml --show-managed-fields` shows).
func annotationOwners(t *testing.T, node *v1.Node, key string) []string {
	t.Helper()
	var owners []string
	for _, m := range node.ManagedFields {
		if m.FieldsV1 == nil {
			continue
		}
		var fields struct {
			Metadata struct {
				Annotations map[string]json.RawMessage `json:"f:annotations"`
			} `json:"f:metadata"`
		}
		if err := json.Unmarshal(m.FieldsV1.Raw, &fields); err != nil {
			t.Fatalf("managedFields of %s: %v", m.Manager, err)
		}
		if _, ok := fields.Metadata.Annotations["f:"+key]; ok {
			owners = append(owners, m.Manager+" "+string(m.Operation))
		}
	}
	return owners
}
