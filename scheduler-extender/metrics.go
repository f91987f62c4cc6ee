package extender

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/corepin/corepin/api"
)

// Metrics are the extender's Prometheus metrics.
type Metrics struct {
	Registry       *prometheus.Registry
	RequestSeconds *prometheus.HistogramVec
	Rejections     *prometheus.CounterVec
	Binds          *prometheus.CounterVec
	CacheNodes     prometheus.GaugeFunc
	CachePods      prometheus.GaugeFunc
	CacheAssumed   prometheus.GaugeFunc
	// NotReady counts requests refused because the caches have not synced.
	NotReady *prometheus.CounterVec
	// PodEvents counts pod events by reason and what became of them.
	PodEvents *prometheus.CounterVec
	// PodEventEntries is the number of pods remembered for event dedupe.
	PodEventEntries prometheus.Gauge
	// ReservationTransitions counts CPUReservations moved to each phase.
	ReservationTransitions *prometheus.CounterVec
}

// reservationsCollector reports the CPUReservations the Scheduler holds, by
// phase, read at each scrape.
type reservationsCollector struct {
	s    *Scheduler
	desc *prometheus.Desc
}

func (c reservationsCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c reservationsCollector) Collect(ch chan<- prometheus.Metric) {
	counts := c.s.ReservationCounts()
	for _, phase := range api.ReservationPhases {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(counts[phase]), string(phase))
	}
}

// ReasonClasses are the values of the reason label of
// corepin_extender_filter_rejections_total.
var ReasonClasses = []string{"exclusive-limit", "shared-headroom", "shared-pool", "max-per-node", "attention",
	"no-topology", "numa-required", "spread", "cores", "io-queue", "unknown-node", "invalid-pod", "other"}

// NewMetrics registers the metrics; the cache gauges read s.
func NewMetrics(s *Scheduler) *Metrics {
	m := &Metrics{Registry: prometheus.NewRegistry()}
	m.RequestSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "corepin_extender_request_duration_seconds", Help: "Latency of extender requests by verb.",
		Buckets: []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1},
	}, []string{"verb"})
	m.Rejections = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "corepin_extender_filter_rejections_total", Help: "Nodes rejected by filter, by reason class.",
	}, []string{"reason"})
	m.Binds = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "corepin_extender_binds_total", Help: "Bind requests by result: bound, conflict (lost a race; retried), error.",
	}, []string{"result"})
	m.CacheNodes = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "corepin_extender_cache_nodes", Help: "Nodes in the extender's cache.",
	}, func() float64 { n, _ := s.Counts(); return float64(n) })
	m.CachePods = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "corepin_extender_cache_pods", Help: "Pods placed in the extender's cache (bound and assumed).",
	}, func() float64 { _, p := s.Counts(); return float64(p) })
	m.CacheAssumed = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "corepin_extender_cache_assumed_pods", Help: "Pods bound by the extender that the informer has not shown bound yet.",
	}, func() float64 { return float64(s.AssumedCount()) })
	m.NotReady = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "corepin_extender_not_ready_total", Help: "Requests refused with 503 because the caches had not synced, by verb.",
	}, []string{"verb"})
	m.PodEvents = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "corepin_extender_pod_events_total",
		Help: "Pod events by reason (CorepinNodesRejected, CorepinBindConflict) and result (recorded, deduplicated, skipped, dropped).",
	}, []string{"reason", "result"})
	m.PodEventEntries = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "corepin_extender_pod_event_dedupe_entries", Help: "Pending pods remembered to deduplicate CorepinNodesRejected events.",
	})
	m.ReservationTransitions = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "corepin_extender_reservation_transitions_total",
		Help: "CPUReservations moved to a phase (Reserved, Unschedulable, Consumed, Expired) by this extender's status writes.",
	}, []string{"phase"})
	reservations := reservationsCollector{s: s, desc: prometheus.NewDesc("corepin_extender_reservations",
		"CPUReservations in the extender's cache, by phase.", []string{"phase"}, nil)}
	m.Registry.MustRegister(m.RequestSeconds, m.Rejections, m.Binds, m.CacheNodes, m.CachePods, m.CacheAssumed,
		m.NotReady, m.PodEvents, m.PodEventEntries, m.ReservationTransitions, reservations)
	return m
}
