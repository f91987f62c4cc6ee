package plugin

import (
	"context"
	"encoding/json"
	"log/slog"
	"math"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	corepin "github.com/corepin/corepin/api"
	"github.com/corepin/corepin/internal/nodeapply"
	"github.com/corepin/corepin/policy"
)

// WatchPods follows the pods of this node on the API server (a field
// selector on spec.nodeName; a transform keeps the release annotations,
// the CPU limits, the init containers and the statuses reporting another
// NRI plugin's conflict only) and hands each pod's release switch, init
// containers and conflicts to the plugin. It returns once the
// pods first listed have been handed to the plugin, or ctx is done; the
// watch goes on until ctx is done, and reconnects by itself when the API
// server is away.
func WatchPods(ctx context.Context, client kubernetes.Interface, node string, p *Plugin, log *slog.Logger) cache.SharedIndexInformer {
	f := informers.NewSharedInformerFactoryWithOptions(client, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", node).String()
		}),
		informers.WithTransform(slimPod))
	inf := f.Core().V1().Pods().Informer()
	apply := func(obj any) {
		if pod, ok := obj.(*v1.Pod); ok {
			p.SetRelease(pod.Namespace, pod.Name, releaseOf(pod, log))
			p.SeeConflicts(pod)
			p.SeeBound(pod)
		}
	}
	reg, _ := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    apply,
		UpdateFunc: func(_, obj any) { apply(obj) },
		DeleteFunc: func(obj any) {
			if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = d.Obj
			}
			if pod, ok := obj.(*v1.Pod); ok {
				p.ForgetRelease(pod.Namespace, pod.Name, string(pod.UID))
			}
		},
	})
	f.Start(ctx.Done())
	// The handler's sync, not only the store's: the plugin registers once
	// the listed pods' switches are applied, not merely cached.
	cache.WaitForCacheSync(ctx.Done(), reg.HasSynced)
	return inf
}

// WatchNode follows this node's object on the API server (a field selector
// on metadata.name; a transform keeps corepin's annotations only) and hands
// every version of it to the handlers. It returns once the handlers have
// had the node as first listed, or ctx is done; the watch goes on until ctx
// is done.
func WatchNode(ctx context.Context, client kubernetes.Interface, node string, log *slog.Logger, handlers ...func(*v1.Node)) cache.SharedIndexInformer {
	f := informers.NewSharedInformerFactoryWithOptions(client, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", node).String()
		}),
		informers.WithTransform(slimNode))
	inf := f.Core().V1().Nodes().Informer()
	apply := func(obj any) {
		if n, ok := obj.(*v1.Node); ok && n.Name == node {
			for _, h := range handlers {
				h(n)
			}
		}
	}
	reg, _ := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    apply,
		UpdateFunc: func(_, obj any) { apply(obj) },
	})
	f.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), reg.HasSynced) && ctx.Err() == nil {
		log.Warn("The node's object is not listed yet", "node", node)
	}
	return inf
}

// slimNode keeps the node's corepin annotations.
func slimNode(obj any) (any, error) {
	n, ok := obj.(*v1.Node)
	if !ok {
		return obj, nil
	}
	slim := &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: n.Name, UID: n.UID, ResourceVersion: n.ResourceVersion, Annotations: map[string]string{}}}
	for _, key := range []string{corepin.AnnotationNodePolicy, corepin.AnnotationTopology, corepin.AnnotationReleaseAll, corepin.AnnotationReleaseAllDone} {
		if v, ok := n.Annotations[key]; ok {
			slim.Annotations[key] = v
		}
	}
	return slim, nil
}

// NodePolicyHandler is a WatchNode handler applying the node's
// corepin.io/node-policy to the plugin's capacity formula.
func (p *Plugin) NodePolicyHandler(log *slog.Logger) func(*v1.Node) {
	last := ""
	return func(n *v1.Node) {
		value := n.Annotations[corepin.AnnotationNodePolicy]
		if err := p.SetNodePolicy(value); err != nil && value != last {
			log.Warn("Ignoring a malformed node policy; using the defaults", "node", n.Name, "err", err)
		}
		last = value
	}
}

// slimPodAnnotations are the annotations slimPod keeps: the two release
// switches, the alloc-status (an in-place resize changes it after the sandbox
// copied it), and what the IO-queue check reads of a bound pod (Plugin.SeeBound).
var slimPodAnnotations = []string{corepin.AnnotationReleaseIsolateMode, corepin.AnnotationExcludeReserveCPUSet,
	corepin.AnnotationCPUMode, corepin.AnnotationAllocSpec, corepin.AnnotationAllocStatus}

