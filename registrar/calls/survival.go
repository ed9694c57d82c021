package calls

import (
	"sync"
	"time"

	"github.com/edgewise-sip/edgewise/registrar/twilio/edge"
)

// Survival mode: while the edge monitor finds no Twilio edge usable, calls
// between local phones are connected by edgewise itself and calls to other
// numbers go to the fallback targets. The monitor's decision is the only
// source: new calls ask it (Edges.Active), and its changes (EdgeChanged)
// date the start and end of each period even when no call is made.

// SurvivalStatus is /v1/status "survival".
type SurvivalStatus struct {
	// Active is true while no Twilio edge is usable.
	Active bool `json:"active"`
	// Since is when the current period began, or the last one when Active
	// is false; Ended when that last one ended. Both nil before any.
	Since *time.Time `json:"since,omitempty"`
	Ended *time.Time `json:"ended,omitempty"`
	// Calls is how many calls edgewise connected without Twilio (local or
	// to a fallback target) during that period.
	Calls int `json:"calls"`
	// Local is the calls.local mode; FallbackTargets how many are set.
	Local           LocalMode `json:"local"`
	FallbackTargets int       `json:"fallback_targets"`
}

// survival is the state behind SurvivalStatus.
type survival struct {
	mu     sync.Mutex
	active bool
	since  time.Time
	ended  time.Time
	calls  int
	last   time.Time // of the latest observation: older news is stale
}

// observe records whether Twilio is usable as of at. It reports the
// transition, if any: started or ended (with the calls carried).
func (s *survival) observe(up bool, at time.Time) (started, ended bool, calls int, since time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if at.Before(s.last) {
		return false, false, 0, time.Time{}
	}
	s.last = at
	switch {
	case !up && !s.active:
		s.active, s.since, s.ended, s.calls = true, at, time.Time{}, 0
		return true, false, 0, at
	case up && s.active:
		s.active, s.ended = false, at
		return false, true, s.calls, s.since
	}
	return false, false, 0, time.Time{}
}

// carried counts a call connected without Twilio; it reports whether that
// was in survival mode.
func (s *survival) carried() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.active {
		s.calls++
	}
	return s.active
}

func (s *survival) status() SurvivalStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := SurvivalStatus{Active: s.active, Calls: s.calls}
	if !s.since.IsZero() {
		t := s.since
		st.Since = &t
	}
	if !s.ended.IsZero() {
		t := s.ended
		st.Ended = &t
	}
	return st
}

// EdgeChanged hears the edge monitor's changes of the active edge
// (edge.Monitor.Subscribe): every edge down starts survival mode, any
// other change (an edge usable again) ends it.
func (b *B2BUA) EdgeChanged(ch edge.Change) {
	b.observeTwilio(ch.Kind != edge.ChangeUnavailable, ch.At)
}

// twilioUsable asks the edge monitor whether any edge is usable now.
func (b *B2BUA) twilioUsable() bool {
	_, ok := b.edges.Active()
	b.observeTwilio(ok, b.now())
	return ok
}

func (b *B2BUA) observeTwilio(up bool, at time.Time) {
	started, ended, calls, since := b.survival.observe(up, at)
	switch {
	case started:
		b.metrics.survival.Set(1)
		b.metrics.survivalSince.Set(float64(since.UnixNano()) / 1e9)
		st := b.state.Load().s
		b.log.Warn("survival mode: no Twilio edge is usable; edgewise connects local calls itself and sends other numbers to the fallback targets",
			"local", string(st.Local), "fallback_targets", len(st.FallbackTargets))
	case ended:
		b.metrics.survival.Set(0)
		b.metrics.survivalSince.Set(0)
		b.log.Info("survival mode over: a Twilio edge is usable again",
			"lasted", at.Sub(since).Round(time.Second), "calls_carried", calls)
	}
}

// Survival returns the survival mode for /v1/status, as of now.
func (b *B2BUA) Survival() SurvivalStatus {
	b.twilioUsable()
	st := b.survival.status()
	s := b.state.Load().s
	st.Local, st.FallbackTargets = s.Local, len(s.FallbackTargets)
	return st
}

// answeredWithoutTwilio counts a local or fallback call that was answered.
func (b *B2BUA) answeredWithoutTwilio(c *call, f *fork) {
	c.mu.Lock()
	rt := c.route
	if rt == routeFallback {
		c.reached = f.binding.Source.String()
	}
	c.mu.Unlock()
	if rt == routeTwilio {
		return
	}
	b.twilioUsable() // a call that found every Twilio address dead may be the first to know
	if b.survival.carried() {
		b.metrics.survivalCalls.WithLabelValues(string(rt)).Inc()
	}
}
