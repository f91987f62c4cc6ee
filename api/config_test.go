package api

import (
	"strings"
	"testing"
)

func TestParseConfig(t *testing.T) {
	c, err := ParseConfig("cfg", []byte("maxExclusiveRatio: 0.5\nsharedHeadroom: 1\nscoringStrategy: LeastAllocated\npipelines:\n- name: database\n  selector: {matchLabels: {tier: db}}\n  filters: [topology, capacity]\n"))
	if err != nil {
		t.Fatal(err)
	}
	l := c.Limits()
	if l.MaxExclusiveRatio != 0.5 || l.SharedHeadroom != 1 || l.SharedOvercommit != 2 || c.Strategy() != LeastAllocated {
		t.Fatalf("limits %+v strategy %s", l, c.Strategy())
	}
	for _, tc := range []struct{ in, want string }{
		{"maxExclusiveRatio: 2", "maxExclusiveRatio"},
		{"bogus: 1", "bogus"},
		{"scoringStrategy: Random", "scoringStrategy"},
		{"pipelines: [{name: a, filters: [nope]}]", "nope"},
		{"tls: {certFile: a}", "tls"},
		{"MaxExclusiveRatio: 0.5", `unknown field "MaxExclusiveRatio"`},
		{"pipelines: [{name: a, Filters: [capacity]}]", `unknown field "pipelines[0].Filters"`},
		{"sharedHeadroom: 1\nsharedHeadroom: 2", `"sharedHeadroom" already set`},
		// A key in the wrong case is found below a map of strings too.
		{"pipelines: [{name: a, selector: {matchLabels: {tier: \"1\"}}, Filters: [capacity]}]", `unknown field "pipelines[0].Filters"`},
		{"systemNamespaces: [\"2024\"]\nsharedHeadroom: 1\nSharedHeadroom: 3", `unknown field "SharedHeadroom"`},
		// A number where a string goes is refused naming the field, as the
		// API server refuses it in a manifest.
		{"pipelines: [{name: a, selector: {matchLabels: {tier: 1}}}]", `field "pipelines.selector.matchLabels": want string, got JSON number`},
	} {
		_, err := ParseConfig("cfg", []byte(tc.in))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want mention of %q", tc.in, err, tc.want)
		}
	}
}
