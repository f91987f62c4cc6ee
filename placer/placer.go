// Package placer is corepin-placer (contract section 8): it keeps, for each
// member cluster, the cluster view the extender keeps (extender.Scheduler
// fed by extender.Cache and the CPUReservation informer), chooses the
// cluster and node for a reservation by the extender's own filter and
// prioritize, and creates the reservation there with spec.nodeName for that
// cluster's extender to hold.
package placer

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"
	sigsjson "sigs.k8s.io/json"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/corepin/corepin/api"
	extender "github.com/corepin/corepin/scheduler-extender"
)

// Cluster is one member cluster: its view and its client.
type Cluster struct {
	Name  string
	Sched *extender.Scheduler
	Cache *extender.Cache
	// Reservations feeds the view with the cluster's reservations (its
	// informer only: placing them is the cluster's extender's work).
	Reservations *extender.ReservationController
	Dynamic      dynamic.Interface

	// waiters are the placements waiting for their reservation's answer,
	// by reservation key: the informer kicks them at each event.
	mu      sync.Mutex
	waiters map[string]map[chan struct{}]struct{}
}

// NewCluster builds a member cluster's view from its clients.
func NewCluster(name string, cfg api.Config, client kubernetes.Interface, dyn dynamic.Interface) (*Cluster, error) {
	sched, err := extender.NewScheduler(cfg)
	if err != nil {
		return nil, err
	}
	c, err := extender.NewCache(client, sched, nil)
	if err != nil {
		return nil, err
	}
	rc, err := extender.NewReservationController(dyn, sched, nil)
	if err != nil {
		return nil, err
	}
	cl := &Cluster{Name: name, Sched: sched, Cache: c, Reservations: rc, Dynamic: dyn, waiters: map[string]map[chan struct{}]struct{}{}}
	kick := func(obj any) {
		if key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
			cl.kick(key)
		}
	}
	if _, err := rc.Informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: kick, UpdateFunc: func(_, obj any) { kick(obj) }, DeleteFunc: kick,
	}); err != nil {
		return nil, err
	}
	return cl, nil
}

// watch registers a waiter for key's events; stop it with unwatch.
func (c *Cluster) watch(key string) chan struct{} {
	ch := make(chan struct{}, 1)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.waiters[key] == nil {
		c.waiters[key] = map[chan struct{}]struct{}{}
	}
	c.waiters[key][ch] = struct{}{}
	return ch
}

func (c *Cluster) unwatch(key string, ch chan struct{}) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.waiters[key], ch)
	if len(c.waiters[key]) == 0 {
		delete(c.waiters, key)
	}
}

// kick wakes key's waiters; one pending kick is enough, they read the
// informer's store.
func (c *Cluster) kick(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for ch := range c.waiters[key] {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// decided returns the reservation as the informer shows it, when it is the
// object uid and the cluster's extender answered (Reserved, Unschedulable).
func (c *Cluster) decided(key string, uid types.UID) (*api.CPUReservation, bool) {
	obj, ok, err := c.Reservations.Informer.GetIndexer().GetByKey(key)
	if err != nil || !ok {
		return nil, false
	}
	u, ok := obj.(*unstructured.Unstructured)
	if !ok || u.GetUID() != uid {
		return nil, false
	}
	r, err := api.ReservationFromUnstructured(u.Object)
	if err != nil {
		return nil, false
	}
	return r, r.Status.Phase == api.ReservationReserved || r.Status.Phase == api.ReservationUnschedulable
}

// Start runs the cluster's informers.
func (c *Cluster) Start(ctx context.Context) {
	c.Cache.Factory.Start(ctx.Done())
	c.Reservations.Start(ctx)
}

// Synced reports whether the view holds the cluster's initial lists.
func (c *Cluster) Synced() bool { return c.Cache.Synced() && c.Reservations.Synced() }

// Placer serves the placement API over its clusters, in flag order (which
// breaks score ties).
type Placer struct {
	Clusters []*Cluster
	// Wait bounds how long a cluster's extender may take to answer a
	// reservation (Reserved or Unschedulable) before the next cluster is
	// tried. Default 30 s.
	Wait time.Duration
	// Poll is how often the reservation is read from the API server
	// meanwhile, in case the cluster's watch lags: the informer's events
	// answer first. Default 1 s.
	Poll time.Duration

	registry   *prometheus.Registry
	placements *prometheus.CounterVec
	seconds    prometheus.Histogram
	// refusals counts what a member cluster's extender refused of what
	// this placer's view of it proposed: the view and the cluster differ.
	refusals *prometheus.CounterVec
}

// New returns a Placer over clusters.
func New(clusters []*Cluster) *Placer {
	p := &Placer{Clusters: clusters, Wait: 30 * time.Second, Poll: time.Second, registry: prometheus.NewRegistry(),
		placements: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "corepin_placer_placements_total",
			Help: "Placement requests by result: placed, no_fit, invalid, error."}, []string{"result"}),
		seconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "corepin_placer_placement_seconds",
			Help: "Time to answer a placement request, the extender's wait included.", Buckets: prometheus.DefBuckets}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "corepin_placer_cluster_refusals_total",
			Help: "Placements a member cluster's extender refused (or did not answer in time) on the node the placer's view chose."}, []string{"cluster"}),
	}
	inFlight := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "corepin_placer_placements_in_flight",
		Help: "Placements whose CPUs are assumed in the placer's views, waiting for a member cluster's extender."}, func() float64 {
		n := 0
		for _, c := range p.Clusters {
			n += c.Sched.AssumedReservations()
		}
		return float64(n)
	})
	p.registry.MustRegister(p.placements, p.seconds, p.refusals, inFlight, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return p
}

