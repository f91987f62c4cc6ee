// Package topology discovers a node's CPUs and IO queues and renders them as
// the corepin.io/topology annotation. Everything is read below configurable
// roots, so tests run on committed sysfs and procfs trees.
package topology

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/jaypipes/ghw"
	"k8s.io/utils/cpuset"

	"github.com/corepin/corepin/api"
)

// Options say where to read from and what is reserved.
type Options struct {
	// Root is the file system root holding sys/ and proc/ for ghw and for
	// the sysfs files read directly; "" means "/".
	Root string
	// ProcRoot is where /proc/interrupts and /proc/irq are read; "" means Root/proc.
	ProcRoot string
	// Reserved are CPUs kept for the system; they must be online.
	Reserved cpuset.CPUSet
	// QueuePatterns select IO-queue IRQs by name; nil means DefaultQueuePatterns.
	QueuePatterns []string
}

func (o Options) root() string {
	if o.Root == "" {
		return "/"
	}
	return o.Root
}

func (o Options) procRoot() string {
	if o.ProcRoot == "" {
		return filepath.Join(o.root(), "proc")
	}
	return o.ProcRoot
}

func (o Options) sysCPU() string { return filepath.Join(o.root(), "sys/devices/system/cpu") }

// Discover reads the online CPUs and IO queues. Sockets, physical cores and
// their threads come from ghw; the online list, NUMA membership and L3
// groups are read from sysfs directly because ghw reports them only through
// its NUMA-node view, which needs files (meminfo, distance) that are absent
// on many VMs and silently yields nothing.
func Discover(o Options) (api.Topology, error) {
	online, err := readCPUList(filepath.Join(o.sysCPU(), "online"))
	if err != nil {
		return api.Topology{}, err
	}
	info, err := ghw.CPU(ghw.WithChroot(o.root()), ghw.WithDisableWarnings())
	if err != nil {
		return api.Topology{}, fmt.Errorf("reading CPUs with ghw under %s: %w", o.root(), err)
	}
	type coreKey struct{ socket, core int }
	var cpus []api.CPUInfo
	coreOf := map[int]coreKey{}
	for _, proc := range info.Processors {
		for _, core := range proc.Cores {
			for _, id := range core.LogicalProcessors {
				if !online.Contains(id) {
					continue
				}
				if proc.ID < 0 || core.ID < 0 {
					return api.Topology{}, badTopologyFile(o, id)
				}
				cpus = append(cpus, api.CPUInfo{ID: id, Socket: proc.ID})
				coreOf[id] = coreKey{proc.ID, core.ID}
			}
		}
	}
	if len(cpus) == 0 {
		return api.Topology{}, fmt.Errorf("no online CPU found under %s (online list %q)", o.sysCPU(), online.String())
	}
	if missing := online.Difference(cpuset.New(ids(cpus)...)); !missing.IsEmpty() {
		return api.Topology{}, fmt.Errorf("CPUs %s are online in %s but have no topology (sysfs cpuN/topology or /proc/cpuinfo entry missing)",
			missing, filepath.Join(o.sysCPU(), "online"))
	}
	sort.Slice(cpus, func(i, j int) bool { return cpus[i].ID < cpus[j].ID })

	// Core and L3 indexes are node-unique, numbered in order of their lowest CPU.
	coreIndex := map[coreKey]int{}
	for i := range cpus {
		k := coreOf[cpus[i].ID]
		if _, ok := coreIndex[k]; !ok {
			coreIndex[k] = len(coreIndex)
		}
		cpus[i].Core = coreIndex[k]
	}
	numaOf, err := readNUMA(o, online)
	if err != nil {
		return api.Topology{}, err
	}
	l3Of, err := readL3Groups(o, cpus)
	if err != nil {
		return api.Topology{}, err
	}
	for i := range cpus {
		cpus[i].NUMA = numaOf[cpus[i].ID]
		cpus[i].L3 = l3Of[cpus[i].ID]
	}
	reserved := o.Reserved
	if reserved.Size() == 0 {
		reserved = cpuset.New()
	}
	if extra := reserved.Difference(online); !extra.IsEmpty() {
		return api.Topology{}, fmt.Errorf("reserved CPUs %s are not online (online: %s)", extra, online)
	}
	queues, err := DiscoverIOQueues(o.procRoot(), online, o.QueuePatterns)
	if err != nil {
		return api.Topology{}, err
	}
	topo := api.Topology{Version: api.TopologyVersion, CPUs: cpus, Reserved: api.NewCPUList(reserved), IOQueues: queues}
	if err := topo.Validate(); err != nil {
		return api.Topology{}, fmt.Errorf("discovered topology is inconsistent: %w", err)
	}
	return topo, nil
}

