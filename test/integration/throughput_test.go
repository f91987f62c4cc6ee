//go:build integration

package integration

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/corepin/corepin/api"
	"github.com/corepin/corepin/test/integration/framework"
)

// BenchmarkSchedulerThroughput measures the real kube-scheduler's
// throughput on one 1,000-node cluster of Node objects, in one run: the
// stock default-scheduler, then a second kube-scheduler whose profile
// "corepin-scheduler" calls corepin-extender, on the same pods (shared),
// then exclusive pods through corepin. It reports pods/s of each and the
// ratio corepin/default (target at least 0.8).
//
//	go test -tags integration -run '^$' -bench SchedulerThroughput -benchtime 1x ./test/integration/
func BenchmarkSchedulerThroughput(b *testing.B) {
	const nodes, pods = 1000, 300
	cp := framework.StartControlPlane(b)
	c := cp.Client
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for i := 0; i < nodes; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func(i int) {
			defer wg.Done()
			defer func() { <-sem }()
			cp.CreateNode(b, fmt.Sprintf("node-%04d", i), 8, map[string]string{api.AnnotationTopology: flatTopology(8)})
		}(i)
	}
	wg.Wait()
	extPort := framework.FreePort(b)
	startExtender(b, cp, extPort)
	cp.StartScheduler(b, "default-scheduler", "", nil)
	cp.StartScheduler(b, "corepin-scheduler", "corepin-scheduler", &framework.SchedulerExtender{
		URL: fmt.Sprintf("http://127.0.0.1:%d", extPort), HTTPTimeout: 30 * time.Second})
	time.Sleep(5 * time.Second) // both schedulers list the 1,000 nodes

	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		base := measure(b, c, fmt.Sprintf("default-%d", i), pods, "", nil)
		withCorepin := measure(b, c, fmt.Sprintf("shared-%d", i), pods, "corepin-scheduler", nil)
		excl := measure(b, c, fmt.Sprintf("excl-%d", i), pods, "corepin-scheduler", exclusive())
		b.ReportMetric(base, "default-pods/s")
		b.ReportMetric(withCorepin, "corepin-shared-pods/s")
		b.ReportMetric(excl, "corepin-exclusive-pods/s")
		b.ReportMetric(withCorepin/base, "ratio-shared")
		b.ReportMetric(excl/base, "ratio-exclusive")
	}
}

// measure creates n pods at once and returns how many per second were bound.
func measure(b *testing.B, c kubernetes.Interface, prefix string, n int, schedulerName string, annotations map[string]string) float64 {
	ctx := context.Background()
	start := time.Now()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for i := 0; i < n; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func(i int) {
			defer wg.Done()
			defer func() { <-sem }()
			cpu := "100m"
			if annotations != nil {
				cpu = "1"
			}
			p := newPod(fmt.Sprintf("%s-%03d", prefix, i), podOpts{cpu: cpu, annotations: annotations})
			p.Spec.SchedulerName = schedulerName
			if _, err := c.CoreV1().Pods("default").Create(ctx, p, metav1.CreateOptions{}); err != nil {
				b.Error(err)
			}
		}(i)
	}
	wg.Wait()
	framework.Eventually(b, 10*time.Minute, prefix+" pods bound", func() (bool, error) {
		list, err := c.CoreV1().Pods("default").List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		bound := 0
		for _, p := range list.Items {
			if len(p.Name) > len(prefix) && p.Name[:len(prefix)+1] == prefix+"-" && p.Spec.NodeName != "" {
				bound++
			}
		}
		return bound == n, fmt.Errorf("%d of %d bound", bound, n)
	})
	return float64(n) / time.Since(start).Seconds()
}