// Ready reports whether every member cluster's view has synced.
func (p *Placer) Ready() bool {
	for _, c := range p.Clusters {
		if !c.Synced() {
			return false
		}
	}
	return true
}

// Handler returns the HTTP routes of contract section 8.
func (p *Placer) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/placements", p.ready(p.place))
	mux.HandleFunc("GET /v1/placements/{cluster}/{namespace}/{name}", p.ready(p.get))
	mux.HandleFunc("DELETE /v1/placements/{cluster}/{namespace}/{name}", p.ready(p.delete))
	p.healthRoutes(mux)
	return mux
}

// HealthHandler serves /healthz, /readyz and /metrics alone, never the
// placement API: for a plain listener the kubelet's probes reach when the
// API requires client certificates.
func (p *Placer) HealthHandler() http.Handler {
	mux := http.NewServeMux()
	p.healthRoutes(mux)
	return mux
}

func (p *Placer) healthRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !p.Ready() {
			http.Error(w, "member cluster caches not synced", http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "ok\n")
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(p.registry, promhttp.HandlerOpts{}))
}

func (p *Placer) ready(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !p.Ready() {
			writeJSON(w, http.StatusServiceUnavailable, errorBody{Error: "corepin-placer not ready: member cluster caches not synced (see /readyz)"})
			return
		}
		h(w, r)
	}
}

// Placement is the 201 answer.
type Placement struct {
	Cluster    string            `json:"cluster"`
	Namespace  string            `json:"namespace"`
	Name       string            `json:"name"`
	Phase      string            `json:"phase,omitempty"`
	Node       string            `json:"node"`
	CPUs       string            `json:"cpus"`
	Containers map[string]string `json:"containers"`
	Mems       string            `json:"mems"`
	Reason     string            `json:"reason,omitempty"`
}

type errorBody struct {
	Error    string            `json:"error"`
	Clusters map[string]string `json:"clusters,omitempty"`
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	body, _ := json.Marshal(v)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(append(body, '\n'))
}

// maxBody bounds a placement request: one CPUReservation.
const maxBody = 1 << 20