func ids(cpus []api.CPUInfo) []int {
	out := make([]int, len(cpus))
	for i, c := range cpus {
		out[i] = c.ID
	}
	return out
}

// badTopologyFile names the sysfs file ghw could not parse for a CPU.
func badTopologyFile(o Options, id int) error {
	for _, name := range []string{"physical_package_id", "core_id"} {
		path := filepath.Join(o.sysCPU(), fmt.Sprintf("cpu%d", id), "topology", name)
		data, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("CPU %d: %w", id, err)
		}
		if n, err := strconv.Atoi(strings.TrimSpace(string(data))); err != nil || n < 0 {
			return fmt.Errorf("CPU %d: %s holds %q, want a number >= 0", id, path, strings.TrimSpace(string(data)))
		}
	}
	return fmt.Errorf("CPU %d: no socket or core id", id)
}

// readCPUList reads a file holding a Linux CPU list.
func readCPUList(path string) (cpuset.CPUSet, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return cpuset.New(), err
	}
	set, err := api.ParseCPUList(strings.TrimSpace(string(data)))
	if err != nil {
		return cpuset.New(), fmt.Errorf("%s: %w", path, err)
	}
	return set, nil
}

// readNUMA maps each online CPU to its NUMA node from
// sys/devices/system/node/nodeN/cpulist; without that directory (VMs without
// NUMA information) every CPU is on node 0.
func readNUMA(o Options, online cpuset.CPUSet) (map[int]int, error) {
	out := map[int]int{}
	dir := filepath.Join(o.root(), "sys/devices/system/node")
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return out, nil
	}
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		id, err := strconv.Atoi(strings.TrimPrefix(e.Name(), "node"))
		if !strings.HasPrefix(e.Name(), "node") || err != nil {
			continue
		}
		cpus, err := readCPUList(filepath.Join(dir, e.Name(), "cpulist"))
		if err != nil {
			return nil, err
		}
		for _, cpu := range cpus.Intersection(online).List() {
			out[cpu] = id
		}
	}
	return out, nil
}

// readL3Groups numbers the last-level caches: CPUs sharing a level-3 cache
// (cpuN/cache/indexM with level 3, by shared_cpu_list) form one group.
// Without any L3 information a socket is one group.
func readL3Groups(o Options, cpus []api.CPUInfo) (map[int]int, error) {
	groupOf := map[int]string{}
	for _, c := range cpus {
		dir := filepath.Join(o.sysCPU(), fmt.Sprintf("cpu%d", c.ID), "cache")
		entries, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, e := range entries {
			if !strings.HasPrefix(e.Name(), "index") {
				continue
			}
			levelPath := filepath.Join(dir, e.Name(), "level")
			data, err := os.ReadFile(levelPath)
			if err != nil {
				continue
			}
			level, err := strconv.Atoi(strings.TrimSpace(string(data)))
			if err != nil {
				return nil, fmt.Errorf("%s holds %q, want a cache level", levelPath, strings.TrimSpace(string(data)))
			}
			if level != 3 {
				continue
			}
			shared, err := readCPUList(filepath.Join(dir, e.Name(), "shared_cpu_list"))
			if err != nil {
				return nil, err
			}
			groupOf[c.ID] = "l3:" + shared.String()
		}
	}
	out := map[int]int{}
	index := map[string]int{}
	for _, c := range cpus { // sorted by id: groups numbered by lowest CPU
		key, ok := groupOf[c.ID]
		if !ok {
			key = fmt.Sprintf("socket:%d", c.Socket)
		}
		if _, seen := index[key]; !seen {
			index[key] = len(index)
		}
		out[c.ID] = index[key]
	}
	return out, nil
}
