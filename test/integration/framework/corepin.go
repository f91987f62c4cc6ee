package framework

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/yaml"
)

// WaitServing waits until url answers 200 through client, failing the
// test with the end of p's log if p exits first.
func WaitServing(t testing.TB, p *Process, client *http.Client, url string, timeout time.Duration) {
	t.Helper()
	Eventually(t, timeout, p.Name+" "+url, func() (bool, error) {
		if exited, err := p.Exited(); exited {
			t.Fatalf("%s exited: %v\n%s", p.Name, err, Tail(p.Log, 30))
		}
		resp, err := client.Get(url)
		if err != nil {
			return false, err
		}
		resp.Body.Close()
		return resp.StatusCode == 200, fmt.Errorf("status %d", resp.StatusCode)
	})
}

// Extender is the corepin-extender binary serving plain HTTP on a loopback
// port of its own, over a control plane.
type Extender struct {
	*Process
	Port int
	// URL is http://127.0.0.1:Port.
	URL string
	cp  *ControlPlane
}

// StartExtender runs corepin-extender over cp (-v 2, then extraArgs) on a
// free port and waits until it is ready.
func (cp *ControlPlane) StartExtender(t testing.TB, extraArgs ...string) *Extender {
	t.Helper()
	port := FreePort(t)
	e := &Extender{Port: port, URL: fmt.Sprintf("http://127.0.0.1:%d", port), cp: cp}
	e.Start(t, extraArgs...)
	return e
}

// Start runs the extender again on its port (after Stop), with extraArgs,
// and waits until it is ready.
func (e *Extender) Start(t testing.TB, extraArgs ...string) {
	t.Helper()
	args := append([]string{"--kubeconfig", e.cp.Kubeconfig, "--listen", fmt.Sprintf("127.0.0.1:%d", e.Port), "-v", "2"}, extraArgs...)
	e.Process = Start(t, e.cp.Dir, fmt.Sprintf("corepin-extender-%d", time.Now().UnixNano()), RepoBinary(t, "corepin-extender"), args...)
	WaitServing(t, e.Process, http.DefaultClient, e.URL+"/readyz", 60*time.Second)
}

// Verbs is kube-scheduler's extender entry for e: filter, prioritize and
// bind over HTTP, 10 s for each call.
func (e *Extender) Verbs() *SchedulerExtender {
	return &SchedulerExtender{URL: e.URL, HTTPTimeout: 10 * time.Second}
}

var crdGVR = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

// ApplyReservationCRD creates the CPUReservation CRD exactly as deploy/
// ships it and waits until the API server serves it.
func (cp *ControlPlane) ApplyReservationCRD(t testing.TB) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(RepoRoot(), "deploy", "base", "cpureservation-crd.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var obj map[string]any
	if err := yaml.Unmarshal(data, &obj); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := cp.Dynamic.Resource(crdGVR).Create(ctx, &unstructured.Unstructured{Object: obj}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("the API server refuses deploy/base/cpureservation-crd.yaml: %v", err)
	}
	Eventually(t, 30*time.Second, "CRD established", func() (bool, error) {
		u, err := cp.Dynamic.Resource(crdGVR).Get(ctx, "cpureservations.corepin.io", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
		for _, c := range conds {
			m := c.(map[string]any)
			if m["type"] == "Established" && m["status"] == "True" {
				return true, nil
			}
		}
		return false, fmt.Errorf("conditions %v", conds)
	})
}

// PluginNode is the node every corepin-nri of these tests runs as.
const PluginNode = "node-a"

// StartPlugin runs corepin-nri on c's NRI socket as node-a (a kubelet root
// of its own, then extraArgs) and waits for its first Synchronize.
func (c *Containerd) StartPlugin(t testing.TB, extraArgs ...string) *Process {
	t.Helper()
	args := append([]string{"--nri-socket", c.NRISocket, "--node-name", PluginNode, "--kubelet-root", t.TempDir()}, extraArgs...)
	p := Start(t, c.Dir, fmt.Sprintf("corepin-nri-%d", time.Now().UnixNano()), RepoBinary(t, "corepin-nri"), args...)
	Eventually(t, 30*time.Second, "corepin-nri connected", func() (bool, error) {
		if exited, err := p.Exited(); exited {
			t.Fatalf("corepin-nri exited: %v\n%s", err, Tail(p.Log, 20))
		}
		return strings.Contains(Tail(p.Log, 50), "Synchronized"), nil
	})
	return p
}
