package extender

import (
	"fmt"
	"runtime"
	"sort"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

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

// benchPod is a pod as the informer's transform leaves it.
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
	out, _ := Transform(p)
	return out.(*v1.Pod)
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

// BenchmarkCacheMemory measures the steady-state memory of the cache at
// 5,000 256-CPU nodes and 150,000 pods: the Scheduler's state plus the
// transformed pod objects an informer store would hold. Targets: 16 KiB
// per node, 2 KiB per pod.
func BenchmarkCacheMemory(b *testing.B) {
	for i := 0; i < b.N; i++ {
		before := heapInUse()
		s, names, _ := populate(b, 5000, 0)
		afterNodes := heapInUse()
		var pods []*v1.Pod
		for n, name := range names {
			for j := 0; j < 30; j++ {
				status := ""
				if j%3 == 0 {
					first := 2 + (j/3)*4
					status = fmt.Sprintf(`{"node":%q,"cpus":"%d-%d","containers":{"main":"%d-%d"},"mems":"0"}`, name, first, first+3, first, first+3)
				}
				p := benchPod(n*30+j, name, status)
				if err := s.UpsertPod(p); err != nil {
					b.Fatal(err)
				}
				pods = append(pods, p)
			}
		}
		afterPods := heapInUse()
		b.ReportMetric(float64(afterNodes-before)/5000, "B/node")
		b.ReportMetric(float64(afterPods-afterNodes)/float64(len(pods)), "B/pod")
		runtime.KeepAlive(s)
		runtime.KeepAlive(pods)
	}
}
