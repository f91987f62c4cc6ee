package deploy

import (
	"bytes"
	"flag"
	"go/ast"
	"go/parser"
	"go/token"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	v1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"
	"sigs.k8s.io/yaml"

	"github.com/corepin/corepin/api"
	"github.com/corepin/corepin/placer"
)

// builtImages reads hack/images/main.go for the images it writes whose
// reference is a literal plus its Tag ("corepin/NAME:" + Tag): reference ->
// entrypoint.
func builtImages(t *testing.T) map[string][]string {
	t.Helper()
	f := parseGo(t, filepath.Join("..", "hack", "images", "main.go"))
	tag := ""
	ast.Inspect(f, func(n ast.Node) bool {
		if vs, ok := n.(*ast.ValueSpec); ok && len(vs.Names) == 1 && vs.Names[0].Name == "Tag" && len(vs.Values) == 1 {
			tag = stringLit(vs.Values[0])
		}
		return true
	})
	if tag == "" {
		t.Fatal("hack/images/main.go: no const Tag")
	}
	out := map[string][]string{}
	ast.Inspect(f, func(n ast.Node) bool {
		lit, ok := n.(*ast.CompositeLit)
		if !ok {
			return true
		}
		ref, entrypoint := "", []string(nil)
		for _, e := range lit.Elts {
			kv, ok := e.(*ast.KeyValueExpr)
			if !ok {
				continue
			}
			switch key, _ := kv.Key.(*ast.Ident); {
			case key == nil:
			case key.Name == "ref":
				if b, ok := kv.Value.(*ast.BinaryExpr); ok && b.Op == token.ADD {
					if id, ok := b.Y.(*ast.Ident); ok && id.Name == "Tag" && stringLit(b.X) != "" {
						ref = stringLit(b.X) + tag
					}
				}
			case key.Name == "entrypoint":
				if l, ok := kv.Value.(*ast.CompositeLit); ok {
					for _, a := range l.Elts {
						entrypoint = append(entrypoint, stringLit(a))
					}
				}
			}
		}
		if ref != "" {
			out[ref] = entrypoint
		}
		return true
	})
	return out
}

// placerFlags reads cmd/corepin-placer/main.go for the flags it defines on
// the command line's flag set (flag.String("listen", ...), flag.Var(&v,
// "cluster", ...)), with klog's when it calls klog.InitFlags.
func placerFlags(t *testing.T) map[string]bool {
	t.Helper()
	f := parseGo(t, filepath.Join("..", "cmd", "corepin-placer", "main.go"))
	out := map[string]bool{}
	ast.Inspect(f, func(n ast.Node) bool {
		call, ok := n.(*ast.CallExpr)
		if !ok {
			return true
		}
		sel, ok := call.Fun.(*ast.SelectorExpr)
		if !ok {
			return true
		}
		pkg, ok := sel.X.(*ast.Ident)
		if !ok {
			return true
		}
		switch {
		case pkg.Name == "klog" && sel.Sel.Name == "InitFlags":
			fs := flag.NewFlagSet("klog", flag.ContinueOnError)
			klog.InitFlags(fs)
			fs.VisitAll(func(fl *flag.Flag) { out[fl.Name] = true })
		case pkg.Name == "flag":
			// flag.String(name, ...), flag.StringVar(&v, name, ...), flag.Var(v, name, ...).
			i := 0
			if strings.HasSuffix(sel.Sel.Name, "Var") {
				i = 1
			}
			if len(call.Args) > i+1 {
				if name := stringLit(call.Args[i]); name != "" {
					out[name] = true
				}
			}
		}
		return true
	})
	if !out["cluster"] || !out["listen"] {
		t.Fatalf("cmd/corepin-placer/main.go: found flags %v, no --cluster or --listen", slices.Sorted(maps.Keys(out)))
	}
	return out
}

func parseGo(t *testing.T, file string) *ast.File {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), file, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func stringLit(e ast.Expr) string {
	if b, ok := e.(*ast.BasicLit); ok && b.Kind == token.STRING {
		if s, err := strconv.Unquote(b.Value); err == nil {
			return s
		}
	}
	return ""
}

