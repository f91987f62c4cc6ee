package framework

import (
	"encoding/json"
	"testing"

	"k8s.io/utils/cpuset"

	"github.com/corepin/corepin/api"
)

// The node fixtures publish what the node plugin would: a topology the
// contract's parser takes, with the CPUs where the tests' arithmetic puts
// them.
func TestTopologies(t *testing.T) {
	for _, tc := range []struct {
		name          string
		topo          api.Topology
		cpus, perNUMA int
	}{
		{"flat 8", FlatTopology(8), 8, 8},
		{"2 NUMA nodes of 4", NUMATopology(2, 4), 8, 4},
	} {
		value, err := json.Marshal(tc.topo)
		if err != nil {
			t.Fatal(err)
		}
		parsed, err := api.ParseTopology(string(value))
		if err != nil {
			t.Fatalf("%s: %s refused: %v", tc.name, value, err)
		}
		if len(parsed.CPUs) != tc.cpus || !parsed.Reserved.Set().IsEmpty() {
			t.Fatalf("%s: %d CPUs, reserved %s; want %d, none", tc.name, len(parsed.CPUs), parsed.Reserved, tc.cpus)
		}
		for _, c := range parsed.CPUs {
			if c.Core != c.ID || c.Socket != 0 || c.NUMA != c.ID/tc.perNUMA || c.L3 != c.NUMA {
				t.Fatalf("%s: CPU %+v, want its own core on NUMA node and L3 %d", tc.name, c, c.ID/tc.perNUMA)
			}
		}
	}
}

func TestSplitHostCPUs(t *testing.T) {
	h := SplitHostCPUs(t)
	if h.All.Size() != h.N || !h.Exclusive.Equals(cpuset.New(h.N-1)) || !h.Pool.Union(h.Exclusive).Equals(h.All) || h.Pool.Contains(h.N-1) {
		t.Fatalf("%+v: want all %d CPUs, the last exclusive, the rest the pool", h, h.N)
	}
}

func TestAllocStatusFor(t *testing.T) {
	a := AllocStatusFor(cpuset.New(2, 3))
	st, err := api.ParseAllocStatus(a[api.AnnotationAllocStatus])
	if err != nil {
		t.Fatal(err)
	}
	if a[api.AnnotationCPUMode] != "exclusive" || st.Node != PluginNode || st.CPUs.String() != "2-3" || st.Containers["engine"].String() != "2-3" {
		t.Fatalf("annotations %v", a)
	}
}
