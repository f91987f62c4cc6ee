package extender

import (
	"encoding/json"
	"fmt"
	"runtime"
	"sort"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"

	"github.com/corepin/corepin/api"
)

// serverTopology is a 2-socket x 64-core x 2-thread node (256 CPUs, 4 NUMA
// nodes), as the contract's annotation.
func serverTopology() string {
	var b strings.Builder
	b.WriteString(`{"version":1,"cpus":[`)
	for t := 0; t < 2; t++ {
		for c := 0; c < 128; c++ {
			if t+c > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, `{"id":%d,"core":%d,"socket":%d,"numa":%d,"l3":%d}`, c+128*t, c, c/64, c/32, c/32)
		}
	}
	b.WriteString(`],"reserved":"0-1,128-129"}`)
	return b.String()
}

// benchPod is a pod as the engine reads it.
func benchPod(i int, node string, status string) *v1.Pod {
	p := &v1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: fmt.Sprintf("pod-%06d", i),
		Labels: map[string]string{"app": fmt.Sprintf("app-%d", i%50)}, Annotations: map[string]string{}},
		Spec: v1.PodSpec{NodeName: node, Containers: []v1.Container{{Name: "main", Resources: v1.ResourceRequirements{
			Limits: v1.ResourceList{v1.ResourceCPU: *resource.NewMilliQuantity(500, resource.DecimalSI)}}}}}}
	if status != "" {
		p.Annotations[api.AnnotationCPUMode] = "exclusive"
		p.Annotations[api.AnnotationAllocStatus] = status
		p.Spec.Containers[0].Resources.Limits[v1.ResourceCPU] = *resource.NewQuantity(4, resource.DecimalSI)
	}
	return p
}

// populate builds a scheduler with n 256-CPU nodes and podsPerNode pods on
// each: every third pod exclusive with 4 CPUs, the rest shared 500m.
func populate(tb testing.TB, n, podsPerNode int) (*Scheduler, []string, []*v1.Pod) {
	s, err := NewScheduler(api.Config{})
	if err != nil {
		tb.Fatal(err)
	}
	topo := serverTopology()
	names := make([]string, n)
	var pods []*v1.Pod
	for i := range names {
		names[i] = fmt.Sprintf("node-%05d", i)
		s.UpsertNode(&v1.Node{ObjectMeta: metav1.ObjectMeta{Name: names[i], Annotations: map[string]string{api.AnnotationTopology: topo}}})
		for j := 0; j < podsPerNode; j++ {
			status := ""
			if j%3 == 0 {
				first := 2 + (j/3)*4
				status = fmt.Sprintf(`{"node":%q,"cpus":"%d-%d","containers":{"main":"%d-%d"},"mems":"0"}`, names[i], first, first+3, first, first+3)
			}
			p := benchPod(i*podsPerNode+j, names[i], status)
			if err := s.UpsertPod(p); err != nil {
				tb.Fatal(err)
			}
			pods = append(pods, p)
		}
	}
	return s, names, pods
}

func benchmarkFilterPrioritize(b *testing.B, nodes int) {
	s, names, _ := populate(b, nodes, 30)
	pod := &v1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "incoming",
		Annotations: map[string]string{api.AnnotationCPUMode: "exclusive"}},
		Spec: v1.PodSpec{Containers: []v1.Container{{Name: "main", Resources: v1.ResourceRequirements{
			Limits: v1.ResourceList{v1.ResourceCPU: *resource.NewQuantity(8, resource.DecimalSI)}}}}}}
	runtime.GC() // the setup's garbage is not the steady state
	durations := make([]time.Duration, 0, b.N)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		fits, _, err := s.Filter(pod, names)
		if err != nil || len(fits) == 0 {
			b.Fatalf("filter: %v, %d fit", err, len(fits))
		}
		if _, err := s.Prioritize(pod, fits); err != nil {
			b.Fatal(err)
		}
		durations = append(durations, time.Since(start))
	}
	b.StopTimer()
	sort.Slice(durations, func(i, j int) bool { return durations[i] < durations[j] })
	b.ReportMetric(float64(durations[len(durations)*99/100].Microseconds()), "p99-µs")
}

