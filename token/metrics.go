package token

import "github.com/prometheus/client_golang/prometheus"

// Refusal reasons, the only values of the "reason" label.
const (
	reasonUnauthenticated = "unauthenticated"
	reasonForbidden       = "forbidden"
	reasonRateLimited     = "rate_limited"
	reasonLockedOut       = "locked_out"
	reasonBadRequest      = "bad_request"
	reasonTooLarge        = "too_large"
	reasonOrigin          = "origin"
	reasonMethod          = "method"
	reasonNotReady        = "not_ready"
	reasonInternal        = "internal"
)

var refusalReasons = []string{
	reasonUnauthenticated, reasonForbidden, reasonRateLimited, reasonLockedOut, reasonBadRequest,
	reasonTooLarge, reasonOrigin, reasonMethod, reasonNotReady, reasonInternal,
}

// metrics are per Provider, not global, so several replicas can run in one
// process (tests, benchmarks) and the caller picks the registry.
type metrics struct {
	issued   prometheus.Counter
	refused  *prometheus.CounterVec
	duration prometheus.Histogram
	ready    prometheus.Gauge
	twiml    *twimlMetrics
}

func newMetrics() *metrics {
	m := &metrics{
		twiml: newTwiMLMetrics(),
		issued: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "edgewise", Subsystem: "token", Name: "issued_total",
			Help: "Access tokens issued.",
		}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "edgewise", Subsystem: "token", Name: "refused_total",
			Help: "Token requests refused, by reason.",
		}, []string{"reason"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "edgewise", Subsystem: "token", Name: "request_duration_seconds",
			Help:    "Time to answer POST /v1/token, whatever the outcome.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1},
		}),
		ready: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "edgewise", Subsystem: "token", Name: "ready",
			Help: "1 when the provider has a usable signing key and is not draining.",
		}),
	}
	// Pre-create every reason so dashboards see zeros, not gaps.
	for _, r := range refusalReasons {
		m.refused.WithLabelValues(r)
	}
	return m
}

// Describe implements prometheus.Collector.
func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	m.issued.Describe(ch)
	m.refused.Describe(ch)
	m.duration.Describe(ch)
	m.ready.Describe(ch)
	m.twiml.describe(ch)
}

// Collect implements prometheus.Collector.
func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	m.issued.Collect(ch)
	m.refused.Collect(ch)
	m.duration.Collect(ch)
	m.ready.Collect(ch)
	m.twiml.collect(ch)
}

var _ prometheus.Collector = (*metrics)(nil)
