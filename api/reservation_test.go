package api

import (
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

const reservationYAML = `
apiVersion: corepin.io/v1alpha1
kind: CPUReservation
metadata: {name: db-7, namespace: default}
spec:
  template:
    metadata:
      labels: {app.kubernetes.io/name: orders-db}
      annotations: {corepin.io/cpu-mode: exclusive, corepin.io/alloc-spec: '{"cpu": "Spread"}'}
    spec:
      containers:
      - {name: engine, resources: {limits: {cpu: "8", memory: 16Gi}}}
  nodeName: node-a
status:
  phase: Reserved
  node: node-a
  cpus: "4-11"
  containers: {engine: "4-11"}
  mems: "0"
  reservedAt: "2026-12-02T10:00:00Z"
`

// TestReservationRoundTrip reads the contract's example through the
// unstructured form the dynamic client returns and back.
func TestReservationRoundTrip(t *testing.T) {
	var obj map[string]any
	if err := yaml.Unmarshal([]byte(reservationYAML), &obj); err != nil {
		t.Fatal(err)
	}
	r, err := ReservationFromUnstructured(obj)
	if err != nil {
		t.Fatal(err)
	}
	if r.Key() != "default/db-7" || r.Phase() != ReservationReserved || r.TTL().Seconds() != DefaultReservationTTL || r.Spec.NodeName != "node-a" {
		t.Fatalf("read %+v", r)
	}
	st, err := r.Status.AllocStatus()
	if err != nil {
		t.Fatal(err)
	}
	if got := st.String(); got != `{"node":"node-a","cpus":"4-11","containers":{"engine":"4-11"},"mems":"0"}` {
		t.Errorf("alloc-status %s", got)
	}
	pod := r.Pod()
	if pod.Namespace != "default" || pod.Name != "db-7" || pod.Annotations[AnnotationCPUMode] != "exclusive" || pod.Spec.Containers[0].Name != "engine" {
		t.Errorf("template pod %+v", pod.ObjectMeta)
	}
	back, err := ReservationToUnstructured(r)
	if err != nil {
		t.Fatal(err)
	}
	again, err := ReservationFromUnstructured(back)
	if err != nil || again.Status.ReservedAt == nil || !again.Status.ReservedAt.Equal(r.Status.ReservedAt) || again.Status.Containers["engine"] != "4-11" {
		t.Fatalf("round trip: %+v, %v", again, err)
	}
	// DeepCopy shares nothing the caller could change.
	c := r.DeepCopy()
	c.Status.Containers["engine"] = "0"
	c.Spec.Template.Annotations[AnnotationCPUMode] = "shared"
	if r.Status.Containers["engine"] != "4-11" || r.Spec.Template.Annotations[AnnotationCPUMode] != "exclusive" {
		t.Error("DeepCopy shares maps with the original")
	}
}

func TestReservationUnknownFieldAndBadStatus(t *testing.T) {
	var obj map[string]any
	_ = yaml.Unmarshal([]byte(reservationYAML), &obj)
	obj["spec"].(map[string]any)["ttl"] = 5
	if _, err := ReservationFromUnstructured(obj); err == nil || !strings.Contains(err.Error(), "ttl") {
		t.Errorf("unknown spec.ttl: %v, want an error naming it", err)
	}
	bad := CPUReservationStatus{Node: "node-a", CPUs: "4-11", Containers: map[string]string{"engine": "4-10"}}
	if _, err := bad.AllocStatus(); err == nil || !strings.Contains(err.Error(), "union") {
		t.Errorf("containers not covering cpus: %v", err)
	}
	bad.Containers["engine"] = "x"
	if _, err := bad.AllocStatus(); err == nil || !strings.Contains(err.Error(), `status.containers["engine"]`) {
		t.Errorf("bad list: %v", err)
	}
}
