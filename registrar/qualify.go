package registrar

import (
	"context"
	"sync"
	"time"

	"github.com/edgewise-sip/edgewise/registrar/location"
)

// qualifyConcurrency bounds OPTIONS in flight during a qualify round.
const qualifyConcurrency = 32

// qualifyLoop sends OPTIONS to every contact each QualifyInterval (re-read
// after every round, so reloads apply) and records who answered. Contacts that
// do not answer stay registered but are marked Unreachable, which
// location.Table.Routable skips.
func (r *Registrar) qualifyLoop(ctx context.Context) {
	if r.pinger == nil {
		return
	}
	for {
		iv := r.state.Load().s.QualifyInterval
		wait := iv
		if iv <= 0 {
			wait = time.Second // off: look again later, a reload may turn it on
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		if iv > 0 {
			r.qualifyRound(ctx, iv)
		}
	}
}

func (r *Registrar) qualifyRound(ctx context.Context, interval time.Duration) {
	// No answer within half the interval (1..8 s) counts as unreachable.
	timeout := min(max(interval/2, time.Second), 8*time.Second)
	sem := make(chan struct{}, qualifyConcurrency)
	var wg sync.WaitGroup
	defer wg.Wait()
	for _, b := range r.table.Snapshot() {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return
		}
		wg.Go(func() {
			defer func() { <-sem }()
			pctx, cancel := context.WithTimeout(ctx, timeout)
			err := r.pinger.Ping(pctx, b.Transport, b.Local, b.Source, b.Contact)
			cancel()
			if ctx.Err() != nil {
				return // shutting down: no verdict
			}
			state := location.Reachable
			if err != nil {
				state = location.Unreachable
			}
			if state != b.Reachable {
				if state == location.Unreachable {
					r.log.Warn("contact unreachable", "user", b.User, "contact", b.Contact, "source", b.Source.String(), "error", err)
				} else if b.Reachable == location.Unreachable {
					r.log.Info("contact reachable again", "user", b.User, "contact", b.Contact)
				}
			}
			r.table.SetReachable(b.User, b.Contact, state)
		})
	}
}
