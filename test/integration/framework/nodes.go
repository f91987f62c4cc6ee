package framework

import (
	"encoding/json"
	"maps"
	"testing"

	"github.com/corepin/corepin/api"
)

// FlatTopology is a node of n CPUs without SMT on one socket, NUMA node and
// L3 group, nothing reserved.
func FlatTopology(n int) api.Topology {
	return NUMATopology(1, n)
}

// NUMATopology is a node without SMT of numas NUMA nodes (each its own L3
// group) of perNUMA CPUs each, on one socket, nothing reserved.
func NUMATopology(numas, perNUMA int) api.Topology {
	topo := api.Topology{Version: api.TopologyVersion, CPUs: []api.CPUInfo{}}
	for i := 0; i < numas*perNUMA; i++ {
		topo.CPUs = append(topo.CPUs, api.CPUInfo{ID: i, Core: i, NUMA: i / perNUMA, L3: i / perNUMA})
	}
	return topo
}

// CreateNodes creates a Ready node (CreateNode) of topo's CPUs for each
// name, publishing topo as corepin.io/topology beside the given
// annotations, as the node plugin would.
func (cp *ControlPlane) CreateNodes(t testing.TB, topo api.Topology, annotations map[string]string, names ...string) {
	t.Helper()
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
