package token

import (
	"regexp"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// callStatuses are Twilio's call statuses, the values of the "status" label
// (anything else counts as "other").
var callStatuses = map[string]bool{"queued": true, "initiated": true, "ringing": true, "in-progress": true,
	"completed": true, "busy": true, "failed": true, "no-answer": true, "canceled": true}

// errorCode is the shape of Twilio's error codes.
var errorCode = regexp.MustCompile(`^[0-9]{5}$`)

// maxErrorCodes bounds the distinct error_code label values; later new ones
// count as "other", so the series stay bounded.
const maxErrorCodes = 64

// twimlMetrics are the fallback TwiML app's: edgewise_twiml_*.
type twimlMetrics struct {
	answered   *prometheus.CounterVec
	refused    *prometheus.CounterVec
	callStatus *prometheus.CounterVec

	mu    sync.Mutex
	codes map[string]bool
}

func newTwiMLMetrics() *twimlMetrics {
	m := &twimlMetrics{
		answered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "edgewise", Subsystem: "twiml", Name: "answered_total",
			Help: "TwiML requests answered, by route (dial_number, ring_user, ring_client, hangup, status).",
		}, []string{"route"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "edgewise", Subsystem: "twiml", Name: "refused_total",
			Help: "TwiML requests refused, by reason.",
		}, []string{"reason"}),
		callStatus: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "edgewise", Subsystem: "twiml", Name: "call_status_total",
			Help: "Status callbacks, by call status and Twilio error code (none when the callback had none).",
		}, []string{"status", "error_code"}),
		codes: map[string]bool{},
	}
	for _, r := range twimlRoutes {
		m.answered.WithLabelValues(r)
	}
	for _, r := range twimlReasons {
		m.refused.WithLabelValues(r)
	}
	return m
}

// countStatus counts one status callback under bounded label values.
func (m *twimlMetrics) countStatus(status, code string) {
	if !callStatuses[status] {
		status = "other"
	}
	switch {
	case code == "":
		code = "none"
	case !errorCode.MatchString(code):
		code = "other"
	default:
		m.mu.Lock()
		if !m.codes[code] {
			if len(m.codes) >= maxErrorCodes {
				code = "other"
			} else {
				m.codes[code] = true
			}
		}
		m.mu.Unlock()
	}
	m.callStatus.WithLabelValues(status, code).Inc()
}

func (m *twimlMetrics) describe(ch chan<- *prometheus.Desc) {
	m.answered.Describe(ch)
	m.refused.Describe(ch)
	m.callStatus.Describe(ch)
}

func (m *twimlMetrics) collect(ch chan<- prometheus.Metric) {
	m.answered.Collect(ch)
	m.refused.Collect(ch)
	m.callStatus.Collect(ch)
}