// TestPlacerOverlay renders deploy/placer as `kubectl apply -k deploy/placer`
// does and checks the Deployment against what it runs: an image hack/images
// writes, with the binary as its entrypoint; only flags corepin-placer
// defines; every --cluster kubeconfig in the mounted Secret; probes on
// paths the placer serves, on the port it listens on, which the Service
// targets.
func TestPlacerOverlay(t *testing.T) {
	objs := render(t, "placer")
	var dep appsv1.Deployment
	strict(t, "Deployment", objs["Deployment/corepin-placer"], &dep)
	if dep.Spec.Replicas == nil || *dep.Spec.Replicas != 1 {
		t.Errorf("replicas %v, want 1", dep.Spec.Replicas)
	}
	spec := dep.Spec.Template.Spec
	if len(spec.Containers) != 1 {
		t.Fatalf("containers %+v", spec.Containers)
	}
	c := spec.Containers[0]

	images := builtImages(t)
	if entrypoint, ok := images[c.Image]; !ok {
		t.Errorf("image %q is none hack/images writes (%v)", c.Image, slices.Sorted(maps.Keys(images)))
	} else if len(c.Command) != 0 || !slices.Equal(entrypoint, []string{"/corepin-placer"}) {
		t.Errorf("command %q, image entrypoint %q: want the image's entrypoint /corepin-placer to get the args", c.Command, entrypoint)
	}

	flags := placerFlags(t)
	secretMount := ""
	for _, vol := range spec.Volumes {
		if vol.Secret != nil && vol.Secret.SecretName == "corepin-placer-kubeconfigs" {
			for _, m := range c.VolumeMounts {
				if m.Name == vol.Name && m.ReadOnly {
					secretMount = m.MountPath
				}
			}
		}
	}
	if secretMount == "" {
		t.Errorf("Secret corepin-placer-kubeconfigs is not mounted read-only (volumes %+v, mounts %+v)", spec.Volumes, c.VolumeMounts)
	}
	listen, clusters := "", map[string]bool{}
	for _, a := range c.Args {
		name, value, ok := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		if !strings.HasPrefix(a, "--") || !ok || !flags[name] {
			t.Errorf("arg %q: want --FLAG=VALUE with a flag of cmd/corepin-placer (%v)", a, slices.Sorted(maps.Keys(flags)))
			continue
		}
		switch name {
		case "listen":
			listen = value
		case "cluster":
			cluster, file, _ := strings.Cut(value, "=")
			if clusters[cluster] || cluster == "" {
				t.Errorf("--cluster %q: empty or repeated name", value)
			}
			clusters[cluster] = true
			if secretMount == "" || path.Dir(file) != secretMount {
				t.Errorf("--cluster %q: the kubeconfig is not a key of the Secret mounted at %q", value, secretMount)
			}
		}
	}
	if len(clusters) == 0 {
		t.Error("no --cluster")
	}
	_, port, err := net.SplitHostPort(listen)
	if err != nil {
		t.Fatalf("--listen=%q: %v", listen, err)
	}
	ports := map[string]string{}
	for _, p := range c.Ports {
		ports[p.Name] = strconv.Itoa(int(p.ContainerPort))
	}
	handler := placer.New(nil).Handler()
	for what, probe := range map[string]*v1.Probe{"readiness": c.ReadinessProbe, "liveness": c.LivenessProbe} {
		if probe == nil || probe.HTTPGet == nil {
			t.Errorf("no HTTP %s probe", what)
			continue
		}
		if p := probe.HTTPGet.Port.String(); p != port && ports[p] != port {
			t.Errorf("%s probe on port %q, the placer listens on %s", what, p, port)
		}
		rec := httptest.NewRecorder()
		handler.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, probe.HTTPGet.Path, nil))
		if rec.Code != http.StatusOK {
			t.Errorf("%s probe %s: the placer answers %d", what, probe.HTTPGet.Path, rec.Code)
		}
	}
	if c.ReadinessProbe != nil && c.ReadinessProbe.HTTPGet != nil && c.ReadinessProbe.HTTPGet.Path != "/readyz" {
		t.Errorf("readiness probe %s: want /readyz (the member clusters' views synced)", c.ReadinessProbe.HTTPGet.Path)
	}
	if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() {
		t.Errorf("resources %+v: want CPU and memory requests", c.Resources)
	}

	sc, psc := c.SecurityContext, spec.SecurityContext
	if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
		sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []v1.Capability{"ALL"}) {
		t.Errorf("container securityContext %+v: want a read-only root, no privilege escalation, every capability dropped", sc)
	}
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.RunAsUser == nil || *psc.RunAsUser == 0 {
		t.Errorf("pod securityContext %+v: want non-root", psc)
	}
	if spec.ServiceAccountName != "corepin-placer" || objs["ServiceAccount/corepin-placer"] == nil {
		t.Errorf("service account %q: want corepin-placer, in the overlay", spec.ServiceAccountName)
	}

	var svc v1.Service
	strict(t, "Service", objs["Service/corepin-placer"], &svc)
	for k, v := range svc.Spec.Selector {
		if dep.Spec.Template.Labels[k] != v {
			t.Errorf("the Service selects %s=%s, the pods are labelled %v", k, v, dep.Spec.Template.Labels)
		}
	}
	if len(svc.Spec.Selector) == 0 || len(svc.Spec.Ports) != 1 {
		t.Fatalf("Service %+v", svc.Spec)
	}
	if tp := svc.Spec.Ports[0].TargetPort.String(); tp != port && ports[tp] != port {
		t.Errorf("the Service targets port %q, the placer listens on %s", tp, port)
	}

	// Applying deploy/ and deploy/placer to one cluster leaves the
	// namespace's Pod Security labels as deploy/ sets them.
	var ns, baseNS v1.Namespace
	strict(t, "namespace", objs["Namespace/corepin-system"], &ns)
	strict(t, "base namespace", objects(t, "namespace.yaml")["Namespace/corepin-system"], &baseNS)
	if !maps.Equal(ns.Labels, baseNS.Labels) {
		t.Errorf("namespace labels %v, deploy/base's %v", ns.Labels, baseNS.Labels)
	}
	for key, data := range objs {
		var meta metav1.PartialObjectMetadata
		if err := yaml.Unmarshal(data, &meta); err != nil {
			t.Fatal(err)
		}
		want := "corepin-system"
		if strings.HasPrefix(key, "Namespace/") {
			want = ""
		}
		if meta.Namespace != want {
			t.Errorf("%s is in namespace %q, want %q", key, meta.Namespace, want)
		}
		if strings.HasPrefix(key, "ClusterRole") {
			t.Errorf("%s: the member clusters' RBAC is applied there, not with the overlay", key)
		}
	}
}

