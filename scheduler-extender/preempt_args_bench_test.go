package extender

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	extenderv1 "k8s.io/kube-scheduler/extender/v1"
)

// BenchmarkPreemptionArgs decodes the /preempt body of BenchmarkPreempt
// (the whole pod and 1,000 nodes of 30 UIDs, 1.46 MB) with the one-pass
// scanner the handler uses and with encoding/json (the other verbs' decode)
// into the same fields: the figures the choice between them rests on.
func BenchmarkPreemptionArgs(b *testing.B) {
	_, proposed := populatePreempt(b, 1000)
	body, err := json.Marshal(extenderv1.ExtenderPreemptionArgs{Pod: preemptingPod(b, 8), NodeNameToMetaVictims: proposed})
	if err != nil {
		b.Fatal(err)
	}
	check := func(args *preemptionArgs) {
		if args.Pod == nil || len(args.NodeNameToMetaVictims) != 1000 || len(args.NodeNameToMetaVictims["node-00000"].Pods) != 30 {
			b.Fatalf("decoded %d nodes", len(args.NodeNameToMetaVictims))
		}
	}
	b.Run("scanner", func(b *testing.B) {
		b.SetBytes(int64(len(body)))
		b.ReportAllocs()
		for b.Loop() {
			args, err := readPreemptionArgs(httptest.NewRequest(http.MethodPost, "/preempt", bytes.NewReader(body)))
			if err != nil {
				b.Fatal(err)
			}
			check(args)
		}
	})
	b.Run("encoding-json", func(b *testing.B) {
		b.SetBytes(int64(len(body)))
		b.ReportAllocs()
		for b.Loop() {
			var args preemptionArgs
			if err := decode(httptest.NewRequest(http.MethodPost, "/preempt", bytes.NewReader(body)), &args); err != nil {
				b.Fatal(err)
			}
			check(&args)
		}
	})
}
