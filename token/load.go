package token

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"sync"
	"time"
)

// LoadOptions bounds a load run: it stops after Requests fetches or after
// Duration, whichever comes first (at least one must be set).
type LoadOptions struct {
	Client      *Client
	Concurrency int           // parallel clients; 0 = 1
	Requests    int           // total fetches; 0 = unbounded (Duration must be set)
	Duration    time.Duration // 0 = unbounded (Requests must be set)
}

// LoadResult summarises a load run. Latencies are of successful fetches.
type LoadResult struct {
	Requests  int
	Failures  int
	Elapsed   time.Duration
	PerSecond float64 // successful tokens per second
	P50, P99  time.Duration
	Max       time.Duration
	// FirstError is the first failure seen, if any.
	FirstError error
}

func (r LoadResult) String() string {
	return fmt.Sprintf("%d tokens, %d failed, %.0f tokens/s, p50 %s, p99 %s, max %s",
		r.Requests-r.Failures, r.Failures, r.PerSecond, r.P50, r.P99, r.Max)
}

// maxSamples bounds the latency samples kept by Load.
const maxSamples = 1 << 20

// Load runs concurrent FetchToken calls against o.Client's providers. It is
// what the benchmark harness calls; failures are counted, not returned.
func Load(ctx context.Context, o LoadOptions) (LoadResult, error) {
	if o.Client == nil {
		return LoadResult{}, errors.New("load: no client")
	}
	if o.Requests <= 0 && o.Duration <= 0 {
		return LoadResult{}, errors.New("load: set Requests or Duration so the run is bounded")
	}
	if o.Concurrency <= 0 {
		o.Concurrency = 1
	}
	if o.Duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.Duration)
		defer cancel()
	}

	var (
		mu      sync.Mutex
		res     LoadResult
		samples []time.Duration
		started int
	)
	// next hands out request slots so the total stays bounded.
	next := func() bool {
		mu.Lock()
		defer mu.Unlock()
		if ctx.Err() != nil || (o.Requests > 0 && started >= o.Requests) {
			return false
		}
		started++
		return true
	}
	begin := time.Now()
	var wg sync.WaitGroup
	for range o.Concurrency {
		wg.Go(func() {
			for next() {
				t0 := time.Now()
				_, err := o.Client.FetchToken(ctx)
				d := time.Since(t0)
				if err != nil && ctx.Err() != nil && o.Duration > 0 {
					// The run's own deadline cut this fetch short; not a failure.
					mu.Lock()
					started--
					mu.Unlock()
					return
				}
				mu.Lock()
				res.Requests++
				if err != nil {
					res.Failures++
					if res.FirstError == nil {
						res.FirstError = err
					}
				} else if len(samples) < maxSamples {
					samples = append(samples, d)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	res.Elapsed = time.Since(begin)
	if res.Elapsed > 0 {
		res.PerSecond = float64(res.Requests-res.Failures) / res.Elapsed.Seconds()
	}
	if len(samples) > 0 {
		slices.Sort(samples)
		res.P50 = samples[len(samples)*50/100]
		res.P99 = samples[min(len(samples)-1, len(samples)*99/100)]
		res.Max = samples[len(samples)-1]
	}
	return res, nil
}

// BenchOptions configures Bench.
type BenchOptions struct {
	Concurrency int           // 0 = 16
	Requests    int           // 0 = 20000
	Duration    time.Duration // 0 = 20s; the run stops at whichever bound comes first
	Logger      *slog.Logger
}

// Bench starts one replica on 127.0.0.1 with a throwaway API key and user,
// loads it with Load, stops it and reports. It is the entry point for the
// benchmark harness (make bench).
func Bench(ctx context.Context, o BenchOptions) (LoadResult, error) {
	if o.Concurrency <= 0 {
		o.Concurrency = 16
	}
	if o.Requests <= 0 {
		o.Requests = 20000
	}
	if o.Duration <= 0 {
		o.Duration = 20 * time.Second
	}
	p := New(o.Logger)
	if err := p.Apply(benchSettings(), Passwords{"bench": "bench-password"}); err != nil {
		return LoadResult{}, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return LoadResult{}, fmt.Errorf("bench: %w", err)
	}
	sctx, stop := context.WithCancel(ctx)
	serveErr := make(chan error, 1)
	go func() { serveErr <- p.Serve(sctx, ln) }()

	tr := &http.Transport{MaxIdleConnsPerHost: o.Concurrency, MaxConnsPerHost: o.Concurrency}
	defer tr.CloseIdleConnections()
	res, err := Load(ctx, LoadOptions{
		Client: &Client{
			Providers:  []string{"http://" + ln.Addr().String() + PathToken},
			Username:   "bench",
			Password:   "bench-password",
			HTTPClient: &http.Client{Transport: tr},
		},
		Concurrency: o.Concurrency,
		Requests:    o.Requests,
		Duration:    o.Duration,
	})
	stop()
	if serr := <-serveErr; serr != nil && err == nil {
		err = serr
	}
	return res, err
}

// benchSettings is a valid configuration with a random secret; its tokens
// are well formed but signed by no real Twilio key.
func benchSettings() Settings {
	return Settings{
		AccountSID:  "AC" + randomHex(16),
		Keys:        []Key{{SID: "SK" + randomHex(16), Secret: randomHex(32)}},
		TwiMLAppSID: "AP" + randomHex(16),
		TTL:         time.Hour,
		Edges:       []string{"ashburn", "umatilla"},
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails since Go 1.24
	return hex.EncodeToString(b)
}
