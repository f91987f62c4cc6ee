package plugin

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/nri/pkg/adaptation"
	"github.com/containerd/nri/pkg/api"
	"github.com/containerd/nri/pkg/stub"
	"google.golang.org/grpc/status"

	corepin "github.com/corepin/corepin/api"
)

// startRuntime starts NRI's runtime side, as containerd embeds it, on a
// socket in a temporary directory, stopped when the test ends.
func startRuntime(t *testing.T, syncFn adaptation.SyncFn, updateFn adaptation.UpdateFn) (*adaptation.Adaptation, string) {
	t.Helper()
	dir := t.TempDir()
	for _, d := range []string{"plugins", "conf.d"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	socket := filepath.Join(dir, "nri.sock")
	runtime, err := adaptation.New("corepin-test", "v1", syncFn, updateFn,
		adaptation.WithSocketPath(socket), adaptation.WithPluginPath(filepath.Join(dir, "plugins")),
		adaptation.WithPluginConfigPath(filepath.Join(dir, "conf.d")))
	if err != nil {
		t.Fatal(err)
	}
	if err := runtime.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(runtime.Stop)
	return runtime, socket
}

// startQuietRuntime is startRuntime for tests that need no pre-existing
// pods and ignore unsolicited updates.
func startQuietRuntime(t *testing.T) (*adaptation.Adaptation, string) {
	t.Helper()
	syncFn := func(ctx context.Context, cb adaptation.SyncCB) error {
		_, err := cb(ctx, nil, nil)
		return err
	}
	updateFn := func(context.Context, []*adaptation.ContainerUpdate) ([]*adaptation.ContainerUpdate, error) {
		return nil, nil
	}
	return startRuntime(t, syncFn, updateFn)
}

// runCorepin connects p to the runtime on socket as plugin 10-corepin,
// until ctx ends.
func runCorepin(t *testing.T, ctx context.Context, p *Plugin, socket string) {
	t.Helper()
	s, err := stub.New(p, stub.WithSocketPath(socket), stub.WithPluginIdx("10"), stub.WithPluginName("corepin"))
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = s.Run(ctx) }()
}

