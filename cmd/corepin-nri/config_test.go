package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/corepin/corepin/api"
)

func TestConfigFile(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "10-corepin.conf")
	write := func(s string) {
		if err := os.WriteFile(file, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("nodeName: node-7\nreservedCPUs: 0-1\nmetricsAddr: :9464\ndriftInterval: 5s\nunplacedToShared: true\n")
	o, err := load([]string{"--config", file, "--reserved-cpus", "0"})
	if err != nil {
		t.Fatal(err)
	}
	if o.NodeName != "node-7" || o.MetricsAddr != ":9464" || o.DriftInterval != 5*time.Second || !o.UnplacedToShared {
		t.Fatalf("file not applied: %+v", o)
	}
	if o.ReservedCPUs != "0" {
		t.Fatalf("reservedCPUs %q: the command line must win over the file", o.ReservedCPUs)
	}
	if o.NRISocket != "/var/run/nri/nri.sock" || o.PluginIndex != "10" {
		t.Fatalf("defaults lost: %+v", o)
	}

	for _, tc := range []struct{ body, want string }{
		{"nodeName: a\nreserved: 0\n", `unknown field "reserved"`},
		{"NodeName: a\n", `unknown field "NodeName"`},
		{"driftInterval: often\n", `driftInterval "often"`},
		{"topologyInterval: -1s\n", `topologyInterval "-1s"`},
		{"nodeName: [a\n", "10-corepin.conf"},
		{"maxExclusiveRatio: 1.5\n", "maxExclusiveRatio"},
		{"bindAllNamespaces: perf,Perf_Lab\n", `bindAllNamespaces "perf,Perf_Lab": "Perf_Lab" is not a namespace name`},
		{"bindAllNamespaces: [perf]\n", "10-corepin.conf"},
	} {
		write(tc.body)
		if _, err := load([]string{"--config", file}); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("config %q: error %v, want %q", tc.body, err, tc.want)
		}
	}
	write("bindAllNamespaces: perf, perf-lab\n")
	if o, err := load([]string{"--config", file}); err != nil || !slices.Equal(namespaces(o.BindAllNamespaces), []string{"perf", "perf-lab"}) {
		t.Errorf("bindAllNamespaces from the file: %q %v", o.BindAllNamespaces, err)
	}
	if o, err := load([]string{"--config", file, "--bind-all-namespaces", "lab"}); err != nil || o.BindAllNamespaces != "lab" {
		t.Errorf("--bind-all-namespaces must win over the file: %q %v", o.BindAllNamespaces, err)
	}
	if o, _ := load(nil); len(namespaces(o.BindAllNamespaces)) != 0 {
		t.Errorf("default bindAllNamespaces %q, want none (the extender's default)", o.BindAllNamespaces)
	}
	write("topologyInterval: 5m\n")
	if o, err := load([]string{"--config", file}); err != nil || o.TopologyInterval != 5*time.Minute {
		t.Errorf("topologyInterval: %v %v", o.TopologyInterval, err)
	}
	if o, _ := load(nil); o.TopologyInterval != time.Minute {
		t.Errorf("default topology interval %v", o.TopologyInterval)
	}
	write("maxExclusiveRatio: 0.9\nsharedHeadroom: 1\n")
	if o, err := load([]string{"--config", file, "--shared-overcommit", "3"}); err != nil || o.limits() != (api.Limits{MaxExclusiveRatio: 0.9, SharedOvercommit: 3, SharedHeadroom: 1}) {
		t.Errorf("capacity settings: %+v %v", o.limits(), err)
	}
	if o, _ := load(nil); o.limits() != api.DefaultLimits() {
		t.Errorf("default capacity settings %+v", o.limits())
	}
	if _, err := load([]string{"--config", filepath.Join(dir, "missing.conf")}); err == nil {
		t.Error("a missing config file was accepted")
	}
}

func TestCheckCPUManager(t *testing.T) {
	for _, tc := range []struct {
		name  string
		state *string // nil: no file
		want  string  // "": runs
	}{
		{"static policy: refused", ptr(`{"policyName":"static","defaultCpuSet":"0-7","checksum":1}`),
			"the kubelet runs the static CPU manager (%s says policyName static): its reconcile loop would overwrite corepin's cpusets every 10 s; set cpuManagerPolicy: none"},
		{"none policy", ptr(`{"policyName":"none","defaultCpuSet":"","checksum":1}`), ""},
		{"no state file", nil, ""},
		{"unreadable state", ptr(`{"policyName":`), "cpu_manager_state"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			file := filepath.Join(dir, "cpu_manager_state")
			if tc.state != nil {
				if err := os.WriteFile(file, []byte(*tc.state), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			err := checkCPUManager(dir)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.want != "" && err == nil:
				t.Fatal("accepted")
			case tc.want != "" && !strings.Contains(err.Error(), strings.ReplaceAll(tc.want, "%s", file)):
				t.Fatalf("error %q, want %q", err, strings.ReplaceAll(tc.want, "%s", file))
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }
