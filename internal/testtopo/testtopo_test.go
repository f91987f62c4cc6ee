package testtopo

import (
	"os"
	"slices"
	"strings"
	"testing"

	"k8s.io/utils/cpuset"
)

// Every file parses, and README.md describes every file and no other: a
// topology nobody can trace to a machine is not a test of one.
func TestEveryTopologyParsesAndIsDescribed(t *testing.T) {
	readme, err := os.ReadFile("topologies/README.md")
	if err != nil {
		t.Fatal(err)
	}
	described := map[string]bool{}
	for _, line := range strings.Split(string(readme), "\n") {
		if name, ok := strings.CutPrefix(line, "| `"); ok {
			described[name[:strings.Index(name, "`")]] = true
		}
	}
	names := Names()
	if len(names) == 0 {
		t.Fatal("no topologies")
	}
	for _, name := range names {
		if _, err := Load(name); err != nil {
			t.Error(err)
		}
		if !described[name] {
			t.Errorf("%s.json is not described in topologies/README.md", name)
		}
		delete(described, name)
	}
	for name := range described {
		t.Errorf("README.md describes %s, which has no file", name)
	}
}

// The facts the README states, checked on the data: what each topology is
// chosen to exercise must be there.
func TestTopologyFacts(t *testing.T) {
	for _, tc := range []struct {
		name                          string
		cpus, cores, numas, l3s       int
		siblingsOf0, online, reserved string
	}{
		{"1s-vm", 8, 8, 1, 1, "0", "0-7", ""},
		{"1s-vm-64", 64, 64, 1, 1, "0", "0-63", ""},
		{"2s-smt-server", 32, 16, 2, 2, "0,16", "0-31", ""},
		{"seed-104", 104, 52, 2, 2, "0,52", "0-103", "0-3,52-55"},
		{"xeon-4208-2s-cpu5-offline", 31, 16, 2, 2, "0,16", "0-4,6-31", ""},
		{"azure-d16s-v5", 16, 8, 1, 1, "0-1", "0-15", ""},
		{"kvm-hotplug-sparse", 8, 8, 1, 8, "0", "0-3,8-11", ""},
		{"epyc-7313p", 32, 16, 1, 4, "0,16", "0-31", ""},
		{"epyc-7763-2s", 256, 128, 2, 16, "0,128", "0-255", ""},
		{"256-cpu", 256, 128, 4, 4, "0,128", "0-255", ""},
		{"8-cpu-2-numa", 8, 8, 2, 2, "0", "0-7", ""},
	} {
		topo := MustLoad(tc.name)
		cores, numas, l3s := map[int]bool{}, map[int]bool{}, map[int]bool{}
		var siblings []int
		for _, c := range topo.CPUs {
			cores[c.Core], numas[c.NUMA], l3s[c.L3] = true, true, true
			if c.Core == topo.CPUs[0].Core {
				siblings = append(siblings, c.ID)
			}
		}
		got := []int{len(topo.CPUs), len(cores), len(numas), len(l3s)}
		want := []int{tc.cpus, tc.cores, tc.numas, tc.l3s}
		if !slices.Equal(got, want) || cpuset.New(siblings...).String() != tc.siblingsOf0 ||
			topo.Online().String() != tc.online || topo.Reserved.Set().String() != tc.reserved {
			t.Errorf("%s: cpus/cores/numas/l3s %v, want %v; siblings of CPU 0 %v, want %s; online %s, want %s; reserved %q, want %q",
				tc.name, got, want, siblings, tc.siblingsOf0, topo.Online(), tc.online, topo.Reserved, tc.reserved)
		}
	}
}
