package reference

import (
	"slices"
	"testing"
)

// The reference must itself read the contract's examples right, or the
// fuzzers compare the parsers with nothing.
func TestReference(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []int
		ok   bool
	}{
		{"0-3,8,10-11", []int{0, 1, 2, 3, 8, 10, 11}, true},
		{"", []int{}, true},
		{"3-3,1,1", []int{1, 3}, true},
		{"0--0", []int{0}, true},
		{"3-1", nil, false}, {"1,,2", nil, false}, {"-1", nil, false}, {" 1", nil, false}, {"0-65536", nil, false},
	} {
		ids, ok := CPUList(tc.in, 65535)
		if ok != tc.ok || !slices.Equal(ids, tc.want) {
			t.Errorf("CPUList(%q) = %v, %v; want %v, %v", tc.in, ids, ok, tc.want, tc.ok)
		}
	}
	if got := FormatCPUList([]int{0, 1, 2, 3, 8, 10, 11}); got != "0-3,8,10-11" {
		t.Errorf("FormatCPUList: %q", got)
	}

	contract := `{"version": 1,
 "cpus": [{"id": 0, "core": 0, "socket": 0, "numa": 0, "l3": 0}, {"id": 1, "core": 0, "socket": 0, "numa": 0, "l3": 0}],
 "reserved": "0-1",
 "ioQueues": [{"name": "eth0-rx-0", "cpus": "0"}, {"name": "nvme0q1", "cpus": "1"}]}`
	for in, want := range map[string]Verdict{
		contract:                                                             Valid,
		`{"version": 1, "cpus": [{"id": 0}]}`:                                Valid,
		`{"version": 2, "cpus": [{"id": 0}]}`:                                Invalid,
		`{"version": 1, "cpus": [{"id": 0, "ID": 1}]}`:                       Invalid,
		`{"version": 1, "version": 1, "cpus": [{"id": 0}]}`:                  Invalid,
		`{"version": 1, "cpus": [{"id": 0}, {"id": 0}]}`:                     Invalid,
		`{"version": 1, "cpus": [{"id": 0, "core": 0}, {"id": 1, "l3": 1}]}`: Invalid,
		`{"version": 1, "cpus": [{"id": 0}], "reserved": "1"}`:               Invalid,
		`{"version": 1, "cpus": [{"id": 0}], "ioQueues": [{"cpus": "0"}]}`:   Invalid,
		`{"version": 1, "cpus": [{"id": 0.5}]}`:                              Invalid,
		`{"version": 1, "cpus": [{"id": 0}]} {}`:                             Invalid,
		`{"version": 1, "cpus": [{"id": 0}], "reserved": null}`:              Unsure,
	} {
		if _, got := ReadTopology(in, 65535); got != want {
			t.Errorf("ReadTopology(%s) = %v, want %v", in, got, want)
		}
	}
	for in, want := range map[string]Verdict{
		`{"maxExclusiveRatio": 0.6667, "sharedOvercommit": 2.0, "sharedHeadroom": 2}`: Valid,
		"": Valid, `{}`: Valid,
		`{"maxExclusiveRatio": 1.5}`: Invalid, `{"sharedOvercommit": 0.5}`: Invalid, `{"sharedHeadroom": 1025}`: Invalid,
		`{"sharedHeadroom": 2.5}`: Invalid, `{"MaxExclusiveRatio": 0.5}`: Invalid, `{"maxExclusiveRatio": "0.5"}`: Invalid,
		`{"maxExclusiveRatio": 1e400}`: Invalid, `{"sharedHeadroom": null}`: Unsure,
	} {
		if _, got := ReadNodePolicy(in); got != want {
			t.Errorf("ReadNodePolicy(%s) = %v, want %v", in, got, want)
		}
	}
	wrong, err := ConfigKeys([]byte(`{"maxExclusiveRatio": 0.5, "Pipelines": [], "pipelines": [{"name": "a", "Filters": [],
		"selector": {"matchExpressions": [{"key": "k", "Operator": "In"}]}}], "tls": {"certfile": "x"}}`))
	if want := []string{"Pipelines", "pipelines[0].Filters", "pipelines[0].selector.matchExpressions[0].Operator", "tls.certfile"}; err != nil || !slices.Equal(wrong, want) {
		t.Errorf("ConfigKeys: %v, %v; want %v", wrong, err, want)
	}
}
