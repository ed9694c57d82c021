package media

import "github.com/prometheus/client_golang/prometheus"

const (
	namespace = "edgewise"
	subsystem = "media"
)

// The relay's metrics are computed at scrape time from per-worker counters,
// so the packet path never touches a shared Prometheus counter. Labels come
// from closed sets: kind rtp|rtcp, reason (see reasons.go), setup failure.
var (
	descPackets = prometheus.NewDesc(prometheus.BuildFQName(namespace, subsystem, "packets_total"),
		"Packets relayed (sent on), by kind (rtp|rtcp).", []string{"kind"}, nil)
	descBytes = prometheus.NewDesc(prometheus.BuildFQName(namespace, subsystem, "bytes_total"),
		"UDP payload bytes relayed, by kind (rtp|rtcp).", []string{"kind"}, nil)
	descDropped = prometheus.NewDesc(prometheus.BuildFQName(namespace, subsystem, "dropped_total"),
		"Packets not relayed, by reason (stranger|not_allowed|malformed|truncated|oversize|no_remote|send_error).",
		[]string{"reason"}, nil)
	descActive = prometheus.NewDesc(prometheus.BuildFQName(namespace, subsystem, "sessions_active"),
		"Open media sessions (calls).", nil, nil)
	descCreated = prometheus.NewDesc(prometheus.BuildFQName(namespace, subsystem, "sessions_total"),
		"Media sessions created.", nil, nil)
	descSetupFail = prometheus.NewDesc(prometheus.BuildFQName(namespace, subsystem, "session_failures_total"),
		"Media sessions refused, by reason (no_ports|duplicate|stopped).", []string{"reason"}, nil)
	descLost = prometheus.NewDesc(prometheus.BuildFQName(namespace, subsystem, "lost_packets_total"),
		"RTP packets lost on the way to edgewise (sequence-number gaps, RFC 3550 A.3), counted when a call ends; "+
			"calls in progress show their loss in /v1/status.", nil, nil)
	descTimeouts = prometheus.NewDesc(prometheus.BuildFQName(namespace, subsystem, "timeouts_total"),
		"Calls whose media went silent for media.timeout.", nil, nil)
	descPortsUsed = prometheus.NewDesc(prometheus.BuildFQName(namespace, subsystem, "ports_in_use"),
		"UDP ports of media.rtp_ports held by calls (two per RTP/RTCP pair).", nil, nil)
	descPortsFree = prometheus.NewDesc(prometheus.BuildFQName(namespace, subsystem, "ports_free"),
		"UDP ports of media.rtp_ports free to allocate (two per RTP/RTCP pair).", nil, nil)
	descBindFail = prometheus.NewDesc(prometheus.BuildFQName(namespace, subsystem, "port_bind_failures_total"),
		"Port pairs skipped because a port could not be bound (held by another program).", nil, nil)
)

var _ prometheus.Collector = (*Relay)(nil)

// Describe implements prometheus.Collector.
func (r *Relay) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descPackets, descBytes, descDropped, descActive,
		descCreated, descSetupFail, descLost, descTimeouts, descPortsUsed, descPortsFree, descBindFail} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (r *Relay) Collect(ch chan<- prometheus.Metric) {
	var pk, by [2]uint64
	var dr [numReasons]uint64
	for _, w := range r.workers {
		for k := range pk {
			pk[k] += w.ctr.packets[k].Load()
			by[k] += w.ctr.bytes[k].Load()
		}
		for i := range dr {
			dr[i] += w.ctr.dropped[i].Load()
		}
	}
	for k, kind := range [2]string{"rtp", "rtcp"} {
		ch <- prometheus.MustNewConstMetric(descPackets, prometheus.CounterValue, float64(pk[k]), kind)
		ch <- prometheus.MustNewConstMetric(descBytes, prometheus.CounterValue, float64(by[k]), kind)
	}
	for i := reason(1); i < numReasons; i++ {
		ch <- prometheus.MustNewConstMetric(descDropped, prometheus.CounterValue, float64(dr[i]), i.String())
	}
	r.mu.Lock()
	active := len(r.sessions)
	r.mu.Unlock()
	ch <- prometheus.MustNewConstMetric(descActive, prometheus.GaugeValue, float64(active))
	ch <- prometheus.MustNewConstMetric(descCreated, prometheus.CounterValue, float64(r.created.Load()))
	for i := range numSetupFailures {
		ch <- prometheus.MustNewConstMetric(descSetupFail, prometheus.CounterValue,
			float64(r.failures[i].Load()), setupFailureNames[i])
	}
	ch <- prometheus.MustNewConstMetric(descLost, prometheus.CounterValue, float64(r.lost.Load()))
	ch <- prometheus.MustNewConstMetric(descTimeouts, prometheus.CounterValue, float64(r.timeouts.Load()))
	ps := r.pool.Stats()
	ch <- prometheus.MustNewConstMetric(descPortsUsed, prometheus.GaugeValue, float64(2*ps.InUse))
	ch <- prometheus.MustNewConstMetric(descPortsFree, prometheus.GaugeValue, float64(2*ps.Free))
	ch <- prometheus.MustNewConstMetric(descBindFail, prometheus.CounterValue, float64(ps.BindFailed))
}
