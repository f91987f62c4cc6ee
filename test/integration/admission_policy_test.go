//go:build integration

package integration

import (
	"context"
	"fmt"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	v1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"

	"github.com/corepin/corepin/api"
	"github.com/corepin/corepin/test/integration/framework"
)

const (
	// The identity the policy lets write alloc-status.
	extenderUser = "system:serviceaccount:corepin-system:corepin-scheduler"
	// Anyone else who may write pods.
	ordinaryUser = "alice"
	// What test/e2e also looks for in a refusal.
	policyPhrase = "may only be set by the corepin scheduler extender"
)

// applyDeploy renders deploy/ as `kubectl apply -k deploy/` would and
// creates every object with strict field validation, so an unknown or
// misplaced field, a wrong namespace or an invalid CEL expression is an
// error here. It returns the kind/name of every object created.
func applyDeploy(t *testing.T, cp *framework.ControlPlane) []string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	dir := filepath.Join(filepath.Dir(file), "..", "..", "deploy")
	resources, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	dyn, err := dynamic.NewForConfig(cp.Config)
	if err != nil {
		t.Fatal(err)
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(cp.Client.Discovery()))
	var created []string
	for _, r := range resources.Resources() {
		m, err := r.Map()
		if err != nil {
			t.Fatal(err)
		}
		obj := &unstructured.Unstructured{Object: m}
		gvk := obj.GroupVersionKind()
		mapping, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			t.Fatalf("%s: %v", gvk, err)
		}
		var client dynamic.ResourceInterface = dyn.Resource(mapping.Resource)
		if mapping.Scope.Name() == "namespace" {
			client = dyn.Resource(mapping.Resource).Namespace(obj.GetNamespace())
		} else if obj.GetNamespace() != "" {
			t.Errorf("%s/%s is cluster-scoped but rendered with namespace %q", gvk.Kind, obj.GetName(), obj.GetNamespace())
		}
		if _, err := client.Create(context.Background(), obj, metav1.CreateOptions{FieldValidation: "Strict"}); err != nil {
			t.Fatalf("creating %s %s/%s: %v", gvk.Kind, obj.GetNamespace(), obj.GetName(), err)
		}
		created = append(created, gvk.Kind+"/"+obj.GetName())
	}
	return created
}

// allowed asks the API server whether a service account may do verb on
// resource (with subresource), cluster-wide.
func allowed(t *testing.T, cp *framework.ControlPlane, sa, verb, resource, subresource string) bool {
	t.Helper()
	review, err := cp.Client.AuthorizationV1().SubjectAccessReviews().Create(context.Background(), &authorizationv1.SubjectAccessReview{
		Spec: authorizationv1.SubjectAccessReviewSpec{
			User:   "system:serviceaccount:corepin-system:" + sa,
			Groups: []string{"system:serviceaccounts", "system:serviceaccounts:corepin-system", "system:authenticated"},
			ResourceAttributes: &authorizationv1.ResourceAttributes{
				Verb: verb, Resource: resource, Subresource: subresource, Namespace: "default"},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return review.Status.Allowed
}

// impersonate returns a client that acts as user, authenticated, with no
// other group (so neither system:masters nor any other grant applies).
func impersonate(t *testing.T, cp *framework.ControlPlane, user string) kubernetes.Interface {
	t.Helper()
	cfg := rest.CopyConfig(cp.Config)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: user, Groups: []string{"system:authenticated"}}
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// refusedByPolicy fails the test unless err is the policy's refusal.
func refusedByPolicy(t *testing.T, what string, err error) {
	t.Helper()
	switch {
	case err == nil:
		t.Errorf("%s: admitted, want refused by the admission policy", what)
	case !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), policyPhrase):
		t.Errorf("%s: refused, but not by the admission policy: %v", what, err)
	default:
		t.Logf("%s: refused: %v", what, err)
	}
}

func mustSucceed(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		t.Errorf("%s: %v", what, err)
	}
}