// decodeReservation reads the body strictly: unknown fields and malformed
// values are errors naming the field.
func decodeReservation(r *http.Request) (*api.CPUReservation, error) {
	data, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, maxBody))
	if err != nil {
		return nil, fmt.Errorf("reading the body: %w", err)
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, errors.New("empty body: want a CPUReservation (JSON)")
	}
	var res api.CPUReservation
	strictErrs, err := sigsjson.UnmarshalStrict(data, &res)
	if err != nil {
		return nil, fmt.Errorf("malformed CPUReservation: %w", err)
	}
	if len(strictErrs) > 0 {
		msgs := make([]string, len(strictErrs))
		for i, e := range strictErrs {
			msgs[i] = e.Error()
		}
		return nil, fmt.Errorf("malformed CPUReservation: %s", strings.Join(msgs, "; "))
	}
	gv := api.CPUReservationGVK.GroupVersion().String()
	switch {
	case res.APIVersion != "" && res.APIVersion != gv:
		return nil, fmt.Errorf("apiVersion %q: want %s", res.APIVersion, gv)
	case res.Kind != "" && res.Kind != api.KindCPUReservation:
		return nil, fmt.Errorf("kind %q: want %s", res.Kind, api.KindCPUReservation)
	case res.Namespace == "":
		return nil, errors.New("metadata.namespace: required")
	case res.Name == "":
		return nil, errors.New("metadata.name: required")
	case res.Spec.TTLSeconds != nil && *res.Spec.TTLSeconds < 1:
		return nil, fmt.Errorf("spec.ttlSeconds %d: must be >= 1", *res.Spec.TTLSeconds)
	case len(res.Spec.Template.Spec.Containers) == 0:
		return nil, errors.New("spec.template.spec.containers: required")
	case res.Status.Phase != "":
		return nil, errors.New("status: set by the extender, not in a request")
	}
	return &res, nil
}

type candidate struct {
	cluster *Cluster
	extender.Candidate
}

func (p *Placer) place(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	defer func() { p.seconds.Observe(time.Since(start).Seconds()) }()
	res, err := decodeReservation(r)
	if err != nil {
		p.placements.WithLabelValues("invalid").Inc()
		writeJSON(w, http.StatusBadRequest, errorBody{Error: err.Error()})
		return
	}
	// Placements in flight hold their CPUs in the views (assumed), so
	// concurrent ones choose apart. A cluster's extender can still refuse
	// what its view here allowed (it saw a pod first): when every candidate
	// refused, choose again from the views as they are now, a few rounds,
	// each cluster's refused nodes left out (its extender knows better).
	var reasons map[string]string
	refused := map[string][]string{}   // cluster -> nodes its extender refused
	lastRefusal := map[string]string{} // cluster -> its extender's last reason
	for round := 0; round < placeRounds; round++ {
		var cands []candidate
		reasons = map[string]string{}
		for _, c := range p.Clusters {
			cand, err := c.Sched.BestNode(res, refused[c.Name]...)
			if err != nil {
				p.placements.WithLabelValues("invalid").Inc()
				writeJSON(w, http.StatusBadRequest, errorBody{Error: err.Error()})
				return
			}
			if cand.Node == "" {
				reasons[c.Name] = cand.Reason
				// The extender's own refusal first: it says more than
				// the view of the nodes it left.
				if why, ok := lastRefusal[c.Name]; ok {
					reasons[c.Name] = why + "; then " + cand.Reason
				}
				continue
			}
			cands = append(cands, candidate{c, cand})
		}
		if len(cands) == 0 {
			break
		}
		answered, byExtender := p.tryCandidates(w, r, res, cands, reasons)
		if answered {
			return
		}
		for _, cand := range byExtender {
			refused[cand.cluster.Name] = append(refused[cand.cluster.Name], cand.Node)
			lastRefusal[cand.cluster.Name] = reasons[cand.cluster.Name]
		}
	}
	p.placements.WithLabelValues("no_fit").Inc()
	writeJSON(w, http.StatusConflict, errorBody{Error: "no cluster fits", Clusters: reasons})
}

// placeRounds bounds how often a placement whose every candidate was
// refused chooses again.
const placeRounds = 3

// tryCandidates reserves in each candidate, best first, until one places
// it; it reports whether an answer was written (placed, or an error) and
// the candidates whose cluster's extender refused, and records each
// candidate's reason in reasons.
func (p *Placer) tryCandidates(w http.ResponseWriter, r *http.Request, res *api.CPUReservation, cands []candidate, reasons map[string]string) (answered bool, byExtender []candidate) {
	// Highest score first; the stable sort keeps flag order among ties.
	slices.SortStableFunc(cands, func(a, b candidate) int { return int(b.Score - a.Score) })
	for _, cand := range cands {
		placed, why, err := p.reserveIn(r.Context(), cand, res)
		if err != nil {
			p.placements.WithLabelValues("error").Inc()
			var status apierrors.APIStatus
			var inFlight inFlightError
			code := http.StatusBadGateway
			if (errors.As(err, &status) && apierrors.IsAlreadyExists(err)) || errors.As(err, &inFlight) {
				code = http.StatusConflict
			}
			writeJSON(w, code, errorBody{Error: err.Error()})
			return true, nil
		}
		if placed != nil {
			p.placements.WithLabelValues("placed").Inc()
			klog.InfoS("Placed", "reservation", klog.KObj(res), "cluster", placed.Cluster, "node", placed.Node, "cpus", placed.CPUs)
			writeJSON(w, http.StatusCreated, placed)
			return true, nil
		}
		reasons[cand.cluster.Name] = why.reason
		if why.byExtender {
			byExtender = append(byExtender, cand)
		}
	}
	return false, byExtender
}

