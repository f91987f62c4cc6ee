//go:build chart

package chart

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	v1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

// TestPlacerRendersDeployPlacer: with placer.enabled the chart renders, on
// top of deploy/'s objects, those of `kubectl apply -k deploy/placer`, the
// same way (the Namespace, in both, is the same object).
func TestPlacerRendersDeployPlacer(t *testing.T) {
	want := kustomize(t, ".")
	compareCRDs(t, want)
	overlay := kustomize(t, "placer")
	var placerObjs []string
	for k, obj := range overlay {
		if w, ok := want[k]; ok {
			var diffs []string
			diff("", w, obj, &diffs)
			for _, d := range diffs {
				t.Errorf("deploy/ and deploy/placer differ in %s: %s", k, d)
			}
			continue
		}
		placerObjs = append(placerObjs, k)
		want[k] = obj
	}
	sort.Strings(placerObjs)
	wantPlacer := []string{
		key("Deployment", namespace, "corepin-placer"),
		key("Service", namespace, "corepin-placer"),
		key("ServiceAccount", namespace, "corepin-placer"),
	}
	if !slices.Equal(placerObjs, wantPlacer) {
		t.Errorf("deploy/placer adds %q to deploy/, want %q", placerObjs, wantPlacer)
	}
	got := rendered(t, `placer: {enabled: true}`)
	placerAccepts(t, placerContainer(t, got).Args)
	compareRender(t, want, got)
}

var placerDeploymentKey = key("Deployment", namespace, "corepin-placer")

func placerDeployment(t *testing.T, objs objects) appsv1.Deployment {
	t.Helper()
	var dep appsv1.Deployment
	into(t, objs, placerDeploymentKey, &dep)
	return dep
}

func placerContainer(t *testing.T, objs objects) v1.Container {
	t.Helper()
	return container(t, placerDeployment(t, objs).Spec.Template.Spec, "placer")
}

// placerBin is corepin-placer built from cmd/corepin-placer, once per run.
var placerBin struct {
	once      sync.Once
	dir, path string
	err       error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if placerBin.dir != "" {
		os.RemoveAll(placerBin.dir)
	}
	os.Exit(code)
}

// placerAccepts runs corepin-placer with args and then -help: it exits 0
// only when it parsed every arg before (an unknown flag, a malformed or
// repeated --cluster exit 2), and reads no file.
func placerAccepts(t *testing.T, args []string) {
	t.Helper()
	placerBin.once.Do(func() {
		if placerBin.dir, placerBin.err = os.MkdirTemp("", "corepin-chart-test"); placerBin.err != nil {
			return
		}
		placerBin.path = filepath.Join(placerBin.dir, "corepin-placer")
		out, err := exec.Command("go", "build", "-o", placerBin.path, "../../cmd/corepin-placer").CombinedOutput()
		if err != nil {
			placerBin.err = &exec.Error{Name: "go build ./cmd/corepin-placer", Err: err}
			t.Logf("%s", out)
		}
	})
	if placerBin.err != nil {
		t.Fatal(placerBin.err)
	}
	if out, err := exec.Command(placerBin.path, append(slices.Clone(args), "-help")...).CombinedOutput(); err != nil {
		t.Errorf("corepin-placer %q: %v\n%.500s", args, err, out)
	}
}

// listenPort is the port of the placer's --FLAG (listen, health-listen).
func listenPort(t *testing.T, c v1.Container, flag string) string {
	t.Helper()
	for _, a := range c.Args {
		if addr, ok := strings.CutPrefix(a, "--"+flag+"="); ok {
			_, port, err := net.SplitHostPort(addr)
			if err != nil {
				t.Fatalf("%s: %v", a, err)
			}
			return port
		}
	}
	t.Fatalf("args %q: no --%s", c.Args, flag)
	return ""
}

// containerPort resolves a probe's or a Service's target port, a number or
// the name of one of c's ports, to a number ("" when c has no such port).
func containerPort(c v1.Container, p intstr.IntOrString) string {
	if p.Type == intstr.Int {
		return p.String()
	}
	for _, cp := range c.Ports {
		if cp.Name == p.StrVal {
			return strconv.Itoa(int(cp.ContainerPort))
		}
	}
	return ""
}

// configMapFile says which ConfigMap and key a container reads at file
// ("" when none).
func configMapFile(spec v1.PodSpec, c v1.Container, file string) (configMap, key string) {
	return volumeFile(spec, c, file, func(v v1.Volume) (string, []v1.KeyToPath, bool) {
		if v.ConfigMap == nil {
			return "", nil, false
		}
		return v.ConfigMap.Name, v.ConfigMap.Items, true
	})
}

