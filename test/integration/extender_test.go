//go:build integration

package integration

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/cpuset"

	"github.com/corepin/corepin/api"
	"github.com/corepin/corepin/internal/testpki"
	"github.com/corepin/corepin/test/integration/framework"
)

// invariantChecker watches every pod and checks, at every event, that no
// CPU is held by two pods on a node and no node is over its exclusive
// limit, and that no pod is ever seen bound without its alloc-status.
type invariantChecker struct {
	limit      int
	mu         sync.Mutex
	violations []string
	events     int
}

func watchInvariants(t testing.TB, c kubernetes.Interface, limit int) *invariantChecker {
	ic := &invariantChecker{limit: limit}
	f := informers.NewSharedInformerFactory(c, 0)
	inf := f.Core().V1().Pods().Informer()
	check := func(obj any) {
		ic.mu.Lock()
		defer ic.mu.Unlock()
		ic.events++
		if p, ok := obj.(*v1.Pod); ok && p.Spec.NodeName != "" && p.Annotations[api.AnnotationCPUMode] == "exclusive" &&
			p.Annotations[api.AnnotationAllocStatus] == "" {
			ic.violations = append(ic.violations, fmt.Sprintf("pod %s bound to %s without alloc-status", p.Name, p.Spec.NodeName))
		}
		held := map[string]cpuset.CPUSet{}
		for _, o := range inf.GetStore().List() {
			p := o.(*v1.Pod)
			st, err := api.ParseAllocStatus(p.Annotations[api.AnnotationAllocStatus])
			if err != nil {
				continue
			}
			cur, ok := held[st.Node]
			if !ok {
				cur = cpuset.New()
			}
			if overlap := cur.Intersection(st.CPUs.Set()); !overlap.IsEmpty() {
				ic.violations = append(ic.violations, fmt.Sprintf("node %s: CPUs %s held twice (pod %s)", st.Node, overlap, p.Name))
			}
			held[st.Node] = cur.Union(st.CPUs.Set())
			if held[st.Node].Size() > ic.limit {
				ic.violations = append(ic.violations, fmt.Sprintf("node %s: %d exclusive CPUs, limit %d", st.Node, held[st.Node].Size(), ic.limit))
			}
		}
	}
	_, _ = inf.AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: check, UpdateFunc: func(_, o any) { check(o) }, DeleteFunc: check})
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	f.Start(ctx.Done())
	cache.WaitForCacheSync(ctx.Done(), inf.HasSynced)
	return ic
}

func (ic *invariantChecker) assert(t testing.TB) {
	t.Helper()
	ic.mu.Lock()
	defer ic.mu.Unlock()
	if len(ic.violations) > 0 {
		t.Fatalf("%d invariant violations over %d events, first: %v", len(ic.violations), ic.events, ic.violations[:min(5, len(ic.violations))])
	}
	if ic.events == 0 {
		t.Fatal("the invariant checker saw no event")
	}
}

