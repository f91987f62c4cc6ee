package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"regexp"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/corepin/corepin/api"
)

// testTopology is 2 sockets x 2 cores x 2 threads, one NUMA node per
// socket, numbered as Linux numbers x86: core c has CPUs c and c+4.
func testTopology(reserved string) string {
	topo := api.Topology{Version: api.TopologyVersion}
	for t := 0; t < 2; t++ {
		for c := 0; c < 4; c++ {
			topo.CPUs = append(topo.CPUs, api.CPUInfo{ID: c + 4*t, Core: c, Socket: c / 2, NUMA: c / 2, L3: c / 2})
		}
	}
	set, err := api.ParseCPUList(reserved)
	if err != nil {
		panic(err)
	}
	topo.Reserved = api.NewCPUList(set)
	data, err := json.Marshal(topo)
	if err != nil {
		panic(err)
	}
	return string(data)
}

func testNode(name string, annotations map[string]string) *v1.Node {
	return &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: annotations}}
}

func testPod(name, node string, cpu string, annotations map[string]string) *v1.Pod {
	q := resource.MustParse(cpu)
	return &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name, UID: types.UID("uid-" + name), Annotations: annotations},
		Spec: v1.PodSpec{NodeName: node, SchedulerName: "corepin-scheduler", Containers: []v1.Container{{Name: "engine",
			Resources: v1.ResourceRequirements{Requests: v1.ResourceList{v1.ResourceCPU: q}, Limits: v1.ResourceList{v1.ResourceCPU: q}}}}},
		Status: v1.PodStatus{Phase: v1.PodRunning},
	}
}

func exclusive(spec, status string) map[string]string {
	a := map[string]string{api.AnnotationCPUMode: "exclusive", api.AnnotationAllocSpec: spec}
	if status != "" {
		a[api.AnnotationAllocStatus] = status
	}
	return a
}

// testCluster: node-a (8 CPUs, 0 reserved) holds db (SameCoreFirst, 1,5),
// cache (Spread, 2: its sibling 6 is stacked) and a shared web pod of 0.5;
// so P = 7, E = 3, limit = min(floor(2/3*7)=4, 7-2*0.5=6, 7-ceil(0.25)=6) = 4.
// node-b has no topology; node-c needs attention, carries a pod whose
// alloc-status claims a reserved CPU, and publishes a shared pool that
// differs from the one computed. default/big (4 CPUs) is pending.
func testCluster() []runtime.Object {
	pending := testPod("big", "", "4", exclusive(`{"cpu":"SameCoreFirst","numa":"Required"}`, ""))
	pending.Status.Phase = v1.PodPending
	return []runtime.Object{
		testNode("node-a", map[string]string{api.AnnotationTopology: testTopology("0"), api.AnnotationSharedPool: `{"cpus":"3-4,6-7"}`}),
		testNode("node-b", nil),
		testNode("node-c", map[string]string{api.AnnotationTopology: testTopology("0"), api.AnnotationNodeAttention: "incompatible topology change: CPU 3 moved",
			api.AnnotationSharedPool: `{"cpus":"2-7"}`}),
		testPod("db", "node-a", "2", exclusive(`{"cpu":"SameCoreFirst"}`, `{"node":"node-a","cpus":"1,5","containers":{"engine":"1,5"},"mems":"0"}`)),
		testPod("cache", "node-a", "1", exclusive(`{"cpu":"Spread"}`, `{"node":"node-a","cpus":"2","containers":{"engine":"2"},"mems":"1"}`)),
		testPod("web", "node-a", "500m", nil),
		testPod("forged", "node-c", "1", exclusive(`{}`, `{"node":"node-c","cpus":"0","containers":{"engine":"0"},"mems":"0"}`)),
		pending,
		&v1.Event{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "big.1"}, Reason: "FailedScheduling", Count: 3,
			LastTimestamp:  metav1.NewTime(time.Date(2026, 11, 23, 1, 0, 0, 0, time.UTC)),
			InvolvedObject: v1.ObjectReference{Kind: "Pod", Namespace: "default", Name: "big", UID: pending.UID},
			Message:        "0/3 nodes are available: 1 exclusive limit 4 reached (needs 4, holds 3)."},
		&v1.Event{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "db.1"}, Reason: "Scheduled",
			InvolvedObject: v1.ObjectReference{Kind: "Pod", Namespace: "default", Name: "db"}, Message: "Successfully assigned"},
	}
}