// flagValues are the values of --name=VALUE in args, in order.
func flagValues(args []string, name string) []string {
	var out []string
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			out = append(out, v)
		}
	}
	return out
}

// checkPlacerServing: the Service reaches the port the placer listens on,
// and the probes the port they can pass on, over scheme (HTTP or HTTPS):
// under mutual TLS ("health") that is --health-listen's, plain HTTP, as
// the kubelet presents no client certificate.
func checkPlacerServing(t *testing.T, objs objects, scheme string) {
	t.Helper()
	c := placerContainer(t, objs)
	port := listenPort(t, c, "listen")
	probePort := port
	if scheme == "health" {
		scheme, probePort = "HTTP", listenPort(t, c, "health-listen")
	}
	for what, probe := range map[string]*v1.Probe{"readiness": c.ReadinessProbe, "liveness": c.LivenessProbe} {
		switch {
		case probe == nil:
			t.Errorf("no %s probe", what)
		case probe.HTTPGet == nil || string(probe.HTTPGet.Scheme) != scheme && !(scheme == "HTTP" && probe.HTTPGet.Scheme == ""):
			t.Errorf("%s probe %+v: want %s", what, probe.ProbeHandler, scheme)
		case containerPort(c, probe.HTTPGet.Port) != probePort:
			t.Errorf("%s probe on port %s, want %s", what, probe.HTTPGet.Port.String(), probePort)
		}
	}
	for _, probe := range []struct {
		what, path string
		*v1.Probe
	}{{"readiness", "/readyz", c.ReadinessProbe}, {"liveness", "/healthz", c.LivenessProbe}} {
		if probe.Probe != nil && probe.HTTPGet != nil && probe.HTTPGet.Path != probe.path {
			t.Errorf("%s probe %s, want %s", probe.what, probe.HTTPGet.Path, probe.path)
		}
	}
	var svc v1.Service
	into(t, objs, key("Service", namespace, "corepin-placer"), &svc)
	if len(svc.Spec.Ports) != 1 || containerPort(c, svc.Spec.Ports[0].TargetPort) != port {
		t.Errorf("Service ports %+v: want one targeting the placer's port %s", svc.Spec.Ports, port)
	}
}

// placerTLSFiles checks that each --FLAG=FILE in args is read from the given
// Secret and key, and returns how many of those flags there are.
func placerTLSFiles(t *testing.T, spec v1.PodSpec, c v1.Container, want map[string][2]string) int {
	t.Helper()
	n := 0
	for _, name := range []string{"tls-cert-file", "tls-key-file", "tls-client-ca-file"} {
		files := flagValues(c.Args, name)
		n += len(files)
		w, wanted := want[name]
		if !wanted {
			if len(files) != 0 {
				t.Errorf("args %q: --%s, want none", c.Args, name)
			}
			continue
		}
		if len(files) != 1 {
			t.Errorf("args %q: want one --%s", c.Args, name)
			continue
		}
		if s, k := secretFile(spec, c, files[0]); s != w[0] || k != w[1] {
			t.Errorf("--%s=%s is read from secret %q key %q, want %s/%s", name, files[0], s, k, w[0], w[1])
		}
	}
	return n
}

