package extender

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"
	"unique"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	coreinformers "k8s.io/client-go/informers/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"

	"github.com/corepin/corepin/api"
	"github.com/corepin/corepin/internal/nodeapply"
)

// Cache feeds a Scheduler from shared informers on Nodes and Pods. The
// transforms keep only what the engine reads, so the API server stays the
// single source of truth and memory stays small.
type Cache struct {
	Factory informers.SharedInformerFactory
	Pods    cache.SharedIndexInformer
	Nodes   cache.SharedIndexInformer
	sched   *Scheduler
	client  kubernetes.Interface
	// synced report whether the handlers have seen the initial lists (an
	// informer's own HasSynced only says its store has them).
	synced   []cache.InformerSynced
	recorder record.EventRecorder
	// PodDone, when set (before Start), is called with a pod's key when
	// the pod is bound, finished or deleted: PodEvents.Forget.
	PodDone func(key string)
	// PodUpdated, when set (before Start), is called with every pod the
	// informer shows added or updated: Resizer.Observe.
	PodUpdated func(pod *v1.Pod)

	// problems remembers what was last reported per node, so an event is
	// recorded when a node's annotations go bad, not on every update.
	mu       sync.Mutex
	problems map[string]string
}

// NewCache wires informers to sched. recorder may be nil.
func NewCache(client kubernetes.Interface, sched *Scheduler, recorder record.EventRecorder) (*Cache, error) {
	f := informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithTransform(Transform))
	// The Pod informer's store holds PodRecords, keyed by namespace/name and
	// without the factory's namespace index (nothing here lists by namespace).
	pods := f.InformerFor(&v1.Pod{}, func(client kubernetes.Interface, resync time.Duration) cache.SharedIndexInformer {
		return coreinformers.NewPodInformer(client, metav1.NamespaceAll, resync, cache.Indexers{})
	})
	c := &Cache{Factory: f, Pods: pods, Nodes: f.Core().V1().Nodes().Informer(),
		sched: sched, client: client, recorder: recorder, problems: map[string]string{}}
	nodeReg, err := c.Nodes.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { c.upsertNode(obj) },
		UpdateFunc: func(_, obj any) { c.upsertNode(obj) },
		DeleteFunc: func(obj any) {
			if n, ok := unwrap(obj).(*v1.Node); ok {
				if kept := sched.DeleteNode(n.Name); kept > 0 {
					klog.InfoS("Node deleted: what is placed there keeps its CPUs until it goes or the node returns", "node", n.Name, "placements", kept)
				}
			}
		},
	})
	if err != nil {
		return nil, err
	}
	podReg, err := c.Pods.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { c.upsertPod(obj) },
		UpdateFunc: func(_, obj any) { c.upsertPod(obj) },
		DeleteFunc: func(obj any) {
			if r, ok := unwrap(obj).(*PodRecord); ok {
				sched.DeletePod(r.Key())
				if c.PodDone != nil {
					c.PodDone(r.Key())
				}
			}
		},
	})
	if err != nil {
		return nil, err
	}
	c.synced = []cache.InformerSynced{nodeReg.HasSynced, podReg.HasSynced}
	return c, nil
}

func unwrap(obj any) any {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		return d.Obj
	}
	return obj
}

// Start runs the informers and waits until the Scheduler has seen every
// node and pod of their initial lists.
func (c *Cache) Start(ctx context.Context) error {
	c.Factory.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), c.synced...) {
		return fmt.Errorf("informer caches did not sync")
	}
	return nil
}

// Synced reports whether the Scheduler has seen the initial lists of nodes
// and pods.
func (c *Cache) Synced() bool { return c.synced[0]() && c.synced[1]() }

// Pod returns the pod as the informer last showed it, reduced to what the
// engine reads (see PodRecord.Pod).
func (c *Cache) Pod(namespace, name string) (*v1.Pod, bool) {
	obj, ok, err := c.Pods.GetIndexer().GetByKey(namespace + "/" + name)
	if err != nil || !ok {
		return nil, false
	}
	r, ok := obj.(*PodRecord)
	if !ok {
		return nil, false
	}
	return r.Pod(), true
}

