//go:build integration

package integration

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"

	"github.com/corepin/corepin/test/integration/framework"
)

// BenchmarkSchedulerThroughput measures the real kube-scheduler's
// throughput on one 1,000-node cluster of Node objects, in one run: the
// stock default-scheduler; a second kube-scheduler, profile
// "null-scheduler", that calls the null extender (test/integration/
// nullextender: configured like corepin's, it keeps every node, scores none
// and binds), on the same pods; a third, profile "corepin-scheduler", that
// calls corepin-extender, on the same pods (shared); then exclusive pods
// through corepin. It reports pods/s of each, the ratio corepin/default
// (target at least 0.8), null/default (the extender protocol's own cost,
// the floor under any extender) and corepin shared/null (what corepin costs
// on top of the protocol). It logs, per row, the CPU time each process used
// per pod, since they all share the machine, and the API requests per pod.
// With COREPIN_PROFILE_DIR set, it saves a CPU profile of corepin-extender
// during each corepin row there. With COREPIN_ALLOC_STATUS_IN_BINDING=1 the
// extender runs with --alloc-status-in-binding (one API write per exclusive
// pod instead of a PATCH and a Binding).
//
//	go test -tags integration -run '^$' -bench SchedulerThroughput -benchtime 3x ./test/integration/
func BenchmarkSchedulerThroughput(b *testing.B) {
	const nodes, pods = 1000, 300
	nullBin := framework.BuildBinary(b, b.TempDir(), "github.com/corepin/corepin/test/integration/nullextender")
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
			cp.CreateNodes(b, "1s-vm", nil, fmt.Sprintf("node-%04d", i))
		}(i)
	}
	wg.Wait()
	// The extender logs at the deployed verbosity (deploy/base runs it
	// without -v): at -v 2 it logs every shared pod's bind, which the
	// deployed extender does not.
	extArgs := []string{"--profiling", "-v", "0"}
	if os.Getenv("COREPIN_ALLOC_STATUS_IN_BINDING") == "1" {
		extArgs = append(extArgs, "--alloc-status-in-binding")
	}
	ext := cp.StartExtender(b, extArgs...)
	nullPort := framework.FreePort(b)
	nullExt := startNullExtender(b, cp, nullBin, nullPort)
	defaultSched := cp.StartScheduler(b, "default-scheduler", "", nil)
	nullSched := cp.StartScheduler(b, "null-scheduler", "null-scheduler", &framework.SchedulerExtender{
		URL: fmt.Sprintf("http://127.0.0.1:%d", nullPort), HTTPTimeout: 30 * time.Second})
	corepinSched := cp.StartScheduler(b, "corepin-scheduler", "corepin-scheduler", &framework.SchedulerExtender{
		URL: ext.URL, HTTPTimeout: 30 * time.Second})
	time.Sleep(5 * time.Second) // the schedulers list the 1,000 nodes

	procs := []*framework.Process{cp.Etcd, cp.APIServer, defaultSched, nullSched, corepinSched, ext.Process, nullExt}
	// What the idle cluster burns per second, to tell it from the rows' work.
	idleStart := cpuTimes(b, procs)
	time.Sleep(5 * time.Second)
	var idle strings.Builder
	for j, after := range cpuTimes(b, procs) {
		fmt.Fprintf(&idle, " %s %.0f", procs[j].Name, float64(after-idleStart[j])/float64(time.Millisecond)/5)
	}
	b.Logf("idle: CPU ms per second:%s", idle.String())
	row := func(prefix, schedulerName string, annotations map[string]string) float64 {
		before := cpuTimes(b, procs)
		requestsBefore := apiRequests(b, c)
		if dir := os.Getenv("COREPIN_PROFILE_DIR"); dir != "" && schedulerName == "corepin-scheduler" {
			defer profileExtender(b, ext.Port, filepath.Join(dir, prefix+".pprof"))()
		}
		rate := measure(b, c, prefix, pods, schedulerName, annotations)
		var report strings.Builder
		for j, after := range cpuTimes(b, procs) {
			fmt.Fprintf(&report, " %s %.1f", procs[j].Name, float64(after-before[j])/float64(time.Millisecond)/pods)
		}
		b.Logf("%s: %.0f pods/s; CPU ms per pod:%s", prefix, rate, report.String())
		b.Logf("%s: API requests per pod:%s", prefix, requestsPerPod(requestsBefore, apiRequests(b, c), pods))
		deleteRow(b, c, prefix)
		return rate
	}

	// Rows alternate within each round and the rates are taken over all
	// rounds (pods over seconds), so a burst of load from elsewhere on the
	// machine falls on every row alike: -benchtime 3x for three rounds.
	var seconds [4]float64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		seconds[0] += pods / row(fmt.Sprintf("default-%d", i), "", nil)
		seconds[1] += pods / row(fmt.Sprintf("null-%d", i), "null-scheduler", nil)
		seconds[2] += pods / row(fmt.Sprintf("shared-%d", i), "corepin-scheduler", nil)
		seconds[3] += pods / row(fmt.Sprintf("excl-%d", i), "corepin-scheduler", framework.Exclusive())
	}
	total := float64(pods * b.N)
	base, null, withCorepin, excl := total/seconds[0], total/seconds[1], total/seconds[2], total/seconds[3]
	b.ReportMetric(base, "default-pods/s")
	b.ReportMetric(null, "null-pods/s")
	b.ReportMetric(withCorepin, "corepin-shared-pods/s")
	b.ReportMetric(excl, "corepin-exclusive-pods/s")
	b.ReportMetric(null/base, "ratio-null")
	b.ReportMetric(withCorepin/base, "ratio-shared")
	b.ReportMetric(excl/base, "ratio-exclusive")
	b.ReportMetric(withCorepin/null, "ratio-shared-to-null")
}

