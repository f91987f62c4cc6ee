package extender

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"

	"github.com/corepin/corepin/api"
)

// DefaultReservationRetryDelay is how long after a change in the cluster
// (a node updated, a pod gone or changed) the waiting reservations are
// tried again: changes come in bursts, one try covers a burst.
const DefaultReservationRetryDelay = time.Second

// ReservationController runs the CPUReservations (contract section 7): an
// informer feeds them into the Scheduler (the same cluster view as pods, so
// a Reserved one's CPUs count in E), a worker places new ones by the pods'
// path, writes their status through the status subresource, expires them
// after their TTL (a delaying workqueue wakes it at each deadline) and
// tries the Unschedulable ones again when nodes or pods change.
//
// The client is the dynamic one over typed structs (api.CPUReservation):
// one small type does not justify a generated clientset and the code
// generator it needs in the build.
type ReservationController struct {
	sched  *Scheduler
	client dynamic.Interface
	// Informer is the CPUReservation informer; its store holds the
	// objects as the dynamic client returns them.
	Informer cache.SharedIndexInformer
	factory  dynamicinformer.DynamicSharedInformerFactory
	queue    workqueue.TypedRateLimitingInterface[string]
	synced   cache.InformerSynced
	// retryDelay (nanoseconds): see DefaultReservationRetryDelay. Atomic:
	// the pods' and nodes' handlers read it from their own goroutines.
	retryDelay atomic.Int64
	now        func() time.Time

	// Recorder, when set, gets an event on the reservation at each phase
	// it moves to; Metrics, when set, counts the moves.
	Recorder record.EventRecorder
	Metrics  *Metrics
}

// Event reasons on a CPUReservation, one per phase it moves to.
const (
	ReasonReservationReserved      = "CorepinReserved"
	ReasonReservationUnschedulable = "CorepinReservationUnschedulable"
	ReasonReservationConsumed      = "CorepinReservationConsumed"
	ReasonReservationExpired       = "CorepinReservationExpired"
)

// NewReservationController wires a CPUReservation informer to sched. c, when
// not nil, is the pods' and nodes' cache: their changes retry the waiting
// reservations.
func NewReservationController(client dynamic.Interface, sched *Scheduler, c *Cache) (*ReservationController, error) {
	f := dynamicinformer.NewDynamicSharedInformerFactory(client, 0)
	rc := &ReservationController{sched: sched, client: client, factory: f, Informer: f.ForResource(api.CPUReservationGVR).Informer(),
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "cpureservations"}),
		now: time.Now}
	rc.retryDelay.Store(int64(DefaultReservationRetryDelay))
	reg, err := rc.Informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    rc.upsert,
		UpdateFunc: func(_, obj any) { rc.upsert(obj) },
		DeleteFunc: func(obj any) {
			key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj)
			if err != nil {
				return
			}
			if sched.DeleteReservation(key) {
				klog.InfoS("CPUReservation deleted: its CPUs are free", "reservation", key)
				rc.retryWaiting()
			}
		},
	})
	if err != nil {
		return nil, err
	}
	rc.synced = reg.HasSynced
	sched.SetReservationNotify(rc.queue.Add)
	if c != nil {
		kick := cache.ResourceEventHandlerFuncs{
			AddFunc:    func(any) {},
			UpdateFunc: func(_, _ any) { rc.retryWaiting() },
			DeleteFunc: func(any) { rc.retryWaiting() },
		}
		nodeKick := kick
		nodeKick.AddFunc = func(any) { rc.retryWaiting() }
		if _, err := c.Nodes.AddEventHandler(nodeKick); err != nil {
			return nil, err
		}
		if _, err := c.Pods.AddEventHandler(kick); err != nil {
			return nil, err
		}
	}
	return rc, nil
}

