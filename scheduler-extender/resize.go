package extender

// In-place resize of exclusive pods (contract section 10): when a bound
// pod's spec gives its exclusive containers other whole amounts than its
// alloc-status holds, the extender chooses the new CPUs on the same node
// (policy.Node.Resize) and writes the new alloc-status, which the node
// plugin applies. Shared containers need nothing here: a pod's shared
// amount is the larger of its spec and status amounts (PodRecord).

import (
	"context"
	"fmt"
	"strings"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"
	"k8s.io/utils/lru"

	"github.com/corepin/corepin/api"
	"github.com/corepin/corepin/policy"
)

// ReasonResizeInfeasible: an exclusive pod's in-place resize cannot be
// given CPUs (a grow that does not fit, a fraction); the pod keeps its
// CPUs and alloc-status.
const ReasonResizeInfeasible = "CorepinResizeInfeasible"

// ResizeWanted reports whether a bound pod's spec gives a container its
// alloc-status names another amount than the CPUs it holds there.
func ResizeWanted(pod *v1.Pod) bool {
	value, ok := pod.Annotations[api.AnnotationAllocStatus]
	if !ok || pod.Spec.NodeName == "" || pod.DeletionTimestamp != nil {
		return false
	}
	status, err := api.ParseAllocStatus(value)
	if err != nil {
		return false
	}
	for i := range pod.Spec.Containers {
		c := &pod.Spec.Containers[i]
		if cpus, ok := status.Containers[c.Name]; ok && policy.ContainerAmount(c) != int64(cpus.Set().Size())*1000 {
			return true
		}
	}
	return false
}

// Resize chooses the new CPUs of a bound exclusive pod whose containers
// were resized, holds them in the cluster view at once (no bind gets them
// meanwhile) and returns the alloc-status to write. It returns nil, nil
// when there is nothing to do: no resize wanted, the pod not placed here
// yet, or a new alloc-status already being written. The error says why a
// resize cannot be given (the pod keeps its CPUs).
func (s *Scheduler) Resize(pod *v1.Pod) (*api.AllocStatus, error) {
	key := PodKey(pod)
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, busy := s.resizing[key]; busy || !ResizeWanted(pod) {
		return nil, nil
	}
	name, ok := s.podNode[key]
	if !ok || name != pod.Spec.NodeName || s.nodes[name] == nil {
		return nil, nil
	}
	st := s.nodes[name]
	placed, ok := st.node.Pod(key)
	if !ok {
		return nil, nil // held until the node's topology is known
	}
	intent, err := api.ParsePodIntent(pod.Annotations, pod.Labels)
	if err != nil {
		return nil, fmt.Errorf("the pod's annotations do not parse: %w", err)
	}
	old, err := api.ParseAllocStatus(pod.Annotations[api.AnnotationAllocStatus])
	if err != nil {
		return nil, err
	}
	req := policy.Request{Key: key, Namespace: pod.Namespace, Intent: intent, Containers: policy.BoundPodOf(pod).Containers}
	alloc, err := st.node.Resize(req, old)
	if err != nil {
		return nil, err
	}
	next := alloc.Status(name)
	if next.String() == old.String() {
		return nil, nil
	}
	for i := range req.Containers {
		_, req.Containers[i].Exclusive = next.Containers[req.Containers[i].Name]
	}
	p := policy.PlacementFor(req, alloc.CPUs)
	p.UID, p.Priority, p.Terminating = placed.UID, placed.Priority, placed.Terminating
	if err := st.node.Replace(p); err != nil {
		return nil, err
	}
	if s.resizing == nil {
		s.resizing = map[string]string{}
	}
	s.resizing[key] = next.String()
	return &next, nil
}

// resizeInFlight reports whether UpsertPod must keep a pod's placement as
// Resize left it: its new alloc-status is being written and the informer
// does not show it yet. Called with s.mu held.
func (s *Scheduler) resizeInFlight(key string, pod *v1.Pod) bool {
	want, ok := s.resizing[key]
	if !ok {
		return false
	}
	if pod.Annotations[api.AnnotationAllocStatus] == want || pod.Spec.NodeName != s.podNode[key] {
		delete(s.resizing, key)
		return false
	}
	return true
}

// resizeFailed drops a resize whose alloc-status could not be written and
// puts the pod back as the API server last showed it.
func (s *Scheduler) resizeFailed(pod *v1.Pod) {
	s.mu.Lock()
	delete(s.resizing, PodKey(pod))
	s.mu.Unlock()
	if err := s.UpsertPod(pod); err != nil {
		klog.V(2).InfoS("Pod placement problem", "pod", klog.KObj(pod), "err", err.Error())
	}
}

// Resizer writes the alloc-status of resized exclusive pods, off the
// informer's goroutine: a workqueue of pod keys, one worker, failed writes
// retried with backoff. A grow that does not fit is reported on the pod
// (CorepinResizeInfeasible, once per distinct reason) and tried again with
// backoff, since pods leaving the node can make room.
type Resizer struct {
	sched  *Scheduler
	client kubernetes.Interface
	pods   PodSource
	events *PodEvents
	queue  workqueue.TypedRateLimitingInterface[string]
	// reported remembers the last refusal recorded per pod (by key: UID
	// and message), so that retries and updates do not repeat it.
	reported *lru.Cache
}

