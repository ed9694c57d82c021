package configs

import (
	"fmt"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestReloadMetrics(t *testing.T) {
	l, path, _ := newLive(t, liveBase)
	l.Reload("api") // unchanged
	writeFile(t, path, strings.Replace(liveBase, "[ashburn, umatilla]", "[umatilla, ashburn]", 1))
	l.Reload("file") // applied
	writeFile(t, path, liveBase+"bogus: 1\n")
	l.Reload("sighup") // refused

	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(l)
	var want strings.Builder
	want.WriteString("# HELP edgewise_config_reloads_total Config reloads by trigger (sighup|file|api) and result (applied|unchanged|refused).\n")
	want.WriteString("# TYPE edgewise_config_reloads_total counter\n")
	seen := map[string]int{"api/unchanged": 1, "file/applied": 1, "sighup/refused": 1}
	for _, tr := range []string{"api", "file", "sighup"} { // sorted as the registry sorts them
		for _, r := range []string{"applied", "refused", "unchanged"} {
			fmt.Fprintf(&want, "edgewise_config_reloads_total{result=%q,trigger=%q} %d\n", r, tr, seen[tr+"/"+r])
		}
	}
	fmt.Fprintf(&want, "# HELP edgewise_config_info The running config: always 1, labelled with its version (first 12 hex digits of its SHA-256).\n"+
		"# TYPE edgewise_config_info gauge\nedgewise_config_info{version=%q} 1\n", l.Current().Version)
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want.String()), "edgewise_config_reloads_total", "edgewise_config_info"); err != nil {
		t.Error(err)
	}
	last := l.History()[2] // startup, api (unchanged), file (applied), sighup (refused)
	n, err := testutil.GatherAndCount(reg, "edgewise_config_last_reload_success_timestamp_seconds")
	if err != nil || n != 1 {
		t.Fatalf("last success series: %d, %v", n, err)
	}
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() == "edgewise_config_last_reload_success_timestamp_seconds" {
			if got, want := mf.GetMetric()[0].GetGauge().GetValue(), float64(last.Time.UnixNano())/1e9; got != want {
				t.Errorf("last success %v, want %v (the applied reload, not the refused one)", got, want)
			}
		}
	}
}
