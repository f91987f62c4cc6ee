package plugin

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/containerd/nri/pkg/api"
	"google.golang.org/grpc/status"
)

// cpuRes is what the kubelet's UpdateContainerResources gives a container
// of milli millicores (CPU limit): quota over a 100 ms period.
func cpuRes(milli int64) *api.LinuxResources {
	return &api.LinuxResources{Cpu: &api.LinuxCPU{Quota: api.Int64(milli * 100), Period: api.UInt64(100000)}}
}

func dbStatus(cpus string) string {
	return `{"node":"node-a","cpus":"` + cpus + `","containers":{"engine":"` + cpus + `"},"mems":"0"}`
}

// apiSays hands the plugin the pod's alloc-status as the API server has it.
func apiSays(p *Plugin, name, status string) {
	p.SetRelease("default", name, Release{ExcludeReserve: true, AllocStatus: status})
}

func updateIDs(updates []*api.ContainerUpdate) string {
	var out []string
	for _, u := range updates {
		out = append(out, u.GetContainerId()+"="+cpusOf(u))
	}
	return strings.Join(out, " ")
}

// resizeNode: web (shared, 0.5 CPU) and db (exclusive on 2-3) on the test
// node (CPUs 1-7 allocatable, exclusive limit 4, h = 2, r = 2).
func resizeNode(t *testing.T) (*Plugin, *api.PodSandbox, *api.PodSandbox) {
	t.Helper()
	p := newTestPlugin(t)
	ctx := context.Background()
	web, db := sandbox("s-web", "default", "web", nil), exclusivePod("s-db", "db", "2-3")
	if _, _, err := p.CreateContainer(ctx, web, ctr("c-web", "s-web", "app", 500, "")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := p.CreateContainer(ctx, db, ctr("c-db", "s-db", "engine", 2000, "")); err != nil {
		t.Fatal(err)
	}
	return p, web, db
}

// A shared container grows only within section 4's rules, with a reason
// naming the numbers; it shrinks freely.
func TestResizeShared(t *testing.T) {
	p, web, _ := resizeNode(t)
	ctx := context.Background()
	_, err := p.UpdateContainer(ctx, web, ctr("c-web", "s-web", "app", 500, "1,4-7"), cpuRes(3000))
	want := "corepin: pod default/web container app cpus \"1,4-7\": resize from 0.5 to 3 CPUs refused: the node holds 2 exclusive CPUs, " +
		"and with it the shared pods would total 3 CPUs, the largest 3, which allows at most min(P - h*M, P - ceil(S/r)) = min(7 - 2*3, 7 - ceil(3/2)) = 1 " +
		"(contract section 4); the container keeps 0.5 CPUs"
	if err == nil || err.Error() != want {
		t.Fatalf("grow past the rules: %v\nwant %s", err, want)
	}
	if c := p.Capacity(); c.S != 500 || c.M != 500 {
		t.Fatalf("after the refusal S=%d M=%d, want 500 500", c.S, c.M)
	}
	// 2.5 CPUs: P - h*M = 2 and P - ceil(S/r) = 5 both allow E = 2.
	if _, err := p.UpdateContainer(ctx, web, ctr("c-web", "s-web", "app", 500, "1,4-7"), cpuRes(2500)); err != nil {
		t.Fatalf("grow within the rules: %v", err)
	}
	if c := p.Capacity(); c.S != 2500 || c.ExclusiveLimit != 2 {
		t.Fatalf("after the grow S=%d limit=%d, want 2500 2", c.S, c.ExclusiveLimit)
	}
	// And now no exclusive grow fits: the formula counts the resized pod.
	if _, err := p.UpdateContainer(ctx, web, ctr("c-web", "s-web", "app", 2500, "1,4-7"), cpuRes(100)); err != nil {
		t.Fatalf("shrink: %v", err)
	}
	if c := p.Capacity(); c.S != 100 {
		t.Fatalf("after the shrink S=%d, want 100", c.S)
	}
}

// The alloc-status comes first, the runtime's update second: the reply
// moves the shared containers off the new CPUs, then the container.
func TestResizeExclusiveStatusFirst(t *testing.T) {
	p, _, db := resizeNode(t)
	ctx := context.Background()
	apiSays(p, "db", dbStatus("2-4"))
	if got := p.PendingUpdates(); len(got) != 0 {
		t.Fatalf("the alloc-status alone moved containers: %s", updateIDs(got))
	}
	upd, err := p.UpdateContainer(ctx, db, ctr("c-db", "s-db", "engine", 2000, "2-3"), cpuRes(3000))
	if err != nil {
		t.Fatal(err)
	}
	if got := updateIDs(upd); got != "c-web=1,5-7 c-db=2-4" {
		t.Fatalf("updates %s, want the shared shrink then the container", got)
	}
	if c := p.Capacity(); c.E != 3 {
		t.Fatalf("E = %d, want 3", c.E)
	}
	if c, _ := containerOf(p, "c-db"); c.Quota != 300000 {
		t.Fatalf("quota kept %d, want the new 300000", c.Quota)
	}
	// A container restarted in the sandbox gets the resized CPUs, though the
	// sandbox's annotations still say 2-3.
	if _, err := p.StopContainer(ctx, db, ctr("c-db", "s-db", "engine", 3000, "2-4")); err != nil {
		t.Fatal(err)
	}
	adj, _, err := p.CreateContainer(ctx, db, ctr("c-db2", "s-db", "engine", 3000, ""))
	if err != nil || adj.GetLinux().GetResources().GetCpu().GetCpus() != "2-4" {
		t.Fatalf("restarted container: %v, %v", adj, err)
	}
}

// The runtime's update comes first: the container keeps its CPUs until the
// alloc-status comes; then the plugin's own batch moves the shared
// containers before the container on a grow, and after it on a shrink.
func TestResizeExclusiveAmountFirst(t *testing.T) {
	p, _, db := resizeNode(t)
	ctx := context.Background()
	upd, err := p.UpdateContainer(ctx, db, ctr("c-db", "s-db", "engine", 2000, "2-3"), cpuRes(3000))
	if err != nil {
		t.Fatal(err)
	}
	if got := updateIDs(upd); got != "c-db=2-3" {
		t.Fatalf("before the alloc-status: updates %s, want the container kept on 2-3", got)
	}
	apiSays(p, "db", dbStatus("2-3")) // another update of the pod: not yet
	if got := p.PendingUpdates(); len(got) != 0 {
		t.Fatalf("moved before the alloc-status gave 3 CPUs: %s", updateIDs(got))
	}
	apiSays(p, "db", dbStatus("2-4"))
	select {
	case <-p.Pending():
	default:
		t.Fatal("the resize did not ask for the plugin's own batch")
	}
	if got := updateIDs(p.PendingUpdates()); got != "c-web=1,5-7 c-db=2-4" {
		t.Fatalf("grow batch %s, want the shared shrink first", got)
	}

	// Shrink to 1: the container leaves 3-4 before web takes them.
	if _, err := p.UpdateContainer(ctx, db, ctr("c-db", "s-db", "engine", 3000, "2-4"), cpuRes(1000)); err != nil {
		t.Fatal(err)
	}
	apiSays(p, "db", dbStatus("2"))
	if got := updateIDs(p.PendingUpdates()); got != "c-db=2 c-web=1,3-7" {
		t.Fatalf("shrink batch %s, want the container first", got)
	}
	if c := p.Capacity(); c.E != 1 {
		t.Fatalf("E = %d, want 1", c.E)
	}
}

func TestResizeExclusiveRefused(t *testing.T) {
	p, _, db := resizeNode(t)
	ctx := context.Background()
	if _, _, err := p.CreateContainer(ctx, exclusivePod("s-x", "x", "5-6"), ctr("c-x", "s-x", "engine", 2000, "")); err != nil {
		t.Fatal(err)
	}
	_, err := p.UpdateContainer(ctx, db, ctr("c-db", "s-db", "engine", 2000, "2-3"), cpuRes(1500))
	if err == nil || !strings.Contains(err.Error(), `corepin: pod default/db container engine cpus "2-3": resize to 1.5 CPUs refused: an exclusive container's CPU amount must be a whole number >= 1`) {
		t.Fatalf("resize to a fraction: %v", err)
	}
	// An alloc-status giving CPUs another pod holds is not applied.
	apiSays(p, "db", dbStatus("2-3,5"))
	_, err = p.UpdateContainer(ctx, db, ctr("c-db", "s-db", "engine", 2000, "2-3"), cpuRes(3000))
	if err == nil || !strings.Contains(err.Error(), "CPU 5 is held by pod default/x") {
		t.Fatalf("resize onto another pod's CPU: %v", err)
	}
	if c, _ := containerOf(p, "c-db"); c.CPUs.String() != "2-3" {
		t.Fatalf("container moved to %s after a refusal", c.CPUs)
	}
	// The exclusive limit (4) is the node's own check too: 2-4 would make 5
	// with x's 5-6.
	apiSays(p, "db", dbStatus("2-4"))
	_, err = p.UpdateContainer(ctx, db, ctr("c-db", "s-db", "engine", 2000, "2-3"), cpuRes(3000))
	if err == nil || !strings.Contains(err.Error(), "exclusive limit 4 reached") {
		t.Fatalf("resize past the exclusive limit: %v", err)
	}
	if c := p.Capacity(); c.E != 4 {
		t.Fatalf("E = %d after refusals, want 4", c.E)
	}
}

// Over NRI (the runtime side as containerd embeds it): the update reply
// carries the shared shrink and the container's new cpuset, the runtime's
// own container last; a refusal reaches the runtime as corepin's message.
func TestResizeOverNRI(t *testing.T) {
	runtime, socket := startQuietRuntime(t)
	p := newTestPlugin(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	runCorepin(t, ctx, p, socket)
	web, db := sandbox("s-web", "default", "web", nil), exclusivePod("s-db", "db", "2-3")
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := runtime.CreateContainer(ctx, &api.CreateContainerRequest{Pod: web, Container: ctr("c-web", "s-web", "app", 500, "")})
		if err == nil && resp.GetAdjust().GetLinux().GetResources().GetCpu().GetCpus() == "1-7" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the plugin never registered with the runtime")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, err := runtime.CreateContainer(ctx, &api.CreateContainerRequest{Pod: db, Container: ctr("c-db", "s-db", "engine", 2000, "")}); err != nil {
		t.Fatal(err)
	}
	apiSays(p, "db", dbStatus("2-4"))
	resp, err := runtime.UpdateContainer(ctx, &api.UpdateContainerRequest{Pod: db, Container: ctr("c-db", "s-db", "engine", 2000, "2-3"), LinuxResources: cpuRes(3000)})
	if err != nil {
		t.Fatal(err)
	}
	upd := resp.GetUpdate()
	if got := updateIDs(upd); got != "c-web=1,5-7 c-db=2-4" {
		t.Fatalf("update reply %s, want c-web=1,5-7 c-db=2-4", got)
	}
	// The runtime's own container keeps the requested quota.
	if q := upd[len(upd)-1].GetLinux().GetResources().GetCpu().GetQuota().GetValue(); q != 300000 {
		t.Fatalf("the container's quota in the reply %d, want the requested 300000", q)
	}
	_, err = runtime.UpdateContainer(ctx, &api.UpdateContainerRequest{Pod: web, Container: ctr("c-web", "s-web", "app", 500, "1,5-7"), LinuxResources: cpuRes(3000)})
	if err == nil || !strings.Contains(status.Convert(err).Message(), "corepin: pod default/web container app cpus \"1,5-7\": resize from 0.5 to 3 CPUs refused") {
		t.Fatalf("shared grow past the rules over NRI: %v", err)
	}
}
