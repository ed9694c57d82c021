package upstream

import (
	"github.com/prometheus/client_golang/prometheus"
)

const (
	namespace = "edgewise"
	subsystem = "upstream"
)

// metrics are the Manager's Prometheus collectors. Labels stay bounded: no
// per-user label; kinds, outcomes and states are closed sets and edge names
// come from the config.
type metrics struct {
	requests     *prometheus.CounterVec   // kind, outcome
	duration     *prometheus.HistogramVec // kind
	moves        *prometheus.CounterVec   // kind
	batches      *prometheus.CounterVec   // kind
	batchSeconds *prometheus.HistogramVec // kind
	failures     *prometheus.CounterVec   // fault
	throttled    prometheus.Counter

	// Computed at scrape time from the users, so nothing goes stale.
	registrations *prometheus.Desc // state
	byEdge        *prometheus.Desc // edge
	leftovers     *prometheus.Desc
}

func newMetrics() *metrics {
	name := func(n string) string { return prometheus.BuildFQName(namespace, subsystem, n) }
	return &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: subsystem, Name: "requests_total",
			Help: "Upstream REGISTER transactions by kind (register|refresh|move|cleanup) and outcome " +
				"(ok|challenged|timeout|transport|error_response|rejected|rate_limited|too_many_registrations|interval_too_brief|abandoned).",
		}, []string{"kind", "outcome"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Subsystem: subsystem, Name: "request_duration_seconds",
			Help:    "Time from sending an upstream REGISTER to its final response or timeout.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2, 4, 8},
		}, []string{"kind"}),
		moves: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: subsystem, Name: "moves_total",
			Help: "Registrations that moved to another edge, by kind of work (move|refresh|register).",
		}, []string{"kind"}),
		batches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: subsystem, Name: "move_batches_total",
			Help: "Active-edge changes acted on, by kind (failover|failback|reload|available).",
		}, []string{"kind"}),
		batchSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Subsystem: subsystem, Name: "move_batch_duration_seconds",
			Help:    "Time from an active-edge change until every registration it moved was registered at the new edge.",
			Buckets: []float64{.1, .25, .5, 1, 2, 4, 8, 16, 32, 64},
		}, []string{"kind"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: subsystem, Name: "failures_total",
			Help: "Failed registration attempts (after every IP and edge tried) by fault (edge|user).",
		}, []string{"fault"}),
		throttled: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: subsystem, Name: "throttled_total",
			Help: "REGISTERs delayed to stay within Twilio's 5 per second per AOR.",
		}),
		registrations: prometheus.NewDesc(name("registrations"),
			"Users by upstream registration state (registering|registered|moving|failing|unregistering|unregistered|not_configured).",
			[]string{"state"}, nil),
		byEdge: prometheus.NewDesc(name("edge_registrations"),
			"Current upstream registrations by edge.",
			[]string{"edge"}, nil),
		leftovers: prometheus.NewDesc(name("leftover_contacts"),
			"Contacts still to be removed upstream (old edges, unregistered users).",
			nil, nil),
	}
}

// withSeries creates the label values of the closed sets up front, so a
// dashboard shows 0 rather than no data before the first move.
func (x *metrics) withSeries() *metrics {
	for _, k := range []string{"move", "refresh", "register"} {
		x.moves.WithLabelValues(k)
	}
	for _, k := range []string{"failover", "failback", "reload", "available"} {
		x.batches.WithLabelValues(k)
	}
	for _, f := range []string{"edge", "user"} {
		x.failures.WithLabelValues(f)
	}
	return x
}

func (x *metrics) vecs() []prometheus.Collector {
	return []prometheus.Collector{x.requests, x.duration, x.moves, x.batches, x.batchSeconds, x.failures, x.throttled}
}

var _ prometheus.Collector = (*Manager)(nil)

// Describe implements prometheus.Collector: register the Manager as one
// collector (reg.MustRegister(manager)).
func (m *Manager) Describe(ch chan<- *prometheus.Desc) {
	for _, c := range m.metrics.vecs() {
		c.Describe(ch)
	}
	ch <- m.metrics.registrations
	ch <- m.metrics.byEdge
	ch <- m.metrics.leftovers
}

// Collect implements prometheus.Collector.
func (m *Manager) Collect(ch chan<- prometheus.Metric) {
	for _, c := range m.metrics.vecs() {
		c.Collect(ch)
	}
	states := map[string]int{
		StateRegistering: 0, StateRegistered: 0, StateMoving: 0, StateFailing: 0,
		StateUnregistering: 0, StateUnregistered: 0, StateNotConfigured: 0,
	}
	edges := map[string]int{}
	left := 0
	now := m.now()
	m.mu.Lock()
	for _, r := range m.users {
		states[r.state(now)]++
		if r.registered() && now.Before(r.rec.ExpiresAt) {
			edges[r.rec.Edge]++
		}
		left += len(r.rec.Leftovers)
	}
	m.mu.Unlock()
	for st, n := range states {
		ch <- prometheus.MustNewConstMetric(m.metrics.registrations, prometheus.GaugeValue, float64(n), st)
	}
	for e, n := range edges {
		ch <- prometheus.MustNewConstMetric(m.metrics.byEdge, prometheus.GaugeValue, float64(n), e)
	}
	ch <- prometheus.MustNewConstMetric(m.metrics.leftovers, prometheus.GaugeValue, float64(left))
}
