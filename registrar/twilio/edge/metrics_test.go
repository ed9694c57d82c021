package edge

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

func TestMetrics(t *testing.T) {
	m, _, _ := newClocked(t, testSettings())
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(m); err != nil {
		t.Fatal(err)
	}
	resolve(t, m, "ashburn", "10.0.0.1", "10.0.0.2")
	resolve(t, m, "umatilla", "10.0.1.1")
	m.Report(target(t, m, "ashburn", "10.0.0.1"), Result{}, ErrNoResponse)
	m.Report(target(t, m, "ashburn", "10.0.0.2"), Result{}, ErrNoResponse)
	m.Report(target(t, m, "umatilla", "10.0.1.1"), Result{StatusCode: 200, RTT: 30e6}, nil)

	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string][]*dto.Metric{}
	for _, f := range families {
		got[f.GetName()] = f.GetMetric()
	}
	value := func(name string, labels map[string]string) float64 {
		t.Helper()
	next:
		for _, mt := range got[name] {
			have := map[string]string{}
			for _, l := range mt.GetLabel() {
				have[l.GetName()] = l.GetValue()
			}
			for k, v := range labels {
				if have[k] != v {
					continue next
				}
			}
			switch {
			case mt.Gauge != nil:
				return mt.GetGauge().GetValue()
			case mt.Counter != nil:
				return mt.GetCounter().GetValue()
			case mt.Histogram != nil:
				return float64(mt.GetHistogram().GetSampleCount())
			}
		}
		t.Fatalf("no %s%v", name, labels)
		return 0
	}
	checks := []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"edgewise_edge_state", map[string]string{"edge": "ashburn", "state": "down"}, 1},
		{"edgewise_edge_state", map[string]string{"edge": "ashburn", "state": "up"}, 0},
		{"edgewise_edge_state", map[string]string{"edge": "umatilla", "state": "up"}, 1},
		{"edgewise_edge_ip_state", map[string]string{"edge": "ashburn", "ip": "10.0.0.2", "state": "down"}, 1},
		{"edgewise_edge_active", map[string]string{"edge": "umatilla"}, 1},
		{"edgewise_edge_active", map[string]string{"edge": "ashburn"}, 0},
		{"edgewise_edge_failovers_total", map[string]string{"reason": "timeout"}, 1},
		{"edgewise_edge_active_changes_total", map[string]string{"kind": "failover"}, 1},
		{"edgewise_edge_results_total", map[string]string{"edge": "ashburn", "source": "report", "outcome": "timeout"}, 2},
		{"edgewise_edge_rtt_seconds", map[string]string{"edge": "umatilla"}, 1},
	}
	for _, c := range checks {
		if v := value(c.name, c.labels); v != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, v, c.want)
		}
	}
}
