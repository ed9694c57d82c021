package calls

import (
	"strconv"

	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus"
)

const (
	namespace = "edgewise"
	subsystem = "b2bua"
)

// Setup outcomes (the "outcome" label): a closed set.
const (
	outAnswered       = "answered"
	outBusy           = "busy"            // 486/600 from the callee
	outRejected       = "rejected"        // any other final response from the callee
	outCancelled      = "cancelled"       // the caller gave up
	outNoAnswer       = "no_answer"       // nothing answered in time (408)
	outUnavailable    = "unavailable"     // no Twilio edge / every IP failed (503)
	outNoBinding      = "no_binding"      // the user has no phone registered (480)
	outUnknownUser    = "unknown_user"    // 404
	outBadSDP         = "bad_sdp"         // 488
	outNoPorts        = "no_ports"        // media pool exhausted (503)
	outDuplicate      = "duplicate"       // merged request or CallSid in progress (482)
	outForbidden      = "forbidden"       // 403: not from Twilio's ranges (TCP), no Twilio identity, Twilio refused our credentials
	outShuttingDown   = "shutting_down"   // 503
	outCallLimit      = "call_limit"      // 503: calls.max_concurrent reached
	outUserCallLimit  = "user_call_limit" // 486: calls.max_per_user reached
	outUnknownContact = "unknown_contact" // 404: not a Contact edgewise registered at Twilio
	outNotTLS         = "not_tls"         // 403 (TCP) or silence (UDP): Contacts are registered over TLS, the INVITE came another way
	outError          = "error"           // our own failure (500)
)

type metrics struct {
	active       *prometheus.GaugeVec
	setups       *prometheus.CounterVec
	responses    *prometheus.CounterVec
	failovers    *prometheus.CounterVec
	relayed      *prometheus.CounterVec
	authFailures prometheus.Counter
	refused      prometheus.Counter
	// browserFailures counts calls a browser's WebRTC media failure ended.
	browserFailures prometheus.Counter
	// survival is 1 while no Twilio edge is usable, survivalSince when
	// that began (0 when not); survivalCalls counts, by route, the calls
	// edgewise connected without Twilio meanwhile.
	survival      prometheus.Gauge
	survivalSince prometheus.Gauge
	survivalCalls *prometheus.CounterVec
	all           []prometheus.Collector
}

func newMetrics() *metrics {
	m := &metrics{
		active: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: namespace, Subsystem: subsystem, Name: "calls_active",
			Help: "Calls in progress (ringing or answered), by direction (outbound = phone to Twilio).",
		}, []string{"direction"}),
		setups: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: subsystem, Name: "call_setups_total",
			Help: "Call setups by direction and outcome.",
		}, []string{"direction", "outcome"}),
		responses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: subsystem, Name: "invite_responses_total",
			Help: "Final responses the B2BUA sent to INVITEs (new calls and re-INVITEs), by status code.",
		}, []string{"code"}),
		failovers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: subsystem, Name: "invite_failovers_total",
			Help: "Outbound INVITEs moved to the next Twilio IP or edge during setup, by reason.",
		}, []string{"reason"}),
		relayed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: subsystem, Name: "in_dialog_requests_total",
			Help: "Requests relayed from one dialog to the other, by method.",
		}, []string{"method"}),
		authFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: subsystem, Name: "auth_failures_total",
			Help: "Phone INVITEs refused for wrong credentials.",
		}),
		refused: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: subsystem, Name: "acl_refused_total",
			Help: "INVITEs to a user's Twilio contact from outside the Twilio signalling ranges.",
		}),
		browserFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: subsystem, Name: "browser_media_failures_total",
			Help: "Calls ended because a browser's WebRTC media failed (ICE, DTLS, consent lost).",
		}),
	}
	m.survival = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: namespace, Subsystem: subsystem, Name: "survival_mode",
		Help: "1 while no Twilio edge is usable: calls between local phones and to the fallback targets are connected by edgewise itself.",
	})
	m.survivalSince = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: namespace, Subsystem: subsystem, Name: "survival_since_timestamp_seconds",
		Help: "When the current survival mode began (Unix time); 0 while a Twilio edge is usable.",
	})
	m.survivalCalls = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Subsystem: subsystem, Name: "survival_calls_total",
		Help: "Calls answered in survival mode, by route: local (between local phones) or fallback (a fallback target).",
	}, []string{"route"})
	m.all = []prometheus.Collector{m.active, m.setups, m.responses, m.failovers, m.relayed, m.authFailures, m.refused, m.browserFailures,
		m.survival, m.survivalSince, m.survivalCalls}
	for _, r := range []route{routeLocal, routeFallback} {
		m.survivalCalls.WithLabelValues(string(r))
	}
	// Every label value of the closed sets exists from the start: a
	// dashboard shows 0 rather than no data before the first failure.
	for _, d := range []direction{outbound, inbound, local} {
		m.active.WithLabelValues(string(d))
		for _, o := range []string{outAnswered, outBusy, outRejected, outCancelled, outNoAnswer, outUnavailable,
			outNoBinding, outUnknownUser, outBadSDP, outNoPorts, outDuplicate, outForbidden, outShuttingDown, outError,
			outCallLimit, outUserCallLimit, outUnknownContact, outNotTLS} {
			m.setups.WithLabelValues(string(d), o)
		}
	}
	for _, r := range []string{"timeout", "transport", "error_response"} {
		m.failovers.WithLabelValues(r)
	}
	return m
}

func (m *metrics) setup(d direction, outcome string) {
	m.setups.WithLabelValues(string(d), outcome).Inc()
}

// response counts a final response to an INVITE. Codes outside 200–699 are
// not SIP final responses; the label set stays bounded either way.
func (m *metrics) response(res *sip.Response) {
	if res.StatusCode < 200 || res.StatusCode > 699 {
		return
	}
	m.responses.WithLabelValues(strconv.Itoa(res.StatusCode)).Inc()
}

var _ prometheus.Collector = (*B2BUA)(nil)

// Describe implements prometheus.Collector: register the B2BUA itself.
func (b *B2BUA) Describe(ch chan<- *prometheus.Desc) {
	for _, c := range b.metrics.all {
		c.Describe(ch)
	}
}

// Collect implements prometheus.Collector.
func (b *B2BUA) Collect(ch chan<- prometheus.Metric) {
	for _, c := range b.metrics.all {
		c.Collect(ch)
	}
}