// Target: p99 at most 5 ms per pod at 5,000 nodes.
func BenchmarkFilterPrioritize1000Nodes(b *testing.B) { benchmarkFilterPrioritize(b, 1000) }
func BenchmarkFilterPrioritize5000Nodes(b *testing.B) { benchmarkFilterPrioritize(b, 5000) }

func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// decoded returns obj as an informer receives it from the API server:
// decoded from JSON, so it shares no string with any other object.
func decoded[T any](tb testing.TB, obj *T) *T {
	data, err := json.Marshal(obj)
	if err != nil {
		tb.Fatal(err)
	}
	out := new(T)
	if err := json.Unmarshal(data, out); err != nil {
		tb.Fatal(err)
	}
	return out
}

// apiNode is a 256-CPU node as kube-apiserver serves it: the usual labels,
// annotations, status and images besides corepin's topology.
func apiNode(tb testing.TB, name, topology string) *v1.Node {
	n := &v1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, UID: types.UID(fmt.Sprintf("8d5e1a2c-0000-4000-8000-%012d", len(name)+len(topology))),
			ResourceVersion: "123456",
			Labels: map[string]string{"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
				"node.kubernetes.io/instance-type": "metal-256", "topology.kubernetes.io/zone": "zone-a"},
			Annotations: map[string]string{api.AnnotationTopology: topology, "node.alpha.kubernetes.io/ttl": "0",
				"volumes.kubernetes.io/controller-managed-attach-detach": "true"}},
		Status: v1.NodeStatus{
			Capacity:    v1.ResourceList{v1.ResourceCPU: resource.MustParse("256"), v1.ResourceMemory: resource.MustParse("1Ti")},
			Allocatable: v1.ResourceList{v1.ResourceCPU: resource.MustParse("252"), v1.ResourceMemory: resource.MustParse("1000Gi")},
			Conditions:  []v1.NodeCondition{{Type: v1.NodeReady, Status: v1.ConditionTrue, Reason: "KubeletReady", Message: "kubelet is posting ready status"}},
			Addresses:   []v1.NodeAddress{{Type: v1.NodeInternalIP, Address: "10.0.0.1"}, {Type: v1.NodeHostName, Address: name}},
			NodeInfo:    v1.NodeSystemInfo{KubeletVersion: "v1.34.4", OSImage: "Debian GNU/Linux 13", ContainerRuntimeVersion: "containerd://2.4.2"},
			Images:      []v1.ContainerImage{{Names: []string{"registry.example/postgres@sha256:0123456789abcdef", "registry.example/postgres:17"}, SizeBytes: 150 << 20}},
		},
	}
	return decoded(tb, n)
}

func ptrTo[T any](v T) *T { return &v }

