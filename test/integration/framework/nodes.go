package framework

import (
	"encoding/json"
	"maps"
	"testing"

	"github.com/corepin/corepin/api"
	"github.com/corepin/corepin/internal/testtopo"
)

// CreateNodes creates a Ready node (CreateNode) for each name with the
// named test topology's CPUs (internal/testtopo), publishing it as
// corepin.io/topology beside the given annotations, as the node plugin
// would.
func (cp *ControlPlane) CreateNodes(t testing.TB, topology string, annotations map[string]string, names ...string) {
	t.Helper()
	topo, err := testtopo.Load(topology)
	if err != nil {
		t.Fatal(err)
	}
	value, err := json.Marshal(topo)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range names {
		a := maps.Clone(annotations)
		if a == nil {
			a = map[string]string{}
		}
		a[api.AnnotationTopology] = string(value)
		cp.CreateNode(t, name, len(topo.CPUs), a)
	}
}
