package edge

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

const (
	namespace = "edgewise"
	subsystem = "edge"
)

// metrics are the Monitor's Prometheus collectors. Labels stay bounded: edge
// names come from the config, IPs from DNS (3–4 per edge), and reasons,
// kinds and outcomes from closed sets.
type metrics struct {
	rttHist   *prometheus.HistogramVec // edge
	results   *prometheus.CounterVec   // edge, source, outcome
	failovers *prometheus.CounterVec   // reason
	failbacks *prometheus.CounterVec   // reason
	changes   *prometheus.CounterVec   // kind
	dnsFails  *prometheus.CounterVec   // edge

	// Gauges are computed from Status at scrape time, so edges and IPs that
	// are gone leave no stale series.
	edgeState *prometheus.Desc
	ipState   *prometheus.Desc
	active    *prometheus.Desc
}

func newMetrics() *metrics {
	name := func(n string) string { return prometheus.BuildFQName(namespace, subsystem, n) }
	return &metrics{
		rttHist: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Subsystem: subsystem, Name: "rtt_seconds",
			Help:    "Round-trip time of successful probes and reported requests to an edge.",
			Buckets: []float64{.005, .01, .025, .05, .1, .2, .3, .5, 1, 2, 4},
		}, []string{"edge"}),
		results: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: subsystem, Name: "results_total",
			Help: "Probe and reported request outcomes per edge (source probe|report; outcome ok|timeout|transport|tls|error_response).",
		}, []string{"edge", "source", "outcome"}),
		failovers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: subsystem, Name: "failovers_total",
			Help: "Active edge left because it went down or was removed, by why it failed (timeout|transport|tls|error_response|dns|mixed|removed).",
		}, []string{"reason"}),
		failbacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: subsystem, Name: "failbacks_total",
			Help: "Moves to a more-preferred edge (hold_elapsed) or back from every edge being down (recovered).",
		}, []string{"reason"}),
		changes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: subsystem, Name: "active_changes_total",
			Help: "Changes of the active-edge decision by kind (failover|failback|reload|unavailable|available).",
		}, []string{"kind"}),
		dnsFails: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: subsystem, Name: "dns_failures_total",
			Help: "Failed DNS lookups of an edge FQDN (the last answer keeps being served).",
		}, []string{"edge"}),
		edgeState: prometheus.NewDesc(name("state"),
			"Edge health: 1 for the edge's current state (unknown|up|down), 0 for the others.",
			[]string{"edge", "state"}, nil),
		ipState: prometheus.NewDesc(name("ip_state"),
			"Health of each resolved edge IP: 1 for its current state (unknown|up|down), 0 for the others.",
			[]string{"edge", "ip", "state"}, nil),
		active: prometheus.NewDesc(name("active"),
			"1 for the edge new requests go to, 0 for the others.",
			[]string{"edge"}, nil),
	}
}

// withSeries creates every label value of the closed sets up front, so a
// dashboard shows 0 rather than no data before the first failover.
func (x *metrics) withSeries() *metrics {
	for _, r := range []string{"timeout", "transport", "tls", "error_response", "dns", "mixed", "removed"} {
		x.failovers.WithLabelValues(r)
	}
	for _, r := range []string{"hold_elapsed", "recovered"} {
		x.failbacks.WithLabelValues(r)
	}
	for _, k := range []ChangeKind{ChangeFailover, ChangeFailback, ChangeReload, ChangeUnavailable, ChangeAvailable} {
		x.changes.WithLabelValues(string(k))
	}
	return x
}

func (x *metrics) vecs() []prometheus.Collector {
	return []prometheus.Collector{x.rttHist, x.results, x.failovers, x.failbacks, x.changes, x.dnsFails}
}

func (x *metrics) result(edge, source string, out outcome) {
	o := out.class
	if out.ok {
		o = "ok"
	}
	x.results.WithLabelValues(edge, source, o).Inc()
}

func (x *metrics) rtt(edge string, d time.Duration) {
	if d > 0 {
		x.rttHist.WithLabelValues(edge).Observe(d.Seconds())
	}
}

func (x *metrics) dnsFailure(edge string) { x.dnsFails.WithLabelValues(edge).Inc() }

// change counts one active-edge change; class is why the left edge failed.
func (x *metrics) change(kind ChangeKind, class string) {
	x.changes.WithLabelValues(string(kind)).Inc()
	switch kind {
	case ChangeFailover:
		if class == "" {
			class = "removed"
		}
		x.failovers.WithLabelValues(class).Inc()
	case ChangeFailback:
		x.failbacks.WithLabelValues("hold_elapsed").Inc()
	case ChangeAvailable:
		x.failbacks.WithLabelValues("recovered").Inc()
	}
}

// forget drops the per-edge series of an edge a reload removed.
func (x *metrics) forget(edge string) {
	l := prometheus.Labels{"edge": edge}
	x.rttHist.DeletePartialMatch(l)
	x.results.DeletePartialMatch(l)
	x.dnsFails.DeletePartialMatch(l)
}

var _ prometheus.Collector = (*Monitor)(nil)

// Describe implements prometheus.Collector, so the Monitor registers as one
// collector: reg.MustRegister(monitor).
func (m *Monitor) Describe(ch chan<- *prometheus.Desc) {
	for _, c := range m.metrics.vecs() {
		c.Describe(ch)
	}
	ch <- m.metrics.edgeState
	ch <- m.metrics.ipState
	ch <- m.metrics.active
}

// Collect implements prometheus.Collector.
func (m *Monitor) Collect(ch chan<- prometheus.Metric) {
	for _, c := range m.metrics.vecs() {
		c.Collect(ch)
	}
	states := []State{StateUnknown, StateUp, StateDown}
	gauge := func(b bool) float64 {
		if b {
			return 1
		}
		return 0
	}
	for _, e := range m.Status() {
		for _, st := range states {
			ch <- prometheus.MustNewConstMetric(m.metrics.edgeState, prometheus.GaugeValue, gauge(e.State == st), e.Name, string(st))
		}
		ch <- prometheus.MustNewConstMetric(m.metrics.active, prometheus.GaugeValue, gauge(e.Active), e.Name)
		for _, ip := range e.IPs {
			for _, st := range states {
				ch <- prometheus.MustNewConstMetric(m.metrics.ipState, prometheus.GaugeValue, gauge(ip.State == st), e.Name, ip.IP, string(st))
			}
		}
	}
}