// runWith runs corepinctl against a fake cluster.
func runWith(t *testing.T, objs []runtime.Object, terminal bool, args ...string) (string, string, int) {
	t.Helper()
	client := fake.NewClientset(objs...)
	oldClient, oldTerm := clientFor, isTerminal
	clientFor = func(*kubeFlags) (kubernetes.Interface, string, error) { return client, "default", nil }
	isTerminal = func(io.Writer) bool { return terminal }
	t.Cleanup(func() { clientFor, isTerminal = oldClient, oldTerm })
	t.Setenv("NO_COLOR", "")
	var out, errOut bytes.Buffer
	code := run(args, &out, &errOut)
	return out.String(), errOut.String(), code
}

func TestInspectCommands(t *testing.T) {
	for _, tc := range []struct {
		name     string
		args     []string
		terminal bool
		code     int
		// want are regular expressions the output must match, not those it must not.
		want, not []string
	}{
		{name: "nodes", args: []string{"nodes"}, want: []string{
			`(?m)^NAME +CPUS +RESERVED +EXCL-LIMIT +EXCL-USED +SHARED-POOL +EXCL-PODS +WARNINGS$`,
			`(?m)^node-a +8 +1 +4 +3 +4 +2 +-$`,
			`(?m)^node-b +- +- +0 +0 +0 +0 +no corepin.io/topology annotation`,
			`(?m)^node-c +8 +1 .*attention: incompatible topology change: CPU 3 moved`,
			`(?m)^node-c .*pod default/forged: its corepin.io/alloc-status cannot be honoured: .*CPU 0 is reserved`,
			`(?m)^node-c .*corepin.io/shared-pool "2-7" differs from the pool the pods' alloc-status leave \("1-7"\)`,
		}, not: []string{"\x1b["}},
		{name: "node map", args: []string{"node", "node-a"}, want: []string{
			`(?m)^Node node-a$`,
			`(?m)^  CPUs online +0-7 \(8\)$`,
			`(?m)^  Reserved +0 \(1\)$`,
			`(?m)^  Shared pool +3-4,6-7 \(4\) +\(published by the node plugin: 3-4,6-7\)$`,
			`(?m)^  Stacked +6 \(1\)$`,
			`(?m)^  Exclusive +limit 4, used 3, by 2 pods$`,
			`(?m)^socket 0\n  numa 0\n    core 0  cpu 0  reserved\n            cpu 4  shared\n    core 1  cpu 1  exclusive  default/db \(engine\)\n            cpu 5  exclusive  default/db \(engine\)$`,
			`(?m)^socket 1\n  numa 1\n    core 2  cpu 2  exclusive  default/cache \(engine\)\n            cpu 6  stacked$`,
			`(?m)^    core 3  cpu 3  shared\n            cpu 7  shared$`,
		}, not: []string{"\x1b[", "Warning"}},
		{name: "node map flags after the name, colour on a terminal", args: []string{"node", "node-a", "--context", "x"}, terminal: true, want: []string{
			`cpu 1  \x1b\[31mexclusive\x1b\[0m  default/db \(engine\)`,
			`cpu 6  \x1b\[33mstacked\x1b\[0m`,
		}},
		{name: "node without topology", args: []string{"node", "node-b"}, want: []string{
			`Warning no corepin.io/topology annotation`, `no CPU map`,
		}},
		{name: "unknown node", args: []string{"node", "nope"}, code: 1},
		{name: "explain placed", args: []string{"explain", "default/db"}, want: []string{
			`(?m)^Pod default/db on node node-a \(Running\)$`,
			`(?m)^  Rule +cpu-mode exclusive; alloc-spec cpu SameCoreFirst, numa Preferred$`,
			`(?m)^  CPUs +1,5 \(engine: 1,5\), from corepin.io/alloc-status$`,
			`ok +CPUs 1,5 are not reserved`,
			`ok +mems 0 are the NUMA nodes of the CPUs \(0\)`,
			`ok +no other pod holds these CPUs`,
			`ok +not in the shared pool the node plugin publishes`,
		}, not: []string{"FAIL"}},
		{name: "explain with -n", args: []string{"explain", "-n", "default", "cache"}, want: []string{
			`alloc-spec cpu Spread`, `ok +Spread: at most one CPU per physical core`, `ok +mems 1 are the NUMA nodes`,
		}, not: []string{"FAIL"}},
		{name: "explain shared", args: []string{"explain", "web"}, want: []string{
			`(?m)^  CPUs +3-4,6-7: shared, the node's shared pool \(published by the node plugin\)$`,
		}},
		{name: "explain inconsistent", args: []string{"explain", "forged"}, want: []string{
			`FAIL CPUs 0 are not reserved \(reserved: 0, of them in the pod: 0\)`,
			`check\(s\) failed`,
		}},
		{name: "explain pending", args: []string{"explain", "big"}, want: []string{
			`(?m)^Pod default/big is pending: not bound to a node \(scheduler corepin-scheduler\)$`,
			`(?m)^    2026-11-23T01:00:00Z \(x3\)  0/3 nodes are available: 1 exclusive limit 4 reached \(needs 4, holds 3\)\.$`,
			// the engine's reason now (its topology filter runs first), not the event's
			`(?m)^    node-a  no NUMA node has 4 free CPUs on cores no pod holds \(numa Required; most: 2 on NUMA node 1\)$`,
			`(?m)^    node-b  node has no corepin.io/topology annotation`,
			`(?m)^    node-c  node needs attention, no new exclusive pods: incompatible topology change: CPU 3 moved$`,
		}, not: []string{"Successfully assigned", "fits"}},
		{name: "unknown pod", args: []string{"explain", "nope"}, code: 1},
		{name: "explain needs a pod", args: []string{"explain"}, code: 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, errOut, code := runWith(t, testCluster(), tc.terminal, tc.args...)
			if code != tc.code {
				t.Fatalf("exit %d, want %d; stderr %s\n%s", code, tc.code, errOut, out)
			}
			for _, re := range tc.want {
				if !regexp.MustCompile(re).MatchString(out) {
					t.Errorf("output does not match %q:\n%s", re, out)
				}
			}
			for _, re := range tc.not {
				if regexp.MustCompile(regexp.QuoteMeta(re)).MatchString(out) {
					t.Errorf("output has %q:\n%s", re, out)
				}
			}
		})
	}
}

