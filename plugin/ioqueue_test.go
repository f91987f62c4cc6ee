package plugin

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/containerd/nri/pkg/adaptation"
	"github.com/containerd/nri/pkg/api"
	"github.com/containerd/nri/pkg/stub"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc/status"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/cpuset"

	corepin "github.com/corepin/corepin/api"
	"github.com/corepin/corepin/policy"
)

// queuedPlugin is newTestPlugin's node (CPUs 0-7, one thread a core, 0
// reserved, no exclusive limit) whose own discovery found four NIC queues on CPUs 1-4; its log
// goes to the returned buffer.
func queuedPlugin(t *testing.T) (*Plugin, *bytes.Buffer) {
	t.Helper()
	src := corepin.Topology{Version: 1, Reserved: corepin.NewCPUList(cpuset.New(0))}
	for i := 0; i < 8; i++ {
		src.CPUs = append(src.CPUs, corepin.CPUInfo{ID: i, Core: i})
	}
	for i, name := range []string{"eth0-rx-0", "eth0-rx-1", "eth0-rx-2", "eth0-rx-3"} {
		src.IOQueues = append(src.IOQueues, corepin.IOQueue{Name: name, CPUs: corepin.NewCPUList(cpuset.New(i + 1))})
	}
	topo, err := policy.NewTopology(src)
	if err != nil {
		t.Fatal(err)
	}
	var log bytes.Buffer
	// Every CPU may be exclusive but the shared pod's: the test fills the node.
	limits := corepin.Limits{MaxExclusiveRatio: 1, SharedOvercommit: 2}
	cfg := Config{NodeName: "node-a", SystemNamespaces: []string{"kube-system"}, Limits: limits}
	return New(NewLedger(cfg, topo), slog.New(slog.NewTextHandler(&log, nil)), nil), &log
}

// queuePod is an exclusive ioQueueSpread pod placed on cpus.
func queuePod(id, name, cpus string) *api.PodSandbox {
	sb := exclusivePod(id, name, cpus)
	sb.Uid = "uid-" + name
	sb.Annotations[corepin.AnnotationAllocSpec] = `{"ioQueueSpread": true}`
	return sb
}