// TestExtender runs corepin-extender behind a real kube-scheduler and API
// server with two 8-CPU nodes (exclusive limit floor(2/3*8) = 5 each).
func TestExtender(t *testing.T) {
	cp := framework.StartControlPlane(t)
	c := cp.Client
	cp.CreateNodes(t, "1s-vm", nil, "node-a", "node-b")
	ext := cp.StartExtender(t)
	cp.StartScheduler(t, "kube-scheduler", "", ext.Verbs())
	checker := watchInvariants(t, c, 5)
	ctx := context.Background()

	t.Run("exclusive pods land with alloc-status written before binding", func(t *testing.T) {
		cp.CreatePod(t, framework.ExclusivePod("db-0", "4"))
		cp.CreatePod(t, framework.ExclusivePod("db-1", "4"))
		a, b := cp.WaitScheduled(t, "db-0"), cp.WaitScheduled(t, "db-1")
		sa, sb := framework.AllocStatus(t, a), framework.AllocStatus(t, b)
		if sa.Node != a.Spec.NodeName || sb.Node != b.Spec.NodeName || sa.CPUs.Size() != 4 || sb.CPUs.Size() != 4 {
			t.Fatalf("alloc-status %v on %s, %v on %s", sa, a.Spec.NodeName, sb, b.Spec.NodeName)
		}
		// 4 + 4 > 5: the capacity formula sends them to different nodes.
		if a.Spec.NodeName == b.Spec.NodeName {
			t.Fatalf("both 4-CPU pods on %s, over its exclusive limit of 5", a.Spec.NodeName)
		}
	})

	t.Run("an unschedulable pod's event carries the extender's reason", func(t *testing.T) {
		cp.CreatePod(t, framework.ExclusivePod("db-big", "2"))
		cp.WaitFailedScheduling(t, "db-big", "exclusive limit 5 reached (needs 2, holds 4)")
		cp.CreatePod(t, framework.ExclusivePod("bad-spec", "1", api.AnnotationAllocSpec, `{"cpu":"Packed"}`))
		cp.WaitFailedScheduling(t, "bad-spec", `must be SameCoreFirst, Spread or BindAllCPUs (got "Packed")`)
	})

	t.Run("max-per-node holds", func(t *testing.T) {
		opts := framework.PodOpts{CPU: "100m", Annotations: map[string]string{api.AnnotationMaxPerNode: "1"}, Labels: map[string]string{"app": "cache"}}
		cp.CreatePod(t, framework.NewPod("cache-0", opts))
		cp.CreatePod(t, framework.NewPod("cache-1", opts))
		p0, p1 := cp.WaitScheduled(t, "cache-0"), cp.WaitScheduled(t, "cache-1")
		if p0.Spec.NodeName == p1.Spec.NodeName {
			t.Fatalf("two cache pods on %s with max-per-node 1", p0.Spec.NodeName)
		}
		cp.CreatePod(t, framework.NewPod("cache-2", opts))
		cp.WaitFailedScheduling(t, "cache-2", `max-per-node 1 reached for app "cache"`)
	})

	t.Run("restarting the extender loses nothing", func(t *testing.T) {
		ext.Stop()
		if err := c.CoreV1().Pods("default").Delete(ctx, "db-big", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		cp.CreatePod(t, framework.ExclusivePod("db-2", "1"))
		cp.CreatePod(t, framework.ExclusivePod("db-3", "1"))
		ext.Start(t)
		p2, p3 := cp.WaitScheduled(t, "db-2"), cp.WaitScheduled(t, "db-3")
		// Each node now holds 4 + 1: the restarted extender rebuilt the first
		// pods' CPUs from their annotations and placed around them.
		for _, p := range []*v1.Pod{p2, p3} {
			st := framework.AllocStatus(t, p)
			for _, old := range []string{"db-0", "db-1"} {
				o, _ := c.CoreV1().Pods("default").Get(ctx, old, metav1.GetOptions{})
				if so := framework.AllocStatus(t, o); so.Node == st.Node && !so.CPUs.Intersection(st.CPUs.Set()).IsEmpty() {
					t.Fatalf("%s got CPUs %s of %s after the restart", p.Name, st.CPUs, old)
				}
			}
		}
		if p2.Spec.NodeName == p3.Spec.NodeName {
			t.Fatalf("db-2 and db-3 both on %s: 4+1+1 > 5", p2.Spec.NodeName)
		}
	})
	checker.assert(t)
}

// TestAllocStatusWrites follows every version of two exclusive pods through
// a watch: bound by the default extender, the pod carries alloc-status
// before it has a node (a PATCH, then the Binding; contract section 2);
// bound by an extender run with --alloc-status-in-binding, the annotation
// arrives in the very write that sets the node (the API server copies the
// Binding's annotations onto the pod). In neither case is a pod ever seen
// bound without its CPUs.
func TestAllocStatusWrites(t *testing.T) {
	cp := framework.StartControlPlane(t)
	c := cp.Client
	cp.CreateNodes(t, "1s-vm", nil, "node-a")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w, err := c.CoreV1().Pods("default").Watch(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	ext := cp.StartExtender(t)
	cp.StartScheduler(t, "kube-scheduler", "", ext.Verbs())

	// firstWithStatus reads the watch until the pod is seen with alloc-status
	// and returns that version, failing if any version is bound without it.
	firstWithStatus := func(name string) *v1.Pod {
		t.Helper()
		timeout := time.After(60 * time.Second)
		for {
			select {
			case ev, ok := <-w.ResultChan():
				if !ok {
					t.Fatal("the pod watch closed")
				}
				p, ok := ev.Object.(*v1.Pod)
				if !ok || p.Name != name {
					continue
				}
				if p.Annotations[api.AnnotationAllocStatus] != "" {
					return p
				}
				if p.Spec.NodeName != "" {
					t.Fatalf("pod %s seen bound to %s without alloc-status", name, p.Spec.NodeName)
				}
			case <-timeout:
				t.Fatalf("pod %s never seen with alloc-status", name)
			}
		}
	}
	cp.CreatePod(t, framework.ExclusivePod("patched", "2"))
	if p := firstWithStatus("patched"); p.Spec.NodeName != "" {
		t.Fatalf("default extender: alloc-status first seen together with node %s, want a PATCH before the Binding", p.Spec.NodeName)
	}
	if st := framework.AllocStatus(t, cp.WaitScheduled(t, "patched")); st.Node != "node-a" || st.CPUs.Size() != 2 {
		t.Fatalf("patched: alloc-status %+v", st)
	}

	ext.Stop()
	ext.Start(t, "--alloc-status-in-binding")
	cp.CreatePod(t, framework.ExclusivePod("in-binding", "2"))
	p := firstWithStatus("in-binding")
	if p.Spec.NodeName != "node-a" {
		t.Fatalf("--alloc-status-in-binding: alloc-status first seen on node %q, want it in the write that binds to node-a", p.Spec.NodeName)
	}
	st, other := framework.AllocStatus(t, p), framework.AllocStatus(t, cp.WaitScheduled(t, "patched"))
	if st.Node != "node-a" || st.CPUs.Size() != 2 || !st.CPUs.Intersection(other.CPUs.Set()).IsEmpty() {
		t.Fatalf("in-binding: alloc-status %+v next to %+v", st, other)
	}
}

// TestExtenderChurn creates and deletes 300 exclusive pods concurrently
// over 20 nodes while an invariant checker watches every intermediate state.
func TestExtenderChurn(t *testing.T) {
	cp := framework.StartControlPlane(t)
	c := cp.Client
	const nodes, pods, workers = 20, 300, 30
	for i := 0; i < nodes; i++ {
		cp.CreateNodes(t, "1s-vm", nil, fmt.Sprintf("node-%02d", i))
	}
	cp.StartScheduler(t, "kube-scheduler", "", cp.StartExtender(t).Verbs())
	checker := watchInvariants(t, c, 5)
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, pods)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := w; i < pods; i += workers {
				name := fmt.Sprintf("churn-%03d", i)
				cpus := fmt.Sprint(1 + i%3)
				if _, err := c.CoreV1().Pods("default").Create(ctx, framework.ExclusivePod(name, cpus), metav1.CreateOptions{}); err != nil {
					errs <- err
					return
				}
				deadline := time.Now().Add(2 * time.Minute)
				for {
					p, err := c.CoreV1().Pods("default").Get(ctx, name, metav1.GetOptions{})
					if err == nil && p.Spec.NodeName != "" {
						break
					}
					if time.Now().After(deadline) {
						errs <- fmt.Errorf("%s not scheduled in 2 minutes", name)
						return
					}
					time.Sleep(50 * time.Millisecond)
				}
				if err := c.CoreV1().Pods("default").Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: new(int64)}); err != nil {
					errs <- err
					return
				}
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	checker.assert(t)
	t.Logf("churn: %d pods over %d nodes, %d pod events checked", pods, nodes, checker.events)
}

