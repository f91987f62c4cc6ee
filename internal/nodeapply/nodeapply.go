// Package nodeapply writes corepin's annotations on a Node by server-side
// apply, one field manager per writer, and only ever to a Node that exists.
//
// With server-side apply a manager that leaves out a key it applied before
// removes it, so every writer that runs on its own (its own state, its own
// retries) has its own manager, and each apply sends every key its manager
// owns; writers that share a manager would delete each other's keys.
package nodeapply

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	"k8s.io/client-go/kubernetes"
)

// The field managers of corepin's node annotations: the node plugin's
// three writers, the release-all command and the extender.
const (
	// ManagerTopology owns corepin.io/topology (the plugin's topology publisher).
	ManagerTopology = "corepin-nri-topology"
	// ManagerSharedPool owns corepin.io/shared-pool (the plugin's pool publisher).
	ManagerSharedPool = "corepin-nri-shared-pool"
	// ManagerReleaseAllDone owns corepin.io/release-all-done (the plugin's release-all reporter).
	ManagerReleaseAllDone = "corepin-nri-release-all"
	// ManagerReleaseAllCommand owns corepin.io/release-all (`corepin-nri release-all`, the chart's hooks).
	ManagerReleaseAllCommand = "corepin-nri-release-all-command"
	// ManagerExtender owns corepin.io/attention (the extender; the same
	// manager writes a pod's alloc-status).
	ManagerExtender = "corepin-extender"
)

// Node is one writer's handle on one node's annotations. Every apply
// carries the UID of the Node object it found under the name: an apply
// with no object to merge into would create one, so a node deleted
// meanwhile is refused by the API server (a Conflict) rather than
// re-created as a bare Node holding annotations only; a node re-created
// under the name is refused too (its UID differs) and found again by the
// next write. Not safe for concurrent use: each writer has its own.
type Node struct {
	client  kubernetes.Interface
	name    string
	manager string
	uid     types.UID
}

// New returns the handle of manager on the node named name. uid is the
// node's UID when the caller has it (from a watch or a list); empty, the
// first write looks it up.
func New(client kubernetes.Interface, name string, uid types.UID, manager string) *Node {
	return &Node{client: client, name: name, manager: manager, uid: uid}
}

// Gone reports whether err says that the node is not there (any more):
// not found by the look-up, or refused by the UID guard.
func Gone(err error) bool { return apierrors.IsNotFound(err) || apierrors.IsConflict(err) }

// Apply makes annotations the whole of what the manager owns on the node,
// forcing: each key is the manager's by contract, whoever wrote it last. A
// key the manager applied before and leaves out is removed (unless another
// manager holds it too: see Remove). It returns the node as the API server
// stored it.
func (n *Node) Apply(ctx context.Context, annotations map[string]string) (*v1.Node, error) {
	if n.uid == "" {
		got, err := n.client.CoreV1().Nodes().Get(ctx, n.name, metav1.GetOptions{})
		if err != nil {
			return nil, fmt.Errorf("looking up node %s to write %s: %w", n.name, keys(annotations), err)
		}
		n.uid = got.UID
	}
	ac := corev1ac.Node(n.name).WithUID(n.uid).WithAnnotations(annotations)
	out, err := n.client.CoreV1().Nodes().Apply(ctx, ac, metav1.ApplyOptions{FieldManager: n.manager, Force: true})
	if err != nil {
		uid := n.uid
		n.uid = "" // deleted or re-created: look it up again next time
		return nil, fmt.Errorf("applying %s to node %s (uid %s) as %s: %w", keys(annotations), n.name, uid, n.manager, err)
	}
	return out, nil
}

// Remove removes the keys from the node and leaves the manager owning keep
// (the other keys it has there). The apply without them drops the
// manager's claim, which removes a key no other manager holds; a key that
// another manager holds too (a person's kubectl annotate, another writer,
// a version that wrote by merge patch) survives that apply, and is then
// removed by a merge patch naming the node's UID: a patch never creates an
// object, and one with another UID is refused.
func (n *Node) Remove(ctx context.Context, keep map[string]string, remove ...string) error {
	out, err := n.Apply(ctx, keep)
	if err != nil {
		return err
	}
	left := map[string]any{}
	for _, key := range remove {
		if _, ok := out.Annotations[key]; ok {
			left[key] = nil
		}
	}
	if len(left) == 0 {
		return nil
	}
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"uid": out.UID, "annotations": left}})
	if _, err := n.client.CoreV1().Nodes().Patch(ctx, n.name, types.MergePatchType, patch, metav1.PatchOptions{FieldManager: n.manager}); err != nil {
		n.uid = ""
		return fmt.Errorf("removing %s (held by another manager too) from node %s (uid %s): %w", keys(left), n.name, out.UID, err)
	}
	return nil
}

// keys names the annotations a write is about, for its errors.
func keys[V any](m map[string]V) string {
	if len(m) == 0 {
		return "no annotation"
	}
	return strings.Join(slices.Sorted(maps.Keys(m)), ", ")
}
