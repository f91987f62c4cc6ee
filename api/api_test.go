package api

import (
	"fmt"
	"strings"
	"testing"
)

func TestParseAllocSpec(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     AllocSpec
		err      string
	}{
		{name: "empty is the default", in: "", want: AllocSpec{CPU: SameCoreFirst, NUMA: NUMAPreferred}},
		{name: "braces", in: "{}", want: AllocSpec{CPU: SameCoreFirst, NUMA: NUMAPreferred}},
		{name: "full", in: `{"cpu":"Spread","numa":"Required","ioQueueSpread":true,"containers":["engine"]}`,
			want: AllocSpec{CPU: Spread, NUMA: NUMARequired, IOQueueSpread: true, Containers: []string{"engine"}}},
		{name: "unknown field", in: `{"cpus":"Spread"}`, err: `unknown field "cpus"`},
		{name: "field name in another case", in: `{"CPU":"Spread"}`, err: `unknown field "CPU"`},
		{name: "field name in another case, camel", in: `{"ioqueuespread":true}`, err: `unknown field "ioqueuespread"`},
		{name: "repeated field", in: `{"cpu":"Spread","cpu":"SameCoreFirst"}`, err: `duplicate field "cpu"`},
		{name: "several problems on one line", in: `{"CPU":"Spread","NUMA":"None"}`, err: `unknown field "CPU"; unknown field "NUMA"`},
		{name: "bad cpu", in: `{"cpu":"Packed"}`, err: `field "cpu": must be SameCoreFirst, Spread or BindAllCPUs (got "Packed")`},
		{name: "bad numa", in: `{"numa":"Strict"}`, err: `"Strict"`},
		{name: "wrong type", in: `{"ioQueueSpread":"yes"}`, err: `field "ioQueueSpread"`},
		{name: "trailing", in: `{} {}`, err: "trailing data"},
		{name: "duplicate container", in: `{"containers":["a","a"]}`, err: "listed twice"},
		{name: "not json", in: `SameCoreFirst`, err: AnnotationAllocSpec},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseAllocSpec(tc.in)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) || !strings.Contains(err.Error(), AnnotationAllocSpec) {
					t.Fatalf("error %v, want one naming %s and containing %q", err, AnnotationAllocSpec, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.CPU != tc.want.CPU || got.NUMA != tc.want.NUMA || got.IOQueueSpread != tc.want.IOQueueSpread ||
				strings.Join(got.Containers, ",") != strings.Join(tc.want.Containers, ",") {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestAllocStatusRoundTrip(t *testing.T) {
	in := `{"node": "node-a", "cpus": "4-7", "containers": {"engine": "4-5", "log": "6-7"}, "mems": "0"}`
	s, err := ParseAllocStatus(in)
	if err != nil {
		t.Fatal(err)
	}
	if s.Node != "node-a" || s.CPUs.String() != "4-7" || s.Containers["engine"].String() != "4-5" || s.Mems.String() != "0" {
		t.Fatalf("parsed %+v", s)
	}
	want := `{"node":"node-a","cpus":"4-7","containers":{"engine":"4-5","log":"6-7"},"mems":"0"}`
	if s.String() != want {
		t.Fatalf("String() = %s, want %s", s.String(), want)
	}
	again, err := ParseAllocStatus(s.String())
	if err != nil || again.String() != want {
		t.Fatalf("round trip: %v %s", err, again.String())
	}
}

func TestParseAllocStatusErrors(t *testing.T) {
	for _, tc := range []struct{ in, err string }{
		{`{"node":"a","cpus":"4-x","containers":{"e":"4"},"mems":""}`, `"4-x"`},
		{`{"node":"","cpus":"4","containers":{"e":"4"},"mems":""}`, `field "node"`},
		{`{"node":"a","cpus":"","containers":{"e":"4"},"mems":""}`, `field "cpus"`},
		{`{"node":"a","cpus":"4-5","containers":{"e":"4-5","f":"5"},"mems":""}`, "given to two containers"},
		{`{"node":"a","cpus":"4-6","containers":{"e":"4-5"},"mems":""}`, "union"},
		{`{"node":"a","cpus":"4","containers":{"e":"4"},"mems":"","extra":1}`, `unknown field "extra"`},
		{`{"node":"a","CPUs":"4","containers":{"e":"4"},"mems":""}`, `unknown field "CPUs"`},
		{`{"node":"a","cpus":"4","cpus":"5","containers":{"e":"4"},"mems":""}`, `duplicate field "cpus"`},
		{`{"node":"a","cpus":"0-99999999","containers":{"e":"4"}}`, "out of range"},
		{`{"node":"a","cpus":4,"containers":{"e":"4"}}`, "CPU list string"},
	} {
		_, err := ParseAllocStatus(tc.in)
		if err == nil || !strings.Contains(err.Error(), tc.err) || !strings.Contains(err.Error(), AnnotationAllocStatus) {
			t.Errorf("%s: error %v, want %q", tc.in, err, tc.err)
		}
	}
}

func TestParseTopology(t *testing.T) {
	good := `{"version":1,"cpus":[{"id":1,"core":0,"socket":0,"numa":0,"l3":0},{"id":0,"core":0,"socket":0,"numa":0,"l3":0}],"reserved":"0","ioQueues":[{"name":"eth0-rx-0","cpus":"1"}]}`
	topo, err := ParseTopology(good)
	if err != nil {
		t.Fatal(err)
	}
	if topo.CPUs[0].ID != 0 || topo.Online().String() != "0-1" || topo.Reserved.String() != "0" {
		t.Fatalf("parsed %+v", topo)
	}
	for _, tc := range []struct{ in, err string }{
		{`{"version":2,"cpus":[{"id":0,"core":0,"socket":0,"numa":0,"l3":0}],"reserved":""}`, "version"},
		{`{"version":1,"cpus":[],"reserved":""}`, "must list"},
		{`{"version":1,"cpus":[{"id":0,"core":0,"socket":0,"numa":0,"l3":0},{"id":0,"core":1,"socket":0,"numa":0,"l3":0}],"reserved":""}`, "listed twice"},
		{`{"version":1,"cpus":[{"id":0,"core":0,"socket":0,"numa":0,"l3":0},{"id":1,"core":0,"socket":1,"numa":0,"l3":0}],"reserved":""}`, "different sockets"},
		{`{"version":1,"cpus":[{"id":0,"core":0,"socket":0,"numa":0,"l3":0}],"reserved":"1"}`, "not online"},
		{`{"version":1,"cpus":[{"id":0,"core":0,"socket":0,"numa":0,"l3":0}],"reserved":"","ioQueues":[{"name":"q","cpus":"3"}]}`, "not online"},
		{`{"version":1,"cpus":[{"id":0,"core":0,"socket":0,"numa":0,"l3":0,"smt":1}],"reserved":""}`, `unknown field "cpus[0].smt"`},
		{`{"version":1,"cpus":[{"id":0,"core":0,"socket":0,"numa":0,"l3":0,"Id":5}],"reserved":""}`, `unknown field "cpus[0].Id"`},
		{`{"version":1,"cpus":[{"id":0,"id":1,"core":0,"socket":0,"numa":0,"l3":0}],"reserved":""}`, `duplicate field "cpus[0].id"`},
	} {
		if _, err := ParseTopology(tc.in); err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%s: error %v, want %q", tc.in, err, tc.err)
		}
	}
}

func TestCompatibleGrow(t *testing.T) {
	mk := func(s string) Topology {
		topo, err := ParseTopology(s)
		if err != nil {
			t.Fatal(err)
		}
		return topo
	}
	old := mk(`{"version":1,"cpus":[{"id":0,"core":0,"socket":0,"numa":0,"l3":0},{"id":1,"core":1,"socket":0,"numa":0,"l3":0}],"reserved":"0","ioQueues":[{"name":"q0","cpus":"1"}]}`)
	for _, tc := range []struct{ name, next, err string }{
		{"same", `{"version":1,"cpus":[{"id":0,"core":0,"socket":0,"numa":0,"l3":0},{"id":1,"core":1,"socket":0,"numa":0,"l3":0}],"reserved":"0","ioQueues":[{"name":"q0","cpus":"1"}]}`, ""},
		{"grow", `{"version":1,"cpus":[{"id":0,"core":0,"socket":0,"numa":0,"l3":0},{"id":1,"core":1,"socket":0,"numa":0,"l3":0},{"id":2,"core":2,"socket":0,"numa":1,"l3":1}],"reserved":"0","ioQueues":[{"name":"q0","cpus":"1"},{"name":"q1","cpus":"2"}]}`, ""},
		{"shrink", `{"version":1,"cpus":[{"id":0,"core":0,"socket":0,"numa":0,"l3":0}],"reserved":"0"}`, "CPU 1 went offline"},
		{"moved", `{"version":1,"cpus":[{"id":0,"core":0,"socket":0,"numa":0,"l3":0},{"id":1,"core":1,"socket":0,"numa":1,"l3":0}],"reserved":"0","ioQueues":[{"name":"q0","cpus":"1"}]}`, "CPU 1 moved"},
		{"queue left", `{"version":1,"cpus":[{"id":0,"core":0,"socket":0,"numa":0,"l3":0},{"id":1,"core":1,"socket":0,"numa":0,"l3":0}],"reserved":"0","ioQueues":[{"name":"q0","cpus":"0"}]}`, "CPU 0 joined IO queue q0"},
	} {
		err := CompatibleGrow(old, mk(tc.next))
		if (err == nil) != (tc.err == "") || (err != nil && !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("%s: error %v, want %q", tc.name, err, tc.err)
		}
	}
}

func TestParsePodIntent(t *testing.T) {
	intent, err := ParsePodIntent(map[string]string{
		AnnotationCPUMode: "exclusive", AnnotationMaxPerNode: "2", AnnotationReleaseIsolateMode: "true",
	}, map[string]string{LabelApp: "db"})
	if err != nil {
		t.Fatal(err)
	}
	if !intent.Exclusive() || intent.MaxPerNode != 2 || intent.App != "db" || !intent.ReleaseIsolate || !intent.ExcludeReserve {
		t.Fatalf("intent %+v", intent)
	}
	if got := AppOf(map[string]string{AnnotationApp: "x"}, map[string]string{LabelAppName: "y", LabelApp: "z"}); got != "x" {
		t.Fatalf("AppOf = %q", got)
	}
	if got := AppOf(nil, map[string]string{LabelAppName: "y", LabelApp: "z"}); got != "y" {
		t.Fatalf("AppOf = %q", got)
	}
	_, err = ParsePodIntent(map[string]string{
		AnnotationCPUMode: "dedicated", AnnotationMaxPerNode: "0", AnnotationExcludeReserveCPUSet: "yes",
	}, nil)
	for _, want := range []string{`corepin.io/cpu-mode="dedicated"`, `corepin.io/max-per-node="0"`, `corepin.io/exclude-reserve-cpuset="yes"`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not contain %s", err, want)
		}
	}
	for _, v := range []string{"0", "-1", "1.5", "", " 2", "2 ", "+1", "01", "1e1", "two"} {
		if _, err := ParsePodIntent(map[string]string{AnnotationMaxPerNode: v}, nil); err == nil ||
			!strings.Contains(err.Error(), fmt.Sprintf("corepin.io/max-per-node=%q: must be an integer >= 1", v)) {
			t.Errorf("max-per-node %q: %v", v, err)
		}
	}
	for v, want := range map[string]int{"1": 1, "10": 10} {
		if intent, err := ParsePodIntent(map[string]string{AnnotationMaxPerNode: v}, nil); err != nil || intent.MaxPerNode != want {
			t.Errorf("max-per-node %q: %d, %v", v, intent.MaxPerNode, err)
		}
	}
	bindAll, err := ParsePodIntent(map[string]string{AnnotationCPUMode: "exclusive", AnnotationAllocSpec: `{"cpu":"BindAllCPUs"}`}, nil)
	if err != nil || bindAll.Exclusive() || !bindAll.BindAll() {
		t.Fatalf("BindAllCPUs intent %+v, %v", bindAll, err)
	}
}

func TestParseNodePolicy(t *testing.T) {
	p, err := ParseNodePolicy(`{"maxExclusiveRatio": 0.5, "sharedOvercommit": 3, "sharedHeadroom": 1}`)
	if err != nil {
		t.Fatal(err)
	}
	l := p.Apply(DefaultLimits())
	if l.MaxExclusiveRatio != 0.5 || l.SharedOvercommit != 3 || l.SharedHeadroom != 1 {
		t.Fatalf("limits %+v", l)
	}
	for _, in := range []string{`{"maxExclusiveRatio": 1.5}`, `{"sharedOvercommit": 0.5}`, `{"sharedHeadroom": -1}`, `{"ratio": 1}`,
		`{"MaxExclusiveRatio": 0.5}`, `{"maxExclusiveRatio": 0.5, "maxExclusiveRatio": 0.9}`} {
		if _, err := ParseNodePolicy(in); err == nil || !strings.Contains(err.Error(), AnnotationNodePolicy) {
			t.Errorf("%s: error %v", in, err)
		}
	}
}
