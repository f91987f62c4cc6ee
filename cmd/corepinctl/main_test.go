package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const scenarios = "../../scheduler-extender/testdata/scenarios/"

// The seed scenario prints the contract's lines, one JSON object per step.
func TestSimulateSeed(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run([]string{"simulate", "--scenario", scenarios + "seed.yaml"}, &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	var lines []map[string]any
	sc := bufio.NewScanner(&out)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		lines = append(lines, m)
	}
	if len(lines) != 10 {
		t.Fatalf("%d lines", len(lines))
	}
	if lines[0]["cpus"] != "" || lines[0]["node"] != "node-a" {
		t.Errorf("shared pod line %v", lines[0])
	}
	if lines[6]["error"] != "0/1 nodes fit: node-a: exclusive limit 32 reached (needs 8, holds 28)" {
		t.Errorf("refused pod line %v", lines[6])
	}
	if lines[7]["deleted"] != "default/db-0" || lines[7]["step"] != float64(7) {
		t.Errorf("delete line %v", lines[7])
	}
	if lines[8]["cpus"] != lines[2]["cpus"] {
		t.Errorf("db-4 did not get db-0's freed CPUs: %v vs %v", lines[8]["cpus"], lines[2]["cpus"])
	}
}

// A malformed scenario prints exactly its reviewed message (the extender's
// golden file for it), prefixed with the command and the file.
func TestSimulateMalformedMessage(t *testing.T) {
	files, err := filepath.Glob(scenarios + "malformed-*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no malformed scenarios: %v", err)
	}
	for _, file := range files {
		want, err := os.ReadFile(strings.TrimSuffix(file, ".yaml") + ".golden")
		if err != nil {
			t.Fatal(err)
		}
		var out, errOut bytes.Buffer
		if code := run([]string{"simulate", "--scenario", file}, &out, &errOut); code != 2 {
			t.Errorf("%s: exit %d, want 2", file, code)
		}
		if got, want := errOut.String(), "corepinctl simulate: "+file+": "+string(want); got != want {
			t.Errorf("%s: stderr\n%q, want\n%q", file, got, want)
		}
	}
}

func TestSimulateExitCodes(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
		err  string
	}{
		{[]string{"simulate", "--scenario", scenarios + "malformed-unknown-field.yaml"}, 2, `unknown field "stepz"`},
		{[]string{"simulate", "--scenario", scenarios + "malformed-step.yaml"}, 2, "exactly one of create or delete"},
		{[]string{"simulate", "--scenario", "nope.yaml"}, 2, "no such file"},
		{[]string{"simulate"}, 2, "--scenario FILE is required"},
		{[]string{"frobnicate"}, 2, "unknown command"},
		{[]string{"simulate", "--scenario", scenarios + "pods.yaml"}, 0, ""},
	} {
		var out, errOut bytes.Buffer
		code := run(tc.args, &out, &errOut)
		if code != tc.code || !strings.Contains(errOut.String(), tc.err) {
			t.Errorf("%v: exit %d (%s), want %d with %q", tc.args, code, errOut.String(), tc.code, tc.err)
		}
		if tc.code == 2 && out.Len() != 0 {
			t.Errorf("%v: printed %q on stdout for a malformed scenario", tc.args, out.String())
		}
	}
}

func TestTopologySubcommand(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run([]string{"topology", "--root", "../../topology/testdata/two-socket-smt"}, &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	if !strings.Contains(out.String(), `"version": 1`) {
		t.Fatalf("output %s", out.String())
	}
}
