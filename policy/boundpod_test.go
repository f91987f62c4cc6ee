package policy

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/corepin/corepin/api"
)

// TestReadBound is the one reading of a bound pod that the extender, the
// node plugin and corepinctl share.
func TestReadBound(t *testing.T) {
	topo := newTestNode(t, "2s-smt-server").Topo // NUMA 0: 0-7,16-23; NUMA 1: 8-15,24-31
	status := func(node, db, mems string) string {
		return `{"node":"` + node + `","cpus":"` + db + `","containers":{"db":"` + db + `"},"mems":"` + mems + `"}`
	}
	exclusive := func(extra map[string]string) map[string]string {
		a := map[string]string{api.AnnotationCPUMode: "exclusive"}
		for k, v := range extra {
			a[k] = v
		}
		return a
	}
	spec := []Container{{Name: "db", Milli: 2000}, {Name: "log", Milli: 500}, {Name: "proxy", Milli: 250, Sidecar: true}}
	for _, tc := range []struct {
		name        string
		annotations map[string]string
		node        string
		containers  []Container // nil: the spec is not known (the node plugin)
		code        Code        // "" when honoured as written
		message     string      // a part of the reason
		held        string      // the CPUs held, "" for none
		sharedMilli int64
	}{
		{name: "shared", annotations: nil, containers: spec, sharedMilli: 2750},
		{name: "placed", annotations: exclusive(map[string]string{api.AnnotationAllocStatus: status("n1", "0-1", "0")}), containers: spec,
			held: "0-1", sharedMilli: 750},
		{name: "placed, no memory binding", annotations: exclusive(map[string]string{api.AnnotationAllocStatus: status("n1", "0-1", "")}), containers: spec,
			held: "0-1", sharedMilli: 750},
		{name: "placed, spec not known", annotations: exclusive(map[string]string{api.AnnotationAllocStatus: status("n1", "0-1", "0")}),
			held: "0-1"},
		{name: "not placed", annotations: exclusive(nil), containers: spec, code: CodeNotPlaced, message: "no corepin.io/alloc-status", sharedMilli: 750},
		{name: "another node's", annotations: exclusive(map[string]string{api.AnnotationAllocStatus: status("n2", "0-1", "0")}), containers: spec,
			code: CodeWrongNode, message: `alloc-status is for node "n2", the pod is on "n1"`, sharedMilli: 750},
		{name: "alloc-status does not parse", annotations: exclusive(map[string]string{api.AnnotationAllocStatus: `{"node":`}), containers: spec,
			code: CodeBadAnnotation, message: api.AnnotationAllocStatus, sharedMilli: 750},
		{name: "other annotations do not parse: the valid alloc-status is kept",
			annotations: exclusive(map[string]string{api.AnnotationMaxPerNode: "01", api.AnnotationAllocStatus: status("n1", "2-3", "0")}), containers: spec,
			code: CodeBadAnnotation, message: `corepin.io/max-per-node="01"`, held: "2-3", sharedMilli: 750},
		{name: "other annotations do not parse, alloc-status of another node",
			annotations: exclusive(map[string]string{api.AnnotationMaxPerNode: "01", api.AnnotationAllocStatus: status("n2", "2-3", "0")}), containers: spec,
			code: CodeBadAnnotation, sharedMilli: 2750},
		{name: "spec's exclusive containers differ", annotations: exclusive(map[string]string{api.AnnotationAllocStatus: status("n1", "0-2", "0")}), containers: spec,
			code: CodeBadAnnotation, message: "gives containers db=3 but the spec's exclusive containers are db=2", held: "0-2", sharedMilli: 750},
		{name: "mems are not the CPUs' NUMA nodes", annotations: exclusive(map[string]string{api.AnnotationAllocStatus: status("n1", "0-1", "1")}), containers: spec,
			code: CodeBadAnnotation, message: `mems "1" are not the NUMA nodes of its CPUs 0-1 (0)`, held: "0-1", sharedMilli: 750},
		{name: "mems spanning more NUMA nodes than the CPUs", annotations: exclusive(map[string]string{api.AnnotationAllocStatus: status("n1", "0-1", "0-1")}), containers: spec,
			code: CodeBadAnnotation, message: "are not the NUMA nodes", held: "0-1", sharedMilli: 750},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := ReadBound(BoundPod{Namespace: "default", Name: "p", Node: "n1", Annotations: tc.annotations, Containers: tc.containers}, topo)
			if got := CodeOf(errOf(b.Reason)); got != tc.code {
				t.Fatalf("code %q, want %q (reason %v)", got, tc.code, b.Reason)
			}
			if b.Reason != nil && !strings.Contains(b.Reason.Error(), tc.message) {
				t.Errorf("reason %q does not say %q", b.Reason, tc.message)
			}
			p := b.Placement()
			if got := p.CPUs.String(); got != tc.held {
				t.Errorf("held CPUs %q, want %q", got, tc.held)
			}
			if b.Held != (tc.held != "") {
				t.Errorf("Held = %v with CPUs %q held", b.Held, tc.held)
			}
			if p.SharedMilli != tc.sharedMilli {
				t.Errorf("shared amount %dm, want %dm", p.SharedMilli, tc.sharedMilli)
			}
		})
	}
}

func errOf(r *Reason) error {
	if r == nil {
		return nil
	}
	return r
}

func TestCodeOfWrapped(t *testing.T) {
	n := newTestNode(t, "1s-vm")
	err := fmt.Errorf("node %s: %w", n.Name, n.Fit(exclusiveReq("default/big", "", 9, api.AllocSpec{})))
	if CodeOf(err) != CodeCores {
		t.Fatalf("code of %v: %q, want %q", err, CodeOf(err), CodeCores)
	}
	if CodeOf(errors.New("x")) != CodeOther || CodeOf(nil) != "" {
		t.Fatal("an error without a Reason is CodeOther, nil has no code")
	}
}
