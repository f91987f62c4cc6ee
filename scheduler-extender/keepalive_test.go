package extender

import (
	"bytes"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	extenderv1 "k8s.io/kube-scheduler/extender/v1"
)

// TestKeepAliveWithKubeSchedulersClient: kube-scheduler's extender client
// (pkg/scheduler/extender.go, send) decodes one JSON value from the reply
// and closes the body. Every filter and prioritize call for one pod after
// another must then travel over the same connection; a new connection per
// call was what a trailing newline or a chunked reply cost.
func TestKeepAliveWithKubeSchedulersClient(t *testing.T) {
	s, names, _ := populate(t, 1000, 3) // replies of 1,000 names: well over the 2 KB that fit unchunked
	var conns atomic.Int32
	ts := httptest.NewUnstartedServer((&Server{Sched: s, Client: fake.NewClientset()}).Handler())
	ts.Config.ConnState = func(_ net.Conn, state http.ConnState) {
		if state == http.StateNew {
			conns.Add(1)
		}
	}
	ts.Start()
	defer ts.Close()
	client := &http.Client{Transport: &http.Transport{}}
	pod := &v1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web"}}
	// send is kube-scheduler's HTTPExtender.send, reduced to what matters here.
	send := func(verb string, result any) {
		body, err := json.Marshal(extenderv1.ExtenderArgs{Pod: pod, NodeNames: &names})
		if err != nil {
			t.Fatal(err)
		}
		resp, err := client.Post(ts.URL+"/"+verb, "application/json", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: %s", verb, resp.Status)
		}
		if err := json.NewDecoder(resp.Body).Decode(result); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 20; i++ {
		var filtered extenderv1.ExtenderFilterResult
		send("filter", &filtered)
		if filtered.NodeNames == nil || len(*filtered.NodeNames) != len(names) {
			t.Fatalf("filter kept %v of %d nodes", filtered.NodeNames, len(names))
		}
		var scores extenderv1.HostPriorityList
		send("prioritize", &scores)
	}
	if n := conns.Load(); n != 1 {
		t.Fatalf("40 calls opened %d connections, want 1 (kept alive)", n)
	}
}