// TestExtenderTLS runs kube-scheduler against corepin-extender over HTTPS
// with mutual TLS (the extender's tls: certFile, keyFile, clientCAFile),
// with certificates made here: kube-scheduler verifies the extender's
// serving certificate and presents its own, and a client without a
// certificate from the configured client CA gets nothing.
func TestExtenderTLS(t *testing.T) {
	cp := framework.StartControlPlane(t)
	cp.CreateNodes(t, "1s-vm", nil, "node-a")

	serverCA, schedulerCA, otherCA := testpki.NewCA(t, "extender CA"), testpki.NewCA(t, "kube-scheduler CA"), testpki.NewCA(t, "another CA")
	file := func(name string, data []byte) string {
		path := filepath.Join(cp.Dir, name)
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	serverCert, serverKey := serverCA.Issue(t, "corepin-extender", x509.ExtKeyUsageServerAuth, net.IPv4(127, 0, 0, 1))
	schedCert, schedKey := schedulerCA.Issue(t, "kube-scheduler", x509.ExtKeyUsageClientAuth)
	strangerCert, strangerKey := otherCA.Issue(t, "kube-scheduler", x509.ExtKeyUsageClientAuth)
	config := file("extender.yaml", fmt.Appendf(nil, "tls:\n  certFile: %s\n  keyFile: %s\n  clientCAFile: %s\n",
		file("tls.crt", serverCert), file("tls.key", serverKey), file("scheduler-ca.crt", schedulerCA.CertPEM)))
	sched := &framework.ExtenderTLS{CAFile: file("extender-ca.crt", serverCA.CertPEM),
		CertFile: file("scheduler.crt", schedCert), KeyFile: file("scheduler.key", schedKey)}

	// client is an HTTPS client that trusts the extender's CA and presents
	// the given certificate, if any.
	client := func(certPEM, keyPEM []byte) *http.Client {
		roots := x509.NewCertPool()
		roots.AddCert(serverCA.Cert)
		cfg := &tls.Config{RootCAs: roots}
		if certPEM != nil {
			pair, err := tls.X509KeyPair(certPEM, keyPEM)
			if err != nil {
				t.Fatal(err)
			}
			cfg.Certificates = []tls.Certificate{pair}
		}
		return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg}}
	}
	port := framework.FreePort(t)
	base := fmt.Sprintf("https://127.0.0.1:%d", port)
	ext := framework.Start(t, cp.Dir, "corepin-extender", framework.RepoBinary(t, "corepin-extender"),
		"--kubeconfig", cp.Kubeconfig, "--config", config, "--listen", fmt.Sprintf("127.0.0.1:%d", port), "-v", "2")
	trusted := client(schedCert, schedKey)
	framework.WaitServing(t, ext, trusted, base+"/readyz", 60*time.Second)

	t.Run("clients without a certificate from the client CA are refused", func(t *testing.T) {
		body := `{"pod":{"metadata":{"name":"x","namespace":"default"}},"nodenames":["node-a"]}`
		for name, cl := range map[string]*http.Client{
			"no client certificate":                client(nil, nil),
			"a certificate from another authority": client(strangerCert, strangerKey),
		} {
			resp, err := cl.Post(base+"/filter", "application/json", strings.NewReader(body))
			if err == nil {
				resp.Body.Close()
				t.Fatalf("%s: POST /filter got %s, want the TLS handshake refused", name, resp.Status)
			}
			if !strings.Contains(err.Error(), "certificate") {
				t.Fatalf("%s: error %v does not name the certificate", name, err)
			}
		}
		// Plain HTTP on the HTTPS port gets nothing from the extender either.
		resp, err := http.Post(fmt.Sprintf("http://127.0.0.1:%d/filter", port), "application/json", strings.NewReader(body))
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode != http.StatusBadRequest {
				t.Fatalf("plain HTTP: %s", resp.Status)
			}
		}
	})

	t.Run("kube-scheduler binds an exclusive pod through the extender over HTTPS", func(t *testing.T) {
		cp.StartScheduler(t, "kube-scheduler", "", &framework.SchedulerExtender{URL: base, HTTPTimeout: 10 * time.Second, TLS: sched})
		cp.CreatePod(t, framework.ExclusivePod("db-tls", "2"))
		// Only the extender writes alloc-status, at bind: the pod went
		// through filter, prioritize and bind over mutual TLS.
		pod := cp.WaitScheduled(t, "db-tls")
		if st := framework.AllocStatus(t, pod); st.Node != "node-a" || st.CPUs.Size() != 2 {
			t.Fatalf("alloc-status %+v", st)
		}
	})
}
