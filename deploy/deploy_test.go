// Package deploy holds corepin's manifests; this test reads them the way
// the components will: the scheduler's and the extender's configuration,
// the DaemonSet's mounts and tolerations, the admission policy.
package deploy

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	schedv1 "k8s.io/kube-scheduler/config/v1"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"

	"github.com/corepin/corepin/api"
)

// objects splits a manifest file into its documents, keyed by kind/name.
func objects(t *testing.T, file string) map[string][]byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("base", file))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]byte{}
	for _, doc := range bytes.Split(data, []byte("\n---\n")) {
		var meta struct {
			Kind     string `json:"kind"`
			Metadata struct {
				Name, Namespace string
			} `json:"metadata"`
		}
		if err := yaml.Unmarshal(doc, &meta); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		if meta.Kind == "" {
			continue
		}
		out[meta.Kind+"/"+meta.Metadata.Name] = doc
	}
	return out
}

func strict(t *testing.T, what string, data []byte, into any) {
	t.Helper()
	if err := yaml.UnmarshalStrict(data, into); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func TestNodePlugin(t *testing.T) {
	objs := objects(t, "node-plugin.yaml")
	var ds appsv1.DaemonSet
	strict(t, "DaemonSet", objs["DaemonSet/corepin-nri"], &ds)
	spec := ds.Spec.Template.Spec
	if len(spec.Tolerations) != 1 || spec.Tolerations[0].Operator != v1.TolerationOpExists || spec.Tolerations[0].Key != "" {
		t.Errorf("the plugin must tolerate every taint, has %+v", spec.Tolerations)
	}
	mounts := map[string]v1.VolumeMount{}
	for _, m := range spec.Containers[0].VolumeMounts {
		mounts[m.MountPath] = m
	}
	for path, readOnly := range map[string]bool{"/var/run/nri": false, "/host/sys": true, "/host/proc": true, "/var/lib/kubelet": true} {
		if m, ok := mounts[path]; !ok || m.ReadOnly != readOnly {
			t.Errorf("mount %s: %+v (read-only %v wanted)", path, m, readOnly)
		}
	}
	// The kubelet's configuration, read for reservedSystemCPUs, is
	// KUBELET-ROOT/config.yaml: inside the read-only kubelet mount.
	if args := spec.Containers[0].Args; !slices.Contains(args, "--kubelet-root=/var/lib/kubelet") || slices.ContainsFunc(args, func(a string) bool { return strings.HasPrefix(a, "--kubelet-config") }) {
		t.Errorf("plugin args %q: want --kubelet-root=/var/lib/kubelet (its config.yaml under the kubelet mount) and no --kubelet-config", args)
	}
	env := spec.Containers[0].Env
	if len(env) != 1 || env[0].Name != "NODE_NAME" || env[0].ValueFrom.FieldRef.FieldPath != "spec.nodeName" {
		t.Errorf("NODE_NAME must come from the downward API: %+v", env)
	}
	if spec.ServiceAccountName != "corepin-nri" || objs["ClusterRoleBinding/corepin-nri"] == nil {
		t.Error("the plugin's service account is not bound to its role")
	}
}

func TestSchedulerAndExtenderConfig(t *testing.T) {
	objs := objects(t, "scheduler.yaml")
	var cm v1.ConfigMap
	strict(t, "ConfigMap", objs["ConfigMap/corepin-scheduler-config"], &cm)
	var sc schedv1.KubeSchedulerConfiguration
	strict(t, "scheduler.yaml", []byte(cm.Data["scheduler.yaml"]), &sc)
	if len(sc.Profiles) != 1 || *sc.Profiles[0].SchedulerName != "corepin-scheduler" {
		t.Errorf("profiles %+v, want one named corepin-scheduler", sc.Profiles)
	}
	if !*sc.LeaderElection.LeaderElect {
		t.Error("leader election must be on")
	}
	if len(sc.Extenders) != 1 {
		t.Fatalf("extenders %+v", sc.Extenders)
	}
	ext := sc.Extenders[0]
	if ext.URLPrefix != "http://127.0.0.1:8888" || ext.FilterVerb != "filter" || ext.PrioritizeVerb != "prioritize" || ext.BindVerb != "bind" || !ext.NodeCacheCapable {
		t.Errorf("extender %+v", ext)
	}
	if _, err := api.ParseConfig("extender.yaml", []byte(cm.Data["extender.yaml"])); err != nil {
		t.Errorf("the extender's configuration does not parse: %v", err)
	}
	var dep appsv1.Deployment
	strict(t, "Deployment", objs["Deployment/corepin-scheduler"], &dep)
	listen := ""
	for _, c := range dep.Spec.Template.Spec.Containers {
		for _, a := range c.Args {
			if v, ok := strings.CutPrefix(a, "--listen="); ok && c.Name == "extender" {
				listen = v
			}
		}
	}
	if "http://"+listen != ext.URLPrefix {
		t.Errorf("the extender listens on %q, the scheduler calls %q", listen, ext.URLPrefix)
	}
}

func TestAdmissionPolicy(t *testing.T) {
	objs := objects(t, "admission-policy.yaml")
	var vap admissionv1.ValidatingAdmissionPolicy
	strict(t, "policy", objs["ValidatingAdmissionPolicy/corepin-alloc-status"], &vap)
	var binding admissionv1.ValidatingAdmissionPolicyBinding
	strict(t, "binding", objs["ValidatingAdmissionPolicyBinding/corepin-alloc-status"], &binding)
	if binding.Spec.PolicyName != vap.Name || len(binding.Spec.ValidationActions) != 1 || binding.Spec.ValidationActions[0] != admissionv1.Deny {
		t.Errorf("binding %+v", binding.Spec)
	}
	all := ""
	for _, v := range vap.Spec.Variables {
		all += v.Expression
	}
	for _, v := range vap.Spec.Validations {
		all += v.Expression
	}
	for _, want := range []string{api.AnnotationAllocStatus, "system:serviceaccount:corepin-system:corepin-scheduler"} {
		if !strings.Contains(all, want) {
			t.Errorf("the policy's CEL does not mention %s", want)
		}
	}
}

// render builds a kustomization the way `kubectl apply -k` does and returns
// its objects as YAML, keyed by kind/name.
func render(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	resources, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	out := map[string][]byte{}
	for _, r := range resources.Resources() {
		data, err := r.AsYAML()
		if err != nil {
			t.Fatal(err)
		}
		key := r.GetKind() + "/" + r.GetName()
		if _, dup := out[key]; dup {
			t.Errorf("%s: %s twice", dir, key)
		}
		out[key] = data
	}
	return out
}

// TestRenderedKustomization checks what `kubectl apply -k deploy/` (and the
// demo's deploy/local) would apply: the admission policy covers every way
// to write a pod's annotations, the namespace admits the plugin's hostPath
// pods, and every namespaced object lands in corepin-system.
func TestRenderedKustomization(t *testing.T) {
	for _, dir := range []string{".", "local"} {
		t.Run(dir, func(t *testing.T) {
			objs := render(t, dir)

			var vap admissionv1.ValidatingAdmissionPolicy
			strict(t, "policy", objs["ValidatingAdmissionPolicy/corepin-alloc-status"], &vap)
			if vap.Spec.FailurePolicy == nil || *vap.Spec.FailurePolicy != admissionv1.Fail {
				t.Errorf("the policy must fail closed, failurePolicy %v", vap.Spec.FailurePolicy)
			}
			ops := map[string]map[admissionv1.OperationType]bool{}
			for _, r := range vap.Spec.MatchConstraints.ResourceRules {
				if len(r.APIGroups) != 1 || r.APIGroups[0] != "" {
					t.Errorf("rule %+v: want the core group only", r)
				}
				for _, res := range r.Resources {
					if ops[res] == nil {
						ops[res] = map[admissionv1.OperationType]bool{}
					}
					for _, op := range r.Operations {
						ops[res][op] = true
					}
				}
			}
			for _, want := range []struct {
				resource string
				op       admissionv1.OperationType
			}{
				{"pods", admissionv1.Create},
				{"pods", admissionv1.Update},
				{"pods/status", admissionv1.Update},
				{"pods/binding", admissionv1.Create},
			} {
				if !ops[want.resource][want.op] && !ops[want.resource][admissionv1.OperationAll] {
					t.Errorf("the policy does not match %s %s (rules %+v)", want.op, want.resource, vap.Spec.MatchConstraints.ResourceRules)
				}
			}
			for _, v := range vap.Spec.Validations {
				if !strings.Contains(v.MessageExpression, "may only be set by the corepin scheduler extender") {
					t.Errorf("validation %q: its message lacks the phrase test/e2e looks for", v.Expression)
				}
			}
			var binding admissionv1.ValidatingAdmissionPolicyBinding
			strict(t, "binding", objs["ValidatingAdmissionPolicyBinding/corepin-alloc-status"], &binding)
			if binding.Spec.PolicyName != vap.Name || len(binding.Spec.ValidationActions) != 1 || binding.Spec.ValidationActions[0] != admissionv1.Deny {
				t.Errorf("binding %+v", binding.Spec)
			}

			var ns v1.Namespace
			strict(t, "namespace", objs["Namespace/corepin-system"], &ns)
			for _, mode := range []string{"enforce", "audit", "warn"} {
				if l := ns.Labels["pod-security.kubernetes.io/"+mode]; l != "privileged" {
					t.Errorf("namespace label pod-security.kubernetes.io/%s = %q, want privileged", mode, l)
				}
			}

			for key, data := range objs {
				var meta metav1.PartialObjectMetadata
				if err := yaml.Unmarshal(data, &meta); err != nil {
					t.Fatal(err)
				}
				kind := strings.SplitN(key, "/", 2)[0]
				clusterScoped := map[string]bool{"Namespace": true, "ClusterRole": true, "ClusterRoleBinding": true,
					"ValidatingAdmissionPolicy": true, "ValidatingAdmissionPolicyBinding": true, "CustomResourceDefinition": true}[kind]
				want := "corepin-system"
				switch {
				case clusterScoped:
					want = ""
				case key == "RoleBinding/corepin-scheduler-authentication-reader":
					// It grants a Role that exists only in kube-system.
					want = "kube-system"
				}
				if meta.Namespace != want {
					t.Errorf("%s is in namespace %q, want %q", key, meta.Namespace, want)
				}
			}
		})
	}
}

// TestDocumentedOverlay renders the overlay docs/install.md shows (over
// this deploy/) and checks it does what the text says: images from the
// registry, kube-scheduler's tag, --reserved-cpus on the plugin.
func TestDocumentedOverlay(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "docs", "install.md"))
	if err != nil {
		t.Fatal(err)
	}
	const start = "```yaml\n# my-corepin/kustomization.yaml\n"
	_, rest, ok := strings.Cut(string(doc), start)
	if !ok {
		t.Fatalf("docs/install.md has no block starting %q", start)
	}
	block, _, ok := strings.Cut(rest, "```")
	if !ok {
		t.Fatal("unterminated block")
	}
	here, err := filepath.Abs(".")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(block, "- ../corepin/deploy\n") {
		t.Fatalf("the overlay no longer refers to ../corepin/deploy:\n%s", block)
	}
	dir := t.TempDir()
	// Kustomize takes relative paths only.
	rel, err := filepath.Rel(dir, here)
	if err != nil {
		t.Fatal(err)
	}
	kustomization := strings.Replace(block, "- ../corepin/deploy\n", "- "+rel+"\n", 1)
	if err := os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(kustomization), 0o644); err != nil {
		t.Fatal(err)
	}
	objs := render(t, dir)

	var ds appsv1.DaemonSet
	strict(t, "DaemonSet", objs["DaemonSet/corepin-nri"], &ds)
	plugin := ds.Spec.Template.Spec.Containers[0]
	if plugin.Image != "registry.example.com/corepin/corepin-nri:v0.1.0" {
		t.Errorf("plugin image %q", plugin.Image)
	}
	if n := len(plugin.Args); n == 0 || plugin.Args[n-1] != "--reserved-cpus=0-1" {
		t.Errorf("plugin args %q: want --reserved-cpus=0-1 appended", plugin.Args)
	}
	var dep appsv1.Deployment
	strict(t, "Deployment", objs["Deployment/corepin-scheduler"], &dep)
	images := map[string]string{}
	for _, c := range dep.Spec.Template.Spec.Containers {
		images[c.Name] = c.Image
	}
	if images["extender"] != "registry.example.com/corepin/corepin-extender:v0.1.0" || images["kube-scheduler"] != "registry.k8s.io/kube-scheduler:v1.37.1" {
		t.Errorf("scheduler images %v", images)
	}
	if objs["ValidatingAdmissionPolicy/corepin-alloc-status"] == nil || objs["Namespace/corepin-system"] == nil {
		t.Error("the overlay lost the admission policy or the namespace")
	}
}