// apiPod is a Deployment's pod as kube-apiserver serves it once it runs:
// generated name, labels, owner, a priority class (admission sets
// spec.priority from it), a container with image, env, requests and
// limits, and a status with conditions.
func apiPod(tb testing.TB, i int, node, status string) *v1.Pod {
	app := fmt.Sprintf("app-%d", i%50)
	p := &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: fmt.Sprintf("team-%d", i%20), Name: fmt.Sprintf("%s-7d9f8c6b5-%05d", app, i),
			GenerateName: app + "-7d9f8c6b5-", UID: types.UID(fmt.Sprintf("5f0c2a1e-0000-4000-8000-%012d", i)), ResourceVersion: fmt.Sprint(1000000 + i),
			Labels:          map[string]string{"app": app, "pod-template-hash": "7d9f8c6b5", "tier": "backend"},
			Annotations:     map[string]string{"kubectl.kubernetes.io/restartedAt": "2026-01-01T00:00:00Z"},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: app + "-7d9f8c6b5", UID: "0a1b2c3d-0000-4000-8000-000000000000"}}},
		Spec: v1.PodSpec{NodeName: node, ServiceAccountName: "default", PriorityClassName: "tier-" + fmt.Sprint(i%3), Priority: ptrTo(int32(i%3) * 1000),
			Containers: []v1.Container{{Name: "main", Image: "registry.example/" + app + ":1.2.3",
				Env: []v1.EnvVar{{Name: "LOG_LEVEL", Value: "info"}},
				Resources: v1.ResourceRequirements{
					Requests: v1.ResourceList{v1.ResourceCPU: *resource.NewMilliQuantity(500, resource.DecimalSI), v1.ResourceMemory: resource.MustParse("1Gi")},
					Limits:   v1.ResourceList{v1.ResourceCPU: *resource.NewMilliQuantity(500, resource.DecimalSI), v1.ResourceMemory: resource.MustParse("1Gi")}}}}},
		Status: v1.PodStatus{Phase: v1.PodRunning, PodIP: "10.1.2.3", HostIP: "10.0.0.1", QOSClass: v1.PodQOSGuaranteed,
			Conditions: []v1.PodCondition{{Type: v1.PodReady, Status: v1.ConditionTrue}, {Type: v1.PodScheduled, Status: v1.ConditionTrue}}},
	}
	if status != "" {
		p.Annotations[api.AnnotationCPUMode] = "exclusive"
		p.Annotations[api.AnnotationAllocStatus] = status
		four := *resource.NewQuantity(4, resource.DecimalSI)
		p.Spec.Containers[0].Resources.Limits[v1.ResourceCPU] = four
		p.Spec.Containers[0].Resources.Requests[v1.ResourceCPU] = four
	}
	return decoded(tb, p)
}

// BenchmarkCacheMemory measures the steady-state memory of the cache at
// 5,000 256-CPU nodes and 150,000 pods (30 per node, every third exclusive
// with 4 CPUs): everything retained, that is the informer stores (the
// transformed objects and the stores' keys, built as NewCache builds them)
// plus the Scheduler. Objects arrive as the API server sends them (full,
// decoded from JSON) and go through Transform and the informer handlers'
// path into the Scheduler. Targets: 16 KiB per node, 2 KiB per pod.
func BenchmarkCacheMemory(b *testing.B) {
	topo := serverTopology()
	for i := 0; i < b.N; i++ {
		before := heapInUse()
		s, err := NewScheduler(api.Config{})
		if err != nil {
			b.Fatal(err)
		}
		nodeStore := cache.NewIndexer(cache.DeletionHandlingMetaNamespaceKeyFunc, cache.Indexers{})
		podStore := cache.NewIndexer(cache.DeletionHandlingMetaNamespaceKeyFunc, cache.Indexers{})
		names := make([]string, 5000)
		for n := range names {
			names[n] = fmt.Sprintf("node-%05d", n)
			obj, _ := Transform(apiNode(b, names[n], topo))
			if err := nodeStore.Add(obj); err != nil {
				b.Fatal(err)
			}
			s.UpsertNode(obj.(*v1.Node))
		}
		afterNodes := heapInUse()
		for n, name := range names {
			for j := 0; j < 30; j++ {
				status := ""
				if j%3 == 0 {
					first := 2 + (j/3)*4
					status = fmt.Sprintf(`{"node":%q,"cpus":"%d-%d","containers":{"main":"%d-%d"},"mems":"0"}`, name, first, first+3, first, first+3)
				}
				obj, _ := Transform(apiPod(b, n*30+j, name, status))
				if err := podStore.Add(obj); err != nil {
					b.Fatal(err)
				}
				if err := s.UpsertPod(obj.(*PodRecord).Pod()); err != nil {
					b.Fatal(err)
				}
			}
		}
		afterPods := heapInUse()
		if nodes, pods := s.Counts(); nodes != 5000 || pods != 150000 || len(podStore.ListKeys()) != 150000 {
			b.Fatalf("%d nodes, %d pods placed", nodes, pods)
		}
		b.ReportMetric(float64(afterNodes-before)/5000, "B/node")
		b.ReportMetric(float64(afterPods-afterNodes)/150000, "B/pod")
		runtime.KeepAlive(s)
		runtime.KeepAlive(nodeStore)
		runtime.KeepAlive(podStore)
	}
}
