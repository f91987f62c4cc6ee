package extender

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"
	extenderv1 "k8s.io/kube-scheduler/extender/v1"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/corepin/corepin/api"
)

// maxBody bounds a request body; kube-scheduler's largest (filter without
// nodeCacheCapable, 5,000 full Node objects) stays well below it.
const maxBody = 64 << 20

// Server serves kube-scheduler's extender protocol over HTTP.
type Server struct {
	Sched   *Scheduler
	Client  kubernetes.Interface
	Pods    PodSource // optional: bind looks pods up here first
	Metrics *Metrics
	// Ready reports whether the caches have synced.
	Ready func() bool
	// Events records events on pods (optional); start it with RunEvents.
	Events *PodEvents
	// AllocStatusInBinding writes an exclusive pod's alloc-status in the
	// Binding's metadata, which the API server copies onto the pod in the
	// same update that sets its node, instead of a PATCH before the Binding
	// (contract section 2, the default). One write per pod instead of two.
	AllocStatusInBinding bool
}

// PodSource finds a pod by namespace and name without asking the API
// server; Cache is one.
type PodSource interface {
	Pod(namespace, name string) (*v1.Pod, bool)
}

// Handler returns the HTTP routes.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /filter", s.whenReady("filter", s.timed("filter", s.filter)))
	mux.HandleFunc("POST /prioritize", s.whenReady("prioritize", s.timed("prioritize", s.prioritize)))
	mux.HandleFunc("POST /bind", s.whenReady("bind", s.timed("bind", s.bind)))
	mux.HandleFunc("POST /preempt", s.whenReady("preempt", s.timed("preempt", s.preempt)))
	s.serveHealth(mux)
	return mux
}

// HealthHandler serves only /healthz, /readyz and /metrics: what the kubelet's
// probes and Prometheus need, on an address they can reach (the pod IP),
// while the verbs, which can bind pods, stay on kube-scheduler's loopback.
func (s *Server) HealthHandler() http.Handler {
	mux := http.NewServeMux()
	s.serveHealth(mux)
	return mux
}

func (s *Server) serveHealth(mux *http.ServeMux) {
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if s.Ready != nil && !s.Ready() {
			http.Error(w, "caches not synced", http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "ok\n")
	})
	if s.Metrics != nil {
		mux.Handle("GET /metrics", promhttp.HandlerFor(s.Metrics.Registry, promhttp.HandlerOpts{}))
	}
}

func (s *Server) timed(verb string, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		h(w, r)
		if s.Metrics != nil {
			s.Metrics.RequestSeconds.WithLabelValues(verb).Observe(time.Since(start).Seconds())
		}
	}
}

// notReady is the body of a 503 before the caches have synced.
const notReady = "corepin extender not ready: its caches have not yet taken in the initial lists of nodes and pods " +
	"(see /readyz); refusing rather than answering from an empty cache, kube-scheduler retries the pod\n"

// whenReady refuses a request with 503 until the caches have synced: an
// empty cache would reject every node (filter), score none (prioritize)
// and allocate CPUs that bound pods hold (bind).
func (s *Server) whenReady(verb string, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if s.Ready != nil && !s.Ready() {
			if s.Metrics != nil {
				s.Metrics.NotReady.WithLabelValues(verb).Inc()
			}
			klog.V(2).InfoS("Request refused: caches not synced", "verb", verb)
			http.Error(w, notReady, http.StatusServiceUnavailable)
			return
		}
		h(w, r)
	}
}

// decode reads a JSON body; the error says what is wrong. Unknown fields
// are allowed here (unlike in annotations): a newer kube-scheduler sends pods
// with fields this build does not know, and refusing them would stop all
// scheduling.
func decode(r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(nil, r.Body, maxBody))
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("malformed request body: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("malformed request body: trailing data after the JSON value")
	}
	return nil
}