// startNullExtender runs the null extender and waits until it serves.
func startNullExtender(b *testing.B, cp *framework.ControlPlane, bin string, port int) *framework.Process {
	b.Helper()
	p := framework.Start(b, cp.Dir, "nullextender", bin, "--kubeconfig", cp.Kubeconfig, "--listen", fmt.Sprintf("127.0.0.1:%d", port))
	framework.WaitServing(b, p, http.DefaultClient, fmt.Sprintf("http://127.0.0.1:%d/healthz", port), 30*time.Second)
	return p
}

func cpuTimes(b *testing.B, procs []*framework.Process) []time.Duration {
	out := make([]time.Duration, len(procs))
	for i, p := range procs {
		var err error
		if out[i], err = p.CPUTime(); err != nil {
			b.Fatal(err)
		}
	}
	return out
}

// apiRequests reads the API server's request counters by verb and resource
// (apiserver_request_total), to show what each row asked of it.
func apiRequests(b *testing.B, c kubernetes.Interface) map[string]float64 {
	raw, err := c.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(context.Background())
	if err != nil {
		b.Fatalf("API server metrics: %v", err)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(bytes.NewReader(raw))
	if err != nil {
		b.Fatalf("API server metrics: %v", err)
	}
	out := map[string]float64{}
	if f := families["apiserver_request_total"]; f != nil {
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			key := labels["verb"] + " " + labels["resource"]
			if sub := labels["subresource"]; sub != "" {
				key += "/" + sub
			}
			out[key] += m.GetCounter().GetValue()
		}
	}
	return out
}

// requestsPerPod prints the counters that grew, per pod, sorted.
func requestsPerPod(before, after map[string]float64, pods int) string {
	var out strings.Builder
	for _, key := range slices.Sorted(maps.Keys(after)) {
		if d := after[key] - before[key]; d > 0 {
			fmt.Fprintf(&out, " %s %.2f;", key, d/float64(pods))
		}
	}
	return out.String()
}

// profileExtender starts a 5-second CPU profile of the extender (about one
// row's length) and returns a function that waits for it and saves it.
func profileExtender(b *testing.B, port int, path string) func() {
	done := make(chan error, 1)
	go func() {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/profile?seconds=5", port))
		if err != nil {
			done <- err
			return
		}
		defer resp.Body.Close()
		data, err := io.ReadAll(resp.Body)
		if err == nil {
			err = os.WriteFile(path, data, 0o644)
		}
		done <- err
	}()
	return func() {
		if err := <-done; err != nil {
			b.Errorf("extender profile: %v", err)
		}
	}
}

// measure creates n pods at once and returns how many per second were bound.
func measure(b *testing.B, c kubernetes.Interface, prefix string, n int, schedulerName string, annotations map[string]string) float64 {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	// The row's pods are followed with one watch opened before they exist:
	// polling with lists cost the API server more the longer a row took,
	// which loaded the slower rows' figures with the measurement itself.
	// A watch the API server closes early is reopened after a list.
	boundPods := metav1.ListOptions{LabelSelector: "row=" + prefix, FieldSelector: "spec.nodeName!="}
	w, err := c.CoreV1().Pods("default").Watch(ctx, boundPods)
	if err != nil {
		b.Fatal(err)
	}
	defer func() { w.Stop() }()
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
			p := framework.NewPod(fmt.Sprintf("%s-%03d", prefix, i), framework.PodOpts{CPU: cpu, Annotations: annotations, Labels: map[string]string{"row": prefix}})
			p.Spec.SchedulerName = schedulerName
			if _, err := c.CoreV1().Pods("default").Create(ctx, p, metav1.CreateOptions{}); err != nil {
				b.Error(err)
			}
		}(i)
	}
	wg.Wait()
	bound := map[string]bool{}
	for len(bound) < n {
		select {
		case ev, ok := <-w.ResultChan():
			if !ok {
				list, err := c.CoreV1().Pods("default").List(ctx, boundPods)
				if err != nil {
					b.Fatal(err)
				}
				for _, pod := range list.Items {
					bound[pod.Name] = true
				}
				reopen := boundPods
				reopen.ResourceVersion = list.ResourceVersion
				if w, err = c.CoreV1().Pods("default").Watch(ctx, reopen); err != nil {
					b.Fatal(err)
				}
				continue
			}
			if pod, isPod := ev.Object.(*v1.Pod); isPod && ev.Type != watch.Deleted && pod.Spec.NodeName != "" {
				bound[pod.Name] = true
			}
		case <-ctx.Done():
			b.Fatalf("%s: %d of %d pods bound after 10 minutes", prefix, len(bound), n)
		}
	}
	return float64(n) / time.Since(start).Seconds()
}

// deleteRow removes a row's pods, so that every row starts from the same
// cluster, and waits until the schedulers and the extender have seen it.
func deleteRow(b *testing.B, c kubernetes.Interface, prefix string) {
	ctx := context.Background()
	rowPods := metav1.ListOptions{LabelSelector: "row=" + prefix}
	zero := int64(0)
	if err := c.CoreV1().Pods("default").DeleteCollection(ctx, metav1.DeleteOptions{GracePeriodSeconds: &zero}, rowPods); err != nil {
		b.Fatal(err)
	}
	framework.Eventually(b, 2*time.Minute, prefix+" pods deleted", func() (bool, error) {
		list, err := c.CoreV1().Pods("default").List(ctx, rowPods)
		if err != nil {
			return false, err
		}
		return len(list.Items) == 0, fmt.Errorf("%d left", len(list.Items))
	})
	time.Sleep(2 * time.Second)
}
