//go:build chart

// Package chart tests the Helm chart in corepin/ with the helm binary that
// $HELM names (make test-chart builds it): with default values it renders
// the objects `kubectl apply -k deploy/` renders, and non-default values
// reach the places they are meant for, in a form the components accept.
package chart

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes/scheme"
	schedv1 "k8s.io/kube-scheduler/config/v1"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"

	"github.com/corepin/corepin/api"
)

const (
	chartDir  = "corepin"
	release   = "corepin"
	namespace = "corepin-system"
)

// helmAdded are the labels the chart puts on every object on top of
// deploy/'s, with the value each must have: the only labels the comparison
// with deploy/ ignores.
var helmAdded = map[string]string{
	"helm.sh/chart":                "corepin-0.3.1",
	"app.kubernetes.io/managed-by": "Helm",
	"app.kubernetes.io/instance":   release,
	"app.kubernetes.io/version":    "dev",
}

// checksumAnnotation is on the scheduler's pod template (a changed
// configuration rolls the pods), the only annotation the comparison ignores
// (the placer's reads no ConfigMap of the chart's by default, and has none).
const checksumAnnotation = "checksum/config"

// keepPolicy is on the Namespace: `helm uninstall` keeps it, with the
// release records Helm stores in it.
const keepPolicy = "helm.sh/resource-policy"

// hookAnnotation marks Helm hook resources. They are chart-only (deploy/
// has no uninstall hook: its users set corepin.io/release-all themselves),
// so the comparison with deploy/ expects exactly releaseAllHooks among
// them, and only in the chart.
const hookAnnotation = "helm.sh/hook"

var releaseAllHooks = []string{
	key("ClusterRole", "", "corepin-release-all"),
	key("ClusterRoleBinding", "", "corepin-release-all"),
	key("Job", namespace, "corepin-release-all"),
	key("Job", namespace, "corepin-release-all-clear"),
	key("Role", namespace, "corepin-release-all"),
	key("RoleBinding", namespace, "corepin-release-all"),
	key("ServiceAccount", namespace, "corepin-release-all"),
}

// hooks removes the hook resources from objs and returns their keys, sorted.
func hooks(objs objects) []string {
	var out []string
	for k, obj := range objs {
		if _, ok := nested(obj, "metadata", "annotations")[hookAnnotation]; ok {
			out = append(out, k)
			delete(objs, k)
		}
	}
	sort.Strings(out)
	return out
}

// helmBin is $HELM. Unset or missing fails the test: a chart test that
// skips itself would pass without having looked at the chart.
func helmBin(t *testing.T) string {
	t.Helper()
	bin := os.Getenv("HELM")
	if bin == "" {
		t.Fatal("HELM is not set: run make test-chart, or HELM=path/to/helm go test -tags chart ./deploy/chart/ (hack/tools-helm.sh builds it)")
	}
	if fi, err := os.Stat(bin); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
		t.Fatalf("HELM=%s is not an executable file (%v)", bin, err)
	}
	return bin
}

func runHelm(t *testing.T, args ...string) ([]byte, error) {
	t.Helper()
	cmd := exec.Command(helmBin(t), args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("helm %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return out, nil
}

// template renders the chart as `helm template corepin corepin
// --namespace corepin-system` does, with values given as YAML (a -f file).
func template(t *testing.T, values string) ([]byte, error) {
	t.Helper()
	args := []string{"template", release, chartDir, "--namespace", namespace}
	if values != "" {
		f := filepath.Join(t.TempDir(), "values.yaml")
		if err := os.WriteFile(f, []byte(values), 0o644); err != nil {
			t.Fatal(err)
		}
		args = append(args, "-f", f)
	}
	return runHelm(t, args...)
}

type objects map[string]map[string]any

func key(kind, ns, name string) string { return kind + "/" + ns + "/" + name }

// decode reads a multi-document YAML stream into objects keyed by
// kind/namespace/name, decoded the same way whichever side they come from.
func decode(t *testing.T, what string, data []byte) objects {
	t.Helper()
	out := objects{}
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for {
		doc, err := r.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		var obj map[string]any
		if err := yaml.Unmarshal(doc, &obj); err != nil {
			t.Fatalf("%s: %v\n%s", what, err, doc)
		}
		if obj == nil {
			continue // a document of comments only
		}
		u := unstructured.Unstructured{Object: obj}
		k := key(u.GetKind(), u.GetNamespace(), u.GetName())
		if _, dup := out[k]; dup {
			t.Errorf("%s: %s twice", what, k)
		}
		out[k] = obj
	}
	return out
}

// kustomize renders deploy/dir as `kubectl apply -k deploy/dir` does.
func kustomize(t *testing.T, dir string) objects {
	t.Helper()
	what := path.Join("deploy", dir) + "/"
	res, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), filepath.Join("..", dir))
	if err != nil {
		t.Fatalf("kustomize build %s: %v", what, err)
	}
	data, err := res.AsYaml()
	if err != nil {
		t.Fatal(err)
	}
	return decode(t, what, data)
}

