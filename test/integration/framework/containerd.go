package framework

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	cri "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/utils/cpuset"
)

// ContainerdVersion is the containerd hack/tools-containerd.sh builds.
const ContainerdVersion = "v2.4.2"

// Containerd is a private containerd with NRI enabled, its state in a temp
// dir, talking CRI on its own socket.
type Containerd struct {
	Dir string
	// CgroupParent holds every pod of this instance (one per test, so a
	// cleanup never touches another test's containers).
	CgroupParent string
	Socket       string
	NRISocket    string
	Process      *Process
	Runtime      cri.RuntimeServiceClient
	Images       cri.ImageServiceClient
	conn         *grpc.ClientConn
	config       string
	t            testing.TB
}

// StartContainerd starts containerd with NRI and imports the test images.
// Containers, shims and mounts are cleaned up when the test ends.
func StartContainerd(t testing.TB) *Containerd {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("containerd needs root")
	}
	dir, err := os.MkdirTemp("", "corepin-ctrd-") // short: unix socket paths are limited to 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	c := &Containerd{Dir: dir, CgroupParent: "/corepin-test/" + filepath.Base(dir), Socket: filepath.Join(dir, "containerd.sock"), NRISocket: filepath.Join(dir, "nri.sock"), t: t}
	c.config = filepath.Join(dir, "config.toml")
	cfg := fmt.Sprintf(`version = 3
root = %q
state = %q
[grpc]
  address = %q
[plugins."io.containerd.nri.v1.nri"]
  disable = false
  socket_path = %q
  plugin_registration_timeout = "5s"
  plugin_request_timeout = "5s"
[plugins."io.containerd.cri.v1.runtime"]
  restrict_oom_score_adj = true
[plugins."io.containerd.cri.v1.images".pinned_images]
  sandbox = %q
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), c.Socket, c.NRISocket, PauseImage)
	if err := os.WriteFile(c.config, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.cleanup)
	c.start()
	for _, img := range BuildTestImages(t, dir) {
		out, err := exec.Command(Binary(t, "containerd-"+ContainerdVersion, "ctr"), "--address", c.Socket, "-n", "k8s.io", "images", "import", img).CombinedOutput()
		if err != nil {
			t.Fatalf("importing %s: %v\n%s", img, err, out)
		}
	}
	return c
}

func (c *Containerd) start() {
	t := c.t
	bin := Binary(t, "containerd-"+ContainerdVersion, "containerd")
	// The shim is found on PATH.
	os.Setenv("PATH", filepath.Dir(bin)+":"+os.Getenv("PATH"))
	c.Process = Start(t, c.Dir, "containerd", bin, "--config", c.config)
	Eventually(t, 60*time.Second, "containerd CRI", func() (bool, error) {
		if exited, err := c.Process.Exited(); exited {
			t.Fatalf("containerd exited: %v\n%s", err, Tail(c.Process.Log, 30))
		}
		if c.conn == nil {
			conn, err := grpc.NewClient("unix://"+c.Socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				return false, err
			}
			c.conn = conn
			c.Runtime, c.Images = cri.NewRuntimeServiceClient(conn), cri.NewImageServiceClient(conn)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, err := c.Runtime.Version(ctx, &cri.VersionRequest{})
		return err == nil, err
	})
}

// Restart stops containerd (containers keep running) and starts it again.
func (c *Containerd) Restart() {
	c.Process.Stop()
	c.start()
}

func (c *Containerd) cleanup() {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if c.Runtime != nil {
		if pods, err := c.Runtime.ListPodSandbox(ctx, &cri.ListPodSandboxRequest{}); err == nil {
			for _, p := range pods.Items {
				_, _ = c.Runtime.StopPodSandbox(ctx, &cri.StopPodSandboxRequest{PodSandboxId: p.Id})
				_, _ = c.Runtime.RemovePodSandbox(ctx, &cri.RemovePodSandboxRequest{PodSandboxId: p.Id})
			}
		}
	}
	if c.conn != nil {
		c.conn.Close()
	}
	if c.Process != nil {
		c.Process.Stop()
	}
	// Leftover shims and mounts of this instance.
	_ = exec.Command("pkill", "-f", "containerd-shim-runc-v2.*"+c.Dir).Run()
	// A killed shim leaves its containers running: kill whatever is left in
	// this instance's cgroups and remove them.
	dirs, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup/*", c.CgroupParent))
	dirs = append(dirs, filepath.Join("/sys/fs/cgroup", c.CgroupParent))
	script := `for d in "$@"; do [ -d "$d" ] || continue
  find "$d" -name cgroup.procs -exec cat {} + | xargs -r kill -9
  for _ in 1 2 3 4 5 6 7 8 9 10; do find "$d" -depth -type d -exec rmdir {} + 2>/dev/null; [ -d "$d" ] || break; sleep 0.2; done
done`
	if out, err := exec.Command("sh", append([]string{"-c", script, "sh"}, dirs...)...).CombinedOutput(); err != nil {
		c.t.Logf("removing the test's cgroups: %v %s", err, out)
	}
	if out, err := exec.Command("sh", "-c", "grep "+c.Dir+" /proc/mounts | cut -d' ' -f2 | sort -r | xargs -r -n1 umount -l").CombinedOutput(); err != nil {
		c.t.Logf("unmounting: %v %s", err, out)
	}
	_ = os.RemoveAll(c.Dir)
}

// RunPod starts a host-network pod sandbox with the given annotations
// (pod UID name-uid).
func (c *Containerd) RunPod(t testing.TB, namespace, name string, annotations map[string]string) (string, *cri.PodSandboxConfig) {
	t.Helper()
	return c.RunPodUID(t, namespace, name, name+"-uid", annotations)
}

// RunPodUID starts a host-network pod sandbox with the given pod UID (the
// kubelet passes the API server's) and annotations.
func (c *Containerd) RunPodUID(t testing.TB, namespace, name, uid string, annotations map[string]string) (string, *cri.PodSandboxConfig) {
	t.Helper()
	cfg := &cri.PodSandboxConfig{
		Metadata:     &cri.PodSandboxMetadata{Name: name, Namespace: namespace, Uid: uid},
		Annotations:  annotations,
		LogDirectory: filepath.Join(c.Dir, "logs", namespace, name),
		Linux: &cri.LinuxPodSandboxConfig{
			CgroupParent: c.CgroupParent + "/" + name,
			SecurityContext: &cri.LinuxSandboxSecurityContext{
				NamespaceOptions: &cri.NamespaceOption{Network: cri.NamespaceMode_NODE, Pid: cri.NamespaceMode_CONTAINER, Ipc: cri.NamespaceMode_POD},
			},
		},
	}
	if err := os.MkdirAll(cfg.LogDirectory, 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	resp, err := c.Runtime.RunPodSandbox(ctx, &cri.RunPodSandboxRequest{Config: cfg})
	if err != nil {
		t.Fatalf("RunPodSandbox %s/%s: %v\n%s", namespace, name, err, Tail(c.Process.Log, 20))
	}
	return resp.PodSandboxId, cfg
}

// CreateContainer creates (not starts) a workload container with a CPU
// limit of milli millicores (0: none).
func (c *Containerd) CreateContainer(podID string, pod *cri.PodSandboxConfig, name string, milli int64) (string, error) {
	cfg := &cri.ContainerConfig{
		Metadata: &cri.ContainerMetadata{Name: name},
		Image:    &cri.ImageSpec{Image: WorkloadImage},
		LogPath:  name + ".log",
		Linux:    &cri.LinuxContainerConfig{Resources: &cri.LinuxContainerResources{CpuShares: 2}},
	}
	if milli > 0 {
		cfg.Linux.Resources.CpuPeriod, cfg.Linux.Resources.CpuQuota = 100000, milli*100
		cfg.Linux.Resources.CpuShares = milli * 1024 / 1000
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	resp, err := c.Runtime.CreateContainer(ctx, &cri.CreateContainerRequest{PodSandboxId: podID, Config: cfg, SandboxConfig: pod})
	if err != nil {
		return "", err
	}
	return resp.ContainerId, nil
}

// RunContainer creates a workload container of milli millicores in the pod
// sandbox and starts it, failing the test if either is refused.
func (c *Containerd) RunContainer(t testing.TB, podID string, pod *cri.PodSandboxConfig, name string, milli int64) string {
	t.Helper()
	id, err := c.CreateContainer(podID, pod, name, milli)
	if err != nil {
		t.Fatalf("creating container %s in pod %s/%s: %v", name, pod.Metadata.Namespace, pod.Metadata.Name, err)
	}
	c.StartContainer(t, id)
	return id
}

// StartContainer starts a created container.
func (c *Containerd) StartContainer(t testing.TB, id string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := c.Runtime.StartContainer(ctx, &cri.StartContainerRequest{ContainerId: id}); err != nil {
		t.Fatalf("StartContainer: %v", err)
	}
}

// RemovePod stops and removes a pod sandbox and its containers.
func (c *Containerd) RemovePod(t testing.TB, podID string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := c.Runtime.StopPodSandbox(ctx, &cri.StopPodSandboxRequest{PodSandboxId: podID}); err != nil {
		t.Fatalf("StopPodSandbox: %v", err)
	}
	if _, err := c.Runtime.RemovePodSandbox(ctx, &cri.RemovePodSandboxRequest{PodSandboxId: podID}); err != nil {
		t.Fatalf("RemovePodSandbox: %v", err)
	}
}

// CPUStatus is what a process inside a container sees.
type CPUStatus struct {
	// Allowed is Cpus_allowed_list from /proc/self/status.
	Allowed cpuset.CPUSet
	// Cgroup is the cpuset cgroup's cpus as mounted in the container.
	Cgroup cpuset.CPUSet
	// Quota is the container's CFS quota in µs per period, -1 when none.
	Quota string
}

// ExecStatus runs `/workload status` in the container.
func (c *Containerd) ExecStatus(t testing.TB, id string) CPUStatus {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := c.Runtime.ExecSync(ctx, &cri.ExecSyncRequest{ContainerId: id, Cmd: []string{"/workload", "status"}, Timeout: 20})
	if err != nil || resp.ExitCode != 0 {
		t.Fatalf("exec in %s: %v %s", id, err, resp.GetStderr())
	}
	return ParseStatus(t, string(resp.Stdout))
}

// FirstLog returns the container's log as written by its first instruction.
func (c *Containerd) FirstLog(t testing.TB, pod *cri.PodSandboxConfig, name string) CPUStatus {
	t.Helper()
	var data []byte
	Eventually(t, 30*time.Second, "container log of "+name, func() (bool, error) {
		var err error
		data, err = os.ReadFile(filepath.Join(pod.LogDirectory, name+".log"))
		return err == nil && strings.Contains(string(data), "Cpus_allowed_list"), err
	})
	return ParseStatus(t, string(data))
}

// ParseStatus reads the workload's status lines (possibly CRI log lines).
func ParseStatus(t testing.TB, out string) CPUStatus {
	t.Helper()
	var s CPUStatus
	for _, line := range strings.Split(out, "\n") {
		for _, f := range []struct {
			key string
			dst *cpuset.CPUSet
		}{{"Cpus_allowed_list:", &s.Allowed}, {"cgroup_cpuset:", &s.Cgroup}} {
			if i := strings.Index(line, f.key); i >= 0 {
				set, err := cpuset.Parse(strings.TrimSpace(line[i+len(f.key):]))
				if err != nil {
					t.Fatalf("parsing %q: %v", line, err)
				}
				*f.dst = set
			}
		}
		if i := strings.Index(line, "cfs_quota:"); i >= 0 {
			s.Quota = strings.TrimSpace(line[i+len("cfs_quota:"):])
		}
	}
	return s
}