// reply writes v as the whole body, with its length and without a trailing
// newline. kube-scheduler's extender client decodes one JSON value and
// closes the body: Go's HTTP transport reuses the connection only if that
// read reached the end of the body, which a trailing newline or a chunked
// reply (any reply over 2 KB without a length) often prevents. Every
// request then paid for a new connection (a TLS handshake with TLS on).
func reply(w http.ResponseWriter, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		klog.ErrorS(err, "Encoding extender response")
		http.Error(w, "encoding the response: "+err.Error(), http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	if _, err := w.Write(body); err != nil {
		klog.V(2).InfoS("Writing extender response", "err", err)
	}
}

// readArgs decodes a filter or prioritize body into the pod and the
// candidate node names.
func readArgs(w http.ResponseWriter, r *http.Request) (*v1.Pod, []string, bool) {
	var args extenderArgs
	if err := decode(r, &args); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return nil, nil, false
	}
	if args.Pod == nil {
		http.Error(w, "malformed request body: no pod", http.StatusBadRequest)
		return nil, nil, false
	}
	return args.Pod.pod(), args.names(), true
}

func (s *Server) filter(w http.ResponseWriter, r *http.Request) {
	pod, names, ok := readArgs(w, r)
	if !ok {
		return
	}
	s.confirmTerminating(r.Context(), pod)
	fits, failed, err := s.Sched.Filter(pod, names)
	if err != nil {
		// The pod itself is malformed: no node can help, so every node is
		// unresolvable and the reason shows in the FailedScheduling event.
		unresolvable := extenderv1.FailedNodesMap{}
		for _, n := range names {
			unresolvable[n] = err.Error()
		}
		klog.V(2).InfoS("Pod refused on every node", "pod", klog.KObj(pod), "reason", err.Error())
		if s.Metrics != nil {
			s.Metrics.Rejections.WithLabelValues("invalid-pod").Add(float64(len(names)))
		}
		reply(w, &extenderv1.ExtenderFilterResult{NodeNames: &[]string{}, FailedAndUnresolvableNodes: unresolvable})
		return
	}
	if s.Metrics != nil {
		for _, reason := range failed {
			s.Metrics.Rejections.WithLabelValues(string(reason.Code)).Inc()
		}
	}
	klog.V(4).InfoS("Filtered", "pod", klog.KObj(pod), "fit", len(fits), "failed", len(failed))
	reply(w, &extenderv1.ExtenderFilterResult{NodeNames: &fits, FailedNodes: failed.FailedNodes()})
	// The summary is built by the events worker: here only a
	// non-blocking send, and only for an exclusive pod with rejections.
	if len(failed) > 0 && s.Events != nil && pod.Annotations[api.AnnotationCPUMode] == string(api.ModeExclusive) {
		s.Events.NodesRejected(pod, len(names), failed)
	}
}

func (s *Server) prioritize(w http.ResponseWriter, r *http.Request) {
	pod, names, ok := readArgs(w, r)
	if !ok {
		return
	}
	scores, err := s.Sched.Prioritize(pod, names)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	reply(w, relativeScores(scores))
}

// relativeScores is what prioritize sends: every score less the lowest one,
// without the nodes left at 0. kube-scheduler adds an extender's score to
// the total of each node it lists and nothing to the others, then takes the
// node with the highest total; taking the same amount off every candidate
// changes no total relative to another, so the choice is the same. The
// reply, which kube-scheduler decodes for every pod, shrinks to the nodes
// that score above the rest: on a cluster of mostly empty nodes an
// exclusive pod scores 1 on each of them, which made 1,000 entries at
// 1,000 nodes where now only the nodes in use are listed.
func relativeScores(scores extenderv1.HostPriorityList) *extenderv1.HostPriorityList {
	lowest := int64(0)
	for i, h := range scores {
		if i == 0 || h.Score < lowest {
			lowest = h.Score
		}
	}
	out := slices.DeleteFunc(scores, func(h extenderv1.HostPriority) bool { return h.Score == lowest })
	if out == nil {
		out = extenderv1.HostPriorityList{} // "[]", not "null"
	}
	for i := range out {
		out[i].Score -= lowest
	}
	return &out
}

