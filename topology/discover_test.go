package topology

import (
	"bytes"
	"encoding/json"
	"os"
	"runtime"
	"slices"
	"strings"
	"testing"

	"k8s.io/utils/cpuset"

	"github.com/corepin/corepin/api"
	"github.com/corepin/corepin/internal/reference"
)

// cpu is (id, core, socket, numa, l3).
type cpu [5]int

func TestDiscoverTrees(t *testing.T) {
	for _, tc := range []struct {
		tree     string
		reserved string
		want     []cpu // a sample of CPUs to check
		count    int
		queues   string // name=cpus;... or "" for none
	}{
		{tree: "two-socket-smt", count: 32, reserved: "0,16", want: []cpu{
			{0, 0, 0, 0, 0}, {7, 7, 0, 0, 0}, {8, 8, 1, 1, 1}, {15, 15, 1, 1, 1},
			{16, 0, 0, 0, 0}, {24, 8, 1, 1, 1}, {31, 15, 1, 1, 1}}},
		{tree: "vm-no-smt", count: 4, want: []cpu{{0, 0, 0, 0, 0}, {3, 3, 0, 0, 0}}},
		{tree: "sparse-ids", count: 4, want: []cpu{{0, 0, 0, 0, 0}, {1, 1, 0, 0, 0}, {1030, 0, 0, 0, 0}, {1031, 1, 0, 0, 0}}},
		{tree: "offline-cpus", count: 4, want: []cpu{{3, 3, 0, 0, 0}}},
		{tree: "io-queues", count: 4, queues: "eth1-TxRx-0=3;mlx5_comp0@pci:0000:3b:00.0=2-3;nvme0q0=3;nvme0q1=0;nvme0q2=1;" +
			"virtio0-input.0=0;virtio0-input.1=2;virtio0-output.0=1"},
	} {
		t.Run(tc.tree, func(t *testing.T) {
			reserved := mustParse(t, tc.reserved)
			topo, err := Discover(Options{Root: "testdata/" + tc.tree, Reserved: reserved})
			if err != nil {
				t.Fatal(err)
			}
			if len(topo.CPUs) != tc.count {
				t.Fatalf("%d CPUs, want %d", len(topo.CPUs), tc.count)
			}
			byID := map[int]api.CPUInfo{}
			for _, c := range topo.CPUs {
				byID[c.ID] = c
			}
			for _, w := range tc.want {
				got, ok := byID[w[0]]
				if !ok || got != (api.CPUInfo{ID: w[0], Core: w[1], Socket: w[2], NUMA: w[3], L3: w[4]}) {
					t.Errorf("CPU %d: %+v, want core %d socket %d numa %d l3 %d", w[0], got, w[1], w[2], w[3], w[4])
				}
			}
			if !topo.Reserved.Set().Equals(reserved) {
				t.Errorf("reserved %s, want %s", topo.Reserved, reserved)
			}
			var queues []string
			for _, q := range topo.IOQueues {
				queues = append(queues, q.Name+"="+q.CPUs.String())
			}
			if got := strings.Join(queues, ";"); got != tc.queues {
				t.Errorf("queues %q, want %q", got, tc.queues)
			}
			// The output is the contract's annotation: it must parse back.
			data, err := json.Marshal(topo)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := api.ParseTopology(string(data)); err != nil {
				t.Fatalf("published topology does not parse: %v", err)
			}
		})
	}
}

func mustParse(t *testing.T, s string) cpuset.CPUSet {
	t.Helper()
	set, err := cpuset.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return set
}

func TestDiscoverErrors(t *testing.T) {
	for _, tc := range []struct {
		opts Options
		want string
	}{
		{Options{Root: "testdata/broken-core-id"}, `cpu1/topology/core_id holds "banana"`},
		{Options{Root: "testdata/broken-online"}, `online: invalid CPU list "0-x"`},
		{Options{Root: "testdata/does-not-exist"}, "no such file"},
		{Options{Root: "testdata/vm-no-smt", Reserved: cpuset.New(7)}, "reserved CPUs 7 are not online"},
		{Options{Root: "testdata/io-queues", QueuePatterns: []string{"["}}, `pattern "["`},
	} {
		_, err := Discover(tc.opts)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: error %v, want %q", tc.opts, err, tc.want)
		}
	}
}

// On this machine, discovery sees every CPU the Go runtime can use.
func TestDiscoverThisMachine(t *testing.T) {
	if _, err := os.Stat("/sys/devices/system/cpu/online"); err != nil {
		t.Skip("no sysfs here")
	}
	topo, err := Discover(Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(topo.CPUs) != runtime.NumCPU() {
		t.Fatalf("%d CPUs discovered, runtime.NumCPU() = %d", len(topo.CPUs), runtime.NumCPU())
	}
}

func TestTopologyCommand(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := RunTopologyCommand([]string{"--root", "testdata/vm-no-smt", "--reserved", "0"}, &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	topo, err := api.ParseTopology(out.String())
	if err != nil || topo.Reserved.String() != "0" || len(topo.CPUs) != 4 {
		t.Fatalf("output %s: %v", out.String(), err)
	}
	if code := RunTopologyCommand([]string{"--reserved", "x"}, &out, &errOut); code != 2 || !strings.Contains(errOut.String(), `--reserved "x"`) {
		t.Fatalf("bad --reserved: exit %d, %s", code, errOut.String())
	}
}

func FuzzParseInterrupts(f *testing.F) {
	data, err := os.ReadFile("testdata/io-queues/proc/interrupts")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(string(data))
	f.Add(" 1: 0 x\n:\n-1: a b\n 99999999999999999999: x")
	f.Fuzz(func(t *testing.T, s string) {
		irqs, err := ParseInterrupts(strings.NewReader(s))
		if err != nil {
			return
		}
		for _, q := range irqs {
			if q.number < 0 || q.name == "" || strings.ContainsAny(q.name, " \t\n") {
				t.Fatalf("bad IRQ %+v from %q", q, s)
			}
		}
	})
}

// FuzzReadCPUList compares readCPUList with internal/reference's expansion
// of the file's list (sysfs ends it with a newline) and its printed form.
func FuzzReadCPUList(f *testing.F) {
	for _, s := range []string{"0-3,8\n", "0-99999999", "", "\n", "0-1,1-2", "3-1", "0--0", "+1", "1,,2", " 4 \n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		path := t.TempDir() + "/list"
		if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		set, err := readCPUList(path)
		ids, ok := reference.CPUList(strings.TrimSpace(s), api.MaxCPUID)
		if (err == nil) != ok {
			t.Fatalf("%q: error %v, reference accepts: %v", s, err, ok)
		}
		if err != nil {
			return
		}
		if got := set.List(); !slices.Equal(got, ids) {
			t.Fatalf("%q: read %v, reference %v", s, got, ids)
		}
		if got, want := set.String(), reference.FormatCPUList(ids); got != want {
			t.Fatalf("%q: printed %q, reference %q", s, got, want)
		}
	})
}
