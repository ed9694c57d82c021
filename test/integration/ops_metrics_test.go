package integration

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/edgewise-sip/edgewise/test/kit"
)

// TestOpsMetricsFailoverCounter: /metrics parses with the Prometheus text
// parser; edgewise_edge_failovers_total rises by exactly one per failure of
// the active edge (drop → +1, heal and fail back → no change, drop again →
// +1 more); and the exposition follows the naming conventions with no
// per-user labels.
func TestOpsMetricsFailoverCounter(t *testing.T) {
	s := startSim(t)
	d := startDaemon(t, upstreamConfig(s, ""))
	users := []string{"alice", "carol"}
	registerPhones(t, d, users...)
	kit.WaitFor(t, 10*time.Second, "users registered upstream on ashburn", func() bool {
		return opsAllOn(t, d, s, "ashburn", users...)
	})

	failovers := func() float64 { return scrapeMetrics(t, d).value("edgewise_edge_failovers_total") }
	failbacks := func() float64 { return scrapeMetrics(t, d).value("edgewise_edge_failbacks_total") }
	base, baseBack := failovers(), failbacks()
	if base != 0 {
		t.Fatalf("edgewise_edge_failovers_total = %v before any failure", base)
	}

	for round := 1; round <= 2; round++ {
		s.setMode(t, "edges/ashburn", "drop")
		kit.WaitFor(t, 10*time.Second, "ashburn down and users on umatilla", func() bool {
			return opsMustStatus(t, d).edgeState("ashburn") == "down" && opsAllOn(t, d, s, "umatilla", users...)
		})
		if got := failovers(); got != base+float64(round) {
			t.Fatalf("round %d: edgewise_edge_failovers_total = %v after %d failures, want %v", round, got, round, base+float64(round))
		}
		fams := scrapeMetrics(t, d)
		if v := fams.value("edgewise_edge_failovers_total", "reason", "timeout"); v != float64(round) {
			t.Errorf("round %d: failovers with reason=timeout = %v (series %v)", round, v, opsSeries(fams["edgewise_edge_failovers_total"]))
		}
		if v := fams.value("edgewise_edge_state", "edge", "ashburn", "state", "down"); v != 1 {
			t.Errorf("round %d: edgewise_edge_state{edge=ashburn,state=down} = %v", round, v)
		}
		if v := fams.value("edgewise_upstream_edge_registrations", "edge", "umatilla"); v != float64(len(users)) {
			t.Errorf("round %d: edgewise_upstream_edge_registrations{edge=umatilla} = %v, want %d", round, v, len(users))
		}

		s.setMode(t, "edges/ashburn", "up")
		kit.WaitFor(t, 15*time.Second, "users back on ashburn after the failback hold", func() bool {
			return opsMustStatus(t, d).edgeState("ashburn") == "up" && opsAllOn(t, d, s, "ashburn", users...)
		})
		// The heal and the failback are not failures.
		if got := failovers(); got != base+float64(round) {
			t.Fatalf("round %d: edgewise_edge_failovers_total = %v after heal and failback, want %v", round, got, base+float64(round))
		}
		if got := failbacks(); got != baseBack+float64(round) {
			t.Errorf("round %d: edgewise_edge_failbacks_total = %v, want %v", round, got, baseBack+float64(round))
		}
	}

	opsCheckMetricNames(t, scrapeMetrics(t, d), []string{"alice", "bob", "carol"})
}

// opsCheckMetricNames checks the exposition against Prometheus naming
// conventions (https://prometheus.io/docs/practices/naming/): our metrics
// carry the edgewise_ prefix, counters end in _total, durations are in
// seconds, sizes in bytes, and no label value is a user name or a SIP URI
// (label sets stay bounded).
func opsCheckMetricNames(t *testing.T, fams map[string]*dto.MetricFamily, userNames []string) {
	t.Helper()
	var ours []string
	for name, f := range fams {
		if strings.HasPrefix(name, "go_") || strings.HasPrefix(name, "process_") || strings.HasPrefix(name, "promhttp_") {
			continue
		}
		ours = append(ours, name)
		if !strings.HasPrefix(name, "edgewise_") {
			t.Errorf("%s: not under the edgewise_ namespace", name)
		}
		if f.GetHelp() == "" {
			t.Errorf("%s: no HELP", name)
		}
		isCounter := f.GetType() == dto.MetricType_COUNTER
		if isCounter != strings.HasSuffix(name, "_total") {
			t.Errorf("%s: type %s; counters, and only counters, end in _total", name, f.GetType())
		}
		for _, bad := range []string{"_ms", "_millis", "milliseconds", "_us_", "microseconds", "_minutes", "_kb", "_mb", "kilobytes", "megabytes"} {
			if strings.Contains(name+"_", bad) {
				t.Errorf("%s: use base units (seconds, bytes), not %q", name, strings.Trim(bad, "_"))
			}
		}
		if f.GetType() == dto.MetricType_HISTOGRAM && !strings.HasSuffix(name, "_seconds") && !strings.HasSuffix(name, "_bytes") {
			t.Errorf("%s: histogram without a unit suffix", name)
		}
		for _, m := range f.GetMetric() {
			for _, lp := range m.GetLabel() {
				if slices.Contains([]string{"user", "aor", "contact", "call_id", "callid", "uri", "from", "to"}, lp.GetName()) {
					t.Errorf("%s: per-user or per-call label %s=%q", name, lp.GetName(), lp.GetValue())
				}
				v := strings.ToLower(lp.GetValue())
				if slices.Contains(userNames, v) || strings.HasPrefix(v, "sip:") {
					t.Errorf("%s: label %s=%q names a user; labels must stay bounded", name, lp.GetName(), lp.GetValue())
				}
			}
		}
	}
	slices.Sort(ours)
	t.Logf("%d edgewise metric families: %s", len(ours), strings.Join(ours, " "))
	for _, want := range []string{
		"edgewise_edge_failovers_total", "edgewise_edge_failbacks_total", "edgewise_edge_state", "edgewise_edge_ip_state",
		"edgewise_edge_rtt_seconds", "edgewise_upstream_edge_registrations", "edgewise_registrar_responses_total",
		"edgewise_b2bua_calls_active", "edgewise_media_packets_total", "edgewise_media_ports_in_use",
	} {
		if fams[want] == nil {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

// opsSeries renders a family's series for failure messages.
func opsSeries(f *dto.MetricFamily) string {
	var b strings.Builder
	for _, m := range f.GetMetric() {
		for _, lp := range m.GetLabel() {
			b.WriteString(lp.GetName() + "=" + lp.GetValue() + " ")
		}
		fmt.Fprintf(&b, "= %v; ", m.GetCounter().GetValue()+m.GetGauge().GetValue())
	}
	return b.String()
}
