package frontend

import "github.com/prometheus/client_golang/prometheus"

// Collector returns the SIP front end's counters as Prometheus metrics
// (edgewise_sip_*): what it dropped, refused or answered before any handler,
// and the connections open.
func (s *Server) Collector() prometheus.Collector {
	counter := func(name, help string, v func() uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "edgewise", Subsystem: "sip", Name: name, Help: help},
			func() float64 { return float64(v()) })
	}
	st := &s.stats
	cs := collectors{
		counter("malformed_total", "Unparsable SIP messages (answered 400 when they can be matched).", st.Malformed.Load),
		counter("garbage_total", "Datagrams and frames that are not SIP at all, dropped.", st.Garbage.Load),
		counter("blocked_total", "Requests from locked-out sources, dropped (UDP) or refused (TCP).", st.Blocked.Load),
		counter("overloaded_total", "Messages dropped because the transaction layer's queue was full.", st.Overloaded.Load),
		counter("retransmissions_answered_total", "Retransmitted UDP requests answered again with the response already sent, without handling them twice.", st.Retransmissions.Load),
		counter("screened_total", "Requests answered or dropped without a transaction (challenges, unknown dialogs).", st.Screened.Load),
		counter("connections_refused_total", "TCP, TLS and WebSocket connections closed at accept for sip.connections limits.", st.ConnRefused.Load),
		counter("connection_setup_timeouts_total", "Connections closed for no handshake or first SIP message within sip.connections.setup_timeout.", st.SetupTimeouts.Load),
		counter("connection_idle_closes_total", "Connections closed after sip.connections.idle_timeout without traffic.", st.IdleClosed.Load),
		counter("websocket_refused_total", "WebSocket upgrades refused (no sip subprotocol, bad handshake, too many pending).", st.WSRefused.Load),
		counter("websocket_oversized_total", "WebSocket connections closed for an oversized or malformed frame.", st.WSOversized.Load),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "edgewise", Subsystem: "sip", Name: "connections",
			Help: "TCP, TLS and WebSocket connections open."}, func() float64 { return float64(s.OpenConns()) }),
	}
	if h := s.certs; h != nil {
		reloads := func(result string, v func() uint64) prometheus.Collector {
			return prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "edgewise", Subsystem: "sip", Name: "tls_certificate_reloads_total",
				Help:        "Replacements of the tls/wss listeners' certificate (applied), and new pairs that did not load (refused; the previous one stays).",
				ConstLabels: prometheus.Labels{"result": result}}, func() float64 { return float64(v()) })
		}
		cs = append(cs,
			reloads("applied", h.applied.Load),
			reloads("refused", h.refused.Load),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "edgewise", Subsystem: "sip", Name: "tls_certificate_not_after_timestamp_seconds",
				Help: "When the certificate the tls/wss listeners present expires (Unix time)."},
				func() float64 { return float64(h.notAfter().Unix()) }))
	}
	return cs
}

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