// queuedOverNRI connects queuedPlugin to NRI's runtime side, as containerd
// embeds it, with a fake event recorder, and returns once the plugin is
// registered (a shared pod default/web, container c-web, pinned on 1-7).
// create creates a container through the runtime.
func queuedOverNRI(t *testing.T) (p *Plugin, log *bytes.Buffer, events *record.FakeRecorder, runtime *adaptation.Adaptation,
	create func(*api.PodSandbox, *api.Container) (*api.CreateContainerResponse, error)) {
	t.Helper()
	runtime, socket := startQuietRuntime(t)
	p, log = queuedPlugin(t)
	events = record.NewFakeRecorder(10)
	p.SetEventRecorder(events)
	s, err := stub.New(p, stub.WithSocketPath(socket), stub.WithPluginIdx("10"), stub.WithPluginName("corepin"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go func() { _ = s.Run(ctx) }()
	create = func(sb *api.PodSandbox, c *api.Container) (*api.CreateContainerResponse, error) {
		return runtime.CreateContainer(ctx, &api.CreateContainerRequest{Pod: sb, Container: c})
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := create(sandbox("s-web", "default", "web", nil), ctr("c-web", "s-web", "app", 500, ""))
		if err == nil && resp.GetAdjust().GetLinux().GetResources().GetCpu().GetCpus() == "1-7" {
			return p, log, events, runtime, create
		}
		if time.Now().After(deadline) {
			t.Fatal("the plugin never registered with the runtime")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestIOQueueCheckOverNRI: through NRI's runtime side, as containerd embeds
// it, a 2-CPU ioQueueSpread pod placed on CPUs that serve no queue of this
// node, while four queues' CPUs are free, is refused at CreateContainer
// with a reason naming the queues; the refusal is counted, logged and an
// event on the pod. The same pod on two queues' CPUs is pinned, and once
// other pods hold every queue CPU, CPUs on no queue are all the engine
// could give it and pass.
func TestIOQueueCheckOverNRI(t *testing.T) {
	p, log, events, _, create := queuedOverNRI(t)
	_, err := create(queuePod("s-bad", "nic-0", "5-6"), ctr("c-bad", "s-bad", "engine", 2000, ""))
	if err == nil {
		t.Fatal("CPUs 5-6 (no IO queue) were pinned for an ioQueueSpread pod while four queues' CPUs were free")
	}
	msg := status.Convert(err).Message()
	want := `corepin: pod default/nic-0 container engine cpus "5-6": ioQueueSpread: CPUs 5-6 serve 0 IO queue(s) of this node [], ` +
		`the engine guarantees 2 here (2 picks, queues [eth0-rx-0, eth0-rx-1, eth0-rx-2, eth0-rx-3] on CPUs free for the pod)`
	if !strings.HasPrefix(msg, want) {
		t.Fatalf("runtime error %q, want it to start with %q", msg, want)
	}
	if got := testutil.ToFloat64(p.metrics.refusals.WithLabelValues(string(policy.CodeIOQueue))); got != 1 {
		t.Fatalf("refusals{code=io-queue} = %v, want 1", got)
	}
	if got := nextEvent(t, events); !strings.HasPrefix(got, "Warning CorepinRefused "+want) {
		t.Fatalf("event %q", got)
	}
	if !strings.Contains(log.String(), `msg="Refused container" pod=default/nic-0 container=engine cpus=5-6 reason="ioQueueSpread: CPUs 5-6 serve 0 IO queue(s)`) {
		t.Fatalf("no refusal log line naming the pod and queues in:\n%s", log)
	}
	if e := p.Capacity().E; e != 0 {
		t.Fatalf("the refused pod holds %d CPUs", e)
	}

	resp, err := create(queuePod("s-good", "nic-1", "1-2"), ctr("c-good", "s-good", "engine", 2000, ""))
	if err != nil || resp.GetAdjust().GetLinux().GetResources().GetCpu().GetCpus() != "1-2" {
		t.Fatalf("a pod on two queues' CPUs: %v, adjustment %v", err, resp.GetAdjust())
	}
	if _, err := create(exclusivePod("s-x", "x", "3-4"), ctr("c-x", "s-x", "engine", 2000, "")); err != nil {
		t.Fatal(err)
	}
	if _, err := create(queuePod("s-late", "nic-2", "5-6"), ctr("c-late", "s-late", "engine", 2000, "")); err != nil {
		t.Fatalf("with every queue CPU held, CPUs 5-6 are all the engine could give: %v", status.Convert(err).Message())
	}
}

// TestIOQueueCheckSparesRestarts: a container restarted in a sandbox that
// was already granted its CPUs (here found at synchronize after the plugin
// restarted, its container stopped) is no new placement and is not
// refused for its queues; the same creation without that grant is.
func TestIOQueueCheckSparesRestarts(t *testing.T) {
	ctx := context.Background()
	p, _ := queuedPlugin(t)
	old := queuePod("s-old", "nic-0", "5-6")
	if _, err := p.Synchronize(ctx, []*api.PodSandbox{old}, nil); err != nil {
		t.Fatal(err)
	}
	if _, _, err := p.CreateContainer(ctx, old, ctr("c-again", "s-old", "engine", 2000, "")); err != nil {
		t.Fatalf("the restart in its granted sandbox was refused: %v", err)
	}
	p, _ = queuedPlugin(t)
	if _, _, err := p.CreateContainer(ctx, old, ctr("c-new", "s-old", "engine", 2000, "")); policy.CodeOf(asReason(err)) != policy.CodeIOQueue {
		t.Fatalf("a first creation on CPUs 5-6 with four queues free: %v, want an io-queue refusal", err)
	}
}

// asReason is a Refusal as a policy.Reason of its code.
func asReason(err error) error {
	if r, ok := err.(*Refusal); ok {
		return &policy.Reason{Code: r.Code, Message: r.Reason}
	}
	return err
}

// TestIOQueueCheckCountsGrants: CPUs another pod's sandbox was granted
// (its container stopped, the kubelet restarts it there) are held, as the
// extender counts them: with every queue CPU granted to pod x, CPUs on no
// queue are all the engine could give and pass.
func TestIOQueueCheckCountsGrants(t *testing.T) {
	ctx := context.Background()
	p, _ := queuedPlugin(t)
	if _, err := p.Synchronize(ctx, []*api.PodSandbox{exclusivePod("s-x", "x", "1-4")}, nil); err != nil {
		t.Fatal(err)
	}
	if _, _, err := p.CreateContainer(ctx, queuePod("s-new", "nic-1", "5-6"), ctr("c-new", "s-new", "engine", 2000, "")); err != nil {
		t.Fatalf("with every queue CPU granted to another pod: %v", err)
	}
}

// boundPod is the API server's pod of a sandbox (queuePod, exclusivePod)
// bound to node-a.
func boundPod(sb *api.PodSandbox) *v1.Pod {
	return &v1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: sb.Namespace, Name: sb.Name, UID: types.UID(sb.Uid), Annotations: sb.Annotations},
		Spec: v1.PodSpec{NodeName: "node-a", Containers: []v1.Container{{Name: "engine"}}}}
}

// TestIOQueueGuaranteeKeptFromBind: through NRI's runtime side and a pod
// watch (client-go fake), pod a holds CPUs 1-3 (three of the four queues'
// CPUs) when nic-0 is bound on 4-5: one queue is all the engine could
// reach, and 4-5 cover it. a is deleted before nic-0's container is
// created; the queues a freed were never the extender's to give, and the
// creation, which the kubelet would retry with the same alloc-status
// forever, is admitted. A pod bound after a went (nic-1 on 6-7, no queue)
// is held to what the node offered then, and refused; so is one the watch
// never showed (the check reads the node at CreateContainer). The kept
// guarantee goes with its pod.
func TestIOQueueGuaranteeKeptFromBind(t *testing.T) {
	p, _, _, runtime, create := queuedOverNRI(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	client := fake.NewClientset()
	WatchPods(ctx, client, "node-a", p, slog.New(slog.NewTextHandler(io.Discard, nil)))
	kept := func(key string) (boundQueues, bool) {
		p.mu.Lock()
		defer p.mu.Unlock()
		k, ok := p.ledger.queues[key]
		return k, ok
	}
	bind := func(sb *api.PodSandbox, want int) {
		t.Helper()
		if _, err := client.CoreV1().Pods(sb.Namespace).Create(ctx, boundPod(sb), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, "the guarantee of "+sb.Name+" kept from the watch", func() bool { _, ok := kept(sb.Namespace + "/" + sb.Name); return ok })
		if k, _ := kept(sb.Namespace + "/" + sb.Name); k.guaranteed != want || k.uid != sb.Uid {
			t.Fatalf("kept for %s: %+v, want %d queue(s) for %s", sb.Name, k, want, sb.Uid)
		}
	}

	a := exclusivePod("s-a", "a", "1-3")
	if _, err := create(a, ctr("c-a", "s-a", "engine", 3000, "")); err != nil {
		t.Fatal(err)
	}
	nic0 := queuePod("s-nic-0", "nic-0", "4-5")
	bind(nic0, 1)
	if err := runtime.StopPodSandbox(ctx, &api.StopPodSandboxRequest{Pod: a}); err != nil {
		t.Fatal(err)
	}
	if e := p.Capacity().E; e != 0 {
		t.Fatalf("pod a gone, %d exclusive CPUs still held", e)
	}
	resp, err := create(nic0, ctr("c-nic-0", "s-nic-0", "engine", 2000, ""))
	if err != nil {
		t.Fatalf("nic-0 was placed right while a held CPUs 1-3, and refused once a went: %v", status.Convert(err).Message())
	}
	if got := resp.GetAdjust().GetLinux().GetResources().GetCpu().GetCpus(); got != "4-5" {
		t.Fatalf("nic-0 pinned on %q, want 4-5", got)
	}

	// Bound with CPUs 1-3 free: two queues are the engine's to cover.
	nic1 := queuePod("s-nic-1", "nic-1", "6-7")
	bind(nic1, 2)
	_, err = create(nic1, ctr("c-nic-1", "s-nic-1", "engine", 2000, ""))
	if err == nil || !strings.Contains(status.Convert(err).Message(), "the engine guarantees 2 here") {
		t.Fatalf("nic-1 bound on 6-7 (no queue) with three queues' CPUs free: %v, want an io-queue refusal", err)
	}
	unseen := queuePod("s-nic-2", "nic-2", "6-7")
	if _, err := create(unseen, ctr("c-nic-2", "s-nic-2", "engine", 2000, "")); err == nil {
		t.Fatal("nic-2, never seen bound, on 6-7 (no queue) with three queues' CPUs free was admitted")
	}

	if err := client.CoreV1().Pods("default").Delete(ctx, "nic-0", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the guarantee of nic-0 dropped with the pod", func() bool { _, ok := kept("default/nic-0"); return !ok })
	if _, ok := kept("default/nic-1"); !ok {
		t.Fatal("nic-1's guarantee went with nic-0")
	}
}
