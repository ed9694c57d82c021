package upstream

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/edgewise-sip/edgewise/registrar/twilio/edge"
	"github.com/edgewise-sip/edgewise/test/edgesim"
	"github.com/edgewise-sip/edgewise/test/kit"
)

// inflight wraps a Sender and records the most requests it saw at once.
type inflight struct {
	mu       sync.Mutex
	cur, max int
}

func (f *inflight) wrap(s Sender) Sender {
	return SenderFunc(func(ctx context.Context, t edge.Target, req *sip.Request) (*sip.Response, error) {
		f.mu.Lock()
		f.cur++
		f.max = max(f.max, f.cur)
		f.mu.Unlock()
		defer func() {
			f.mu.Lock()
			f.cur--
			f.mu.Unlock()
		}()
		return s.Send(ctx, t, req)
	})
}

// Moves are paced: starts spread at move.rate per second, never more than
// move.concurrency exchanges in flight.
func TestMovesArePaced(t *testing.T) {
	t.Parallel()
	const users, rate, conc = 40, 20, 3
	f := &inflight{}
	e := newEnv(t, envConfig{users: users, moveRate: rate, moveConc: conc, wrap: f.wrap})
	kit.WaitFor(t, 10*time.Second, "every user registered at ashburn", func() bool { return e.allOn("ashburn") })

	e.setEdge("ashburn", edgesim.ModeDrop)
	spread := time.Duration(users-1) * time.Second / rate
	kit.WaitFor(t, spread+testTimeout+testKeepalive+3*time.Second, "every user on umatilla", func() bool { return e.allOn("umatilla") })

	var first, last time.Time
	for _, b := range e.sim.Bindings("") {
		if b.Edge != "umatilla" {
			continue
		}
		if first.IsZero() || b.RegisteredAt.Before(first) {
			first = b.RegisteredAt
		}
		if b.RegisteredAt.After(last) {
			last = b.RegisteredAt
		}
	}
	// The pacer allows a burst of max(rate/20, 1) = 1.
	if got := last.Sub(first); got < spread*8/10 {
		t.Errorf("%d moves took %s, want about %s at %d/s", users, got, spread, rate)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.max > conc {
		t.Errorf("%d REGISTERs in flight at once, concurrency is %d", f.max, conc)
	}
}

func TestMetrics(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{users: 3})
	kit.WaitFor(t, 5*time.Second, "every user registered at ashburn", func() bool { return e.allOn("ashburn") })
	if problems, err := testutil.CollectAndLint(e.mgr); err != nil || len(problems) > 0 {
		t.Fatalf("lint: %v %v", err, problems)
	}
	want := `
# HELP edgewise_upstream_edge_registrations Current upstream registrations by edge.
# TYPE edgewise_upstream_edge_registrations gauge
edgewise_upstream_edge_registrations{edge="ashburn"} 3
`
	if err := testutil.CollectAndCompare(e.mgr, strings.NewReader(want), "edgewise_upstream_edge_registrations"); err != nil {
		t.Error(err)
	}
	if n := testutil.ToFloat64(e.mgr.metrics.requests.WithLabelValues(kindRegister, resOK)); n != 3 {
		t.Errorf("register ok = %v, want 3", n)
	}
	if n := testutil.ToFloat64(e.mgr.metrics.requests.WithLabelValues(kindRegister, resChallenged)); n != 3 {
		t.Errorf("register challenged = %v, want 3", n)
	}
	// Every series is bounded: nothing is labelled by user.
	if n := testutil.CollectAndCount(e.mgr); n > 60 {
		t.Errorf("%d series for 3 users", n)
	}
}
