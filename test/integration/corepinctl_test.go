//go:build integration

package integration

import (
	"context"
	"os"
	"os/exec"
	"regexp"
	"testing"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/corepin/corepin/api"
	"github.com/corepin/corepin/test/integration/framework"
)

// corepinctl node and nodes read a real API server: Nodes with topology
// annotations and pods with alloc-status, listed by field selector.
func TestCorepinctlNode(t *testing.T) {
	bin := framework.BuildBinary(t, t.TempDir(), "./cmd/corepinctl")
	cp := framework.StartControlPlane(t)
	ctx := context.Background()
	// 1 socket, 2 cores x 2 threads: core c has CPUs c and c+2; CPU 0 reserved.
	topo := `{"version":1,"cpus":[{"id":0,"core":0,"socket":0,"numa":0,"l3":0},{"id":1,"core":1,"socket":0,"numa":0,"l3":0},` +
		`{"id":2,"core":0,"socket":0,"numa":0,"l3":0},{"id":3,"core":1,"socket":0,"numa":0,"l3":0}],"reserved":"0"}`
	cp.CreateNode(t, "node-a", 4, map[string]string{api.AnnotationTopology: topo})
	cp.CreateNode(t, "node-b", 4, nil)
	db := framework.ExclusivePod("db", "2", api.AnnotationAllocStatus,
		`{"node":"node-a","cpus":"1,3","containers":{"engine":"1,3"},"mems":"0"}`)
	db.Spec.NodeName = "node-a"
	web := framework.NewPod("web", framework.PodOpts{CPU: "500m"})
	web.Spec.NodeName = "node-a"
	elsewhere := framework.NewPod("elsewhere", framework.PodOpts{CPU: "1"})
	elsewhere.Spec.NodeName = "node-b"
	for _, pod := range []*v1.Pod{db, web, elsewhere} {
		if _, err := cp.Client.CoreV1().Pods("default").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}

	run := func(env []string, args ...string) string {
		t.Helper()
		cmd := exec.Command(bin, args...)
		cmd.Env = append(os.Environ(), env...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("corepinctl %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	// P = 3, E = 2, S = 0.5: limit = min(floor(2/3*3)=2, 3-2*0.5=2, 3-ceil(0.25)=2) = 2.
	out := run(nil, "node", "node-a", "--kubeconfig", cp.Kubeconfig)
	for _, re := range []string{
		`(?m)^  CPUs online +0-3 \(4\)$`,
		`(?m)^  Reserved +0 \(1\)$`,
		`(?m)^  Shared pool +2 \(1\)$`,
		`(?m)^  Exclusive +limit 2, used 2, by 1 pod$`,
		`(?m)^socket 0\n  numa 0\n    core 0  cpu 0  reserved\n            cpu 2  shared\n    core 1  cpu 1  exclusive  default/db \(engine\)\n            cpu 3  exclusive  default/db \(engine\)$`,
	} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("corepinctl node output does not match %q:\n%s", re, out)
		}
	}
	if regexp.MustCompile(`elsewhere|\x1b\[`).MatchString(out) {
		t.Errorf("another node's pod, or colour on a pipe:\n%s", out)
	}
	// $KUBECONFIG resolves as for kubectl.
	out = run([]string{"KUBECONFIG=" + cp.Kubeconfig}, "nodes")
	for _, re := range []string{
		`(?m)^node-a +4 +1 +2 +2 +1 +1 +-$`,
		`(?m)^node-b +- +- +0 +0 +0 +0 +no corepin.io/topology annotation`,
	} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("corepinctl nodes output does not match %q:\n%s", re, out)
		}
	}
}
