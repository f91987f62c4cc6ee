package plugin

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Metrics are the node plugin's Prometheus metrics.
type Metrics struct {
	Registry         *prometheus.Registry
	handler          *prometheus.HistogramVec
	sharedPool       prometheus.Gauge
	exclusiveHeld    prometheus.Gauge
	containers       *prometheus.GaugeVec
	updates          *prometheus.CounterVec
	driftCorrections prometheus.Counter
	refusals         *prometheus.CounterVec
	conflicts        prometheus.Counter
	overLimit        prometheus.Gauge
	quarantined      prometheus.Gauge
	releaseAll       prometheus.Gauge
	pluginConflicts  *prometheus.CounterVec
}

// NewMetrics registers the plugin's metrics in a new registry (with the Go
// and process collectors).
func NewMetrics() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		handler: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "corepin_nri_handler_duration_seconds",
			Help:    "Time spent in each NRI handler, from the request to the reply.",
			Buckets: []float64{.00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .1},
		}, []string{"handler"}),
		sharedPool: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "corepin_nri_shared_pool_cpus", Help: "CPUs in the shared pool."}),
		exclusiveHeld: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "corepin_nri_exclusive_cpus", Help: "CPUs held by exclusive containers."}),
		containers: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "corepin_nri_containers", Help: "Containers the plugin tracks, by class."}, []string{"class"}),
		updates: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "corepin_nri_container_updates_total",
			Help: "Container updates issued, by why: shrink (exclusive created), grow (exclusive gone), release, restore, repair (synchronize or drift), release-all."},
			[]string{"reason"}),
		driftCorrections: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "corepin_nri_drift_corrections_total", Help: "Containers whose actual cpuset differed from the ledger's and were corrected."}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "corepin_nri_refusals_total", Help: "Containers refused, by reason."}, []string{"reason"}),
		conflicts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "corepin_nri_sync_conflicts_total", Help: "Containers found at synchronize that are not as their annotations say: CPUs that conflict with another pod's, annotations that do not parse or do not place them."}),
		overLimit: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "corepin_nri_exclusive_over_limit_cpus",
			Help: "Exclusive CPUs held beyond the capacity formula's exclusive limit (running containers found at synchronize are kept); 0 when within."}),
		quarantined: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "corepin_nri_quarantined_cpus",
			Help: "CPUs of containers left running where they are at synchronize (a conflict, or pinned under annotations that no longer say so): kept out of the shared pool until they stop."}),
		releaseAll: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "corepin_nri_release_all",
			Help: "1 while the node's corepin.io/release-all is set (corepin being uninstalled: nothing is pinned), else 0."}),
	}
	m.Registry.MustRegister(m.handler, m.sharedPool, m.exclusiveHeld, m.containers, m.updates, m.driftCorrections, m.refusals, m.conflicts,
		m.overLimit, m.quarantined, m.releaseAll,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.pluginConflicts = registerPluginConflicts(m.Registry)
	return m
}

func (m *Metrics) observe(handler string, start time.Time) {
	m.handler.WithLabelValues(handler).Observe(time.Since(start).Seconds())
}

// state refreshes the gauges from the ledger.
func (m *Metrics) state(l *Ledger) {
	m.sharedPool.Set(float64(l.SharedPool().Size()))
	c := l.Capacity()
	m.exclusiveHeld.Set(float64(c.E))
	m.overLimit.Set(float64(max(0, c.E-c.ExclusiveLimit)))
	m.quarantined.Set(float64(l.Quarantined().Size()))
	m.releaseAll.Set(0)
	if l.releaseAll {
		m.releaseAll.Set(1)
	}
	counts := map[Class]int{}
	for _, c := range l.containers {
		counts[c.Class]++
	}
	for _, class := range []Class{Shared, Exclusive, System, BindAll} {
		m.containers.WithLabelValues(class.String()).Set(float64(counts[class]))
	}
}