// refusal is why a candidate did not take a reservation; byExtender: the
// cluster's extender refused it or did not answer in time, where else the
// view here or the API was in the way (counted apart: not a refusal).
type refusal struct {
	reason     string
	byExtender bool
}

// reserveIn assumes the reservation's CPUs on the candidate's node in the
// cluster's view, creates it there with spec.nodeName and waits for that
// cluster's extender. Unschedulable (it moved on meanwhile), no answer in
// time or the object unreadable: the reservation is deleted and the reason
// returned, for the next candidate to be tried; so is it when the client
// went away, with an error. The assumption goes once the view holds the
// answer.
func (p *Placer) reserveIn(ctx context.Context, cand candidate, res *api.CPUReservation) (*Placement, refusal, error) {
	c, key := cand.cluster, res.Key()
	if _, err := c.Sched.AssumeReservation(res, cand.Node); err != nil {
		if errors.Is(err, extender.ErrPlacementInFlight) {
			return nil, refusal{}, inFlightError{err}
		}
		// A concurrent placement took the CPUs since BestNode.
		return nil, refusal{reason: fmt.Sprintf("node %s: %v", cand.Node, err)}, nil
	}
	defer c.Sched.ForgetAssumedReservation(key)
	kick := c.watch(key)
	defer c.unwatch(key, kick)

	obj := res.DeepCopy()
	obj.Spec.NodeName = cand.Node
	obj.ResourceVersion, obj.UID = "", ""
	u, err := api.ReservationToUnstructured(obj)
	if err != nil {
		return nil, refusal{}, err
	}
	client := c.Dynamic.Resource(api.CPUReservationGVR).Namespace(res.Namespace)
	created, err := client.Create(ctx, &unstructured.Unstructured{Object: u}, metav1.CreateOptions{FieldManager: "corepin-placer"})
	if err != nil {
		return nil, refusal{}, fmt.Errorf("cluster %s: creating CPUReservation %s: %w", c.Name, key, err)
	}
	uid := created.GetUID()
	c.Sched.AssumedReservationCreated(key, uid)
	got, waitErr := p.await(ctx, c, client, key, uid, kick)
	if waitErr == nil && got.Status.Phase == api.ReservationReserved {
		// The view's own handler of the same event may not have run yet:
		// keep the assumption until the view holds the reservation
		// (briefly), so that its CPUs never look free here.
		for deadline := time.Now().Add(time.Second); c.Sched.ReservationAssumed(key) && time.Now().Before(deadline); {
			time.Sleep(time.Millisecond)
		}
		return &Placement{Cluster: c.Name, Namespace: res.Namespace, Name: res.Name, Node: got.Status.Node, CPUs: got.Status.CPUs,
			Containers: got.Status.Containers, Mems: got.Status.Mems}, refusal{}, nil
	}
	var why refusal
	var gone error
	switch {
	case waitErr == nil:
		why = refusal{reason: got.Status.Reason, byExtender: true}
	case ctx.Err() != nil:
		// Nobody is left to tell where it went: it must not hold CPUs.
		gone = fmt.Errorf("cluster %s: CPUReservation %s deleted, the client went away before its extender answered: %w", c.Name, key, ctx.Err())
	case apierrors.IsNotFound(waitErr):
		why.reason = fmt.Sprintf("node %s: CPUReservation %s was deleted in the cluster before its extender answered", cand.Node, key)
	case errors.Is(waitErr, context.DeadlineExceeded):
		why = refusal{reason: fmt.Sprintf("node %s: the cluster's extender did not answer within %s", cand.Node, p.Wait), byExtender: true}
	default:
		why.reason = fmt.Sprintf("node %s: reading CPUReservation %s: %v", cand.Node, key, waitErr)
	}
	if gone == nil {
		klog.InfoS("Cluster did not take the placement, trying the next", "reservation", key, "cluster", c.Name, "reason", why.reason)
	}
	if why.byExtender {
		p.refusals.WithLabelValues(c.Name).Inc()
	}
	if err := client.Delete(context.Background(), res.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}}); err != nil && !apierrors.IsNotFound(err) {
		return nil, refusal{}, fmt.Errorf("cluster %s: deleting CPUReservation %s it did not take: %w", c.Name, key, err)
	}
	return nil, why, gone
}

