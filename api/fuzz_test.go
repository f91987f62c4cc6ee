package api

import (
	"encoding/json"
	"reflect"
	"slices"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/corepin/corepin/internal/reference"
)

// The fuzz targets check that no input panics, that whatever parses
// survives a round trip through its printed form, and, where the contract
// pins the format, that the parser agrees with internal/reference, a
// second reading written from the contract: same verdict, same value.

// checkCPUList compares a parsed CPU list (or a refusal) with the
// reference's expansion of s, and the printed form with the reference's.
func checkCPUList(t *testing.T, s string, set interface {
	List() []int
	String() string
}, err error) {
	t.Helper()
	ids, ok := reference.CPUList(s, MaxCPUID)
	if (err == nil) != ok {
		t.Fatalf("%q: parser error %v, reference accepts: %v", s, err, ok)
	}
	if err != nil {
		return
	}
	if got := set.List(); !slices.Equal(got, ids) {
		t.Fatalf("%q: parsed %v, reference %v", s, got, ids)
	}
	if got, want := set.String(), reference.FormatCPUList(ids); got != want {
		t.Fatalf("%q: printed %q, reference %q", s, got, want)
	}
}

func FuzzParseCPUList(f *testing.F) {
	for _, s := range []string{"", "0", "0-3,8,10-11", "3-1", "a", "0-99999999", "1,,2", "-1", "0--0", "+1-+2", "0-1,1-2"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		set, err := ParseCPUList(s)
		checkCPUList(t, s, set, err)
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
		`{"version":1,"cpus":[{"id":3,"core":1,"socket":0,"numa":0,"l3":0},{"id":1,"core":1,"socket":0,"numa":0,"l3":1}]}`,
		`{"version":1,"cpus":[{"id":0,"core":0,"socket":0,"numa":0,"l3":0}],"reserved":"1"}`,
		`{"version":1,"cpus":[{"id":0,"core":0,"socket":0,"numa":0,"l3":0}],"ioQueues":[{"name":"q0","cpus":"0"},{"name":"q1","cpus":"0"}]}`,
		`{"version":1,"cpus":[{"id":0,"Core":0}]}`, `{"version":1,"version":1,"cpus":[{"id":0}]}`,
		`{"version":1}`, `null`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if len(s) > maxAnnotationValue {
			return
		}
		topo, err := ParseTopology(s)
		ref, verdict := reference.ReadTopology(s, MaxCPUID)
		if err != nil {
			if verdict == reference.Valid {
				t.Fatalf("%q refused (%v), the contract accepts it as %+v", s, err, ref)
			}
			return
		}
		if verdict == reference.Invalid {
			t.Fatalf("%q accepted as %+v, the contract refuses it", s, topo)
		}
		if got := topologyAsReference(topo); verdict == reference.Valid && !reflect.DeepEqual(got, ref) {
			t.Fatalf("%q read as\n%+v\nthe contract reads\n%+v", s, got, ref)
		}
		// What the plugin publishes parses back to the same topology.
		data, err := json.Marshal(topo)
		if err != nil {
			t.Fatal(err)
		}
		again, err := ParseTopology(string(data))
		if err != nil || !reflect.DeepEqual(topologyAsReference(again), topologyAsReference(topo)) {
			t.Fatalf("%q -> %s -> %+v, %v", s, data, again, err)
		}
		if err := CompatibleGrow(topo, topo); err != nil {
			t.Fatalf("%q: a topology is not a compatible grow of itself: %v", s, err)
		}
	})
}

func topologyAsReference(t Topology) reference.Topology {
	out := reference.Topology{Version: t.Version, Reserved: t.Reserved.Set().List()}
	for _, c := range t.CPUs {
		out.CPUs = append(out.CPUs, reference.CPU{ID: c.ID, Core: c.Core, Socket: c.Socket, NUMA: c.NUMA, L3: c.L3})
	}
	for _, q := range t.IOQueues {
		out.IOQueues = append(out.IOQueues, reference.IOQueue{Name: q.Name, CPUs: q.CPUs.Set().List()})
	}
	return out
}