// upsert records a reservation in the Scheduler at once, as the pods'
// cache does with pods: a Reserved one is held again before the extender
// answers anything after a restart (Synced).
func (rc *ReservationController) upsert(obj any) {
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return
	}
	r, err := api.ReservationFromUnstructured(u.Object)
	if err != nil {
		klog.InfoS("CPUReservation unreadable, ignored", "reservation", klog.KObj(u), "err", err.Error())
		return
	}
	if err := rc.sched.UpsertReservation(r); err != nil {
		klog.InfoS("CPUReservation problem", "reservation", klog.KObj(u), "err", err.Error())
	}
	rc.queue.Add(r.Key())
}

// retryWaiting queues the reservations not placed yet, after the retry delay
// (one that waits already is not queued twice).
func (rc *ReservationController) retryWaiting() {
	for _, key := range rc.sched.WaitingReservations() {
		rc.queue.AddAfter(key, time.Duration(rc.retryDelay.Load()))
	}
}

// SetRetryDelay sets how long after a change in the cluster the waiting
// reservations are tried again (DefaultReservationRetryDelay).
func (rc *ReservationController) SetRetryDelay(d time.Duration) { rc.retryDelay.Store(int64(d)) }

// Synced reports whether the Scheduler has seen every reservation of the
// initial list.
func (rc *ReservationController) Synced() bool { return rc.synced() }

// Start starts the informer; Run starts the worker.
func (rc *ReservationController) Start(ctx context.Context) { rc.factory.Start(ctx.Done()) }

// Run places, expires and publishes reservations until ctx is done, once
// ready (the caches of pods and nodes, typically) and its own informer
// have synced: a placement from a partial view could take held CPUs.
func (rc *ReservationController) Run(ctx context.Context, ready ...cache.InformerSynced) {
	defer rc.queue.ShutDown()
	rc.Start(ctx)
	if !cache.WaitForCacheSync(ctx.Done(), append(ready, rc.synced)...) {
		return
	}
	go wait.UntilWithContext(ctx, func(ctx context.Context) {
		for rc.processNext(ctx) {
		}
	}, time.Second)
	<-ctx.Done()
}

func (rc *ReservationController) processNext(ctx context.Context) bool {
	key, quit := rc.queue.Get()
	if quit {
		return false
	}
	defer rc.queue.Done(key)
	if err := rc.sync(ctx, key); err != nil {
		klog.InfoS("CPUReservation sync failed, retried", "reservation", key, "err", err.Error())
		rc.queue.AddRateLimited(key)
		return true
	}
	rc.queue.Forget(key)
	return true
}

// sync brings one reservation forward (place, expire) and its status in
// line with the Scheduler's state.
func (rc *ReservationController) sync(ctx context.Context, key string) error {
	obj, exists, err := rc.Informer.GetIndexer().GetByKey(key)
	if err != nil {
		return err
	}
	if !exists {
		if rc.sched.DeleteReservation(key) {
			rc.retryWaiting()
		}
		return nil
	}
	u := obj.(*unstructured.Unstructured)
	r, err := api.ReservationFromUnstructured(u.Object)
	if err != nil {
		return nil // logged by upsert; nothing to do until it changes
	}
	view, ok := rc.sched.Reservation(key)
	if !ok {
		return nil
	}
	now := rc.now()
	switch view.Phase {
	case api.ReservationPending, api.ReservationUnschedulable:
		if !rc.sched.ExpireReservation(key, now) {
			if view, err = rc.sched.PlaceReservation(key, now); err != nil {
				return err
			}
			if view.Phase == api.ReservationReserved {
				klog.InfoS("CPUReservation placed", "reservation", key, "node", view.Status.Node, "cpus", view.Status.CPUs.Set().String())
			}
		}
	case api.ReservationReserved:
		if rc.sched.ExpireReservation(key, now) {
			klog.InfoS("CPUReservation expired: its CPUs are free", "reservation", key)
			rc.retryWaiting()
		}
	}
	view, _ = rc.sched.Reservation(key)
	if err := rc.writeStatus(ctx, u, r, view); err != nil {
		return err
	}
	if view.Phase == api.ReservationPending || view.Phase == api.ReservationUnschedulable || view.Phase == api.ReservationReserved {
		// Wake at the deadline: the TTL is kept with the state.
		rc.queue.AddAfter(key, view.Deadline.Sub(now)+10*time.Millisecond)
	}
	return nil
}