func TestPlacerValues(t *testing.T) {
	for _, tc := range []struct {
		name   string
		values string
		check  func(t *testing.T, objs objects)
	}{{
		name: "image replicas clusters configuration resources",
		values: `
images: {placer: {repository: registry.example.com/corepin/corepin-placer, tag: v0.3.0, pullPolicy: Always}}
imagePullSecrets: [{name: my-registry}]
placer:
  enabled: true
  replicas: 2
  clusters: [east, west.eu, c3]
  kubeconfigSecret: member-kubeconfigs
  configMap: corepin-scheduler-config
  extraArgs: [--wait=1m]
  extraEnv: [{name: TZ, value: UTC}]
  resources: {requests: {cpu: "1", memory: 512Mi}, limits: {memory: 2Gi}}
`,
		check: func(t *testing.T, objs objects) {
			dep := placerDeployment(t, objs)
			spec := dep.Spec.Template.Spec
			c := placerContainer(t, objs)
			placerAccepts(t, c.Args)
			if r := dep.Spec.Replicas; r == nil || *r != 2 {
				t.Errorf("replicas %v, want 2", ptr.Deref(r, -1))
			}
			if c.Image != "registry.example.com/corepin/corepin-placer:v0.3.0" || c.ImagePullPolicy != v1.PullAlways {
				t.Errorf("image %s %s", c.Image, c.ImagePullPolicy)
			}
			if len(spec.ImagePullSecrets) != 1 || spec.ImagePullSecrets[0].Name != "my-registry" {
				t.Errorf("imagePullSecrets %+v", spec.ImagePullSecrets)
			}
			// The clusters in their order (it breaks ties), each one's
			// kubeconfig the key of its name in the Secret.
			var names []string
			for _, v := range flagValues(c.Args, "cluster") {
				name, file, _ := strings.Cut(v, "=")
				names = append(names, name)
				if s, k := secretFile(spec, c, file); s != "member-kubeconfigs" || k != name {
					t.Errorf("--cluster=%s: the kubeconfig is read from secret %q key %q, want member-kubeconfigs/%s", v, s, k, name)
				}
			}
			if !slices.Equal(names, []string{"east", "west.eu", "c3"}) {
				t.Errorf("clusters %q, want east, west.eu, c3 in that order", names)
			}
			// --config is the extender.yaml this release's extender runs.
			configs := flagValues(c.Args, "config")
			if len(configs) != 1 {
				t.Fatalf("args %q: want one --config", c.Args)
			}
			if cm, k := configMapFile(spec, c, configs[0]); cm != "corepin-scheduler-config" || k != "extender.yaml" {
				t.Errorf("--config=%s is read from ConfigMap %q key %q, want corepin-scheduler-config/extender.yaml", configs[0], cm, k)
			}
			if !slices.Contains(c.Args, "--wait=1m") {
				t.Errorf("args %q: no --wait=1m", c.Args)
			}
			if !slices.Equal(c.Env, []v1.EnvVar{{Name: "TZ", Value: "UTC"}}) {
				t.Errorf("env %+v", c.Env)
			}
			if !c.Resources.Requests.Cpu().Equal(resource.MustParse("1")) || !c.Resources.Requests.Memory().Equal(resource.MustParse("512Mi")) ||
				!c.Resources.Limits.Memory().Equal(resource.MustParse("2Gi")) {
				t.Errorf("resources %+v", c.Resources)
			}
			checkPlacerServing(t, objs, "HTTP")
		},
	}, {
		name:   "https",
		values: `placer: {enabled: true, tls: {enabled: true, secretName: placer-tls}}`,
		check: func(t *testing.T, objs objects) {
			c := placerContainer(t, objs)
			placerAccepts(t, c.Args)
			placerTLSFiles(t, placerDeployment(t, objs).Spec.Template.Spec, c, map[string][2]string{
				"tls-cert-file": {"placer-tls", "tls.crt"},
				"tls-key-file":  {"placer-tls", "tls.key"},
			})
			checkPlacerServing(t, objs, "HTTPS")
		},
	}, {
		name:   "mutual tls",
		values: `placer: {enabled: true, tls: {enabled: true, secretName: placer-tls, clientCASecretName: placer-clients}}`,
		check: func(t *testing.T, objs objects) {
			c := placerContainer(t, objs)
			placerAccepts(t, c.Args)
			spec := placerDeployment(t, objs).Spec.Template.Spec
			placerTLSFiles(t, spec, c, map[string][2]string{
				"tls-cert-file":      {"placer-tls", "tls.crt"},
				"tls-key-file":       {"placer-tls", "tls.key"},
				"tls-client-ca-file": {"placer-clients", "ca.crt"},
			})
			// The kubelet presents no client certificate: an HTTPS probe
			// would fail every time.
			checkPlacerServing(t, objs, "health")
		},
	}, {
		name:   "member rbac with a binding",
		values: `placer: {memberRBAC: {enabled: true, subjects: [{kind: User, name: placer-east}, {kind: ServiceAccount, name: placer, namespace: placers}]}}`,
		check: func(t *testing.T, objs objects) {
			// A member cluster: the role and its binding, no placer.
			if _, ok := objs[placerDeploymentKey]; ok {
				t.Error("the placer is rendered, with placer.enabled false")
			}
			data, err := os.ReadFile(filepath.Join("..", "placer", "member-rbac.yaml"))
			if err != nil {
				t.Fatal(err)
			}
			roleKey := key("ClusterRole", "", "corepin-placer")
			want := decode(t, "deploy/placer/member-rbac.yaml", data)
			if len(want) != 1 || want[roleKey] == nil {
				t.Fatalf("deploy/placer/member-rbac.yaml holds %v, want %s alone", sortedKeys(want), roleKey)
			}
			got, ok := objs[roleKey]
			if !ok {
				t.Fatalf("no %s rendered", roleKey)
			}
			stripHelm(t, roleKey, got)
			var diffs []string
			diff("", want[roleKey], got, &diffs)
			for _, d := range diffs {
				t.Errorf("%s: %s", roleKey, d)
			}
			var binding rbacv1.ClusterRoleBinding
			into(t, objs, key("ClusterRoleBinding", "", "corepin-placer"), &binding)
			if binding.RoleRef != (rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "corepin-placer"}) {
				t.Errorf("roleRef %+v", binding.RoleRef)
			}
			if !slices.Equal(binding.Subjects, []rbacv1.Subject{{Kind: "User", Name: "placer-east"}, {Kind: "ServiceAccount", Name: "placer", Namespace: "placers"}}) {
				t.Errorf("subjects %+v", binding.Subjects)
			}
		},
	}, {
		name:   "member rbac without a binding",
		values: `placer: {memberRBAC: {enabled: true}}`,
		check: func(t *testing.T, objs objects) {
			if _, ok := objs[key("ClusterRole", "", "corepin-placer")]; !ok {
				t.Error("no ClusterRole corepin-placer")
			}
			if _, ok := objs[key("ClusterRoleBinding", "", "corepin-placer")]; ok {
				t.Error("a ClusterRoleBinding corepin-placer without subjects")
			}
		},
	}, {
		// helm upgrade --reuse-values from a chart without placer.* keeps
		// the old values: none of these, and no placer.
		name:   "no placer values",
		values: `{placer: null, images: {placer: null}}`,
		check: func(t *testing.T, objs objects) {
			for k := range objs {
				if strings.Contains(k, "corepin-placer") {
					t.Errorf("%s rendered", k)
				}
			}
		},
	}} {
		t.Run(tc.name, func(t *testing.T) { tc.check(t, rendered(t, tc.values)) })
	}
}

