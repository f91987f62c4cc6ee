//go:build integration

package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/status"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/cpuset"

	"github.com/corepin/corepin/api"
	"github.com/corepin/corepin/test/integration/framework"
)

// coreOf reads a CPU's physical core (package and core id) from sysfs.
func coreOf(t *testing.T, cpu int) string {
	t.Helper()
	dir := fmt.Sprintf("/sys/devices/system/cpu/cpu%d/topology", cpu)
	pkg, err1 := os.ReadFile(filepath.Join(dir, "physical_package_id"))
	core, err2 := os.ReadFile(filepath.Join(dir, "core_id"))
	if err1 != nil || err2 != nil {
		t.Skipf("CPU %d's topology: %v %v", cpu, err1, err2)
	}
	return strings.TrimSpace(string(pkg)) + "/" + strings.TrimSpace(string(core))
}

// TestPluginRefusesFewerIOQueues: corepin-nri reads the node's IO queues
// from /proc (here a generated one: one NIC queue, eth0-rx-0, whose IRQ
// goes to a CPU on another core than CPU 0). A 1-CPU ioQueueSpread pod
// placed on CPU 0 covers no queue while the queue's CPU is free: the engine
// guarantees one, so containerd refuses the container with corepin's
// reason naming the queue. Placed on the queue's CPU, it runs there.
func TestPluginRefusesFewerIOQueues(t *testing.T) {
	n := framework.SplitHostCPUs(t).N
	queueCPU := -1
	for c := n - 1; c > 0; c-- {
		if coreOf(t, c) != coreOf(t, 0) {
			queueCPU = c
			break
		}
	}
	if queueCPU < 0 {
		t.Skip("every CPU shares CPU 0's core")
	}
	proc := t.TempDir()
	header := ""
	for c := 0; c < n; c++ {
		header += fmt.Sprintf("       CPU%d", c)
	}
	interrupts := header + "\n 90:" + strings.Repeat("          0", n) + "  PCI-MSIX-0000:00:03.0   1-edge      eth0-rx-0\n"
	if err := os.WriteFile(filepath.Join(proc, "interrupts"), []byte(interrupts), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(proc, "irq", "90"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(proc, "irq", "90", "effective_affinity_list"), []byte(strconv.Itoa(queueCPU)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ctrd := framework.StartContainerd(t)
	plugin := ctrd.StartPlugin(t, "--proc-root", proc)

	queued := func(cpus cpuset.CPUSet) map[string]string {
		a := framework.AllocStatusFor(cpus)
		a[api.AnnotationAllocSpec] = `{"ioQueueSpread": true}`
		return a
	}
	id, cfg := ctrd.RunPod(t, "default", "nic-0", queued(cpuset.New(0)))
	_, err := ctrd.CreateContainer(id, cfg, "engine", 1000)
	want := `corepin: pod default/nic-0 container engine cpus "0": ioQueueSpread: CPUs 0 serve 0 IO queue(s) of this node [], ` +
		`the engine guarantees 1 here (1 picks, queues [eth0-rx-0] on CPUs free for the pod)`
	if err == nil || !strings.Contains(status.Convert(err).Message(), want) {
		t.Fatalf("CRI CreateContainer: %v, want an error with %q\n%s", err, want, framework.Tail(plugin.Log, 20))
	}
	if !strings.Contains(framework.Tail(plugin.Log, 50), `msg="Refused container" pod=default/nic-0 container=engine cpus=0`) {
		t.Fatalf("no refusal log line:\n%s", framework.Tail(plugin.Log, 20))
	}
	ctrd.RemovePod(t, id)

	on := cpuset.New(queueCPU)
	id, cfg = ctrd.RunPod(t, "default", "nic-1", queued(on))
	c, err := ctrd.CreateContainer(id, cfg, "engine", 1000)
	if err != nil {
		t.Fatalf("the pod on the queue's CPU %d was refused: %v", queueCPU, err)
	}
	ctrd.StartContainer(t, c)
	if got := ctrd.ExecStatus(t, c); !got.Allowed.Equals(on) {
		t.Fatalf("the pod on the queue's CPU runs on %s, want %s", got.Allowed, on)
	}
}

// TestAnotherCPUSetWriter runs corepin-nri (index 10) and a second NRI
// plugin that also sets every container's cpuset (index 20) on a real
// containerd, with a real kube-apiserver. containerd refuses the container
// with NRI's message naming both plugins; the test, acting for the kubelet,
// writes that message into the pod's status (CreateContainerError), and
// corepin-nri reports it: a log line and a CorepinCPUSetConflict event on
// the node, both naming the other plugin and the pod. containerd undoes
// the refused creation through NRI, so the exclusive CPU it was pinned to
// is free for another pod once the other plugin is gone.
func TestAnotherCPUSetWriter(t *testing.T) {
	host := framework.SplitHostCPUs(t)
	ctx := context.Background()
	exclusiveCPU := host.Exclusive
	writerBin := framework.BuildBinary(t, t.TempDir(), "github.com/corepin/corepin/test/integration/cpusetwriter")
	cp := framework.StartControlPlane(t)
	cp.CreateNode(t, "node-a", host.N, nil)
	ctrd := framework.StartContainerd(t)
	plugin := ctrd.StartPlugin(t, "--kubeconfig", cp.Kubeconfig, "--drift-interval", "0")
	writer := framework.Start(t, ctrd.Dir, "cpusetwriter", writerBin, "--nri-socket", ctrd.NRISocket, "--plugin-index", "20", "--cpus", "0")
	framework.Eventually(t, 30*time.Second, "cpusetwriter connected", func() (bool, error) {
		if exited, err := writer.Exited(); exited {
			t.Fatalf("cpusetwriter exited: %v\n%s", err, framework.Tail(writer.Log, 20))
		}
		return strings.Contains(framework.Tail(ctrd.Process.Log, 200), `plugin \"20-cpuset-writer\" connected`), nil
	})

	annotations := framework.AllocStatusFor(exclusiveCPU)
	created := cp.CreatePod(t, framework.BoundPod("db", "1", annotations))
	id, cfg := ctrd.RunPodUID(t, "default", "db", string(created.UID), annotations)
	_, err := ctrd.CreateContainer(id, cfg, "engine", 1000)
	msg := status.Convert(err).Message()
	if want := `plugins "20-cpuset-writer" and "10-corepin" both tried to set CPUSetCPUs`; err == nil || !strings.Contains(msg, want) {
		t.Fatalf("CRI CreateContainer with two cpuset writers: %v, want an error with %q", err, want)
	}
	t.Logf("CRI error: %s", msg)

	// What the kubelet writes after a failed CreateContainer.
	created.Status.ContainerStatuses = []v1.ContainerStatus{{Name: "engine", Image: framework.WorkloadImage,
		State: v1.ContainerState{Waiting: &v1.ContainerStateWaiting{Reason: "CreateContainerError", Message: msg}}}}
	if _, err := cp.Client.CoreV1().Pods("default").UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	line := `msg="Another NRI plugin sets the containers' CPUs: containerd refuses to create the container" plugin=20-cpuset-writer field=CPUSetCPUs pod=default/db container=engine`
	framework.Eventually(t, 20*time.Second, "corepin-nri's log line", func() (bool, error) {
		return strings.Contains(framework.Tail(plugin.Log, 100), line), fmt.Errorf("log:\n%s", framework.Tail(plugin.Log, 10))
	})
	wantEvent := `NRI plugin "20-cpuset-writer" also sets CPUSetCPUs of pod default/db container engine, which 10-corepin pins`
	framework.Eventually(t, 20*time.Second, "CorepinCPUSetConflict event on the node", func() (bool, error) {
		events, err := cp.Client.CoreV1().Events("").List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.kind=Node,involvedObject.name=node-a"})
		if err != nil {
			return false, err
		}
		var seen []string
		for _, e := range events.Items {
			if e.Reason == "CorepinCPUSetConflict" && e.Type == v1.EventTypeWarning && strings.HasPrefix(e.Message, wantEvent) {
				return true, nil
			}
			seen = append(seen, e.Reason+": "+e.Message)
		}
		return false, fmt.Errorf("node events: %v", seen)
	})

	// Without the other plugin, the CPU the refused container was pinned
	// to is free for another pod: containerd's undo reached corepin-nri.
	writer.Stop()
	id2, cfg2 := ctrd.RunPod(t, "default", "db-2", annotations)
	framework.Eventually(t, 30*time.Second, "another pod on that CPU once the other plugin is gone", func() (bool, error) {
		c, err := ctrd.CreateContainer(id2, cfg2, "engine", 1000)
		if err != nil {
			return false, err
		}
		ctrd.StartContainer(t, c)
		got := ctrd.ExecStatus(t, c)
		return got.Allowed.Equals(exclusiveCPU), fmt.Errorf("the container runs on %s", got.Allowed)
	})
}
