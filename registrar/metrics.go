package registrar

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

const (
	namespace = "edgewise"
	subsystem = "registrar"
)

// trackedCodes are the response codes the registrar sends; anything else is
// counted as "other", so the label set stays bounded.
var trackedCodes = []int{200, 400, 401, 403, 420, 423, 500}

type metrics struct {
	requests     *prometheus.CounterVec
	byCode       map[int]prometheus.Counter
	other        prometheus.Counter
	authFailures prometheus.Counter
	collectors   []prometheus.Collector
}

func newMetrics(r *Registrar) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: subsystem, Name: "responses_total",
			Help: "Responses to REGISTER requests, by status code.",
		}, []string{"code"}),
		authFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: subsystem, Name: "auth_failures_total",
			Help: "Failed digest authentications (wrong password or unknown user).",
		}),
		byCode: make(map[int]prometheus.Counter),
	}
	// Resolve label values once: the hot path then only increments.
	for _, c := range trackedCodes {
		m.byCode[c] = m.requests.WithLabelValues(strconv.Itoa(c))
	}
	m.other = m.requests.WithLabelValues("other")
	m.collectors = []prometheus.Collector{
		m.requests, m.authFailures,
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: subsystem, Name: "lockouts_total",
			Help: "Source addresses locked out after repeated authentication failures (SIP and token endpoint).",
		}, func() float64 { return float64(r.lockout.Counters().SourceLockouts.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: subsystem, Name: "user_guards_total",
			Help: "Users put under guard after failures from many sources: only their known sources may try.",
		}, func() float64 { return float64(r.lockout.Counters().UserGuards.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: namespace, Subsystem: subsystem, Name: "guarded_users",
			Help: "Users under guard now.",
		}, func() float64 { return float64(r.lockout.GuardedUsers()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: subsystem, Name: "lockout_evictions_total",
			Help: "Lockout entries forgotten because the table was full (see sip.lockout.max_sources).",
		}, func() float64 { return float64(r.lockout.Counters().Evicted.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: subsystem, Name: "lockout_exempt_failures_total",
			Help: "Authentication failures from sources that are never locked out (Twilio, trusted proxies).",
		}, func() float64 { return float64(r.lockout.Counters().Exempted.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: namespace, Subsystem: subsystem, Name: "bindings",
			Help: "Bindings in the location table.",
		}, func() float64 { return float64(r.table.Len()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: namespace, Subsystem: subsystem, Name: "locked_sources",
			Help: "Source addresses locked out now.",
		}, func() float64 { return float64(r.lockout.LockedSources()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: namespace, Subsystem: subsystem, Name: "tracked_nonces",
			Help: "Digest nonces whose nonce-count is remembered for replay protection.",
		}, func() float64 { return float64(r.auth.TrackedNonces()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: subsystem, Name: "store_commits_total",
			Help: "Transactions written to the bindings file (each carries a batch of changes).",
		}, func() float64 { return float64(r.table.Stats().Commits) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: subsystem, Name: "store_records_total",
			Help: "User records written to the bindings file.",
		}, func() float64 { return float64(r.table.Stats().Records) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: subsystem, Name: "store_failures_total",
			Help: "Failed writes to the bindings file.",
		}, func() float64 { return float64(r.table.Stats().Failures) }),
	}
	return m
}

func (m *metrics) countResponse(code int) {
	if c, ok := m.byCode[code]; ok {
		c.Inc()
		return
	}
	m.other.Inc()
}

// Collector returns the registrar's Prometheus metrics (namespace edgewise,
// subsystem registrar) for the caller to register.
func (r *Registrar) Collector() prometheus.Collector { return collectors(r.metrics.collectors) }

type collectors []prometheus.Collector

func (cs collectors) Describe(ch chan<- *prometheus.Desc) {
	for _, c := range cs {
		c.Describe(ch)
	}
}

func (cs collectors) Collect(ch chan<- prometheus.Metric) {
	for _, c := range cs {
		c.Collect(ch)
	}
}