// rendered renders the chart with values and checks what every render must
// satisfy: each object decodes strictly into its API type, kube-scheduler's
// configuration into KubeSchedulerConfiguration, and the extender's into
// api.Config through the extender's own parser (which refuses unknown keys
// and bad values, as the extender does at start).
func rendered(t *testing.T, values string) objects {
	t.Helper()
	out, err := template(t, values)
	if err != nil {
		t.Fatal(err)
	}
	objs := decode(t, "chart", out)
	for k, obj := range objs {
		u := unstructured.Unstructured{Object: obj}
		typed, err := scheme.Scheme.New(u.GroupVersionKind())
		if err != nil {
			t.Errorf("%s: %v", k, err)
			continue
		}
		data, _ := json.Marshal(obj)
		if err := yaml.UnmarshalStrict(data, typed); err != nil {
			t.Errorf("%s does not decode strictly as %s: %v", k, u.GroupVersionKind(), err)
		}
	}
	schedulerConfig(t, objs)
	extenderConfig(t, objs)
	return objs
}

func configMap(t *testing.T, objs objects) v1.ConfigMap {
	t.Helper()
	var cm v1.ConfigMap
	into(t, objs, key("ConfigMap", namespace, "corepin-scheduler-config"), &cm)
	return cm
}

func schedulerConfig(t *testing.T, objs objects) schedv1.KubeSchedulerConfiguration {
	t.Helper()
	var sc schedv1.KubeSchedulerConfiguration
	if err := yaml.UnmarshalStrict([]byte(configMap(t, objs).Data["scheduler.yaml"]), &sc); err != nil {
		t.Fatalf("scheduler.yaml: %v", err)
	}
	return sc
}

func extenderConfig(t *testing.T, objs objects) api.Config {
	t.Helper()
	data := configMap(t, objs).Data["extender.yaml"]
	c, err := api.ParseConfig("extender.yaml", []byte(data))
	if err != nil {
		t.Fatalf("the extender would refuse its configuration: %v\n%s", err, data)
	}
	return c
}

func into(t *testing.T, objs objects, k string, v any) {
	t.Helper()
	obj, ok := objs[k]
	if !ok {
		t.Fatalf("no %s rendered", k)
	}
	data, _ := json.Marshal(obj)
	if err := yaml.UnmarshalStrict(data, v); err != nil {
		t.Fatalf("%s: %v", k, err)
	}
}

func TestLint(t *testing.T) {
	if out, err := runHelm(t, "lint", "--strict", chartDir); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
}

// TestDefaultsRenderDeploy: `helm template` with default values renders the
// objects of `kubectl apply -k deploy/`, object by object and field by
// field, ignoring only the labels in helmAdded and the checksum annotation,
// plus the release-all hooks, which only the chart has.
// Embedded configuration files (ConfigMap keys ending .yaml) are compared
// as the YAML they hold.
func TestDefaultsRenderDeploy(t *testing.T) {
	want := kustomize(t, ".")
	compareCRDs(t, want) // CRDs live in crds/, which helm template leaves out
	if len(want) < 15 {
		t.Errorf("deploy/ renders only %d objects: %v", len(want), sortedKeys(want))
	}
	compareRender(t, want, rendered(t, ""))
}