func (c *Cache) upsertPod(obj any) {
	r, ok := obj.(*PodRecord)
	if !ok {
		return
	}
	pod := r.Pod()
	if err := c.sched.UpsertPod(pod); err != nil {
		// A pod being resized differs from its alloc-status until the
		// Resizer has answered: not a problem to log at every update.
		if ResizeWanted(pod) {
			klog.V(2).InfoS("Pod resized, alloc-status not yet", "pod", klog.KObj(pod), "err", err.Error())
		} else {
			klog.InfoS("Pod placement problem", "pod", klog.KObj(pod), "err", err.Error())
		}
	}
	if c.PodDone != nil && (pod.Spec.NodeName != "" || pod.Status.Phase == v1.PodSucceeded || pod.Status.Phase == v1.PodFailed) {
		c.PodDone(r.Key())
	}
	if c.PodUpdated != nil {
		c.PodUpdated(pod)
	}
}

func (c *Cache) upsertNode(obj any) {
	node, ok := obj.(*v1.Node)
	if !ok {
		return
	}
	upd := c.sched.UpsertNode(node)
	problems := strings.Join(upd.Problems, "; ")
	c.mu.Lock()
	changed := c.problems[node.Name] != problems
	c.problems[node.Name] = problems
	c.mu.Unlock()
	if changed && problems != "" {
		klog.InfoS("Node annotation problem: no new exclusive pods there", "node", node.Name, "problems", problems)
		if c.recorder != nil {
			c.recorder.Eventf(&v1.ObjectReference{Kind: "Node", Name: node.Name, UID: node.UID}, v1.EventTypeWarning,
				"InvalidCorepinAnnotation", "%s", problems)
		}
	}
	if upd.Attention == "" {
		return
	}
	klog.InfoS("Node needs attention: no new exclusive pods", "node", node.Name, "reason", upd.Attention)
	if c.recorder != nil {
		c.recorder.Eventf(&v1.ObjectReference{Kind: "Node", Name: node.Name, UID: node.UID}, v1.EventTypeWarning,
			"TopologyChanged", "%s; remove annotation %s to accept the new topology", upd.Attention, api.AnnotationNodeAttention)
	}
	go c.markNode(node.Name, node.UID, upd.Attention)
}

// markNode records the attention reason on the node, so it survives
// restarts: by server-side apply as the extender, to the node object seen
// (its UID), so that a node deleted meanwhile is not re-created.
func (c *Cache) markNode(name string, uid types.UID, reason string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := nodeapply.New(c.client, name, uid, nodeapply.ManagerExtender).Apply(ctx, map[string]string{api.AnnotationNodeAttention: reason}); err != nil {
		klog.ErrorS(err, "Recording node attention", "node", name)
	}
}

// Transform strips objects down to what the engine reads before they enter
// the informer stores: a pod becomes a PodRecord; a node keeps its name,
// UID, resource version and corepin annotations, the topology interned (a
// 256-CPU topology is 12 KB of JSON, and most nodes of a cluster share a
// handful of them). It is idempotent.
func Transform(obj any) (any, error) {
	switch o := obj.(type) {
	case *v1.Pod:
		return NewPodRecord(o), nil
	case *v1.Node:
		return &v1.Node{ObjectMeta: slimMeta(o.ObjectMeta)}, nil
	}
	return obj, nil
}

func slimMeta(m metav1.ObjectMeta) metav1.ObjectMeta {
	out := metav1.ObjectMeta{Name: m.Name, UID: m.UID, ResourceVersion: m.ResourceVersion}
	for k, v := range m.Annotations {
		if !strings.HasPrefix(k, "corepin.io/") {
			continue
		}
		if out.Annotations == nil {
			out.Annotations = map[string]string{}
		}
		if k == api.AnnotationTopology {
			// The Scheduler holds a handle on every topology in use, so
			// this returns the copy already kept.
			v = unique.Make(v).Value()
		}
		out.Annotations[k] = v
	}
	return out
}
