package placer

import (
	"fmt"
	"testing"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/corepin/corepin/api"
	extender "github.com/corepin/corepin/scheduler-extender"
)

// BenchmarkPlacementDecision2x1000 is the placer's own share of a
// placement over 2 clusters of 1,000 64-CPU nodes each: BestNode in every
// member view and the choice. The API round trips (create, the extender's
// placement and status write, the placer's read) are not in it.
func BenchmarkPlacementDecision2x1000(b *testing.B) {
	topo := topologyAnnotation(b, "1s-vm-64")
	var scheds []*extender.Scheduler
	for c := 0; c < 2; c++ {
		s, err := extender.NewScheduler(api.Config{})
		if err != nil {
			b.Fatal(err)
		}
		for i := 0; i < 1000; i++ {
			s.UpsertNode(&v1.Node{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("c%d-node-%d", c, i), Annotations: map[string]string{api.AnnotationTopology: topo}}})
		}
		scheds = append(scheds, s)
	}
	r := &api.CPUReservation{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "db"}}
	r.Spec.Template.Annotations = map[string]string{api.AnnotationCPUMode: "exclusive"}
	r.Spec.Template.Spec.Containers = []v1.Container{{Name: "engine", Resources: v1.ResourceRequirements{Limits: v1.ResourceList{v1.ResourceCPU: *mustQuantity("8")}}}}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		best := extender.Candidate{Score: -1}
		for _, s := range scheds {
			c, err := s.BestNode(r)
			if err != nil {
				b.Fatal(err)
			}
			if c.Node != "" && c.Score > best.Score {
				best = c
			}
		}
		if best.Node == "" {
			b.Fatal("no node")
		}
	}
}

func mustQuantity(s string) *resource.Quantity {
	q := resource.MustParse(s)
	return &q
}
