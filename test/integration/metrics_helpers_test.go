package integration

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// promMetrics is one scrape of a daemon's /metrics, parsed with the
// Prometheus text parser.
type promMetrics map[string]*dto.MetricFamily

func scrapeMetrics(t *testing.T, d *daemon) promMetrics {
	t.Helper()
	resp, err := http.Get(d.adminURL + "/metrics")
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s", resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return mfs
}

// value sums the samples of a counter, gauge or untyped family whose labels
// match the name/value pairs given (none: every sample).
func (m promMetrics) value(name string, labels ...string) float64 {
	var sum float64
	mf := m[name]
	if mf == nil {
		return 0
	}
	for _, s := range mf.GetMetric() {
		if !labelsMatch(s, labels) {
			continue
		}
		switch {
		case s.Counter != nil:
			sum += s.Counter.GetValue()
		case s.Gauge != nil:
			sum += s.Gauge.GetValue()
		case s.Untyped != nil:
			sum += s.Untyped.GetValue()
		}
	}
	return sum
}

// byLabel prints a family's non-zero samples as label=value pairs.
func (m promMetrics) byLabel(name, label string) string {
	var parts []string
	for _, s := range m[name].GetMetric() {
		v := s.GetCounter().GetValue() + s.GetGauge().GetValue()
		if v == 0 {
			continue
		}
		for _, l := range s.GetLabel() {
			if l.GetName() == label {
				parts = append(parts, fmt.Sprintf("%s=%v", l.GetValue(), v))
			}
		}
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, " ")
}

func labelsMatch(s *dto.Metric, labels []string) bool {
	for i := 0; i+1 < len(labels); i += 2 {
		found := false
		for _, l := range s.GetLabel() {
			if l.GetName() == labels[i] && l.GetValue() == labels[i+1] {
				found = true
			}
		}
		if !found {
			return false
		}
	}
	return true
}