// slimPod keeps what the plugin reads of a pod: the release annotations and
// those of its placement (slimPodAnnotations), each container's CPU limit,
// and the init containers' names and restart policies.
func slimPod(obj any) (any, error) {
	pod, ok := obj.(*v1.Pod)
	if !ok {
		return obj, nil
	}
	slim := &v1.Pod{ObjectMeta: metav1.ObjectMeta{Name: pod.Name, Namespace: pod.Namespace, UID: pod.UID,
		ResourceVersion: pod.ResourceVersion, Annotations: map[string]string{}}}
	for _, key := range slimPodAnnotations {
		if v, ok := pod.Annotations[key]; ok {
			slim.Annotations[key] = v
		}
	}
	for _, c := range pod.Spec.Containers {
		kept := v1.Container{Name: c.Name}
		if q, ok := c.Resources.Limits[v1.ResourceCPU]; ok {
			kept.Resources.Limits = v1.ResourceList{v1.ResourceCPU: q}
		}
		slim.Spec.Containers = append(slim.Spec.Containers, kept)
	}
	// Init containers: their names, and which are native sidecars.
	for _, c := range pod.Spec.InitContainers {
		slim.Spec.InitContainers = append(slim.Spec.InitContainers, v1.Container{Name: c.Name, RestartPolicy: c.RestartPolicy})
	}
	// Statuses: only the waiting ones reporting another NRI plugin's conflict.
	slim.Status.ContainerStatuses = keepConflicts(pod.Status.ContainerStatuses)
	slim.Status.InitContainerStatuses = keepConflicts(pod.Status.InitContainerStatuses)
	return slim, nil
}

// releaseOf reads a pod's release switch, its containers' CPU limits and
// its init containers that run to completion. A malformed value leaves the
// pod pinned: releasing is the exception that must be asked for clearly.
func releaseOf(pod *v1.Pod, log *slog.Logger) Release {
	r := Release{UID: string(pod.UID), ExcludeReserve: true, LimitMilli: map[string]int64{}, AllocStatus: pod.Annotations[corepin.AnnotationAllocStatus]}
	// The switches only: what else the slim pod keeps (its alloc-spec) is
	// not the release's business.
	switches := map[string]string{}
	for _, key := range []string{corepin.AnnotationReleaseIsolateMode, corepin.AnnotationExcludeReserveCPUSet} {
		if v, ok := pod.Annotations[key]; ok {
			switches[key] = v
		}
	}
	intent, err := corepin.ParsePodIntent(switches, nil)
	if err != nil {
		log.Warn("Ignoring a malformed release annotation; the pod stays pinned", "pod", pod.Namespace+"/"+pod.Name, "err", err)
	} else {
		r.Isolate, r.ExcludeReserve = intent.ReleaseIsolate, intent.ExcludeReserve
	}
	for _, c := range pod.Spec.Containers {
		if q, ok := c.Resources.Limits[v1.ResourceCPU]; ok {
			r.LimitMilli[c.Name] = q.MilliValue()
		}
	}
	for _, c := range pod.Spec.InitContainers {
		// A native sidecar (restartPolicy Always) runs for the pod's life
		// and is counted like any other shared container.
		if !policy.IsNativeSidecar(&c) {
			if r.Init == nil {
				r.Init = map[string]bool{}
			}
			r.Init[c.Name] = true
		}
	}
	return r
}

// apiBackoff is the retry schedule of a failed write to the API server:
// 1 s doubling to a minute, jittered so that the nodes of a cluster that
// lost its API server do not all retry at the same instant.
func apiBackoff() wait.Backoff {
	return wait.Backoff{Duration: time.Second, Factor: 2, Jitter: 0.1, Steps: math.MaxInt32, Cap: time.Minute}
}

// PublishSharedPool writes corepin.io/shared-pool on the node whenever the
// pool changes, debounced: a burst of changes makes one write with the
// latest pool, by server-side apply as its own field manager. Failed writes
// (a node deleted meanwhile among them: it is not re-created) are retried
// with backoff; enforcement never waits for them.
func PublishSharedPool(ctx context.Context, client kubernetes.Interface, node string, p *Plugin, debounce time.Duration, log *slog.Logger) {
	writer := nodeapply.New(client, node, "", nodeapply.ManagerSharedPool)
	published := ""
	backoff, retry := apiBackoff(), time.Duration(0)
	for {
		var timer <-chan time.Time
		if retry > 0 {
			timer = time.After(retry)
		}
		select {
		case <-ctx.Done():
			return
		case <-p.PoolChanged():
		case <-timer:
		}
		// Let a burst settle.
		select {
		case <-ctx.Done():
			return
		case <-time.After(debounce):
		}
		pool := p.SharedPool().String()
		if pool == published {
			backoff, retry = apiBackoff(), 0
			continue
		}
		value, _ := json.Marshal(corepin.SharedPoolStatus{CPUs: corepin.NewCPUList(p.SharedPool())})
		if _, err := writer.Apply(ctx, map[string]string{corepin.AnnotationSharedPool: string(value)}); err != nil {
			retry = backoff.Step()
			log.Warn("Publishing the shared pool failed; retrying", "node", node, "err", err, "in", retry)
			continue
		}
		published, backoff, retry = pool, apiBackoff(), 0
		log.Info("Published the shared pool", "node", node, "cpus", pool)
	}
}
