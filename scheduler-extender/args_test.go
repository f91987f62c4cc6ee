package extender

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/corepin/corepin/policy"
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
				if err == nil || !strings.Contains(err.Error(), "nodenames") && tc.name != "invalid json" {
					t.Fatalf("decoded %q: error %v, want one naming nodenames (names %q)", tc.body, err, args.names())
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

// TestNativeSidecarsCount: a native sidecar counts in the pod's shared
// amount whether the engine reads the pod from kube-scheduler's request or
// from the informer's PodRecord; an ordinary init container counts in
// neither.
func TestNativeSidecarsCount(t *testing.T) {
	always := v1.ContainerRestartPolicyAlways
	pod := testPod("web", 0, false)
	pod.Spec.Containers = []v1.Container{{Name: "app", Resources: v1.ResourceRequirements{
		Limits: v1.ResourceList{v1.ResourceCPU: resource.MustParse("1500m")}}}}
	pod.Spec.InitContainers = []v1.Container{
		{Name: "migrate", Resources: v1.ResourceRequirements{Limits: v1.ResourceList{v1.ResourceCPU: resource.MustParse("4")}}},
		{Name: "proxy", RestartPolicy: &always, Resources: v1.ResourceRequirements{Requests: v1.ResourceList{v1.ResourceCPU: resource.MustParse("500m")}}},
	}
	body, err := json.Marshal(map[string]any{"pod": pod})
	if err != nil {
		t.Fatal(err)
	}
	var args extenderArgs
	if err := json.Unmarshal(body, &args); err != nil {
		t.Fatal(err)
	}
	for name, p := range map[string]*v1.Pod{"API object": pod, "request body": args.Pod.pod(), "PodRecord": NewPodRecord(pod).Pod()} {
		req, err := policy.NewRequest(p)
		if err != nil || req.SharedMilli() != 2000 {
			t.Errorf("%s: shared amount %dm (%v), want 2000m (app 1500m + native sidecar 500m)", name, req.SharedMilli(), err)
		}
	}
}