func annotationPatch(key string, value *string) []byte {
	v := "null"
	if value != nil {
		v = fmt.Sprintf("%q", *value)
	}
	return []byte(fmt.Sprintf(`{"metadata":{"annotations":{%q:%s}}}`, key, v))
}

// TestAdmissionPolicy applies deploy/ (rendered with kustomize, created
// strictly) to a real kube-apiserver, checks the service accounts'
// permissions, and checks who may write corepin.io/alloc-status through
// each of the three ways a pod's annotations can be written: the pod
// itself (create, patch), its status, and a Binding, whose annotations the
// API server copies onto the pod without pod admission.
func TestAdmissionPolicy(t *testing.T) {
	ctx := context.Background()
	cp := framework.StartControlPlane(t)

	// Everything `kubectl apply -k deploy/` applies, the policy included.
	created := applyDeploy(t, cp)
	t.Logf("created from deploy/: %s", strings.Join(created, " "))

	// The service accounts' own permissions, from the manifests alone.
	for _, c := range []struct {
		sa, verb, resource, subresource string
		want                            bool
	}{
		{"corepin-scheduler", "patch", "pods", "", true},
		{"corepin-scheduler", "create", "pods", "binding", true},
		{"corepin-scheduler", "watch", "nodes", "", true},
		{"corepin-scheduler", "patch", "nodes", "", true},       // corepin.io/attention
		{"corepin-scheduler", "update", "pods", "status", true}, // system:kube-scheduler's
		{"corepin-nri", "list", "pods", "", true},
		{"corepin-nri", "patch", "nodes", "", true},
		{"corepin-nri", "patch", "pods", "", false},
		{"corepin-nri", "create", "pods", "binding", false},
	} {
		if got := allowed(t, cp, c.sa, c.verb, c.resource, c.subresource); got != c.want {
			t.Errorf("%s may %s %s/%s: %v, want %v", c.sa, c.verb, c.resource, c.subresource, got, c.want)
		}
	}

	// Both identities may write pods, their status and Bindings: only the
	// policy tells them apart.
	_, err := cp.Client.RbacV1().ClusterRoles().Create(ctx, &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: "pod-writer"},
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get", "create", "update", "patch"}},
			{APIGroups: []string{""}, Resources: []string{"pods/status"}, Verbs: []string{"update", "patch"}},
			{APIGroups: []string{""}, Resources: []string{"pods/binding"}, Verbs: []string{"create"}},
			{APIGroups: []string{""}, Resources: []string{"pods/ephemeralcontainers", "pods/resize"}, Verbs: []string{"update", "patch"}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = cp.Client.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "pod-writer"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "pod-writer"},
		Subjects: []rbacv1.Subject{
			{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: ordinaryUser},
			{Kind: rbacv1.ServiceAccountKind, Namespace: "corepin-system", Name: "corepin-scheduler"},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}

	alice := impersonate(t, cp, ordinaryUser)
	extender := impersonate(t, cp, extenderUser)
	pods := func(c kubernetes.Interface) corev1client.PodInterface { return c.CoreV1().Pods("default") }
	status := `{"node":"node-a","cpus":"1","containers":{"engine":"1"},"mems":"0"}`
	withStatus := func(name string) *v1.Pod {
		return framework.ExclusivePod(name, "1", api.AnnotationAllocStatus, status)
	}

	// A policy takes effect once the API server's policy informer has
	// compiled it; until then requests pass. Probe with a dry run.
	framework.Eventually(t, 60*time.Second, "the policy to refuse a pod with alloc-status", func() (bool, error) {
		_, err := pods(alice).Create(ctx, withStatus("probe"), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if err == nil {
			return false, fmt.Errorf("admitted")
		}
		return strings.Contains(err.Error(), policyPhrase), err
	})
	// The policy's type-check warnings, if any, are in its status.
	if p, err := cp.Client.AdmissionregistrationV1().ValidatingAdmissionPolicies().Get(ctx, "corepin-alloc-status", metav1.GetOptions{}); err == nil {
		if tc := p.Status.TypeChecking; tc != nil && len(tc.ExpressionWarnings) > 0 {
			t.Errorf("the policy's CEL has type-check warnings: %+v", tc.ExpressionWarnings)
		}
	}

	t.Run("ordinary user", func(t *testing.T) {
		_, err := pods(alice).Create(ctx, withStatus("alice-forged"), metav1.CreateOptions{})
		refusedByPolicy(t, "creating a pod with alloc-status", err)

		plain, err := pods(alice).Create(ctx, framework.ExclusivePod("alice-plain", "1"), metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("creating a pod without alloc-status: %v", err)
		}

		_, err = pods(alice).Patch(ctx, plain.Name, types.MergePatchType,
			annotationPatch(api.AnnotationAllocStatus, &status), metav1.PatchOptions{})
		refusedByPolicy(t, "patching alloc-status onto a pod", err)

		empty := ""
		_, err = pods(alice).Patch(ctx, plain.Name, types.MergePatchType,
			annotationPatch(api.AnnotationAllocStatus, &empty), metav1.PatchOptions{})
		refusedByPolicy(t, "patching an empty alloc-status onto a pod", err)

		other := "on"
		_, err = pods(alice).Patch(ctx, plain.Name, types.MergePatchType,
			annotationPatch("example.com/unrelated", &other), metav1.PatchOptions{})
		mustSucceed(t, "patching an unrelated annotation", err)

		// pods/status: the status strategy keeps the new metadata.
		cur, err := pods(alice).Get(ctx, plain.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		cur.Annotations[api.AnnotationAllocStatus] = status
		_, err = pods(alice).UpdateStatus(ctx, cur, metav1.UpdateOptions{})
		refusedByPolicy(t, "writing alloc-status through pods/status", err)

		// pods/binding: the annotations of a Binding land on the pod.
		err = pods(alice).Bind(ctx, &v1.Binding{
			ObjectMeta: metav1.ObjectMeta{Name: plain.Name, Annotations: map[string]string{api.AnnotationAllocStatus: status}},
			Target:     v1.ObjectReference{Kind: "Node", Name: "node-a"},
		}, metav1.CreateOptions{})
		refusedByPolicy(t, "a Binding carrying alloc-status", err)

		// pods/ephemeralcontainers and pods/resize are not matched by the
		// policy: their strategies keep the stored metadata, so an
		// annotation sent along is dropped, not written. Both writes
		// succeed here, and the annotation is not on the pod afterwards.
		cur, err = pods(alice).Get(ctx, plain.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		cur.Annotations[api.AnnotationAllocStatus] = status
		cur.Spec.EphemeralContainers = []v1.EphemeralContainer{{EphemeralContainerCommon: v1.EphemeralContainerCommon{
			Name: "debug", Image: "corepin.io/test/workload:latest", TerminationMessagePolicy: v1.TerminationMessageReadFile, ImagePullPolicy: v1.PullIfNotPresent}}}
		got, err := pods(alice).UpdateEphemeralContainers(ctx, plain.Name, cur, metav1.UpdateOptions{})
		mustSucceed(t, "adding an ephemeral container with alloc-status in the body", err)
		if got != nil {
			if _, ok := got.Annotations[api.AnnotationAllocStatus]; ok || len(got.Spec.EphemeralContainers) != 1 {
				t.Errorf("pods/ephemeralcontainers: ephemeral containers %d, annotations %v; want the container and no alloc-status", len(got.Spec.EphemeralContainers), got.Annotations)
			}
		}
		cur, err = pods(alice).Get(ctx, plain.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		cur.Annotations[api.AnnotationAllocStatus] = status
		two := resource.MustParse("2")
		cur.Spec.Containers[0].Resources.Limits[v1.ResourceCPU] = two
		cur.Spec.Containers[0].Resources.Requests[v1.ResourceCPU] = two
		got, err = pods(alice).UpdateResize(ctx, plain.Name, cur, metav1.UpdateOptions{})
		mustSucceed(t, "resizing with alloc-status in the body", err)
		if got != nil {
			if _, ok := got.Annotations[api.AnnotationAllocStatus]; ok || !got.Spec.Containers[0].Resources.Limits.Cpu().Equal(two) {
				t.Errorf("pods/resize: CPU limit %s, annotations %v; want 2 and no alloc-status", got.Spec.Containers[0].Resources.Limits.Cpu(), got.Annotations)
			}
		}

		after, err := cp.Client.CoreV1().Pods("default").Get(ctx, plain.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := after.Annotations[api.AnnotationAllocStatus]; ok || after.Spec.NodeName != "" {
			t.Errorf("after the refusals the pod has node %q and annotations %v", after.Spec.NodeName, after.Annotations)
		}
		if after.Annotations["example.com/unrelated"] != "on" {
			t.Errorf("the unrelated annotation did not stick: %v", after.Annotations)
		}
	})

	t.Run("extender", func(t *testing.T) {
		created, err := pods(extender).Create(ctx, withStatus("extender-created"), metav1.CreateOptions{})
		mustSucceed(t, "creating a pod with alloc-status", err)

		plain, err := pods(extender).Create(ctx, framework.ExclusivePod("extender-patched", "1"), metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("creating a pod without alloc-status: %v", err)
		}
		_, err = pods(extender).Patch(ctx, plain.Name, types.MergePatchType,
			annotationPatch(api.AnnotationAllocStatus, &status), metav1.PatchOptions{})
		mustSucceed(t, "patching alloc-status onto a pod", err)

		bound, err := pods(extender).Create(ctx, framework.ExclusivePod("extender-bound", "1"), metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		err = pods(extender).Bind(ctx, &v1.Binding{
			ObjectMeta: metav1.ObjectMeta{Name: bound.Name, Annotations: map[string]string{api.AnnotationAllocStatus: status}},
			Target:     v1.ObjectReference{Kind: "Node", Name: "node-a"},
		}, metav1.CreateOptions{})
		mustSucceed(t, "a Binding carrying alloc-status", err)
		// The hole the pods/binding rule closes is real: the Binding's
		// annotation is now on the pod.
		after, err := cp.Client.CoreV1().Pods("default").Get(ctx, bound.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if after.Spec.NodeName != "node-a" || after.Annotations[api.AnnotationAllocStatus] != status {
			t.Errorf("after the Binding: node %q, annotations %v; want node-a and the Binding's alloc-status", after.Spec.NodeName, after.Annotations)
		}

		// Once the extender has set it, an ordinary user can neither change
		// nor remove it, but may still annotate the pod otherwise.
		if created != nil {
			changed := `{"node":"node-a","cpus":"0","containers":{"engine":"0"},"mems":"0"}`
			_, err = pods(alice).Patch(ctx, created.Name, types.MergePatchType,
				annotationPatch(api.AnnotationAllocStatus, &changed), metav1.PatchOptions{})
			refusedByPolicy(t, "an ordinary user changing the extender's alloc-status", err)
			_, err = pods(alice).Patch(ctx, created.Name, types.MergePatchType,
				annotationPatch(api.AnnotationAllocStatus, nil), metav1.PatchOptions{})
			refusedByPolicy(t, "an ordinary user removing the extender's alloc-status", err)
			other := "on"
			_, err = pods(alice).Patch(ctx, created.Name, types.MergePatchType,
				annotationPatch("example.com/unrelated", &other), metav1.PatchOptions{})
			mustSucceed(t, "an ordinary user annotating a pod that has alloc-status", err)
		}
	})
}