// The JSON documents parse and carry what scripts read.
func TestInspectJSON(t *testing.T) {
	out, errOut, code := runWith(t, testCluster(), false, "node", "-o", "json", "node-a")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var doc nodeDoc
	dec := json.NewDecoder(strings.NewReader(out))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&doc); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if doc.Node != "node-a" || doc.Online != "0-7" || doc.Reserved != "0" || doc.SharedPool != "3-4,6-7" || doc.Stacked != "6" ||
		doc.SharedPoolPublished == nil || *doc.SharedPoolPublished != "3-4,6-7" {
		t.Errorf("header %+v", doc)
	}
	if c := doc.Capacity; c.Allocatable != 7 || c.ExclusiveLimit != 4 || c.ExclusiveUsed != 3 || c.SharedMilli != 500 || c.SharedHeadroom != 2 {
		t.Errorf("capacity %+v", c)
	}
	if len(doc.CPUs) != 8 {
		t.Fatalf("%d cpus", len(doc.CPUs))
	}
	want := []string{"reserved", "exclusive", "exclusive", "shared", "shared", "exclusive", "stacked", "shared"}
	for i, c := range doc.CPUs {
		if c.ID != i || c.State != want[i] {
			t.Errorf("cpu %d: %+v, want state %s", i, c, want[i])
		}
	}
	if c := doc.CPUs[1]; c.Pod != "default/db" || c.Container != "engine" || c.Core != 1 || c.Socket != 0 || c.NUMA != 0 {
		t.Errorf("cpu 1: %+v", c)
	}
	if len(doc.ExclusivePods) != 2 || doc.ExclusivePods[1].Pod != "default/db" || doc.ExclusivePods[1].Containers["engine"] != "1,5" {
		t.Errorf("exclusive pods %+v", doc.ExclusivePods)
	}

	// The field names are the documented ones.
	var raw map[string]any
	if err := json.Unmarshal([]byte(out), &raw); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"node", "online", "reserved", "sharedPool", "sharedPoolPublished", "stacked", "capacity", "exclusivePods", "warnings", "cpus"} {
		if _, ok := raw[key]; !ok {
			t.Errorf("no %q in %s", key, out)
		}
	}

	out, _, code = runWith(t, testCluster(), false, "nodes", "-o", "json")
	var lines []nodeSummary
	if err := json.Unmarshal([]byte(out), &lines); err != nil || code != 0 || len(lines) != 3 {
		t.Fatalf("nodes -o json: %v %d\n%s", err, code, out)
	}
	if a := lines[0]; fmt.Sprintf("%+v", a) != "{Name:node-a CPUs:8 Reserved:1 ExclusiveLimit:4 ExclusiveUsed:3 SharedPool:4 ExclusivePods:2 Warnings:[]}" {
		t.Errorf("node-a: %+v", a)
	}
}

