// Command nullextender is a kube-scheduler extender that does nothing
// useful: filter keeps every candidate node, prioritize scores none, and
// bind creates the pod's Binding. It exists for BenchmarkSchedulerThroughput
// (test/integration), which runs a kube-scheduler against it configured like
// corepin's, to measure what the extender protocol itself costs (the
// encoding and decoding on both sides, the HTTP round trips, the bind
// through an extender): the floor under any extender's throughput, so that
// corepin's own share of the gap to the default scheduler shows. It is not a
// product and is kept as cheap as a correct extender can be: no informers,
// no state, and the candidate names are echoed as they came, not re-encoded.
//
//	nullextender --kubeconfig kubeconfig --listen 127.0.0.1:8889
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	extenderv1 "k8s.io/kube-scheduler/extender/v1"
)

// maxBody bounds a request body (a filter body with the whole pod and 5,000
// node names is a few hundred kilobytes).
const maxBody = 16 << 20

func main() {
	kubeconfig := flag.String("kubeconfig", "", "kubeconfig file; in-cluster configuration when empty")
	listen := flag.String("listen", "127.0.0.1:8889", "address to serve the extender on")
	flag.Parse()
	if err := run(*kubeconfig, *listen); err != nil {
		log.Fatalf("nullextender: %v", err)
	}
}

func run(kubeconfig, listen string) error {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return fmt.Errorf("kubeconfig: %w", err)
	}
	// The same client settings as corepin-extender's, so that the binds
	// cost the API server and this process what corepin's cost.
	cfg.QPS, cfg.Burst = 200, 400
	cfg.ContentType = runtime.ContentTypeProtobuf
	cfg.AcceptContentTypes = runtime.ContentTypeProtobuf + "," + runtime.ContentTypeJSON
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	b := &binder{client: client}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /filter", filter)
	mux.HandleFunc("POST /prioritize", prioritize)
	mux.HandleFunc("POST /bind", b.bind)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	srv := &http.Server{Addr: listen, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() {
		log.Printf("nullextender: serving on %s", listen)
		errc <- srv.ListenAndServe()
	}()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(shutdown); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	}
}

// filterArgs is the part of extenderv1.ExtenderArgs filter needs: the
// candidate names as they came (echoed back without decoding each one), and
// whether a pod was sent at all. The keys match kube-scheduler's
// ("NodeNames", "Pod": encoding/json matches them without regard to case).
type filterArgs struct {
	NodeNames json.RawMessage `json:"nodenames"`
	Pod       present         `json:"pod"`
}

// present records that a JSON value other than null was there, without
// keeping a copy of it.
type present bool

func (p *present) UnmarshalJSON(data []byte) error {
	*p = string(data) != "null"
	return nil
}

// readArgs reads a filter or prioritize body; it answers 400 itself when
// the body is malformed or has no pod.
func readArgs(w http.ResponseWriter, r *http.Request) (filterArgs, bool) {
	var args filterArgs
	body, ok := readBody(w, r)
	if !ok {
		return args, false
	}
	if err := json.Unmarshal(body, &args); err != nil {
		badRequest(w, "malformed request body: "+err.Error())
		return args, false
	}
	if !args.Pod {
		badRequest(w, "malformed request body: no pod")
		return args, false
	}
	return args, true
}

// filter replies with every candidate node.
func filter(w http.ResponseWriter, r *http.Request) {
	args, ok := readArgs(w, r)
	if !ok {
		return
	}
	// nodeCacheCapable: the candidates come as names, never as Node objects.
	names := bytes.TrimSpace(args.NodeNames)
	if len(names) == 0 || names[0] != '[' {
		badRequest(w, "malformed request body: nodenames is not an array (the extender must be nodeCacheCapable)")
		return
	}
	out := make([]byte, 0, len(names)+len(`{"nodenames":}`))
	out = append(out, `{"nodenames":`...)
	out = append(out, names...)
	out = append(out, '}')
	write(w, out)
}

// prioritize scores no node: an empty extenderv1.HostPriorityList.
func prioritize(w http.ResponseWriter, r *http.Request) {
	if _, ok := readArgs(w, r); ok {
		write(w, []byte("[]"))
	}
}

type binder struct {
	client kubernetes.Interface
}

// bindResult is extenderv1.ExtenderBindingResult with the key in lower case.
type bindResult struct {
	Error string `json:"error,omitempty"`
}

// bind creates the pod's Binding to the chosen node, for the pod with the
// UID kube-scheduler scheduled (not one recreated under the same name).
func (b *binder) bind(w http.ResponseWriter, r *http.Request) {
	body, ok := readBody(w, r)
	if !ok {
		return
	}
	var args extenderv1.ExtenderBindingArgs
	if err := json.Unmarshal(body, &args); err != nil {
		badRequest(w, "malformed request body: "+err.Error())
		return
	}
	if args.PodName == "" || args.PodNamespace == "" || args.Node == "" {
		badRequest(w, "malformed request body: podName, podNamespace and node are required")
		return
	}
	binding := &v1.Binding{
		ObjectMeta: metav1.ObjectMeta{Namespace: args.PodNamespace, Name: args.PodName, UID: args.PodUID},
		Target:     v1.ObjectReference{Kind: "Node", Name: args.Node},
	}
	if err := b.client.CoreV1().Pods(args.PodNamespace).Bind(r.Context(), binding, metav1.CreateOptions{}); err != nil {
		log.Printf("nullextender: binding %s/%s to %s: %v", args.PodNamespace, args.PodName, args.Node, err)
		out, merr := json.Marshal(bindResult{Error: fmt.Sprintf("binding %s/%s to %s: %v", args.PodNamespace, args.PodName, args.Node, err)})
		if merr != nil {
			http.Error(w, merr.Error(), http.StatusInternalServerError)
			return
		}
		write(w, out)
		return
	}
	write(w, []byte("{}"))
}

// readBody reads the whole request body, or answers 400 and returns false.
func readBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	if r.ContentLength > maxBody {
		badRequest(w, "request body over "+strconv.Itoa(maxBody)+" bytes")
		return nil, false
	}
	var body []byte
	var err error
	if r.ContentLength > 0 {
		// kube-scheduler sends the length: one allocation of the right size.
		body = make([]byte, r.ContentLength)
		_, err = io.ReadFull(r.Body, body)
	} else {
		body, err = io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	}
	if err != nil {
		badRequest(w, "reading the request body: "+err.Error())
		return nil, false
	}
	return body, true
}

func badRequest(w http.ResponseWriter, reason string) {
	http.Error(w, reason, http.StatusBadRequest)
}

// write sends body as the whole reply, with its length and nothing after
// the JSON value. kube-scheduler decodes a single value from the reply and
// then closes it; Go's transport keeps the connection for the next request
// only when the body had been read to its end, which a reply of unknown
// length (chunked) or one with bytes after the value (a newline) defeats,
// and every call would open a new connection.
func write(w http.ResponseWriter, body []byte) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	if _, err := w.Write(body); err != nil {
		log.Printf("nullextender: writing the reply: %v", err)
	}
}
