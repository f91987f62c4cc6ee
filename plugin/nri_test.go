package plugin

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/containerd/nri/pkg/adaptation"
	"github.com/containerd/nri/pkg/api"
	"github.com/containerd/nri/pkg/stub"
)

// TestOverNRI runs the plugin against the runtime side of NRI
// (pkg/adaptation, as containerd embeds it) over a real socket: the
// exclusive container's adjustment and the shared containers' updates come
// back in the CreateContainer reply, and a stop grows the pool back.
func TestOverNRI(t *testing.T) {
	dir := t.TempDir()
	socket := filepath.Join(dir, "nri.sock")
	for _, d := range []string{"plugins", "conf.d"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	syncFn := func(ctx context.Context, cb adaptation.SyncCB) error {
		_, err := cb(ctx, nil, nil)
		return err
	}
	updateFn := func(context.Context, []*adaptation.ContainerUpdate) ([]*adaptation.ContainerUpdate, error) {
		return nil, nil
	}
	runtime, err := adaptation.New("corepin-test", "v1", syncFn, updateFn,
		adaptation.WithSocketPath(socket), adaptation.WithPluginPath(filepath.Join(dir, "plugins")),
		adaptation.WithPluginConfigPath(filepath.Join(dir, "conf.d")))
	if err != nil {
		t.Fatal(err)
	}
	if err := runtime.Start(); err != nil {
		t.Fatal(err)
	}
	defer runtime.Stop()

	p := newTestPlugin(t)
	s, err := stub.New(p, stub.WithSocketPath(socket), stub.WithPluginIdx("10"), stub.WithPluginName("corepin"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = s.Run(ctx) }()

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
	stopResp, err := runtime.StopContainer(ctx, &api.StopContainerRequest{Pod: exclusivePod("s-db", "db", "2-3"), Container: ctr("c-db", "s-db", "engine", 2000, "2-3")})
	if err != nil {
		t.Fatal(err)
	}
	if len(stopResp.GetUpdate()) != 1 || cpusOf(stopResp.GetUpdate()[0]) != "1-7" {
		t.Fatalf("updates with the stop: %v", stopResp.GetUpdate())
	}
}
