package extender

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	extenderv1 "k8s.io/kube-scheduler/extender/v1"

	"github.com/corepin/corepin/api"
	"k8s.io/client-go/kubernetes/fake"
)

// BenchmarkHTTPFilterPrioritize1000Nodes is one pod's two extender calls
// as kube-scheduler makes them (JSON both ways), on 1,000 nodes.
func BenchmarkHTTPFilterPrioritize1000Nodes(b *testing.B) {
	s, names, _ := populate(b, 1000, 30)
	srv := &Server{Sched: s, Client: fake.NewClientset()}
	h := srv.Handler()
	pod := &v1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "incoming",
		Annotations: map[string]string{api.AnnotationCPUMode: "exclusive"}},
		Spec: v1.PodSpec{Containers: []v1.Container{{Name: "main", Resources: v1.ResourceRequirements{
			Limits: v1.ResourceList{v1.ResourceCPU: *resource.NewQuantity(8, resource.DecimalSI)}}}}}}
	body, err := json.Marshal(extenderv1.ExtenderArgs{Pod: pod, NodeNames: &names})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for _, path := range []string{"/filter", "/prioritize"} {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body)))
			if rec.Code != 200 {
				b.Fatal(rec.Body.String())
			}
		}
	}
}
