//go:build chart

package chart

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// compareCRDs checks that the chart's crds/ holds exactly the CRDs deploy/
// renders, field by field, and takes them out of want: Helm installs crds/
// before the templates and never renders them in `helm template` (nor
// upgrades or deletes them, as Helm treats every CRD).
func compareCRDs(t *testing.T, want objects) {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(chartDir, "crds", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	got := objects{}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for k, obj := range decode(t, f, data) {
			got[k] = obj
		}
	}
	for k, w := range want {
		if !strings.HasPrefix(k, "CustomResourceDefinition/") {
			continue
		}
		delete(want, k)
		g, ok := got[k]
		if !ok {
			t.Errorf("missing from the chart's crds/: %s", k)
			continue
		}
		delete(got, k)
		var diffs []string
		diff("", w, g, &diffs)
		for _, d := range diffs {
			t.Errorf("crds/ %s: %s", k, d)
		}
	}
	for k := range got {
		t.Errorf("extra in the chart's crds/: %s", k)
	}
}
