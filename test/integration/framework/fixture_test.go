package framework

import (
	"testing"

	"k8s.io/utils/cpuset"

	"github.com/corepin/corepin/api"
)

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
