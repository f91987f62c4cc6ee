//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/corepin/corepin/test/integration/framework"
)

// TestAnotherCPUSetWriter runs a second NRI plugin that sets every
// container's cpuset (test/integration/cpusetwriter, index 20) on a node
// next to corepin-nri. The kubelet's CreateContainer of a new pod there
// fails with NRI's message naming both plugins, the pod's status says so,
// and corepin-nri records a CorepinCPUSetConflict event on the node naming
// the other plugin and the pod. Once the other plugin is gone the
// kubelet's retry starts the pod.
func TestAnotherCPUSetWriter(t *testing.T) {
	c := connect(t)
	ctx := context.Background()
	bin := filepath.Join(t.TempDir(), "cpusetwriter")
	build := exec.Command("go", "build", "-trimpath", "-o", bin, "./test/integration/cpusetwriter")
	build.Dir, build.Env = c.repo, append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building cpusetwriter: %v\n%s", err, out)
	}
	node := c.workers(t)[0]
	args := []string{"--nri-socket", "/var/run/nri/nri.sock", "--plugin-index", "20", "--cpus", "0"}
	var stop func()
	if onKind() {
		docker(t, "cp", bin, node+":/usr/local/bin/cpusetwriter")
		docker(t, "exec", "-d", node, "sh", "-c", "cpusetwriter "+strings.Join(args, " ")+" >/var/log/cpusetwriter.log 2>&1 & echo $! >/run/cpusetwriter.pid")
		stop = func() {
			_, _ = exec.Command("docker", "exec", node, "sh", "-c", "kill $(cat /run/cpusetwriter.pid)").CombinedOutput()
		}
	} else {
		w := framework.Start(t, t.TempDir(), "cpusetwriter", bin, args...)
		stop = w.Stop
	}
	t.Cleanup(stop)

	pod := testPod("cpuset-conflict", "cpuset-conflict", "100m", nil)
	pod.Spec.NodeName = node // the point is the node, not the scheduler
	c.create(t, pod)
	t.Cleanup(func() { c.deleteAll(t) })
	var msg string
	framework.Eventually(t, 120*time.Second, "the pod's CreateContainerError", func() (bool, error) {
		for _, s := range c.get(t, pod.Name).Status.ContainerStatuses {
			if w := s.State.Waiting; w != nil && w.Reason == "CreateContainerError" {
				msg = w.Message
				return true, nil
			}
		}
		return false, fmt.Errorf("statuses %+v", c.get(t, pod.Name).Status.ContainerStatuses)
	})
	if want := `plugins "20-cpuset-writer" and "10-corepin" both tried to set CPUSetCPUs`; !strings.Contains(msg, want) {
		t.Fatalf("kubelet's message %q, want it to contain %q", msg, want)
	}
	t.Logf("kubelet: %s", msg)
	want := `NRI plugin "20-cpuset-writer" also sets CPUSetCPUs of pod default/cpuset-conflict container engine, which 10-corepin pins`
	framework.Eventually(t, 60*time.Second, "CorepinCPUSetConflict on "+node, func() (bool, error) {
		events, err := c.client.CoreV1().Events("").List(ctx, metav1.ListOptions{FieldSelector: "reason=CorepinCPUSetConflict"})
		if err != nil {
			return false, err
		}
		for _, e := range events.Items {
			if e.InvolvedObject.Kind == "Node" && e.InvolvedObject.Name == node && e.Type == v1.EventTypeWarning && strings.HasPrefix(e.Message, want) {
				t.Logf("event: %s", e.Message)
				return true, nil
			}
		}
		return false, fmt.Errorf("%d CorepinCPUSetConflict events, none %q on %s", len(events.Items), want, node)
	})
	stop()
	c.waitRunning(t, pod.Name)
}
