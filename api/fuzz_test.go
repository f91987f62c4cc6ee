package api

import (
	"testing"
)

// The fuzz targets check that no input panics, and that whatever parses
// survives a round trip through its printed form.

func FuzzParseCPUList(f *testing.F) {
	for _, s := range []string{"", "0", "0-3,8,10-11", "3-1", "a", "0-99999999", "1,,2", "-1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		set, err := ParseCPUList(s)
		if err != nil {
			return
		}
		again, err := ParseCPUList(set.String())
		if err != nil || !again.Equals(set) {
			t.Fatalf("%q -> %q -> %v, %v", s, set.String(), again, err)
		}
	})
}

func FuzzParseAllocSpec(f *testing.F) {
	for _, s := range []string{"", "{}", `{"cpu":"Spread","numa":"Required","ioQueueSpread":true,"containers":["engine"]}`, `{"cpu":1}`, `[]`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		spec, err := ParseAllocSpec(s)
		if err == nil && (spec.CPU == "" || spec.NUMA == "") {
			t.Fatalf("%q parsed without defaults: %+v", s, spec)
		}
	})
}

func FuzzParseAllocStatus(f *testing.F) {
	for _, s := range []string{`{"node":"node-a","cpus":"4-7","containers":{"engine":"4-7"},"mems":"0"}`, `{}`, `{"cpus":"0-"}`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		st, err := ParseAllocStatus(s)
		if err != nil {
			return
		}
		again, err := ParseAllocStatus(st.String())
		if err != nil || again.String() != st.String() {
			t.Fatalf("round trip of %q: %q, %v", s, again.String(), err)
		}
	})
}

func FuzzParseTopology(f *testing.F) {
	for _, s := range []string{
		`{"version":1,"cpus":[{"id":0,"core":0,"socket":0,"numa":0,"l3":0},{"id":1,"core":0,"socket":0,"numa":0,"l3":0}],"reserved":"0-1","ioQueues":[{"name":"eth0-rx-0","cpus":"1"}]}`,
		`{"version":1}`, `null`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		topo, err := ParseTopology(s)
		if err != nil {
			return
		}
		if topo.Online().Size() != len(topo.CPUs) {
			t.Fatalf("%q: duplicate ids accepted", s)
		}
		if err := CompatibleGrow(topo, topo); err != nil {
			t.Fatalf("%q: a topology is not a compatible grow of itself: %v", s, err)
		}
	})
}

func FuzzParseNodePolicy(f *testing.F) {
	for _, s := range []string{`{"maxExclusiveRatio": 0.6667, "sharedOvercommit": 2.0, "sharedHeadroom": 2}`, `{"maxExclusiveRatio": "x"}`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParseNodePolicy(s)
		if err == nil {
			if err := p.Validate("x"); err != nil {
				t.Fatalf("%q accepted but invalid: %v", s, err)
			}
		}
	})
}

func FuzzParsePodIntent(f *testing.F) {
	f.Add("exclusive", `{"cpu":"Spread"}`, "2", "true", "false")
	f.Add("shared", "", "x", "", "1")
	f.Fuzz(func(t *testing.T, mode, spec, maxPer, release, exclude string) {
		intent, err := ParsePodIntent(map[string]string{
			AnnotationCPUMode: mode, AnnotationAllocSpec: spec, AnnotationMaxPerNode: maxPer,
			AnnotationReleaseIsolateMode: release, AnnotationExcludeReserveCPUSet: exclude,
		}, nil)
		if err == nil && intent.MaxPerNode < 1 {
			t.Fatalf("max-per-node %q accepted as %d", maxPer, intent.MaxPerNode)
		}
	})
}

func FuzzParseConfig(f *testing.F) {
	f.Add("maxExclusiveRatio: 0.5\npipelines: [{name: db, filters: [topology]}]\n")
	f.Fuzz(func(t *testing.T, s string) {
		_, _ = ParseConfig("fuzz", []byte(s))
	})
}
