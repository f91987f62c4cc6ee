package extender

import (
	"encoding/json"
	"slices"
	"testing"
)

func TestNodeNameList(t *testing.T) {
	for _, tc := range []struct {
		name, body string
		want       []string
		wantErr    bool
	}{
		{name: "plain", body: `{"nodenames":["node-a","node-b"]}`, want: []string{"node-a", "node-b"}},
		{name: "whitespace", body: "{\"nodenames\": [ \"a\" ,\n\t\"b\" ] }", want: []string{"a", "b"}},
		{name: "empty", body: `{"nodenames":[]}`, want: []string{}},
		{name: "null", body: `{"nodenames":null}`, want: nil},
		{name: "absent", body: `{}`, want: nil},
		{name: "escapes", body: `{"nodenames":["n\u006fde-\"q\"","a\\b"]}`, want: []string{`node-"q"`, `a\b`}},
		{name: "number", body: `{"nodenames":["a",1]}`, wantErr: true},
		{name: "object", body: `{"nodenames":{"a":1}}`, wantErr: true},
		{name: "nested", body: `{"nodenames":[["a"]]}`, wantErr: true},
		{name: "invalid json", body: `{"nodenames":["a"`, wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var args extenderArgs
			err := json.Unmarshal([]byte(tc.body), &args)
			if tc.wantErr {
				if err == nil {
					t.Fatalf("decoded %q without error: %q", tc.body, args.names())
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := args.names()
			if !slices.Equal(got, tc.want) || (got == nil) != (tc.want == nil) {
				t.Fatalf("names = %#v, want %#v", got, tc.want)
			}
		})
	}
}

func TestWirePodKeepsWhatTheEngineReads(t *testing.T) {
	want := pendingAPIPod(t)
	body, err := json.Marshal(map[string]any{"pod": want})
	if err != nil {
		t.Fatal(err)
	}
	var args extenderArgs
	if err := json.Unmarshal(body, &args); err != nil {
		t.Fatal(err)
	}
	got := args.Pod.pod()
	if got.Name != want.Name || got.Namespace != want.Namespace || got.UID != want.UID || got.ResourceVersion != want.ResourceVersion {
		t.Errorf("metadata = %s/%s %s %s", got.Namespace, got.Name, got.UID, got.ResourceVersion)
	}
	if len(got.Labels) != len(want.Labels) || got.Labels["app"] != "orders-db" || len(got.Annotations) != len(want.Annotations) {
		t.Errorf("labels %v annotations %v", got.Labels, got.Annotations)
	}
	c := got.Spec.Containers
	if len(c) != 1 || c[0].Name != "engine" || c[0].Resources.Limits.Cpu().MilliValue() != 8000 || c[0].Resources.Requests.Cpu().MilliValue() != 8000 {
		t.Errorf("containers = %+v", c)
	}
}

// FuzzNodeNameList: the hand-written scan accepts exactly what encoding/json
// accepts as a list of strings, with the same result.
func FuzzNodeNameList(f *testing.F) {
	for _, s := range []string{`["a","b"]`, `[]`, `null`, `["\u00e9\n"]`, `[1]`, `["a",]`, ` [ "x" ] `, `"a"`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, list string) {
		var want []string
		wantErr := json.Unmarshal([]byte(list), &want)
		var got nodeNameList
		gotErr := json.Unmarshal([]byte(list), &got)
		if (wantErr == nil) != (gotErr == nil) {
			t.Fatalf("%q: encoding/json error %v, nodeNameList error %v", list, wantErr, gotErr)
		}
		if wantErr == nil && !slices.Equal(want, []string(got)) {
			t.Fatalf("%q: encoding/json %q, nodeNameList %q", list, want, got)
		}
	})
}