func (s *Server) bind(w http.ResponseWriter, r *http.Request) {
	var args extenderv1.ExtenderBindingArgs
	if err := decode(r, &args); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if args.PodName == "" || args.PodNamespace == "" || args.Node == "" {
		http.Error(w, "malformed request body: podName, podNamespace and node are required", http.StatusBadRequest)
		return
	}
	result := s.bindPod(r.Context(), &args)
	reply(w, &result)
}

func (s *Server) bindPod(ctx context.Context, args *extenderv1.ExtenderBindingArgs) extenderv1.ExtenderBindingResult {
	key := args.PodNamespace + "/" + args.PodName
	podRef := klog.KRef(args.PodNamespace, args.PodName)
	pod, err := s.getPod(ctx, args)
	if err != nil {
		s.countBind("error")
		klog.ErrorS(err, "Bind failed: getting the pod", "pod", podRef, "uid", args.PodUID, "node", args.Node)
		return extenderv1.ExtenderBindingResult{Error: fmt.Sprintf("pod %s: %v", key, err)}
	}
	status, err := s.Sched.Bind(ctx, pod, args.Node, &apiBinder{client: s.Client, inBinding: s.AllocStatusInBinding})
	if err != nil {
		if IsBindConflict(err) {
			s.countBind("conflict")
			klog.InfoS("Bind lost a race, kube-scheduler retries", "pod", podRef, "node", args.Node, "reason", err.Error())
			if s.Events != nil {
				s.Events.BindConflict(pod, args.Node, err)
			}
		} else {
			s.countBind("error")
			klog.ErrorS(err, "Bind failed", "pod", podRef, "node", args.Node)
		}
		return extenderv1.ExtenderBindingResult{Error: err.Error()}
	}
	s.countBind("bound")
	if s.Events != nil {
		s.Events.Forget(key)
	}
	if status != nil {
		klog.InfoS("Bound exclusive pod", "pod", podRef, "node", args.Node, "cpus", status.CPUs.String(), "mems", status.Mems.String())
	} else {
		klog.V(2).InfoS("Bound shared pod", "pod", podRef, "node", args.Node)
	}
	return extenderv1.ExtenderBindingResult{}
}

// confirmTerminating asks the API server about the pods being deleted on
// the node a preemptor was nominated for, and forgets those it no longer
// has. kube-scheduler retries a preemptor as soon as its own informer shows
// the last victim gone; the extender's informer may show it a few
// milliseconds later, and a filter answered meanwhile rejected the node
// (the victim's CPUs still held), so that kube-scheduler, seeing no
// terminating victim left, preempted pods on another node instead (found by
// TestPreemption). Victims that are still there keep their CPUs. This costs
// one GET per terminating pod on that node, only for a nominated pod.
func (s *Server) confirmTerminating(ctx context.Context, pod *v1.Pod) {
	node := pod.Status.NominatedNodeName
	if node == "" || s.Client == nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	for _, ref := range s.Sched.TerminatingOn(node) {
		ns, name, _ := strings.Cut(ref.Key, "/")
		got, err := s.Client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err), err == nil && got.UID != ref.UID:
			if s.Sched.ForgetGone(ref) {
				klog.V(2).InfoS("Terminating pod already gone from the API server, forgotten before the informer says so",
					"pod", ref.Key, "node", node, "preemptor", klog.KObj(pod))
			}
		case err != nil:
			klog.V(2).InfoS("Checking a terminating pod", "pod", ref.Key, "err", err.Error())
		}
	}
}

func (s *Server) countBind(result string) {
	if s.Metrics != nil {
		s.Metrics.Binds.WithLabelValues(result).Inc()
	}
}

