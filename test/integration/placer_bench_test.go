//go:build integration

package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/cpuset"

	"github.com/corepin/corepin/test/integration/framework"
)

// BenchmarkPlacerThroughAPIServers measures placements per second through
// corepin-placer end to end: two real API servers as two member clusters of
// 1,000 empty 64-CPU nodes each (Node objects with a corepin.io/topology
// annotation, no kubelets), the real corepin-extender per cluster and the
// corepin-placer binary over both, as TestReservationPlacer runs them.
// Each iteration POSTs a new CPUReservation (one 8-CPU exclusive container)
// to /v1/placements and requires 201 with 8 CPUs for the container; its
// time covers the placer's decision, the create in the chosen cluster, that
// cluster's extender placing it and writing its status, and the placer
// seeing it Reserved. Placements are sent one at a time, or
// COREPIN_PLACER_CLIENTS at once. It reports placements/s and the p50 and
// p99 latency of one placement.
//
//	go test -c -tags integration -o /tmp/pb.test ./test/integration/ && cd test/integration &&
//	  /tmp/pb.test -test.run '^$' -test.bench BenchmarkPlacerThroughAPIServers -test.benchtime 100x
func BenchmarkPlacerThroughAPIServers(b *testing.B) {
	const nodesPerCluster, reservationCPUs = 1000, 8
	names := []string{"a", "b"}
	cps := map[string]*framework.ControlPlane{}
	for _, name := range names {
		cp := framework.StartControlPlane(b)
		cp.ApplyReservationCRD(b)
		cps[name] = cp
	}
	start := time.Now()
	workqueue.ParallelizeUntil(context.Background(), 32, len(names)*nodesPerCluster, func(piece int) {
		cluster := names[piece/nodesPerCluster]
		cps[cluster].CreateNodes(b, "1s-vm-64", nil, fmt.Sprintf("%s-node-%04d", cluster, piece%nodesPerCluster))
	})
	if b.Failed() {
		b.FailNow()
	}
	b.Logf("created %d nodes in each of %d clusters in %s", nodesPerCluster, len(names), time.Since(start).Round(time.Millisecond))

	start = time.Now()
	args := []string{}
	for _, name := range names {
		// The extender at the deployed verbosity (deploy/base runs it without -v).
		cps[name].StartExtender(b, "-v", "0")
		args = append(args, "--cluster", name+"="+cps[name].Kubeconfig)
	}
	port := framework.FreePort(b)
	url := fmt.Sprintf("http://127.0.0.1:%d", port)
	p := framework.Start(b, cps["a"].Dir, "corepin-placer", framework.RepoBinary(b, "corepin-placer"),
		append(args, "--listen", fmt.Sprintf("127.0.0.1:%d", port), "--wait", "30s", "-v", "0")...)
	framework.WaitServing(b, p, http.DefaultClient, url+"/readyz", 120*time.Second)
	b.Logf("extenders and placer ready in %s", time.Since(start).Round(time.Millisecond))

	place := func(name string) error {
		body := fmt.Sprintf(`{"apiVersion":"corepin.io/v1alpha1","kind":"CPUReservation","metadata":{"namespace":"default","name":%q},
"spec":{"template":{"metadata":{"annotations":{"corepin.io/cpu-mode":"exclusive"}},
"spec":{"containers":[{"name":"engine","resources":{"limits":{"cpu":"%d"}}}]}}}}`, name, reservationCPUs)
		resp, err := http.Post(url+"/v1/placements", "application/json", strings.NewReader(body))
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		data, err := io.ReadAll(resp.Body)
		if err != nil {
			return err
		}
		var got struct {
			Cluster, Namespace, Name, Node, CPUs string
			Containers                           map[string]string
		}
		if resp.StatusCode != http.StatusCreated {
			return fmt.Errorf("%s: %s %s", name, resp.Status, data)
		}
		if err := json.Unmarshal(data, &got); err != nil {
			return fmt.Errorf("%s: answer %q: %v", name, data, err)
		}
		cpus, err := cpuset.Parse(got.CPUs)
		if err != nil || cpus.Size() != reservationCPUs || got.Containers["engine"] != got.CPUs ||
			cps[got.Cluster] == nil || got.Name != name || got.Namespace != "default" ||
			!strings.HasPrefix(got.Node, got.Cluster+"-node-") {
			return fmt.Errorf("%s: answer %s, want %d CPUs for engine on a node of its cluster", name, data, reservationCPUs)
		}
		return nil
	}

	// COREPIN_PLACER_CLIENTS=N: each iteration sends N placements at once
	// (N×b.N in all); 1 by default.
	clients := 1
	if v := os.Getenv("COREPIN_PLACER_CLIENTS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			b.Fatalf("COREPIN_PLACER_CLIENTS=%q", v)
		}
		clients = n
	}
	var latencies []time.Duration
	// b.Loop runs this function once (the setup above is not repeated)
	// and times only the loop.
	i := 0
	for b.Loop() {
		took := make([]time.Duration, clients)
		errs := make([]error, clients)
		var wg sync.WaitGroup
		for c := range clients {
			wg.Add(1)
			go func(name string) {
				defer wg.Done()
				t0 := time.Now()
				errs[c] = place(name)
				took[c] = time.Since(t0)
			}(fmt.Sprintf("bench-%06d", i))
			i++
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				b.Fatal(err)
			}
		}
		latencies = append(latencies, took...)
	}
	b.StopTimer()
	elapsed := b.Elapsed()
	slices.Sort(latencies)
	quantile := func(q float64) time.Duration { return latencies[int(q*float64(len(latencies)-1))] }
	b.ReportMetric(float64(len(latencies))/elapsed.Seconds(), "placements/s")
	b.ReportMetric(float64(quantile(0.50))/float64(time.Millisecond), "p50-ms")
	b.ReportMetric(float64(quantile(0.99))/float64(time.Millisecond), "p99-ms")
	b.Logf("%d placements (%d at a time) in %s: p50 %s, p99 %s, max %s", len(latencies), clients, elapsed.Round(time.Millisecond),
		quantile(0.50).Round(time.Microsecond), quantile(0.99).Round(time.Microsecond), latencies[len(latencies)-1].Round(time.Microsecond))
}