// TestPlacerOptional: deploy/ and deploy/local do not install the placer.
func TestPlacerOptional(t *testing.T) {
	for _, dir := range []string{".", "local"} {
		for key := range render(t, dir) {
			if strings.Contains(key, "corepin-placer") {
				t.Errorf("%s renders %s: deploy/placer is optional", dir, key)
			}
		}
	}
}

// TestCorepinImagesBuilt: every corepin/ image deploy/ runs is one
// hack/images writes.
func TestCorepinImagesBuilt(t *testing.T) {
	images := builtImages(t)
	objs := render(t, ".")
	var ds appsv1.DaemonSet
	strict(t, "DaemonSet", objs["DaemonSet/corepin-nri"], &ds)
	var dep appsv1.Deployment
	strict(t, "Deployment", objs["Deployment/corepin-scheduler"], &dep)
	n := 0
	for _, c := range append(ds.Spec.Template.Spec.Containers, dep.Spec.Template.Spec.Containers...) {
		if strings.HasPrefix(c.Image, "corepin/") {
			n++
			if _, ok := images[c.Image]; !ok {
				t.Errorf("container %s: image %q is none hack/images writes (%v)", c.Name, c.Image, slices.Sorted(maps.Keys(images)))
			}
		}
	}
	if n != 2 {
		t.Errorf("%d corepin/ images in deploy/, want the plugin's and the extender's", n)
	}
}

// TestPlacerMemberRBAC reads deploy/placer/member-rbac.yaml: the placer's
// identity in a member cluster may list and watch what the extender's view
// is built from and create, get and delete CPUReservations.
func TestPlacerMemberRBAC(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("placer", "member-rbac.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var roles []rbacv1.ClusterRole
	for _, doc := range bytes.Split(data, []byte("\n---\n")) {
		var meta metav1.TypeMeta
		if err := yaml.Unmarshal(doc, &meta); err != nil {
			t.Fatal(err)
		}
		if meta.Kind == "" {
			continue
		}
		if meta.Kind != "ClusterRole" {
			t.Errorf("member-rbac.yaml holds a %s: bindings name the member's own identity (see its comment)", meta.Kind)
			continue
		}
		var role rbacv1.ClusterRole
		strict(t, "ClusterRole", doc, &role)
		roles = append(roles, role)
	}
	if len(roles) != 1 || roles[0].Name != "corepin-placer" {
		t.Fatalf("member-rbac.yaml: %d ClusterRoles, want corepin-placer alone", len(roles))
	}
	allows := func(group, resource, verb string) bool {
		for _, r := range roles[0].Rules {
			if slices.Contains(r.APIGroups, group) && slices.Contains(r.Resources, resource) && slices.Contains(r.Verbs, verb) {
				return true
			}
		}
		return false
	}
	for _, want := range []struct{ group, resource, verb string }{
		{"", "nodes", "list"}, {"", "nodes", "watch"},
		{"", "pods", "list"}, {"", "pods", "watch"},
		{api.GroupName, api.ResourceCPUReservation, "list"}, {api.GroupName, api.ResourceCPUReservation, "watch"},
		{api.GroupName, api.ResourceCPUReservation, "create"}, {api.GroupName, api.ResourceCPUReservation, "get"},
		{api.GroupName, api.ResourceCPUReservation, "delete"},
	} {
		if !allows(want.group, want.resource, want.verb) {
			t.Errorf("the ClusterRole does not allow %s on %s in group %q", want.verb, want.resource, want.group)
		}
	}
	for _, r := range roles[0].Rules {
		if slices.Contains(r.Verbs, "*") || slices.Contains(r.Resources, "*") || slices.Contains(r.Resources, api.ResourceCPUReservation+"/status") {
			t.Errorf("rule %+v: more than the placer needs (the status is the member's extender's)", r)
		}
	}
}