// RunEvents runs the pod events worker until ctx is done.
func (s *Server) RunEvents(ctx context.Context) {
	s.Events.Run(ctx, s.podState)
}

// podState tells the events worker whether a pod still waits for a node.
func (s *Server) podState(namespace, name string, uid types.UID) PodState {
	if s.Sched.Placed(namespace + "/" + name) {
		return PodDone
	}
	if s.Pods == nil {
		return PodPending
	}
	pod, ok := s.Pods.Pod(namespace, name)
	switch {
	case !ok:
		return PodUnknown
	case uid != "" && pod.UID != uid, pod.Spec.NodeName != "":
		return PodDone
	}
	return PodPending
}

// getPod finds the pod to bind, from the informer cache when it has it with
// the right UID, else from the API server.
func (s *Server) getPod(ctx context.Context, args *extenderv1.ExtenderBindingArgs) (*v1.Pod, error) {
	if s.Pods != nil {
		if pod, ok := s.Pods.Pod(args.PodNamespace, args.PodName); ok && (args.PodUID == "" || pod.UID == args.PodUID) {
			return pod, nil
		}
	}
	pod, err := s.Client.CoreV1().Pods(args.PodNamespace).Get(ctx, args.PodName, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	if args.PodUID != "" && pod.UID != args.PodUID {
		return nil, fmt.Errorf("UID %s is not the pod's UID %s (recreated?)", args.PodUID, pod.UID)
	}
	return pod, nil
}

// ExpireAssumed forgets pods whose assumption expired (Scheduler.Expire)
// and expired event dedupe entries.
func (s *Server) ExpireAssumed(now time.Time) {
	if s.Events != nil {
		s.Events.Expire(now)
	}
	for _, key := range s.Sched.Expire(now) {
		klog.InfoS("Assumed pod expired without being seen bound", "pod", key)
	}
}

// apiBinder commits binds to the API server.
type apiBinder struct {
	client kubernetes.Interface
	// inBinding: alloc-status goes in the Binding, not in a PATCH before it.
	inBinding bool
}

func (b *apiBinder) Bind(ctx context.Context, pod *v1.Pod, node, allocStatus string) error {
	binding := &v1.Binding{
		ObjectMeta: metav1.ObjectMeta{Namespace: pod.Namespace, Name: pod.Name, UID: pod.UID},
		Target:     v1.ObjectReference{Kind: "Node", Name: node},
	}
	if allocStatus != "" {
		if b.inBinding {
			// The API server copies a Binding's annotations onto the pod
			// in the write that sets spec.nodeName.
			binding.Annotations = map[string]string{api.AnnotationAllocStatus: allocStatus}
		} else if err := b.applyAllocStatus(ctx, pod, allocStatus); err != nil {
			return fmt.Errorf("writing %s: %w", api.AnnotationAllocStatus, err)
		}
	}
	if err := b.client.CoreV1().Pods(pod.Namespace).Bind(ctx, binding, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("binding to %s: %w", node, err)
	}
	return nil
}

// fieldManager is the extender's name in the managedFields of what it
// writes by server-side apply: a pod's alloc-status.
const fieldManager = "corepin-extender"

// applyAllocStatus writes the pod's alloc-status by server-side apply, the
// only field the extender owns on a pod. The UID makes a pod recreated under
// the same name a conflict, not a pod given another's CPUs.
func (b *apiBinder) applyAllocStatus(ctx context.Context, pod *v1.Pod, status string) error {
	ac := corev1ac.Pod(pod.Name, pod.Namespace).WithUID(pod.UID).
		WithAnnotations(map[string]string{api.AnnotationAllocStatus: status})
	_, err := b.client.CoreV1().Pods(pod.Namespace).Apply(ctx, ac, metav1.ApplyOptions{FieldManager: fieldManager, Force: true})
	return err
}