// await waits until the cluster's extender decided the object uid (Reserved
// or Unschedulable), as the cluster's informer shows it, or p.Wait passed.
// Every p.Poll it reads the object from the API server too, in case the
// watch lags.
func (p *Placer) await(ctx context.Context, c *Cluster, client dynamic.ResourceInterface, key string, uid types.UID, kick <-chan struct{}) (*api.CPUReservation, error) {
	ctx, cancel := context.WithTimeout(ctx, p.Wait)
	defer cancel()
	poll := time.NewTicker(p.Poll)
	defer poll.Stop()
	for {
		if r, ok := c.decided(key, uid); ok {
			return r, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-kick:
		case <-poll.C:
			u, err := client.Get(ctx, nameOf(key), metav1.GetOptions{})
			if err != nil {
				return nil, err
			}
			r, err := api.ReservationFromUnstructured(u.Object)
			if err != nil {
				return nil, err
			}
			if r.UID != uid {
				return nil, apierrors.NewNotFound(api.CPUReservationGVR.GroupResource(), r.Name)
			}
			if r.Status.Phase == api.ReservationReserved || r.Status.Phase == api.ReservationUnschedulable {
				return r, nil
			}
		}
	}
}

// nameOf is the name in a namespace/name key.
func nameOf(key string) string { return key[strings.IndexByte(key, '/')+1:] }

// inFlightError is a second placement of a reservation already being placed.
type inFlightError struct{ error }

func (p *Placer) cluster(w http.ResponseWriter, r *http.Request) (*Cluster, dynamic.ResourceInterface, bool) {
	name := r.PathValue("cluster")
	for _, c := range p.Clusters {
		if c.Name == name {
			return c, c.Dynamic.Resource(api.CPUReservationGVR).Namespace(r.PathValue("namespace")), true
		}
	}
	names := make([]string, len(p.Clusters))
	for i, c := range p.Clusters {
		names[i] = c.Name
	}
	writeJSON(w, http.StatusNotFound, errorBody{Error: fmt.Sprintf("unknown cluster %q (member clusters: %s)", name, strings.Join(names, ", "))})
	return nil, nil, false
}

func (p *Placer) get(w http.ResponseWriter, r *http.Request) {
	c, client, ok := p.cluster(w, r)
	if !ok {
		return
	}
	u, err := client.Get(r.Context(), r.PathValue("name"), metav1.GetOptions{})
	if err != nil {
		writeAPIError(w, c, err)
		return
	}
	res, err := api.ReservationFromUnstructured(u.Object)
	if err != nil {
		writeJSON(w, http.StatusBadGateway, errorBody{Error: err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, Placement{Cluster: c.Name, Namespace: res.Namespace, Name: res.Name, Phase: string(res.Phase()),
		Node: res.Status.Node, CPUs: res.Status.CPUs, Containers: res.Status.Containers, Mems: res.Status.Mems, Reason: res.Status.Reason})
}

func (p *Placer) delete(w http.ResponseWriter, r *http.Request) {
	c, client, ok := p.cluster(w, r)
	if !ok {
		return
	}
	if err := client.Delete(r.Context(), r.PathValue("name"), metav1.DeleteOptions{}); err != nil {
		writeAPIError(w, c, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func writeAPIError(w http.ResponseWriter, c *Cluster, err error) {
	code := http.StatusBadGateway
	if apierrors.IsNotFound(err) {
		code = http.StatusNotFound
	}
	writeJSON(w, code, errorBody{Error: fmt.Sprintf("cluster %s: %v", c.Name, err)})
}