// TestOverNRI runs the plugin against the runtime side of NRI
// (pkg/adaptation, as containerd embeds it) over a real socket: the
// exclusive container's adjustment and the shared containers' updates come
// back in the CreateContainer reply, and a stop grows the pool back.
func TestOverNRI(t *testing.T) {
	runtime, socket := startQuietRuntime(t)

	p := newTestPlugin(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	runCorepin(t, ctx, p, socket)

	create := func(sb *api.PodSandbox, c *api.Container) *api.CreateContainerResponse {
		t.Helper()
		resp, err := runtime.CreateContainer(ctx, &api.CreateContainerRequest{Pod: sb, Container: c})
		if err != nil {
			t.Fatalf("create %s: %v", c.Id, err)
		}
		return resp
	}
	web := sandbox("s-web", "default", "web", nil)
	// Until the plugin has registered, the runtime answers with no adjustment.
	deadline := time.Now().Add(20 * time.Second)
	for create(web, ctr("c-web", "s-web", "app", 500, "")).GetAdjust().GetLinux().GetResources().GetCpu().GetCpus() != "1-7" {
		if time.Now().After(deadline) {
			t.Fatal("the plugin never registered with the runtime")
		}
		time.Sleep(50 * time.Millisecond)
	}
	resp := create(exclusivePod("s-db", "db", "2-3"), ctr("c-db", "s-db", "engine", 2000, ""))
	if got := resp.GetAdjust().GetLinux().GetResources().GetCpu().GetCpus(); got != "2-3" {
		t.Fatalf("exclusive adjustment %q, want 2-3", got)
	}
	if len(resp.GetUpdate()) != 1 || resp.GetUpdate()[0].GetContainerId() != "c-web" || cpusOf(resp.GetUpdate()[0]) != "1,4-7" {
		t.Fatalf("updates with the create: %v", resp.GetUpdate())
	}
	if _, err := runtime.CreateContainer(ctx, &api.CreateContainerRequest{Pod: exclusivePod("s-x", "x", "3"), Container: ctr("c-x", "s-x", "engine", 1000, "")}); err == nil {
		t.Fatal("an overlapping allocation was not refused over NRI")
	}
	// Refusals reach the runtime (and so kubelet) as corepin's own message.
	for _, tc := range []struct {
		name, alloc, want, reason string
	}{
		{"malformed JSON", `{"node":"node-a","cpus":`, "corepin: pod default/bad container engine cpus \"\": corepin.io/alloc-status=", "unexpected end of JSON input"},
		{"malformed cpu list", `{"node":"node-a","cpus":"4-x","containers":{"engine":"4-x"},"mems":"0"}`, "corepin: pod default/bad container engine cpus \"\": corepin.io/alloc-status=", `invalid CPU list "4-x"`},
		{"unknown field", `{"node":"node-a","cpus":"4","containers":{"engine":"4"},"mems":"0","extra":1}`, "corepin: pod default/bad container engine cpus \"\": corepin.io/alloc-status=", `unknown field "extra"`},
	} {
		sb := sandbox("s-bad", "default", "bad", map[string]string{corepin.AnnotationCPUMode: "exclusive", corepin.AnnotationAllocStatus: tc.alloc})
		_, err := runtime.CreateContainer(ctx, &api.CreateContainerRequest{Pod: sb, Container: ctr("c-bad", "s-bad", "engine", 1000, "")})
		if err == nil {
			t.Fatalf("%s: a malformed alloc-status was accepted over NRI", tc.name)
		}
		// The runtime carries the plugin's message as the RPC status's
		// message: that is what containerd hands kubelet.
		msg := status.Convert(err).Message()
		if !strings.HasPrefix(msg, tc.want) || !strings.Contains(msg, tc.reason) {
			t.Fatalf("%s: error %q, want a message starting with %q, with %q", tc.name, msg, tc.want, tc.reason)
		}
	}
	stopResp, err := runtime.StopContainer(ctx, &api.StopContainerRequest{Pod: exclusivePod("s-db", "db", "2-3"), Container: ctr("c-db", "s-db", "engine", 2000, "2-3")})
	if err != nil {
		t.Fatal(err)
	}
	if len(stopResp.GetUpdate()) != 1 || cpusOf(stopResp.GetUpdate()[0]) != "1-7" {
		t.Fatalf("updates with the stop: %v", stopResp.GetUpdate())
	}
}

// TestResyncAfterRestart restarts the plugin under a running runtime: the
// new instance learns the node from Synchronize (its ledger starts empty),
// repairs the container created while it was away, still refuses an
// overlap, and its unsolicited updates (a pod removed without
// StopContainer) reach the runtime's update function.
func TestResyncAfterRestart(t *testing.T) {
	db, web := exclusivePod("s-db", "db", "2-3"), sandbox("s-web", "default", "web", nil)
	// What the runtime holds: db pinned, web created while no plugin ran.
	pods := []*api.PodSandbox{db, web}
	containers := []*api.Container{ctr("c-db", "s-db", "engine", 2000, "2-3"), ctr("c-web", "s-web", "app", 500, "0-7")}
	synced := make(chan []*api.ContainerUpdate, 4)
	syncFn := func(ctx context.Context, cb adaptation.SyncCB) error {
		updates, err := cb(ctx, pods, containers)
		synced <- updates
		return err
	}
	unsolicited := make(chan []*api.ContainerUpdate, 4)
	updateFn := func(_ context.Context, u []*adaptation.ContainerUpdate) ([]*adaptation.ContainerUpdate, error) {
		unsolicited <- u
		return nil, nil
	}
	runtime, socket := startRuntime(t, syncFn, updateFn)
	<-synced // Start synchronizes the (no) pre-installed plugins

	connect := func() (*Plugin, context.CancelFunc) {
		p := newTestPlugin(t)
		s, err := stub.New(p, stub.WithSocketPath(socket), stub.WithPluginIdx("10"), stub.WithPluginName("corepin"))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		go func() { _ = s.Run(ctx) }()
		go func() {
			for {
				select {
				case <-ctx.Done():
					return
				case <-p.Pending():
					_, _, _ = p.PushPending(s.UpdateContainers)
				}
			}
		}()
		return p, cancel
	}
	waitSync := func() []*api.ContainerUpdate {
		select {
		case u := <-synced:
			return u
		case <-time.After(20 * time.Second):
			t.Fatal("the plugin never synchronized")
			return nil
		}
	}

	_, stop := connect()
	if u := waitSync(); len(u) != 1 || u[0].GetContainerId() != "c-web" || cpusOf(u[0]) != "1,4-7" {
		t.Fatalf("first sync repaired %v, want c-web to 1,4-7", u)
	}
	stop() // the plugin goes away; containerd keeps running

	containers[1] = ctr("c-web", "s-web", "app", 500, "1,4-7")
	p, stop := connect()
	defer stop()
	if u := waitSync(); len(u) != 0 {
		t.Fatalf("a resync with every cpuset right issued %v", u)
	}
	if e := p.Capacity().E; e != 2 {
		t.Fatalf("after resync the ledger holds %d exclusive CPUs, want 2", e)
	}
	ctx := context.Background()
	// The runtime drops the first connection on its own time: until it
	// has, a request can reach that closed plugin and pass unhandled. Only
	// the connected plugin's answer counts (a fresh container each try).
	for try := 0; ; try++ {
		id := fmt.Sprintf("c-x-%d", try)
		if _, err := runtime.CreateContainer(ctx, &api.CreateContainerRequest{Pod: exclusivePod("s-x", "x", "3"), Container: ctr(id, "s-x", "engine", 1000, "")}); err != nil {
			break
		}
		if try == 50 {
			t.Fatal("after resync an overlapping allocation was not refused")
		}
		time.Sleep(100 * time.Millisecond)
	}
	// The kubelet removes db without stopping its container first.
	if err := runtime.RemovePodSandbox(ctx, &api.RemovePodSandboxRequest{Pod: db}); err != nil {
		t.Fatal(err)
	}
	select {
	case u := <-unsolicited:
		if len(u) != 1 || u[0].GetContainerId() != "c-web" || cpusOf(u[0]) != "1-7" {
			t.Fatalf("unsolicited updates %v, want c-web grown to 1-7", u)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the pool was not grown back after the pod went")
	}
}