// decodeExplain decodes `corepinctl explain -o json` output strictly: one
// document with only the documented fields, and nothing after it.
func decodeExplain(t *testing.T, out string) explainDoc {
	t.Helper()
	var doc explainDoc
	dec := json.NewDecoder(strings.NewReader(out))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&doc); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if dec.More() {
		t.Fatalf("more than one document:\n%s", out)
	}
	return doc
}

// explain -o json carries what the text shows, for scripts.
func TestExplainJSON(t *testing.T) {
	withBadPod := func() []runtime.Object {
		return append(testCluster(), testPod("bad", "node-a", "1", map[string]string{api.AnnotationCPUMode: "turbo"}))
	}
	for _, tc := range []struct {
		name  string
		objs  func() []runtime.Object
		args  []string
		check func(t *testing.T, d explainDoc)
	}{
		{name: "placed", objs: testCluster, args: []string{"explain", "-o", "json", "default/db"}, check: func(t *testing.T, d explainDoc) {
			if d.Pod != "default/db" || d.State != "placed" || d.Phase != "Running" || d.Node != "node-a" || d.Mode != "exclusive" {
				t.Errorf("header %+v", d)
			}
			if r := d.Rule; r == nil || r.CPUMode != "exclusive" || r.AllocSpec == nil || r.AllocSpec.CPU != "SameCoreFirst" || r.AllocSpec.NUMA != "Preferred" || r.AllocSpec.Defaults {
				t.Errorf("rule %+v", r)
			}
			if s := d.AllocStatus; d.CPUs != "1,5" || d.CPUSource != "alloc-status" || s == nil || s.Node != "node-a" || s.CPUs != "1,5" || s.Mems != "0" ||
				len(s.Containers) != 1 || s.Containers["engine"] != "1,5" {
				t.Errorf("cpus %q from %q, alloc-status %+v", d.CPUs, d.CPUSource, s)
			}
			if len(d.Checks) != 8 || d.FailedChecks != 0 {
				t.Errorf("%d checks, %d failed: %+v", len(d.Checks), d.FailedChecks, d.Checks)
			}
			for _, c := range d.Checks {
				if !c.OK || c.Check == "" || c.Detail == "" {
					t.Errorf("check %+v", c)
				}
			}
		}},
		{name: "inconsistent, --output", objs: testCluster, args: []string{"explain", "forged", "--output", "json"}, check: func(t *testing.T, d explainDoc) {
			if d.Node != "node-c" || d.CPUs != "0" || d.FailedChecks != 1 {
				t.Errorf("node %q, cpus %q, %d failed", d.Node, d.CPUs, d.FailedChecks)
			}
			var failed []checkDoc
			for _, c := range d.Checks {
				if !c.OK {
					failed = append(failed, c)
				}
			}
			if len(failed) != 1 || failed[0].Check != "not-reserved" || failed[0].Detail != "CPUs 0 are not reserved (reserved: 0, of them in the pod: 0)" {
				t.Errorf("failed checks %+v", failed)
			}
			if d.Reserved != "0" || len(d.Warnings) == 0 {
				t.Errorf("reserved %q, warnings %q", d.Reserved, d.Warnings)
			}
		}},
		{name: "shared", objs: testCluster, args: []string{"explain", "-o", "json", "web"}, check: func(t *testing.T, d explainDoc) {
			if d.Mode != "shared" || d.Rule == nil || d.Rule.AllocSpec != nil || d.CPUSource != "shared-pool" || d.CPUs != "3-4,6-7" ||
				d.SharedPoolFrom != "published" || d.AllocStatus != nil || len(d.Checks) != 0 {
				t.Errorf("%+v", d)
			}
		}},
		{name: "pending", objs: testCluster, args: []string{"explain", "-o", "json", "big"}, check: func(t *testing.T, d explainDoc) {
			if d.Pod != "default/big" || d.State != "pending" || d.Node != "" || d.SchedulerName != "corepin-scheduler" || d.CPUs != "" || d.AllocStatus != nil {
				t.Errorf("header %+v", d)
			}
			want := eventDoc{Time: "2026-11-23T01:00:00Z", Count: 3, Message: "0/3 nodes are available: 1 exclusive limit 4 reached (needs 4, holds 3)."}
			if len(d.Events) != 1 || d.Events[0] != want {
				t.Errorf("events %+v", d.Events)
			}
			if len(d.Nodes) != 3 {
				t.Fatalf("nodes %+v", d.Nodes)
			}
			if n := d.Nodes[0]; n.Node != "node-a" || n.Fits || n.Reason != "no NUMA node has 4 free CPUs on cores no pod holds (numa Required; most: 2 on NUMA node 1)" {
				t.Errorf("node-a %+v", n)
			}
			if n := d.Nodes[2]; n.Node != "node-c" || n.Fits || n.Reason != "node needs attention, no new exclusive pods: incompatible topology change: CPU 3 moved" {
				t.Errorf("node-c %+v", n)
			}
		}},
		{name: "invalid annotations", objs: withBadPod, args: []string{"explain", "-o", "json", "bad"}, check: func(t *testing.T, d explainDoc) {
			if d.Rule != nil || d.Mode != "" || len(d.AnnotationErrors) != 1 || d.AnnotationErrors[0] != `corepin.io/cpu-mode="turbo": must be exclusive or shared` {
				t.Errorf("rule %+v, mode %q, errors %q", d.Rule, d.Mode, d.AnnotationErrors)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// a terminal, to show that JSON is never coloured
			out, errOut, code := runWith(t, tc.objs(), true, tc.args...)
			if code != 0 || errOut != "" {
				t.Fatalf("exit %d: %s", code, errOut)
			}
			if strings.Contains(out, "\x1b[") {
				t.Errorf("colour in JSON:\n%s", out)
			}
			if testing.Verbose() {
				t.Logf("%s\n%s", strings.Join(tc.args, " "), out)
			}
			doc := decodeExplain(t, out)
			tc.check(t, doc)

			// The document has every fact of the text: printed as text it is
			// the text output.
			var args []string
			for i := 0; i < len(tc.args); i++ {
				if tc.args[i] == "-o" || tc.args[i] == "--output" {
					i++
					continue
				}
				args = append(args, tc.args[i])
			}
			text, _, _ := runWith(t, tc.objs(), false, args...)
			var fromJSON bytes.Buffer
			printExplain(&fromJSON, &doc, false)
			if fromJSON.String() != text {
				t.Errorf("the JSON printed as text:\n%s\nthe text output:\n%s", fromJSON.String(), text)
			}

			// The field names are the documented ones, present in every document.
			var raw map[string]any
			if err := json.Unmarshal([]byte(out), &raw); err != nil {
				t.Fatal(err)
			}
			for _, key := range []string{"pod", "state", "phase", "node", "schedulerName", "mode", "rule", "annotationErrors",
				"cpus", "cpuSource", "sharedPool", "sharedPoolFrom", "reserved", "allocStatus", "allocStatusError", "checks", "failedChecks", "warnings",
				"events", "eventsError", "extenderError", "nodes"} {
				if _, ok := raw[key]; !ok {
					t.Errorf("no %q", key)
				}
			}
			for _, list := range []string{"annotationErrors", "checks", "warnings", "events", "nodes"} {
				if _, ok := raw[list].([]any); !ok {
					t.Errorf("%q is %v, want a list", list, raw[list])
				}
			}
		})
	}
}

// TestOutputFlag: nodes and node take the same -o/--output as explain.
func TestOutputFlag(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
		err  string
		out  string
	}{
		{[]string{"nodes", "-o", "yaml"}, 2, `corepinctl nodes: -o/--output "yaml": must be text or json`, ""},
		{[]string{"node", "node-a", "--output=wide"}, 2, `corepinctl node: -o/--output "wide": must be text or json`, ""},
		{[]string{"nodes", "--output", "json"}, 0, "", `"name": "node-a"`},
		{[]string{"node", "-o", "text", "node-a"}, 0, "", "node-a"},
	} {
		out, errOut, code := runWith(t, testCluster(), false, tc.args...)
		if code != tc.code || !strings.Contains(errOut, tc.err) || !strings.Contains(out, tc.out) {
			t.Errorf("%v: exit %d, stderr %q, stdout %q; want %d, %q, %q", tc.args, code, errOut, out, tc.code, tc.err, tc.out)
		}
	}
}

func TestExplainOutputFlag(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
		err  string
	}{
		{[]string{"explain", "-o", "yaml", "db"}, 2, `corepinctl explain: -o/--output "yaml": must be text or json`},
		{[]string{"explain", "db", "--output=yaml"}, 2, `-o/--output "yaml": must be text or json`},
		{[]string{"explain", "-o", "json"}, 2, "usage: corepinctl explain"},
		// an error leaves no document on stdout, only the message
		{[]string{"explain", "-o", "json", "nope"}, 1, "pod default/nope not found"},
		{[]string{"explain", "-o", "text", "db"}, 0, ""},
	} {
		out, errOut, code := runWith(t, testCluster(), false, tc.args...)
		if code != tc.code || !strings.Contains(errOut, tc.err) {
			t.Errorf("%v: exit %d (%s), want %d with %q", tc.args, code, errOut, tc.code, tc.err)
		}
		if tc.code != 0 && out != "" {
			t.Errorf("%v: printed %q on stdout", tc.args, out)
		}
		if tc.code == 0 && !strings.HasPrefix(out, "Pod default/db on node node-a (Running)\n") {
			t.Errorf("%v: %s", tc.args, out)
		}
	}
}
