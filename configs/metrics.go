package configs

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Reload triggers and results, the closed label sets of the reload counter.
var (
	reloadTriggers = []string{"sighup", "file", "api"}
	reloadResults  = []string{"applied", "unchanged", "refused"}
)

var (
	descReloads = prometheus.NewDesc("edgewise_config_reloads_total",
		"Config reloads by trigger (sighup|file|api) and result (applied|unchanged|refused).",
		[]string{"trigger", "result"}, nil)
	descLastOK = prometheus.NewDesc("edgewise_config_last_reload_success_timestamp_seconds",
		"When the running config was last loaded or reloaded successfully (Unix time).", nil, nil)
	descInfo = prometheus.NewDesc("edgewise_config_info",
		"The running config: always 1, labelled with its version (first 12 hex digits of its SHA-256).",
		[]string{"version"}, nil)
)

// reloadCounts counts results by trigger and result.
type reloadCounts struct {
	mu     sync.Mutex
	counts map[[2]string]uint64
	lastOK time.Time
}

func (c *reloadCounts) count(r ReloadResult) {
	result := "applied"
	switch {
	case !r.OK:
		result = "refused"
	case r.Unchanged:
		result = "unchanged"
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if r.OK {
		c.lastOK = r.Time
	}
	if r.Trigger == "startup" {
		return
	}
	if c.counts == nil {
		c.counts = make(map[[2]string]uint64)
	}
	c.counts[[2]string{r.Trigger, result}]++
}

var _ prometheus.Collector = (*Live)(nil)

// Describe implements prometheus.Collector.
func (l *Live) Describe(ch chan<- *prometheus.Desc) {
	ch <- descReloads
	ch <- descLastOK
	ch <- descInfo
}

// Collect implements prometheus.Collector. Every trigger and result is
// reported from the start, so a dashboard shows 0 rather than no data.
func (l *Live) Collect(ch chan<- prometheus.Metric) {
	l.reloads.mu.Lock()
	counts := make(map[[2]string]uint64, len(l.reloads.counts))
	for k, v := range l.reloads.counts {
		counts[k] = v
	}
	lastOK := l.reloads.lastOK
	l.reloads.mu.Unlock()
	for _, t := range reloadTriggers {
		for _, r := range reloadResults {
			ch <- prometheus.MustNewConstMetric(descReloads, prometheus.CounterValue, float64(counts[[2]string{t, r}]), t, r)
		}
	}
	ch <- prometheus.MustNewConstMetric(descLastOK, prometheus.GaugeValue, float64(lastOK.UnixNano())/1e9)
	ch <- prometheus.MustNewConstMetric(descInfo, prometheus.GaugeValue, 1, l.Current().Version)
}
