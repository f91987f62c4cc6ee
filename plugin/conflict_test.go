package plugin

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/containerd/nri/pkg/api"
	"github.com/containerd/nri/pkg/stub"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc/status"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8stypes "k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/record"
)

// cpusetWriter is another NRI plugin that pins every container to CPU 0.
type cpusetWriter struct{}

func (cpusetWriter) CreateContainer(context.Context, *api.PodSandbox, *api.Container) (*api.ContainerAdjustment, []*api.ContainerUpdate, error) {
	adjust := &api.ContainerAdjustment{}
	adjust.SetLinuxCPUSetCPUs("0")
	return adjust, nil, nil
}

// conflictOverNRI has corepin (index 10) and another plugin that sets
// CPUSetCPUs (index 20) create a container through NRI's runtime side, as
// containerd embeds it, and returns the error the runtime hands the CRI
// caller.
func conflictOverNRI(t *testing.T, p *Plugin) string {
	t.Helper()
	runtime, socket := startQuietRuntime(t)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	for _, s := range []struct {
		plugin    any
		idx, name string
	}{{p, "10", "corepin"}, {cpusetWriter{}, "20", "cpuset-writer"}} {
		st, err := stub.New(s.plugin, stub.WithSocketPath(socket), stub.WithPluginIdx(s.idx), stub.WithPluginName(s.name))
		if err != nil {
			t.Fatal(err)
		}
		go func() { _ = st.Run(ctx) }()
	}
	deadline := time.Now().Add(20 * time.Second)
	for n := 0; ; n++ {
		id := "c-web-" + string(rune('a'+n%26))
		_, err := runtime.CreateContainer(ctx, &api.CreateContainerRequest{Pod: sandbox("s-web", "default", "web", nil), Container: ctr(id, "s-web", "app", 500, "")})
		if err != nil {
			return status.Convert(err).Message()
		}
		if time.Now().After(deadline) {
			t.Fatal("the two plugins never both adjusted a container")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestAnotherCPUSetWriterIsReported: NRI refuses a container that corepin
// and another plugin both set the cpuset of, with a message naming both;
// once the kubelet puts that message in the pod's status, corepin-nri's pod
// watch reports it on the node, naming the other plugin, the pod and the
// field, once however often the kubelet retries, and again for another pod.
func TestAnotherCPUSetWriterIsReported(t *testing.T) {
	var log bytes.Buffer
	p := newTestPlugin(t)
	p.log = slog.New(slog.NewTextHandler(&log, nil))
	p.SetNRIName("10-corepin")
	events := record.NewFakeRecorder(10)
	p.SetEventRecorder(events)

	msg := conflictOverNRI(t, p)
	if want := `plugins "20-cpuset-writer" and "10-corepin" both tried to set CPUSetCPUs`; !strings.Contains(msg, want) {
		t.Fatalf("NRI's error %q, want it to contain %q", msg, want)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// As the kubelet reports a failed CRI CreateContainer.
	waiting := func(ns, name, uid string) *v1.Pod {
		return &v1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: k8stypes.UID("uid-" + uid)},
			Spec: v1.PodSpec{NodeName: "node-a", Containers: []v1.Container{{Name: "app"}}},
			Status: v1.PodStatus{ContainerStatuses: []v1.ContainerStatus{{Name: "app", State: v1.ContainerState{
				Waiting: &v1.ContainerStateWaiting{Reason: "CreateContainerError", Message: "failed to create containerd container: " + msg}}}}}}
	}
	web := waiting("default", "web", "1")
	client := fake.NewClientset(web)
	WatchPods(ctx, client, "node-a", p, slog.New(slog.NewTextHandler(&log, nil)))
	want := `Warning CorepinCPUSetConflict NRI plugin "20-cpuset-writer" also sets CPUSetCPUs of pod default/web container app, which 10-corepin pins: ` +
		`containerd refuses to create the container; run one of them on this node`
	if got := nextEvent(t, events); got != want {
		t.Fatalf("node event %q, want %q", got, want)
	}
	// The kubelet retries and writes the same status again.
	web.Status.ContainerStatuses[0].State.Waiting.Message += " "
	if _, err := client.CoreV1().Pods("default").UpdateStatus(ctx, web, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := client.CoreV1().Pods("default").Create(ctx, waiting("default", "api", "2"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if got := nextEvent(t, events); !strings.Contains(got, "of pod default/api container app") {
		t.Fatalf("second event %q, want the second pod's (the first pod's retry reported again?)", got)
	}
	select {
	case e := <-events.Events:
		t.Fatalf("one more event: %q", e)
	case <-time.After(200 * time.Millisecond):
	}
	if got := testutil.ToFloat64(p.metrics.pluginConflicts.WithLabelValues("CPUSetCPUs")); got != 2 {
		t.Fatalf("plugin conflicts metric %v, want 2", got)
	}
	if line := `msg="Another NRI plugin sets the containers' CPUs: containerd refuses to create the container" plugin=20-cpuset-writer field=CPUSetCPUs pod=default/web container=app`; !strings.Contains(log.String(), line) {
		t.Fatalf("no log line %s in:\n%s", line, log.String())
	}
}

// TestConflictsOf reads the waiting statuses the way the kubelet writes them.
func TestConflictsOf(t *testing.T) {
	ours := func(name string) bool { return name == "10-corepin" }
	status := func(reason, msg string) v1.ContainerStatus {
		return v1.ContainerStatus{Name: "app", State: v1.ContainerState{Waiting: &v1.ContainerStateWaiting{Reason: reason, Message: msg}}}
	}
	for _, tc := range []struct {
		name   string
		status v1.ContainerStatus
		want   string // Others/Field, "" for none
	}{
		{"corepin second", status("CreateContainerError", `plugins "10-corepin" and "05-balloons" both tried to set CPUSetMems `), "05-balloons/CPUSetMems"},
		{"two other plugins", status("CreateContainerError", `x: plugins "20-a" and "30-b" both tried to set CPUSetCPUs`), "20-a,30-b/CPUSetCPUs"},
		{"another error", status("CreateContainerError", `failed to pull image`), ""},
		{"not waiting on create", status("CrashLoopBackOff", `plugins "20-a" and "10-corepin" both tried to set CPUSetCPUs`), ""},
	} {
		pod := &v1.Pod{Status: v1.PodStatus{ContainerStatuses: []v1.ContainerStatus{tc.status}}}
		got := ""
		for _, c := range conflictsOf(pod, ours) {
			got = strings.Join(c.Others, ",") + "/" + c.Field
		}
		if got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
		if kept := keepConflicts(pod.Status.ContainerStatuses); (len(kept) > 0) != (tc.name != "another error" && tc.name != "not waiting on create") {
			t.Errorf("%s: the pod watch keeps %v", tc.name, kept)
		}
	}
}
