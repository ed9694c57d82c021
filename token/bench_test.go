package token

import (
	"context"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"
)

// BenchmarkIssue measures one replica under concurrent clients over real
// loopback HTTP: tokens/s and p50/p99 latency.
//
//	go test -run XXX -bench Issue -benchtime 5s ./token/
func BenchmarkIssue(b *testing.B) {
	p := New(nil)
	if err := p.Apply(benchSettings(), Passwords{"bench": "bench-password"}); err != nil {
		b.Fatal(err)
	}
	r := startReplica(b, p)
	tr := &http.Transport{MaxIdleConnsPerHost: 64}
	defer tr.CloseIdleConnections()
	c := &Client{Providers: []string{r.url + PathToken}, Username: "bench", Password: "bench-password",
		HTTPClient: &http.Client{Transport: tr}}

	var (
		mu  sync.Mutex
		all []time.Duration
	)
	b.SetParallelism(8) // 8 clients per CPU
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		var mine []time.Duration
		for pb.Next() {
			t0 := time.Now()
			if _, err := c.FetchToken(context.Background()); err != nil {
				b.Error(err)
				return
			}
			mine = append(mine, time.Since(t0))
		}
		mu.Lock()
		all = append(all, mine...)
		mu.Unlock()
	})
	elapsed := time.Since(start)
	b.StopTimer()
	if len(all) == 0 {
		return
	}
	slices.Sort(all)
	b.ReportMetric(float64(len(all))/elapsed.Seconds(), "tokens/s")
	b.ReportMetric(float64(all[len(all)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(all[len(all)*99/100].Microseconds()), "p99-µs")
}

// BenchmarkMint is the signing cost alone.
func BenchmarkMint(b *testing.B) {
	s := benchSettings()
	now := time.Now()
	for b.Loop() {
		if _, _, err := mint(&s, s.Keys[0], "bench", now, time.Hour); err != nil {
			b.Fatal(err)
		}
	}
}

// TestBench runs the harness entry point briefly, so make bench cannot rot.
func TestBench(t *testing.T) {
	res, err := Bench(t.Context(), BenchOptions{Concurrency: 4, Requests: 300, Duration: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("bench: %s", res)
	if res.Failures != 0 || res.Requests != 300 || res.PerSecond <= 0 || res.P50 <= 0 || res.P99 < res.P50 {
		t.Fatalf("bench result %+v", res)
	}
}

func TestLoadNeedsBounds(t *testing.T) {
	if _, err := Load(t.Context(), LoadOptions{Client: &Client{}}); err == nil {
		t.Error("unbounded load accepted")
	}
	if _, err := Load(t.Context(), LoadOptions{Requests: 1}); err == nil {
		t.Error("load without client accepted")
	}
}