// NewResizer returns a Resizer; events may be nil (no events).
func NewResizer(sched *Scheduler, client kubernetes.Interface, pods PodSource, events *PodEvents) *Resizer {
	return &Resizer{sched: sched, client: client, pods: pods, events: events,
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.NewTypedItemExponentialFailureRateLimiter[string](time.Second, 5*time.Minute),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "corepin_resize"}),
		reported: lru.New(4096)}
}

// Observe is the informer's hook (Cache.PodUpdated): a pod that wants a
// resize is queued.
func (r *Resizer) Observe(pod *v1.Pod) {
	if ResizeWanted(pod) {
		r.queue.Add(PodKey(pod))
	}
}

// Run works the queue until ctx is done.
func (r *Resizer) Run(ctx context.Context) {
	go func() {
		<-ctx.Done()
		r.queue.ShutDown()
	}()
	for r.next(ctx) {
	}
}

func (r *Resizer) next(ctx context.Context) bool {
	key, quit := r.queue.Get()
	if quit {
		return false
	}
	defer r.queue.Done(key)
	retry, err := r.sync(ctx, key)
	switch {
	case err != nil:
		klog.ErrorS(err, "Writing a resized pod's alloc-status; retrying", "pod", key)
		r.queue.AddRateLimited(key)
	case retry:
		r.queue.AddRateLimited(key)
	default:
		r.queue.Forget(key)
	}
	return true
}

// sync answers one pod's resize. retry: it did not fit, try again later.
func (r *Resizer) sync(ctx context.Context, key string) (retry bool, err error) {
	ns, name, _ := strings.Cut(key, "/")
	pod, ok := r.pods.Pod(ns, name)
	if !ok || !ResizeWanted(pod) {
		r.reported.Remove(key)
		return false, nil
	}
	next, err := r.sched.Resize(pod)
	if err != nil {
		r.refused(pod, err)
		// A fraction stays refused until the pod changes (which queues it).
		return policy.CodeOf(err) != policy.CodeResize, nil
	}
	if next == nil {
		return false, nil
	}
	value := next.String()
	ac := corev1ac.Pod(pod.Name, pod.Namespace).WithUID(pod.UID).
		WithAnnotations(map[string]string{api.AnnotationAllocStatus: value})
	if _, err := r.client.CoreV1().Pods(pod.Namespace).Apply(ctx, ac, metav1.ApplyOptions{FieldManager: fieldManager, Force: true}); err != nil {
		r.sched.resizeFailed(pod)
		return false, fmt.Errorf("pod %s: writing %s %s: %w", key, api.AnnotationAllocStatus, value, err)
	}
	r.reported.Remove(key)
	klog.InfoS("Resized exclusive pod", "pod", key, "from", pod.Annotations[api.AnnotationAllocStatus], "to", value)
	return false, nil
}

// refused reports a resize that cannot be given, once per distinct reason.
func (r *Resizer) refused(pod *v1.Pod, err error) {
	key := PodKey(pod)
	msg := fmt.Sprintf("in-place resize of exclusive containers %s on node %s cannot be given CPUs: %v; the pod keeps CPUs %s and its %s",
		resizeSummary(pod), pod.Spec.NodeName, err, allocCPUs(pod), api.AnnotationAllocStatus)
	seen := string(pod.UID) + "\x00" + msg
	if last, ok := r.reported.Get(key); ok && last == seen {
		return
	}
	r.reported.Add(key, seen)
	klog.InfoS("Resize infeasible", "pod", key, "reason", err.Error())
	if r.events != nil {
		r.events.ResizeInfeasible(pod, msg)
	}
}

// resizeSummary names the resized containers and their amounts ("engine
// 2 -> 4 CPUs"), in spec order.
func resizeSummary(pod *v1.Pod) string {
	status, err := api.ParseAllocStatus(pod.Annotations[api.AnnotationAllocStatus])
	if err != nil {
		return "?"
	}
	var parts []string
	for i := range pod.Spec.Containers {
		c := &pod.Spec.Containers[i]
		if cpus, ok := status.Containers[c.Name]; ok {
			if have, want := int64(cpus.Set().Size())*1000, policy.ContainerAmount(c); have != want {
				parts = append(parts, fmt.Sprintf("%s %d -> %s CPUs", c.Name, have/1000, milliString(want)))
			}
		}
	}
	return strings.Join(parts, ", ")
}

func allocCPUs(pod *v1.Pod) string {
	status, err := api.ParseAllocStatus(pod.Annotations[api.AnnotationAllocStatus])
	if err != nil {
		return "?"
	}
	return status.CPUs.Set().String()
}

// milliString prints millicores as a user writes CPUs ("4", "1500m").
func milliString(m int64) string {
	if m%1000 == 0 {
		return fmt.Sprint(m / 1000)
	}
	return fmt.Sprintf("%dm", m)
}

// ResizeInfeasible queues a CorepinResizeInfeasible event on the pod,
// recorded at once. It never blocks.
func (e *PodEvents) ResizeInfeasible(pod *v1.Pod, msg string) {
	e.send(kindRecord, &podEventItem{ref: podRef(pod), eventReason: ReasonResizeInfeasible, reason: msg}, ReasonResizeInfeasible)
}
