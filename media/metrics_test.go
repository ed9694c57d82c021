package media

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/edgewise-sip/edgewise/test/kit"
)

func TestMetrics(t *testing.T) {
	r := startRelay(t, nil)
	s, a, b := call(t, r, "metrics")
	pkt := rtpPacket(t, 1, 0, 1, 0, make([]byte, 160))
	a.send(local(s.Leg(A)), pkt)
	b.recv()
	a.send(local(s.Leg(A)), []byte("junk"))
	kit.WaitFor(t, 5*time.Second, "junk counted", func() bool { return s.Stats().Legs[A].RX.Dropped["malformed"] == 1 })

	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(r)
	want := `
# HELP edgewise_media_bytes_total UDP payload bytes relayed, by kind (rtp|rtcp).
# TYPE edgewise_media_bytes_total counter
edgewise_media_bytes_total{kind="rtcp"} 0
edgewise_media_bytes_total{kind="rtp"} 172
# HELP edgewise_media_packets_total Packets relayed (sent on), by kind (rtp|rtcp).
# TYPE edgewise_media_packets_total counter
edgewise_media_packets_total{kind="rtcp"} 0
edgewise_media_packets_total{kind="rtp"} 1
# HELP edgewise_media_sessions_active Open media sessions (calls).
# TYPE edgewise_media_sessions_active gauge
edgewise_media_sessions_active 1
# HELP edgewise_media_ports_in_use UDP ports of media.rtp_ports held by calls (two per RTP/RTCP pair).
# TYPE edgewise_media_ports_in_use gauge
edgewise_media_ports_in_use 4
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"edgewise_media_bytes_total", "edgewise_media_packets_total", "edgewise_media_sessions_active", "edgewise_media_ports_in_use"); err != nil {
		t.Error(err)
	}
	if got := testutil.ToFloat64(metricFrom(t, r, "edgewise_media_dropped_total", "malformed")); got != 1 {
		t.Errorf("dropped malformed %v", got)
	}
}

// metricFrom collects one labelled series of r.
func metricFrom(t *testing.T, r *Relay, name, label string) prometheus.Collector {
	t.Helper()
	ch := make(chan prometheus.Metric, 64)
	r.Collect(ch)
	close(ch)
	for m := range ch {
		d := m.Desc().String()
		if strings.Contains(d, `"`+name+`"`) && strings.Contains(prometheusLabel(m), label) {
			return constCollector{m}
		}
	}
	t.Fatalf("no %s{%s}", name, label)
	return nil
}

type constCollector struct{ m prometheus.Metric }

func (c constCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.m.Desc() }
func (c constCollector) Collect(ch chan<- prometheus.Metric) { ch <- c.m }

func prometheusLabel(m prometheus.Metric) string {
	var pb = new(dto.Metric)
	m.Write(pb)
	var parts []string
	for _, l := range pb.GetLabel() {
		parts = append(parts, l.GetName()+"="+l.GetValue())
	}
	return strings.Join(parts, ",")
}