func FuzzParseNodePolicy(f *testing.F) {
	for _, s := range []string{`{"maxExclusiveRatio": 0.6667, "sharedOvercommit": 2.0, "sharedHeadroom": 2}`, `{"maxExclusiveRatio": "x"}`,
		`{"sharedOvercommit": 0.5}`, `{"sharedHeadroom": 1025}`, `{"sharedHeadroom": 2.0}`, `{"maxExclusiveRatio": 1e400}`,
		`{"MaxExclusiveRatio": 0.5}`, `{"sharedHeadroom": 1, "sharedHeadroom": 2}`, ` `, `{}`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if len(s) > maxAnnotationValue {
			return
		}
		p, err := ParseNodePolicy(s)
		ref, verdict := reference.ReadNodePolicy(s)
		if err != nil {
			if verdict == reference.Valid {
				t.Fatalf("%q refused (%v), the contract accepts it", s, err)
			}
			return
		}
		if verdict == reference.Invalid {
			t.Fatalf("%q accepted as %s, the contract refuses it", s, nodePolicyString(p))
		}
		got := reference.NodePolicy{MaxExclusiveRatio: p.MaxExclusiveRatio, SharedOvercommit: p.SharedOvercommit, SharedHeadroom: p.SharedHeadroom}
		if verdict == reference.Valid && !reflect.DeepEqual(got, ref) {
			t.Fatalf("%q read as %s, the contract reads %s", s, nodePolicyString(p),
				nodePolicyString(NodePolicy{ref.MaxExclusiveRatio, ref.SharedOvercommit, ref.SharedHeadroom}))
		}
		data, err := json.Marshal(p)
		if err != nil {
			t.Fatal(err)
		}
		again, err := ParseNodePolicy(string(data))
		if err != nil || !reflect.DeepEqual(again, p) {
			t.Fatalf("%q -> %s -> %s, %v", s, data, nodePolicyString(again), err)
		}
	})
}

func nodePolicyString(p NodePolicy) string {
	data, _ := json.Marshal(p)
	return string(data)
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
	f.Add("pipelines: [{name: db, selector: {matchLabels: {a: b}}, filters: [topology, io-queue]}, {name: web, filters: []}]\n" +
		"scoringStrategy: LeastAllocated\ntls: {certFile: c, keyFile: k}\nsystemNamespaces: []\n")
	f.Add("pipelines: [{name: db, selector: {matchExpressions: [{key: a, operator: In, values: [x]}]}, filters: [capacity]}]\n")
	f.Add("MaxExclusiveRatio: 0.5\n")
	f.Add("pipelines: [{name: db, Filters: [topology]}]\n")
	f.Add("tls: {certFile: c}\n")
	f.Add(`{"sharedHeadroom": 3, "bindAllNamespaces": ["perf"]}`)
	f.Fuzz(func(t *testing.T, s string) {
		c, err := ParseConfig("fuzz", []byte(s))
		if err != nil {
			return
		}
		// Every key is one docs/extender.md names, in its case.
		j, err := yaml.YAMLToJSON([]byte(s))
		if err != nil {
			t.Fatalf("%q accepted, but is no YAML document: %v", s, err)
		}
		if wrong, err := reference.ConfigKeys(j); err != nil || len(wrong) > 0 {
			t.Fatalf("%q accepted with unknown keys %v (%v)", s, wrong, err)
		}
		// The documented rules hold on what was accepted.
		limits := []string{}
		if p := c.MaxExclusiveRatio; p != nil && !(*p >= 0 && *p <= 1) {
			limits = append(limits, "maxExclusiveRatio")
		}
		if p := c.SharedOvercommit; p != nil && !(*p >= 1) {
			limits = append(limits, "sharedOvercommit")
		}
		if p := c.SharedHeadroom; p != nil && (*p < 0 || *p > 1024) {
			limits = append(limits, "sharedHeadroom")
		}
		if c.ScoringStrategy != "" && c.ScoringStrategy != MostAllocated && c.ScoringStrategy != LeastAllocated {
			limits = append(limits, "scoringStrategy")
		}
		names := map[string]bool{}
		for _, p := range c.Pipelines {
			if p.Name == "" || names[p.Name] {
				limits = append(limits, "pipelines.name")
			}
			names[p.Name] = true
			for _, f := range p.Filters {
				if !slices.Contains([]string{"topology", "capacity", "app-spread", "io-queue"}, f) {
					limits = append(limits, "pipelines.filters")
				}
			}
		}
		if c.TLS != nil && (c.TLS.CertFile == "" || c.TLS.KeyFile == "") {
			limits = append(limits, "tls")
		}
		if len(limits) > 0 {
			t.Fatalf("%q accepted as %+v, breaking the documented rules for %v", s, c, limits)
		}
		// Written back out, the configuration reads back and prints the
		// same. (Printed forms, not values: omitempty prints an explicit
		// "systemNamespaces: []" as nothing, the default; nothing marshals a
		// Config outside tests today.)
		data, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		again, err := ParseConfig("again", data)
		if err != nil {
			t.Fatalf("%q -> %s: %v", s, data, err)
		}
		if data2, _ := json.Marshal(again); string(data2) != string(data) {
			t.Fatalf("%q -> %s -> %s", s, data, data2)
		}
	})
}
