package deploy

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"

	"github.com/corepin/corepin/api"
)

// TestCPUReservationCRD reads the CRD as the API server will: a strict
// decode into its type, then the parts of the schema the contract fixes.
// That the API server accepts it and its validations reject bad objects is
// TestReservationCRD's (test/integration), against a real kube-apiserver.
func TestCPUReservationCRD(t *testing.T) {
	objs := objects(t, "cpureservation-crd.yaml")
	var crd apiextensionsv1.CustomResourceDefinition
	strict(t, "CRD", objs["CustomResourceDefinition/cpureservations.corepin.io"], &crd)
	if crd.Spec.Group != api.GroupName || crd.Spec.Names.Kind != api.KindCPUReservation || crd.Spec.Names.Plural != api.ResourceCPUReservation ||
		crd.Spec.Scope != apiextensionsv1.NamespaceScoped {
		t.Fatalf("CRD names %+v scope %s", crd.Spec.Names, crd.Spec.Scope)
	}
	if len(crd.Spec.Versions) != 1 || crd.Spec.Versions[0].Name != api.ReservationVersion || !crd.Spec.Versions[0].Storage {
		t.Fatalf("versions %+v, want %s alone, stored", crd.Spec.Versions, api.ReservationVersion)
	}
	v := crd.Spec.Versions[0]
	if v.Subresources == nil || v.Subresources.Status == nil {
		t.Error("no status subresource: users could write the status the extender owns")
	}
	spec := v.Schema.OpenAPIV3Schema.Properties["spec"]
	ttl := spec.Properties["ttlSeconds"]
	if ttl.Minimum == nil || *ttl.Minimum != 1 || ttl.Default == nil || string(ttl.Default.Raw) != "600" {
		t.Errorf("ttlSeconds: minimum %v default %v, want 1 and 600", ttl.Minimum, ttl.Default)
	}
	tmpl := spec.Properties["template"]
	containers := tmpl.Properties["spec"].Properties["containers"]
	if containers.XListType == nil || *containers.XListType != "map" || !slices.Equal(containers.XListMapKeys, []string{"name"}) {
		t.Errorf("containers: list type %v keys %v, want a map keyed by name (unique names)", containers.XListType, containers.XListMapKeys)
	}
	var rules []string
	for _, r := range tmpl.XValidations {
		rules = append(rules, r.Rule)
	}
	if joined := strings.Join(rules, "\n"); !strings.Contains(joined, "isInteger()") || !strings.Contains(joined, "'exclusive'") {
		t.Errorf("template validations %q: want whole CPU amounts and exclusive mode checked", rules)
	}
	phases := map[string]bool{}
	for _, e := range v.Schema.OpenAPIV3Schema.Properties["status"].Properties["phase"].Enum {
		phases[strings.Trim(string(e.Raw), `"`)] = true
	}
	for _, p := range []api.ReservationPhase{api.ReservationPending, api.ReservationReserved, api.ReservationUnschedulable, api.ReservationConsumed, api.ReservationExpired} {
		if !phases[string(p)] {
			t.Errorf("status.phase enum lacks %s", p)
		}
	}

	// The chart ships the same file in crds/.
	base, _ := os.ReadFile(filepath.Join("base", "cpureservation-crd.yaml"))
	chart, err := os.ReadFile(filepath.Join("chart", "corepin", "crds", "cpureservations.corepin.io.yaml"))
	if err != nil || !bytes.Equal(base, chart) {
		t.Errorf("chart/corepin/crds/cpureservations.corepin.io.yaml differs from base/cpureservation-crd.yaml (%v): copy it", err)
	}
	if _, ok := render(t, ".")["CustomResourceDefinition/cpureservations.corepin.io"]; !ok {
		t.Error("kubectl apply -k deploy/ does not apply the CRD")
	}
}

// TestReservationRBAC: the extender reads reservations and writes their
// status; nothing it holds lets it change a reservation's spec.
func TestReservationRBAC(t *testing.T) {
	objs := objects(t, "scheduler.yaml")
	var role rbacv1.ClusterRole
	strict(t, "ClusterRole", objs["ClusterRole/corepin-extender"], &role)
	verbs := map[string][]string{}
	for _, r := range role.Rules {
		if slices.Contains(r.APIGroups, api.GroupName) {
			for _, res := range r.Resources {
				verbs[res] = append(verbs[res], r.Verbs...)
			}
		}
	}
	for _, v := range []string{"get", "list", "watch"} {
		if !slices.Contains(verbs["cpureservations"], v) {
			t.Errorf("extender cannot %s cpureservations: %v", v, verbs)
		}
	}
	if !slices.Contains(verbs["cpureservations/status"], "update") {
		t.Errorf("extender cannot update cpureservations/status: %v", verbs)
	}
	for _, v := range []string{"create", "update", "patch", "delete", "*"} {
		if slices.Contains(verbs["cpureservations"], v) {
			t.Errorf("extender may %s cpureservations: only their status is its to write", v)
		}
	}
}