func sortedKeys(o objects) []string {
	ks := make([]string, 0, len(o))
	for k := range o {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// compareRender compares the chart's objects got with kustomize's want,
// object by object and field by field, ignoring only what the chart adds
// on purpose (stripHelm) and taking the release-all hooks out of got.
func compareRender(t *testing.T, want, got objects) {
	t.Helper()
	if h := hooks(want); len(h) > 0 {
		t.Errorf("deploy/ has Helm hooks: %v", h)
	}
	if h := hooks(got); !slices.Equal(h, releaseAllHooks) {
		t.Errorf("the chart's hooks %q, want %q", h, releaseAllHooks)
	}
	for k, obj := range got {
		stripHelm(t, k, obj)
	}
	for k, obj := range want {
		for l := range helmAdded {
			if _, ok := nested(obj, "metadata", "labels")[l]; ok {
				t.Errorf("deploy/ %s has label %s, which the comparison ignores", k, l)
			}
		}
	}
	for _, k := range sortedKeys(want) {
		if _, ok := got[k]; !ok {
			t.Errorf("missing from the chart: %s", k)
		}
	}
	for _, k := range sortedKeys(got) {
		if _, ok := want[k]; !ok {
			t.Errorf("extra in the chart: %s", k)
		}
	}
	for _, k := range sortedKeys(want) {
		g, ok := got[k]
		if !ok {
			continue
		}
		w := want[k]
		parseEmbedded(t, k, w)
		parseEmbedded(t, k, g)
		var diffs []string
		diff("", w, g, &diffs)
		for _, d := range diffs {
			t.Errorf("%s: %s", k, d)
		}
	}
}

// stripHelm removes what the chart adds on purpose, checking its value.
func stripHelm(t *testing.T, k string, obj map[string]any) {
	labels := nested(obj, "metadata", "labels")
	for l, v := range helmAdded {
		if labels[l] != v {
			t.Errorf("chart %s: label %s=%v, want %q", k, l, labels[l], v)
		}
		delete(labels, l)
	}
	if labels != nil && len(labels) == 0 {
		delete(obj["metadata"].(map[string]any), "labels")
	}
	if strings.HasPrefix(k, "Namespace/") {
		ann := nested(obj, "metadata", "annotations")
		if ann[keepPolicy] != "keep" {
			t.Errorf("chart %s: annotation %s=%v, want keep", k, keepPolicy, ann[keepPolicy])
		}
		delete(ann, keepPolicy)
		if ann != nil && len(ann) == 0 {
			delete(obj["metadata"].(map[string]any), "annotations")
		}
	}
	if k != key("Deployment", namespace, "corepin-scheduler") {
		return
	}
	ann := nested(obj, "spec", "template", "metadata", "annotations")
	if !regexp.MustCompile(`^[0-9a-f]{64}$`).MatchString(fmt.Sprint(ann[checksumAnnotation])) {
		t.Errorf("chart %s: pod template annotation %s=%v, want a sha256", k, checksumAnnotation, ann[checksumAnnotation])
	}
	delete(ann, checksumAnnotation)
	if ann != nil && len(ann) == 0 {
		delete(nested(obj, "spec", "template", "metadata"), "annotations")
	}
}

// parseEmbedded replaces a ConfigMap's *.yaml values by what they parse to.
func parseEmbedded(t *testing.T, k string, obj map[string]any) {
	if obj["kind"] != "ConfigMap" {
		return
	}
	data := nested(obj, "data")
	for name, v := range data {
		if !strings.HasSuffix(name, ".yaml") {
			continue
		}
		var parsed any
		if err := yaml.Unmarshal([]byte(v.(string)), &parsed); err != nil {
			t.Fatalf("%s: data[%s]: %v", k, name, err)
		}
		data[name] = parsed
	}
}

// nested returns the map at path, nil where there is none.
func nested(obj map[string]any, path ...string) map[string]any {
	for _, p := range path {
		next, _ := obj[p].(map[string]any)
		if next == nil {
			return nil
		}
		obj = next
	}
	return obj
}

// diff appends one line per difference between deploy/'s value w and the
// chart's g, each naming the field's path.
func diff(at string, w, g any, out *[]string) {
	switch wv := w.(type) {
	case map[string]any:
		gv, ok := g.(map[string]any)
		if !ok {
			break
		}
		names := map[string]bool{}
		for n := range wv {
			names[n] = true
		}
		for n := range gv {
			names[n] = true
		}
		sorted := make([]string, 0, len(names))
		for n := range names {
			sorted = append(sorted, n)
		}
		sort.Strings(sorted)
		for _, n := range sorted {
			p := at + "." + n
			if strings.ContainsAny(n, "./") {
				p = fmt.Sprintf("%s[%q]", at, n)
			}
			a, inW := wv[n]
			b, inG := gv[n]
			switch {
			case !inG:
				*out = append(*out, fmt.Sprintf("%s: only in deploy/: %s", p, brief(a)))
			case !inW:
				*out = append(*out, fmt.Sprintf("%s: only in the chart: %s", p, brief(b)))
			default:
				diff(p, a, b, out)
			}
		}
		return
	case []any:
		gv, ok := g.([]any)
		if !ok {
			break
		}
		for i := 0; i < max(len(wv), len(gv)); i++ {
			p := fmt.Sprintf("%s[%d]", at, i)
			switch {
			case i >= len(gv):
				*out = append(*out, fmt.Sprintf("%s: only in deploy/: %s", p, brief(wv[i])))
			case i >= len(wv):
				*out = append(*out, fmt.Sprintf("%s: only in the chart: %s", p, brief(gv[i])))
			default:
				diff(p, wv[i], gv[i], out)
			}
		}
		return
	}
	if !reflect.DeepEqual(w, g) {
		*out = append(*out, fmt.Sprintf("%s: deploy/ %s, chart %s", at, brief(w), brief(g)))
	}
}

func brief(v any) string {
	data, _ := json.Marshal(v)
	if len(data) > 200 {
		return string(data[:200]) + "..."
	}
	return string(data)
}

func deployment(t *testing.T, objs objects) appsv1.Deployment {
	t.Helper()
	var dep appsv1.Deployment
	into(t, objs, key("Deployment", namespace, "corepin-scheduler"), &dep)
	return dep
}

func daemonSet(t *testing.T, objs objects) appsv1.DaemonSet {
	t.Helper()
	var ds appsv1.DaemonSet
	into(t, objs, key("DaemonSet", namespace, "corepin-nri"), &ds)
	return ds
}

func container(t *testing.T, spec v1.PodSpec, name string) v1.Container {
	t.Helper()
	for _, c := range spec.Containers {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no container %s", name)
	return v1.Container{}
}

// secretFile says which Secret and key a container reads at file, following
// its volume mounts to a secret volume's items; "" when the file comes from
// no secret.
func secretFile(spec v1.PodSpec, c v1.Container, file string) (secret, key string) {
	return volumeFile(spec, c, file, func(v v1.Volume) (string, []v1.KeyToPath, bool) {
		if v.Secret == nil {
			return "", nil, false
		}
		return v.Secret.SecretName, v.Secret.Items, true
	})
}

// volumeFile follows a container's mounts to the volume serving file, of
// the kind source reads (its name and items), and returns that name and
// the key file comes from; "" when none.
func volumeFile(spec v1.PodSpec, c v1.Container, file string, source func(v1.Volume) (string, []v1.KeyToPath, bool)) (name, key string) {
	for _, m := range c.VolumeMounts {
		rel, ok := strings.CutPrefix(file, strings.TrimSuffix(m.MountPath, "/")+"/")
		if !ok {
			continue
		}
		for _, vol := range spec.Volumes {
			name, items, ok := source(vol)
			if vol.Name != m.Name || !ok {
				continue
			}
			if len(items) == 0 {
				return name, rel
			}
			for _, it := range items {
				if path.Clean(it.Path) == rel {
					return name, it.Key
				}
			}
		}
	}
	return "", ""
}

func TestValues(t *testing.T) {
	for _, tc := range []struct {
		name   string
		values string
		check  func(t *testing.T, objs objects)
	}{{
		name: "tls with client certificates",
		values: `scheduler: {extender: {tls: {enabled: true, secretName: extender-tls,
  clientSecretName: scheduler-client, serverName: corepin-extender.local}}}`,
		check: func(t *testing.T, objs objects) {
			ext := schedulerConfig(t, objs).Extenders[0]
			if ext.URLPrefix != "https://127.0.0.1:8888" || !ext.EnableHTTPS || ext.TLSConfig == nil {
				t.Fatalf("kube-scheduler's extender entry %+v: want https and a tlsConfig", ext)
			}
			if ext.TLSConfig.ServerName != "corepin-extender.local" || ext.TLSConfig.Insecure {
				t.Errorf("tlsConfig %+v", ext.TLSConfig)
			}
			cfg := extenderConfig(t, objs)
			if cfg.TLS == nil {
				t.Fatal("extender.yaml has no tls")
			}
			dep := deployment(t, objs)
			spec := dep.Spec.Template.Spec
			sched, extender := container(t, spec, "kube-scheduler"), container(t, spec, "extender")
			for _, f := range []struct {
				who         v1.Container
				file        string
				secret, key string
			}{
				{sched, ext.TLSConfig.CAFile, "extender-tls", "ca.crt"},
				{sched, ext.TLSConfig.CertFile, "scheduler-client", "tls.crt"},
				{sched, ext.TLSConfig.KeyFile, "scheduler-client", "tls.key"},
				{extender, cfg.TLS.CertFile, "extender-tls", "tls.crt"},
				{extender, cfg.TLS.KeyFile, "extender-tls", "tls.key"},
				{extender, cfg.TLS.ClientCAFile, "scheduler-client", "ca.crt"},
			} {
				if s, k := secretFile(spec, f.who, f.file); s != f.secret || k != f.key {
					t.Errorf("%s reads %q from secret %q key %q, want %s/%s", f.who.Name, f.file, s, k, f.secret, f.key)
				}
			}
			// Least privilege: neither container sees the other's private key.
			if s, _ := secretFile(spec, sched, cfg.TLS.KeyFile); s != "" {
				t.Errorf("kube-scheduler can read the extender's key %s", cfg.TLS.KeyFile)
			}
			if s, _ := secretFile(spec, extender, ext.TLSConfig.KeyFile); s != "" {
				t.Errorf("the extender can read kube-scheduler's key %s", ext.TLSConfig.KeyFile)
			}
		},
	}, {
		name:   "tls without client certificates",
		values: `scheduler: {extender: {tls: {enabled: true, secretName: extender-tls}}}`,
		check: func(t *testing.T, objs objects) {
			ext := schedulerConfig(t, objs).Extenders[0]
			if ext.URLPrefix != "https://127.0.0.1:8888" || !ext.EnableHTTPS || ext.TLSConfig == nil || ext.TLSConfig.CertFile != "" || ext.TLSConfig.CAFile == "" {
				t.Errorf("kube-scheduler's extender entry %+v %+v", ext, ext.TLSConfig)
			}
			cfg := extenderConfig(t, objs)
			if cfg.TLS == nil || cfg.TLS.ClientCAFile != "" {
				t.Errorf("extender tls %+v: want a key pair and no client CA", cfg.TLS)
			}
			spec := deployment(t, objs).Spec.Template.Spec
			if s, k := secretFile(spec, container(t, spec, "extender"), cfg.TLS.CertFile); s != "extender-tls" || k != "tls.crt" {
				t.Errorf("the extender reads its certificate from %s/%s", s, k)
			}
		},
	}, {
		name:   "scheduler name",
		values: `schedulerName: pinned-scheduler`,
		check: func(t *testing.T, objs objects) {
			sc := schedulerConfig(t, objs)
			if len(sc.Profiles) != 1 || *sc.Profiles[0].SchedulerName != "pinned-scheduler" {
				t.Errorf("profiles %+v", sc.Profiles)
			}
			le := sc.LeaderElection
			if !*le.LeaderElect || le.ResourceName != "pinned-scheduler" || le.ResourceNamespace != namespace {
				t.Errorf("leader election %+v: want lease %s/pinned-scheduler", le, namespace)
			}
		},
	}, {
		name:   "reserved cpus and extra args",
		values: `nodePlugin: {reservedCpus: "0-1,52-53", extraArgs: [--drift-interval=1m], systemNamespaces: [kube-system, corepin-system]}`,
		check: func(t *testing.T, objs objects) {
			args := container(t, daemonSet(t, objs).Spec.Template.Spec, "corepin-nri").Args
			for _, want := range []string{"--reserved-cpus=0-1,52-53", "--drift-interval=1m", "--system-namespaces=kube-system,corepin-system", "--nri-socket=/var/run/nri/nri.sock"} {
				if !slices.Contains(args, want) {
					t.Errorf("plugin args %q: no %s", args, want)
				}
			}
		},
	}, {
		name:   "kubelet configuration elsewhere",
		values: `nodePlugin: {kubeletConfig: /etc/kubernetes/kubelet/config.json}`,
		check: func(t *testing.T, objs objects) {
			// The plugin reads the file it is told, from a read-only
			// mount of the node's file (which must exist: type File).
			spec := daemonSet(t, objs).Spec.Template.Spec
			c := container(t, spec, "corepin-nri")
			if !slices.Contains(c.Args, "--kubelet-config=/etc/corepin/kubelet-config") {
				t.Fatalf("plugin args %q: no --kubelet-config=/etc/corepin/kubelet-config", c.Args)
			}
			var mounted bool
			for _, m := range c.VolumeMounts {
				if m.MountPath != "/etc/corepin/kubelet-config" {
					continue
				}
				mounted = m.ReadOnly
				for _, vol := range spec.Volumes {
					if vol.Name == m.Name && (vol.HostPath == nil || vol.HostPath.Path != "/etc/kubernetes/kubelet/config.json" ||
						vol.HostPath.Type == nil || *vol.HostPath.Type != v1.HostPathFile) {
						t.Errorf("volume %s: %+v, want hostPath /etc/kubernetes/kubelet/config.json of type File", vol.Name, vol.VolumeSource)
					}
				}
			}
			if !mounted {
				t.Errorf("mounts %+v: /etc/corepin/kubelet-config not mounted read-only", c.VolumeMounts)
			}
		},
	}, {
		name:   "cpu 0 reserved",
		values: `nodePlugin: {reservedCpus: 0}`,
		check: func(t *testing.T, objs objects) {
			// 0 is a CPU list (CPU 0), not an empty value.
			if args := container(t, daemonSet(t, objs).Spec.Template.Spec, "corepin-nri").Args; !slices.Contains(args, "--reserved-cpus=0") {
				t.Errorf("plugin args %q: no --reserved-cpus=0", args)
			}
		},
	}, {
		name: "extender configuration",
		values: `
nodePolicy: {maxExclusiveRatio: 0.5, sharedOvercommit: 1.5, sharedHeadroom: 0}
scheduler:
  extender:
    config:
      scoringStrategy: LeastAllocated
      bindAllNamespaces: [perf-lab, "on"]
      systemNamespaces: [kube-system]
      pipelines:
      - name: database
        selector: {matchLabels: {workload-class: database}}
        filters: [topology, capacity, app-spread, io-queue]
      - name: default
        filters: [topology, capacity]
`,
		check: func(t *testing.T, objs objects) {
			cfg := extenderConfig(t, objs)
			if l := cfg.Limits(); l != (api.Limits{MaxExclusiveRatio: 0.5, SharedOvercommit: 1.5, SharedHeadroom: 0}) {
				t.Errorf("limits %+v", l)
			}
			if cfg.Strategy() != api.LeastAllocated || !slices.Equal(cfg.BindAllNamespaces, []string{"perf-lab", "on"}) || !slices.Equal(cfg.Systems(), []string{"kube-system"}) {
				t.Errorf("config %+v", cfg)
			}
			if len(cfg.Pipelines) != 2 || cfg.Pipelines[0].Name != "database" || cfg.Pipelines[0].Selector.MatchLabels["workload-class"] != "database" ||
				!slices.Equal(cfg.Pipelines[1].Filters, []string{"topology", "capacity"}) || cfg.Pipelines[1].Selector != nil {
				t.Errorf("pipelines %+v", cfg.Pipelines)
			}
			// The plugin applies the same formula and the same BindAllCPUs rule on the node.
			args := container(t, daemonSet(t, objs).Spec.Template.Spec, "corepin-nri").Args
			for _, want := range []string{"--max-exclusive-ratio=0.5", "--shared-overcommit=1.5", "--shared-headroom=0", "--bind-all-namespaces=perf-lab,on"} {
				if !slices.Contains(args, want) {
					t.Errorf("plugin args %q: no %s", args, want)
				}
			}
		},
	}, {
		name:   "no system namespaces",
		values: `scheduler: {extender: {config: {systemNamespaces: []}}}`,
		check: func(t *testing.T, objs objects) {
			// [] is "none", not "absent" (which would be kube-system).
			if s := extenderConfig(t, objs).Systems(); len(s) != 0 {
				t.Errorf("system namespaces %q, want none", s)
			}
		},
	}, {
		name:   "images",
		values: `images: {nri: {repository: registry.example.com/corepin/corepin-nri, tag: v0.1.0, pullPolicy: Always}, kubeScheduler: {tag: v1.33.5}}`,
		check: func(t *testing.T, objs objects) {
			plugin := container(t, daemonSet(t, objs).Spec.Template.Spec, "corepin-nri")
			if plugin.Image != "registry.example.com/corepin/corepin-nri:v0.1.0" || plugin.ImagePullPolicy != v1.PullAlways {
				t.Errorf("plugin image %s %s", plugin.Image, plugin.ImagePullPolicy)
			}
			sched := container(t, deployment(t, objs).Spec.Template.Spec, "kube-scheduler")
			if sched.Image != "registry.k8s.io/kube-scheduler:v1.33.5" || sched.Command[0] != "/usr/local/bin/kube-scheduler" {
				t.Errorf("kube-scheduler %s %q", sched.Image, sched.Command)
			}
		},
	}, {
		name:   "release-all hooks",
		values: `uninstall: {timeout: 4m}`,
		check: func(t *testing.T, objs objects) {
			weight := func(k string) int {
				w, err := strconv.Atoi(fmt.Sprint(nested(objs[k], "metadata", "annotations")["helm.sh/hook-weight"]))
				if err != nil {
					t.Errorf("%s: hook-weight: %v", k, err)
				}
				return w
			}
			for _, k := range releaseAllHooks {
				ann := nested(objs[k], "metadata", "annotations")
				if ann["helm.sh/hook-delete-policy"] != "before-hook-creation,hook-succeeded" {
					t.Errorf("%s: hook-delete-policy %v", k, ann["helm.sh/hook-delete-policy"])
				}
				if !strings.HasPrefix(k, "Job/") && (ann[hookAnnotation] != "pre-install,pre-upgrade,pre-delete" || weight(k) >= weight(key("Job", namespace, "corepin-release-all"))) {
					t.Errorf("%s: hook %v weight %d: want it before both Jobs, in all their events", k, ann[hookAnnotation], weight(k))
				}
			}
			for name, want := range map[string]struct {
				events string
				args   []string
			}{
				"corepin-release-all":       {"pre-delete", []string{"release-all", "--namespace=" + namespace, "--selector=app.kubernetes.io/name=corepin-nri", "--timeout=4m"}},
				"corepin-release-all-clear": {"pre-install,pre-upgrade", []string{"release-all", "--namespace=" + namespace, "--clear"}},
			} {
				k := key("Job", namespace, name)
				if ev := nested(objs[k], "metadata", "annotations")[hookAnnotation]; ev != want.events {
					t.Errorf("%s: hook %v, want %s", k, ev, want.events)
				}
				var job batchv1.Job
				into(t, objs, k, &job)
				spec := job.Spec.Template.Spec
				c := container(t, spec, "release-all")
				if !slices.Equal(c.Args, want.args) || c.Image != "corepin/corepin-nri:dev" || spec.ServiceAccountName != "corepin-release-all" {
					t.Errorf("%s: %s %q as %s", k, c.Image, c.Args, spec.ServiceAccountName)
				}
				// The pre-delete selector is the DaemonSet's.
				if sel := daemonSet(t, objs).Spec.Selector.MatchLabels; name == "corepin-release-all" && !slices.Contains(c.Args, "--selector=app.kubernetes.io/name="+sel["app.kubernetes.io/name"]) {
					t.Errorf("%s selects other pods than the DaemonSet's %v", k, sel)
				}
			}
		},
	}, {
		// helm upgrade --reuse-values from a chart without uninstall.*
		// keeps the old values: none of these.
		name:   "release-all hooks without uninstall values",
		values: `uninstall: null`,
		check: func(t *testing.T, objs objects) {
			var job batchv1.Job
			into(t, objs, key("Job", namespace, "corepin-release-all"), &job)
			if args := job.Spec.Template.Spec.Containers[0].Args; !slices.Contains(args, "--timeout=120s") {
				t.Errorf("pre-delete Job args %q: want the default --timeout=120s", args)
			}
		},
	}, {
		name:   "release-all hooks off",
		values: `uninstall: {releaseAll: false}`,
		check: func(t *testing.T, objs objects) {
			if h := hooks(objs); len(h) != 0 {
				t.Errorf("hooks rendered: %v", h)
			}
		},
	}, {
		name:   "optional objects off",
		values: `{dashboard: {enabled: false}, admissionPolicy: {enabled: false}, namespace: {create: false}}`,
		check: func(t *testing.T, objs objects) {
			for k := range objs {
				if strings.HasPrefix(k, "ValidatingAdmissionPolicy") || strings.HasPrefix(k, "Namespace/") || strings.Contains(k, "grafana") {
					t.Errorf("%s rendered", k)
				}
			}
		},
	}} {
		t.Run(tc.name, func(t *testing.T) { tc.check(t, rendered(t, tc.values)) })
	}
}

// TestConfigChecksum: a change of the scheduler's ConfigMap changes the pod
// template (helm upgrade rolls the pods); a change elsewhere does not.
func TestConfigChecksum(t *testing.T) {
	sum := func(values string) string {
		return deployment(t, rendered(t, values)).Spec.Template.Annotations[checksumAnnotation]
	}
	base := sum("")
	if sum(`scheduler: {extender: {config: {scoringStrategy: LeastAllocated}}}`) == base {
		t.Error("a changed extender.yaml leaves the pod template as it was")
	}
	if sum(`schedulerName: other`) == base {
		t.Error("a changed scheduler.yaml leaves the pod template as it was")
	}
	if sum(`dashboard: {enabled: false}`) != base {
		t.Error("the checksum changes with something the scheduler does not read")
	}
}

// TestRefused: values that could not work fail the render, with a message
// naming the value, instead of reaching a crash-looping pod.
func TestRefused(t *testing.T) {
	for values, want := range map[string]string{
		`scheduler: {extender: {tls: {enabled: true}}}`:                             "scheduler.extender.tls.secretName",
		`scheduler: {extender: {tls: {clientSecretName: x}}}`:                       "tls.enabled",
		`scheduler: {extender: {config: {scoringStrategy: Packed}}}`:                "scoringStrategy",
		`scheduler: {extender: {config: {pipelines: [{name: a, filters: [gpu]}]}}}`: "filters",
		`scheduler: {extender: {config: {maxExclusiveRatio: 0.5}}}`:                 "maxExclusiveRatio",
		`nodePolicy: {sharedHeadroom: 2.5}`:                                         "sharedHeadroom",
		`nodePolicy: {maxExclusiveRatio: 1.5}`:                                      "maxExclusiveRatio",
		`nodePlugin: {reservedCpus: "0 1"}`:                                         "reservedCpus",
		`schedulerName: Corepin_Scheduler`:                                          "schedulerName",
		`nodePlugins: {}`:                                                           "nodePlugins",
		`uninstall: {timeout: soon}`:                                                "timeout",
	} {
		out, err := template(t, values)
		if err == nil {
			t.Errorf("%s: rendered, want an error naming %s:\n%.300s", values, want, out)
		} else if !strings.Contains(err.Error(), want) {
			t.Errorf("%s: the error does not name %s: %v", values, want, err)
		}
	}
}

// TestSchemaKnowsExtenderConfig: the schema's extender.config, nodePolicy
// and the tls block together are exactly api.Config's keys, so a key added
// to the extender's configuration cannot be missing from the chart.
func TestSchemaKnowsExtenderConfig(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(chartDir, "values.schema.json"))
	if err != nil {
		t.Fatal(err)
	}
	var s struct {
		Properties struct {
			NodePolicy struct{ Properties map[string]any } `json:"nodePolicy"`
			Scheduler  struct {
				Properties struct {
					Extender struct {
						Properties struct {
							Config struct{ Properties map[string]any } `json:"config"`
						} `json:"properties"`
					} `json:"extender"`
				} `json:"properties"`
			} `json:"scheduler"`
		} `json:"properties"`
	}
	if err := json.Unmarshal(data, &s); err != nil {
		t.Fatal(err)
	}
	var chart []string
	for k := range s.Properties.NodePolicy.Properties {
		chart = append(chart, k)
	}
	for k := range s.Properties.Scheduler.Properties.Extender.Properties.Config.Properties {
		chart = append(chart, k)
	}
	chart = append(chart, "tls")
	sort.Strings(chart)
	config := jsonKeys(reflect.TypeOf(api.Config{}))
	sort.Strings(config)
	if !slices.Equal(chart, config) {
		t.Errorf("the chart's extender configuration keys %q, api.Config's %q", chart, config)
	}
}

// jsonKeys lists a struct's JSON field names, inlined structs included.
func jsonKeys(typ reflect.Type) []string {
	var out []string
	for i := 0; i < typ.NumField(); i++ {
		f := typ.Field(i)
		name, opts, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "" && strings.Contains(opts, "inline") {
			out = append(out, jsonKeys(f.Type)...)
			continue
		}
		out = append(out, name)
	}
	return out
}
