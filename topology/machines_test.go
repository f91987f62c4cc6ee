package topology

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"k8s.io/utils/cpuset"

	"github.com/corepin/corepin/api"
	"github.com/corepin/corepin/internal/testtopo"
)

// Every named test topology is what Discover publishes for its machine: a
// sysfs and /proc/cpuinfo tree written from the machine's facts (package
// and core ids, L3 sharing, NUMA node lists, the online list) discovers to
// exactly the data the other packages' tests load, numbering included.
// This also runs Discover on L3 groups inside NUMA nodes (EPYC), adjacent
// siblings, sparse ids and an offline CPU.
func TestDiscoverNamedTopologies(t *testing.T) {
	for _, name := range testtopo.Names() {
		t.Run(name, func(t *testing.T) {
			want := testtopo.MustLoad(name)
			root := t.TempDir()
			writeMachine(t, root, want)
			got, err := Discover(Options{Root: root, Reserved: want.Reserved.Set()})
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got.CPUs, want.CPUs) || !got.Reserved.Set().Equals(want.Reserved.Set()) {
				t.Fatalf("discovered\n%+v\nwant (testtopo %s)\n%+v", got, name, want)
			}
		})
	}
}

// writeMachine writes the files Discover reads for topo. The per-socket
// core_id is the node-unique core index, which a kernel could also report.
// Ids missing below the highest get a directory with "online" 0 and no
// topology, as the kernel leaves an offline CPU (a not-present one has no
// directory; Discover reads both from the online list).
func writeMachine(t *testing.T, root string, topo api.Topology) {
	t.Helper()
	write := func(path, content string) {
		t.Helper()
		full := filepath.Join(root, path)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(content+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	online := topo.Online()
	l3 := map[int][]int{}
	numa := map[int][]int{}
	for _, c := range topo.CPUs {
		l3[c.L3] = append(l3[c.L3], c.ID)
		numa[c.NUMA] = append(numa[c.NUMA], c.ID)
	}
	var cpuinfo strings.Builder
	cpu := "sys/devices/system/cpu/"
	for _, c := range topo.CPUs {
		dir := fmt.Sprintf("%scpu%d/", cpu, c.ID)
		write(dir+"online", "1")
		write(dir+"topology/physical_package_id", fmt.Sprint(c.Socket))
		write(dir+"topology/core_id", fmt.Sprint(c.Core))
		write(dir+"cache/index0/level", "1")
		write(dir+"cache/index0/shared_cpu_list", fmt.Sprint(c.ID))
		write(dir+"cache/index3/level", "3")
		write(dir+"cache/index3/shared_cpu_list", cpuset.New(l3[c.L3]...).String())
		fmt.Fprintf(&cpuinfo, "processor\t: %d\nvendor_id\t: AuthenticAMD\nmodel name\t: corepin test CPU\nflags\t\t: fpu\n\n", c.ID)
	}
	for id := 0; id < online.List()[online.Size()-1]; id++ {
		if !online.Contains(id) {
			write(fmt.Sprintf("%scpu%d/online", cpu, id), "0")
		}
	}
	write(cpu+"online", online.String())
	for n, ids := range numa {
		write(fmt.Sprintf("sys/devices/system/node/node%d/cpulist", n), cpuset.New(ids...).String())
	}
	write("proc/cpuinfo", strings.TrimSuffix(cpuinfo.String(), "\n"))
}
