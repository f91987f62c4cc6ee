package plugin

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/containerd/cgroups/v3"
	"github.com/containerd/cgroups/v3/cgroup2"
	"k8s.io/utils/cpuset"

	corepin "github.com/corepin/corepin/api"
)

// CgroupReader reads a container's actual cpuset from the cgroup
// filesystem, cgroup v1 or v2, to find drift: anything other than the
// plugin (a person, a stale agent) that rewrote a container's cpuset.
type CgroupReader struct {
	// Root is the cgroup mount, /sys/fs/cgroup on the host.
	Root string
	// Mode is the hierarchy in use (cgroups.Mode() on the host).
	Mode cgroups.CGMode
}

// NewCgroupReader reads under sysRoot/sys/fs/cgroup with the hierarchy
// containerd/cgroups detects on this host.
func NewCgroupReader(sysRoot string) CgroupReader {
	return CgroupReader{Root: filepath.Join(sysRoot, "sys", "fs", "cgroup"), Mode: cgroups.Mode()}
}

// CPUs returns the cpuset.cpus of a container's cgroup.
func (r CgroupReader) CPUs(c *Container) (cpuset.CPUSet, error) {
	group, err := GroupPath(c.CgroupsPath)
	if err != nil {
		return cpuset.New(), err
	}
	var file string
	switch r.Mode {
	case cgroups.Unified:
		file = filepath.Join(r.Root, group, "cpuset.cpus")
	case cgroups.Legacy, cgroups.Hybrid:
		file = filepath.Join(r.Root, "cpuset", group, "cpuset.cpus")
	default:
		return cpuset.New(), fmt.Errorf("no cgroup hierarchy found at %s", r.Root)
	}
	// Read directly: github.com/containerd/cgroups/v3 (v3.1.3, checked)
	// writes cpusets but does not read them back. cgroup2.Manager has
	// Update (write) and Stat/StatFiltered, whose stats.Metrics carry pids,
	// cpu, memory, rdma, io, hugetlb, memory events and network, no cpuset;
	// cgroup1's cpuset controller (cgroup1.NewCpuset) has Create and
	// Update, its reader getValues is unexported, and cgroup1 stats.Metrics
	// has no cpuset either. The library is used for what it offers here:
	// the hierarchy in use (cgroups.Mode) and path validation
	// (cgroup2.VerifyGroupPath in GroupPath).
	data, err := os.ReadFile(file)
	if err != nil {
		return cpuset.New(), err
	}
	set, err := corepin.ParseCPUList(strings.TrimSpace(string(data)))
	if err != nil {
		return cpuset.New(), fmt.Errorf("%s: %w", file, err)
	}
	return set, nil
}

// GroupPath turns an OCI cgroupsPath into a path under the cgroup mount.
// The cgroupfs driver gives a path ("/kubepods/burstable/pod1/abc"); the
// systemd driver gives "slice:prefix:name", where the slice expands by its
// dashes ("kubepods-burstable-pod1.slice" lives in
// /kubepods.slice/kubepods-burstable.slice/) and the unit is
// "prefix-name.scope".
func GroupPath(cgroupsPath string) (string, error) {
	if cgroupsPath == "" {
		return "", fmt.Errorf("no cgroups path")
	}
	var group string
	if parts := strings.Split(cgroupsPath, ":"); len(parts) == 3 {
		slice, err := expandSlice(parts[0])
		if err != nil {
			return "", fmt.Errorf("cgroups path %q: %w", cgroupsPath, err)
		}
		unit := parts[2]
		if strings.Contains(parts[1]+parts[2], "/") || unit == "" {
			return "", fmt.Errorf("cgroups path %q: not a systemd unit", cgroupsPath)
		}
		if parts[1] != "" {
			unit = parts[1] + "-" + parts[2]
		}
		group = filepath.Join(slice, unit+".scope")
	} else {
		group = filepath.Clean("/" + cgroupsPath)
	}
	if err := cgroup2.VerifyGroupPath(group); err != nil || strings.Contains(cgroupsPath, "..") {
		return "", fmt.Errorf("cgroups path %q: not a cgroup path", cgroupsPath)
	}
	return group, nil
}

// expandSlice expands a systemd slice name into its path:
// "a-b-c.slice" is /a.slice/a-b.slice/a-b-c.slice.
func expandSlice(slice string) (string, error) {
	name, ok := strings.CutSuffix(slice, ".slice")
	if !ok || name == "" || strings.Contains(name, "/") {
		return "", fmt.Errorf("slice %q is not a systemd slice name", slice)
	}
	if name == "-" {
		return "/", nil
	}
	path, prefix := "", ""
	for _, part := range strings.Split(name, "-") {
		if part == "" {
			return "", fmt.Errorf("slice %q has an empty component", slice)
		}
		path += "/" + prefix + part + ".slice"
		prefix += part + "-"
	}
	return path, nil
}