// TestPlacerRefused: placer values that could not work fail the render
// (the schema or the templates), naming the value.
func TestPlacerRefused(t *testing.T) {
	// Each want quotes the message: helm's error also holds its command
	// line, which names the values file and --namespace.
	for values, want := range map[string]string{
		`placer: {enabled: true, tls: {enabled: true}}`:                                  "placer.tls.enabled needs placer.tls.secretName",
		`placer: {enabled: true, tls: {clientCASecretName: placer-clients}}`:             `placer.tls.clientCASecretName "placer-clients" takes effect only with placer.tls.enabled`,
		`placer: {memberRBAC: {subjects: [{kind: User, name: placer-east}]}}`:            "only placer.memberRBAC.enabled renders",
		`{images: {placer: null}, placer: {enabled: true}}`:                              "placer.enabled needs images.placer",
		`placer: {enable: true}`:                                                         "at '/placer': additional properties 'enable' not allowed",
		`placer: {enabled: "yes"}`:                                                       "at '/placer/enabled': got string, want boolean",
		`placer: {replicas: -1}`:                                                         "at '/placer/replicas': minimum",
		`placer: {clusters: []}`:                                                         "at '/placer/clusters': minItems",
		`placer: {clusters: [east, east]}`:                                               "at '/placer/clusters': items at 0 and 1 are equal",
		`placer: {clusters: ["east=x"]}`:                                                 "at '/placer/clusters/0': 'east=x' does not match",
		`placer: {clusters: [east, ../west]}`:                                            "at '/placer/clusters/1': '../west' does not match",
		`placer: {kubeconfigSecret: ""}`:                                                 "at '/placer/kubeconfigSecret': minLength",
		`placer: {configMap: Extender_Config}`:                                           "at '/placer/configMap'",
		`placer: {tls: {secretName: Placer_TLS}}`:                                        "at '/placer/tls/secretName'",
		`placer: {tls: {clientCA: x}}`:                                                   "at '/placer/tls': additional properties 'clientCA' not allowed",
		`placer: {extraArgs: --wait=1m}`:                                                 "at '/placer/extraArgs': got string, want array",
		`images: {placer: {repository: corepin/corepin-placer, tag: ""}}`:                "at '/images/placer/tag': minLength",
		`placer: {memberRBAC: {subjects: [{kind: ServiceAccount, name: placer}]}}`:       "at '/placer/memberRBAC/subjects/0': missing property 'namespace'",
		`placer: {memberRBAC: {subjects: [{kind: Robot, name: placer}]}}`:                "at '/placer/memberRBAC/subjects/0/kind': value must be one of",
		`placer: {memberRBAC: {enabled: true, subjects: [{kind: User}]}}`:                "at '/placer/memberRBAC/subjects/0': missing property 'name'",
		`placer: {memberRBAC: {enabled: true, subjects: [{kind: User, name: a, x: y}]}}`: "at '/placer/memberRBAC/subjects/0': additional properties 'x' not allowed",
	} {
		out, err := template(t, values)
		if err == nil {
			t.Errorf("%s: rendered, want an error naming %s:\n%.300s", values, want, out)
		} else if !strings.Contains(err.Error(), want) {
			t.Errorf("%s: the error does not name %s: %v", values, want, err)
		}
	}
}