// desiredStatus is the status the Scheduler's view of a reservation reads as.
func desiredStatus(view ReservationView, namespace string) api.CPUReservationStatus {
	st := api.CPUReservationStatus{Phase: view.Phase, Reason: view.Reason}
	switch view.Phase {
	case api.ReservationReserved, api.ReservationConsumed:
		st.SetAllocation(view.Status)
		st.ReservedAt = &metav1.Time{Time: view.ReservedAt}
		if view.Consumer != "" {
			st.ConsumedBy = &api.ConsumerRef{Name: strings.TrimPrefix(view.Consumer, namespace+"/"), UID: view.ConsumerID}
		}
	case api.ReservationExpired:
		if !view.ReservedAt.IsZero() {
			st.Node = view.Status.Node
			st.ReservedAt = &metav1.Time{Time: view.ReservedAt}
		}
	}
	return st
}

// writeStatus updates the status subresource when it differs from the
// Scheduler's view. A conflict is retried by the queue with the object
// the informer shows next.
func (rc *ReservationController) writeStatus(ctx context.Context, u *unstructured.Unstructured, r *api.CPUReservation, view ReservationView) error {
	want := desiredStatus(view, r.Namespace)
	if want.ReservedAt != nil && r.Status.ReservedAt != nil && want.ReservedAt.Unix() == r.Status.ReservedAt.Unix() {
		want.ReservedAt = r.Status.ReservedAt
	}
	if equality.Semantic.DeepEqual(want, r.Status) {
		return nil
	}
	c := r.DeepCopy()
	c.Status = want
	obj, err := api.ReservationToUnstructured(c)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	_, err = rc.client.Resource(api.CPUReservationGVR).Namespace(r.Namespace).UpdateStatus(ctx, &unstructured.Unstructured{Object: obj}, metav1.UpdateOptions{FieldManager: fieldManager})
	switch {
	case apierrors.IsNotFound(err):
		rc.sched.DeleteReservation(r.Key())
		return nil
	case err != nil:
		return fmt.Errorf("writing the status of CPUReservation %s (%s): %w", r.Key(), want.Phase, err)
	}
	if want.Phase != r.Phase() {
		rc.moved(r, want)
	}
	return nil
}

// moved records a reservation's move to a new phase, once its status says
// so: an event on the reservation and the transitions counter.
func (rc *ReservationController) moved(r *api.CPUReservation, st api.CPUReservationStatus) {
	if rc.Metrics != nil {
		rc.Metrics.ReservationTransitions.WithLabelValues(string(st.Phase)).Inc()
	}
	if rc.Recorder == nil {
		return
	}
	ref := &v1.ObjectReference{APIVersion: api.CPUReservationGVK.GroupVersion().String(), Kind: api.KindCPUReservation,
		Namespace: r.Namespace, Name: r.Name, UID: r.UID}
	switch st.Phase {
	case api.ReservationReserved:
		rc.Recorder.Eventf(ref, v1.EventTypeNormal, ReasonReservationReserved, "Reserved CPUs %s on node %s (mems %s) for %ds from %s",
			st.CPUs, st.Node, st.Mems, int(r.TTL().Seconds()), st.ReservedAt.UTC().Format(time.RFC3339))
	case api.ReservationUnschedulable:
		rc.Recorder.Eventf(ref, v1.EventTypeWarning, ReasonReservationUnschedulable, "%s", truncate(st.Reason, maxEventMessage))
	case api.ReservationConsumed:
		by := "a pod"
		if st.ConsumedBy != nil {
			by = "pod " + st.ConsumedBy.Name
		}
		rc.Recorder.Eventf(ref, v1.EventTypeNormal, ReasonReservationConsumed, "CPUs %s on node %s handed to %s", st.CPUs, st.Node, by)
	case api.ReservationExpired:
		rc.Recorder.Eventf(ref, v1.EventTypeNormal, ReasonReservationExpired, "%s", truncate(st.Reason, maxEventMessage))
	}
}
