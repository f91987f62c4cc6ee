package extender

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	extenderv1 "k8s.io/kube-scheduler/extender/v1"

	"github.com/corepin/corepin/api"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/record"
)

// BenchmarkHTTPFilterPrioritize1000Nodes is one pod's two extender calls
// as kube-scheduler makes them (JSON both ways, the whole pending pod as
// kube-scheduler's informer holds it), on 1,000 nodes.
func BenchmarkHTTPFilterPrioritize1000Nodes(b *testing.B) {
	s, names, _ := populate(b, 1000, 30)
	srv := &Server{Sched: s, Client: fake.NewClientset()}
	h := srv.Handler()
	pod := pendingAPIPod(b)
	body, err := json.Marshal(extenderv1.ExtenderArgs{Pod: pod, NodeNames: &names})
	if err != nil {
		b.Fatal(err)
	}
	filterAndPrioritize(b, h, body)
}

// filterAndPrioritize times b.N rounds of kube-scheduler's two calls for
// one pod.
func filterAndPrioritize(b *testing.B, h http.Handler, body []byte) {
	b.Helper()
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

// pendingAPIPod is an 8-CPU exclusive pod of a StatefulSet as kube-scheduler
// sends it to an extender: the whole object, with managed fields, env and
// the Pending status of a pod not yet scheduled.
func pendingAPIPod(tb testing.TB) *v1.Pod {
	eight := *resource.NewQuantity(8, resource.DecimalSI)
	mem := resource.MustParse("32Gi")
	pod := &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "databases", Name: "orders-db-3", GenerateName: "orders-db-",
			UID: "5f0c2a1e-1111-4000-8000-000000000003", ResourceVersion: "48213377", CreationTimestamp: metav1.Now(),
			Labels: map[string]string{"app": "orders-db", "apps.kubernetes.io/pod-index": "3", "controller-revision-hash": "orders-db-6b7c9d",
				"statefulset.kubernetes.io/pod-name": "orders-db-3"},
			Annotations: map[string]string{api.AnnotationCPUMode: "exclusive",
				api.AnnotationAllocSpec: `{"cpu":"SameCoreFirst","numa":"Preferred"}`},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "StatefulSet", Name: "orders-db", UID: "0a1b2c3d-0000-4000-8000-000000000000"}},
			ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kube-controller-manager", Operation: metav1.ManagedFieldsOperationUpdate,
				APIVersion: "v1", FieldsType: "FieldsV1", FieldsV1: metav1.NewFieldsV1(`{"f:metadata":{"f:annotations":{".":{},"f:corepin.io/alloc-spec":{},"f:corepin.io/cpu-mode":{}},"f:generateName":{},"f:labels":{".":{},"f:app":{},"f:apps.kubernetes.io/pod-index":{},"f:controller-revision-hash":{},"f:statefulset.kubernetes.io/pod-name":{}},"f:ownerReferences":{".":{},"k:{\"uid\":\"0a1b2c3d-0000-4000-8000-000000000000\"}":{}}},"f:spec":{"f:containers":{"k:{\"name\":\"engine\"}":{".":{},"f:env":{".":{},"k:{\"name\":\"PGDATA\"}":{".":{},"f:name":{},"f:value":{}}},"f:image":{},"f:imagePullPolicy":{},"f:name":{},"f:resources":{".":{},"f:limits":{".":{},"f:cpu":{},"f:memory":{}},"f:requests":{".":{},"f:cpu":{},"f:memory":{}}}}}}}`)}},
		},
		Spec: v1.PodSpec{ServiceAccountName: "default", SchedulerName: "corepin-scheduler", RestartPolicy: v1.RestartPolicyAlways,
			Hostname: "orders-db-3", Subdomain: "orders-db",
			Containers: []v1.Container{{Name: "engine", Image: "registry.example/postgres:17", ImagePullPolicy: v1.PullIfNotPresent,
				Env: []v1.EnvVar{{Name: "PGDATA", Value: "/var/lib/postgresql/data/pgdata"}},
				VolumeMounts: []v1.VolumeMount{{Name: "data", MountPath: "/var/lib/postgresql/data"},
					{Name: "kube-api-access-x7k2p", MountPath: "/var/run/secrets/kubernetes.io/serviceaccount", ReadOnly: true}},
				TerminationMessagePath: "/dev/termination-log", TerminationMessagePolicy: v1.TerminationMessageReadFile,
				Resources: v1.ResourceRequirements{Limits: v1.ResourceList{v1.ResourceCPU: eight, v1.ResourceMemory: mem},
					Requests: v1.ResourceList{v1.ResourceCPU: eight, v1.ResourceMemory: mem}}}},
			Volumes: []v1.Volume{{Name: "data", VolumeSource: v1.VolumeSource{PersistentVolumeClaim: &v1.PersistentVolumeClaimVolumeSource{ClaimName: "data-orders-db-3"}}}},
			Tolerations: []v1.Toleration{{Key: "node.kubernetes.io/not-ready", Operator: v1.TolerationOpExists, Effect: v1.TaintEffectNoExecute},
				{Key: "node.kubernetes.io/unreachable", Operator: v1.TolerationOpExists, Effect: v1.TaintEffectNoExecute}},
		},
		Status: v1.PodStatus{Phase: v1.PodPending, QOSClass: v1.PodQOSGuaranteed},
	}
	return decoded(tb, pod)
}

// BenchmarkHTTPFilterPrioritizeRejections1000Nodes is the same with the
// server configured as corepin-extender runs it (readiness gate, metrics)
// and 500 more nodes that filter rejects (unknown to the cache), without
// and with pod events: with them, every filter queues a
// CorepinNodesRejected summary for the worker, which deduplicates it after
// the first. The difference is the cost of events on the request path
// (plus the worker's competition for the CPUs).
func BenchmarkHTTPFilterPrioritizeRejections1000Nodes(b *testing.B) {
	s, names, _ := populate(b, 1000, 30)
	for i := 0; i < 500; i++ {
		names = append(names, fmt.Sprintf("ghost-%05d", i))
	}
	body, err := json.Marshal(extenderv1.ExtenderArgs{Pod: pendingAPIPod(b), NodeNames: &names})
	if err != nil {
		b.Fatal(err)
	}
	for _, events := range []bool{false, true} {
		b.Run(fmt.Sprintf("events=%v", events), func(b *testing.B) {
			metrics := NewMetrics(s)
			srv := &Server{Sched: s, Client: fake.NewClientset(), Metrics: metrics, Ready: func() bool { return true }}
			if events {
				srv.Events = NewPodEvents(&record.FakeRecorder{}, metrics, PodEventsConfig{})
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				go srv.RunEvents(ctx)
			}
			filterAndPrioritize(b, srv.Handler(), body)
		})
	}
}
