package upstream

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/edgewise-sip/edgewise/registrar/twilio/edge"
)

// loop is Run's scheduler: it takes inputs (binding counts, edge changes),
// starts the work that is due within the pacing and concurrency limits, and
// sleeps until the next thing is due.
func (m *Manager) loop(ctx context.Context, wg *sync.WaitGroup) error {
	timer := time.NewTimer(0)
	defer timer.Stop()
	nextTick := m.now()
	for {
		if m.takeInputs() {
			m.probeAt = time.Time{} // the active edge changed: its IPs are due
		}
		now := m.now()
		if !now.Before(nextTick) {
			m.tick(now)
			nextTick = now.Add(m.tickInterval())
		}
		if !now.Before(m.probeAt) {
			m.probeAt = m.registerProbes(now)
		}
		next := minTime(minTime(m.dispatch(ctx, wg, now), nextTick), m.probeAt)
		timer.Reset(max(next.Sub(now), 0))
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
		case <-m.wake:
		}
	}
}

// tickInterval is how often tick runs: the keepalive interval, so the
// register-method keepalive and the reconcile follow the monitor's pace.
func (m *Manager) tickInterval() time.Duration {
	return max(m.mon.Settings().KeepaliveInterval, 100*time.Millisecond)
}

// takeInputs applies what the subscribers queued and reports whether an
// edge change was among it.
func (m *Manager) takeInputs() bool {
	m.inMu.Lock()
	var live map[string]int
	if len(m.live) > 0 {
		live, m.live = m.live, map[string]int{}
	}
	changes := m.changes
	m.changes = nil
	m.inMu.Unlock()

	m.mu.Lock()
	defer m.mu.Unlock()
	for user, n := range live {
		r := m.userLocked(user)
		if r.live != n {
			r.live = n
			m.poke(r)
		}
	}
	for _, ch := range changes {
		m.applyChange(ch)
	}
	return len(changes) > 0
}

// applyChange reacts to one change of the active edge: every registration
// elsewhere moves to ch.To, paced, and users waiting out a backoff because
// edges failed try again at once. It logs the one line per move batch the
// issue asks for. Called with mu held.
func (m *Manager) applyChange(ch edge.Change) {
	now := m.now()
	if ch.Kind == edge.ChangeUnavailable {
		n := 0
		for _, r := range m.users {
			if r.want() {
				n++
			}
		}
		m.log.Warn(fmt.Sprintf("%s; %d registrations wait for an edge to answer", ch.Reason, n),
			"kind", ch.Kind, "to", ch.To, "registrations", n)
		return
	}
	if ch.Kind == edge.ChangeFailover && ch.From != ch.To {
		// Requests still waiting on the dead edge would only hold their
		// users back for the rest of their timeout.
		m.abandonEdge(ch.From)
	}
	sameEdge := ch.From == ch.To // a reload changed the address behind the name
	b := &moveBatch{kind: string(ch.Kind), to: ch.To, start: now}
	for _, r := range m.users {
		if !r.want() {
			continue
		}
		if !r.userFault {
			r.retryAt = time.Time{}
		}
		if r.registered() && r.rec.Edge == ch.To && !sameEdge {
			continue
		}
		if r.registered() {
			b.pending++
			r.batch = b
		}
		if sameEdge {
			r.force = true
		} else {
			r.move = true
		}
		m.poke(r)
	}
	level := slog.LevelInfo
	if ch.Kind == edge.ChangeFailover {
		level = slog.LevelWarn
	}
	m.log.Log(context.Background(), level, fmt.Sprintf("%s; moving %d registrations to %s", ch.Reason, b.pending, ch.To),
		"kind", ch.Kind, "from", ch.From, "to", ch.To, "registrations", b.pending)
	m.metrics.batches.WithLabelValues(string(ch.Kind)).Inc()
	b.total = b.pending
	if b.pending > 0 {
		m.batch = b
	}
}

// tick runs every keepalive interval: it moves registrations left on
// another edge than the active one once that edge is known up (after a
// restart, or if a change was missed).
func (m *Manager) tick(now time.Time) {
	active, ok := m.mon.Active()
	if !ok {
		return
	}
	up := false
	for _, e := range m.mon.Status() {
		if e.Name == active {
			up = e.State == edge.StateUp
		}
	}
	if !up {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for _, r := range m.users {
		if r.busy || r.move || !r.want() || !r.registered() || r.rec.Edge == active || now.Before(r.retryAt) {
			continue
		}
		r.move = true
		m.poke(r)
		n++
	}
	if n > 0 {
		m.log.Info(fmt.Sprintf("%d registrations are not on the active edge %s; moving them", n, active),
			"to", active, "registrations", n)
	}
}

// registerProbes implements keepalive method register: REGISTERs are the
// active edge's only probe, so each of its IPs not known down (the monitor
// probes those) must get one at least every keepalive interval, as OPTIONS
// would. An IP whose last REGISTER is that old gets the refresh of the user
// due soonest, a little early, aimed at it. It returns when to look again.
func (m *Manager) registerProbes(now time.Time) time.Time {
	es := m.mon.Settings()
	next := now.Add(max(es.KeepaliveInterval, 100*time.Millisecond))
	if es.KeepaliveMethod != edge.KeepaliveRegister {
		return next
	}
	active, ok := m.mon.Active()
	if !ok {
		return next
	}
	states := m.mon.IPHealth(active)
	targets := m.mon.Targets(active)
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, t := range targets {
		if states[t.IP].State == edge.StateDown {
			continue
		}
		if due := m.lastSent[t.IP].Add(es.KeepaliveInterval); due.After(now) {
			next = minTime(next, due)
			continue
		}
		var pick *reg
		for _, r := range m.users {
			if r.busy || r.force || !r.want() || !r.registered() || r.rec.Edge != active || now.Before(r.retryAt) {
				continue
			}
			if pick == nil || r.rec.RefreshAt.Before(pick.rec.RefreshAt) {
				pick = r
			}
		}
		if pick == nil {
			break // nobody to probe with; failing users' own retries probe
		}
		pick.force, pick.probe = true, t.IP
		m.poke(pick)
		// Counted as sent now so the next look does not pick another user
		// for this IP before the REGISTER goes out.
		m.lastSent[t.IP] = now
	}
	return next
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// dispatch starts every due piece of work the pacing and concurrency
// limits allow and returns when to look again.
func (m *Manager) dispatch(ctx context.Context, wg *sync.WaitGroup, now time.Time) time.Time {
	m.mu.Lock()
	defer m.mu.Unlock()
	for m.queue.Len() > 0 {
		r := m.queue[0]
		if r.due.After(now) {
			return r.due
		}
		if m.inflight >= m.s.MoveConcurrency {
			return now.Add(time.Hour) // a finishing worker kicks
		}
		if !m.pace.ready(now) {
			return m.pace.next()
		}
		act, next := m.decide(r, now)
		if act == nil && !next.IsZero() && !next.After(now) {
			next = now.Add(10 * time.Millisecond) // never spin on a user
		}
		if act == nil {
			switch {
			case !next.IsZero():
				m.reschedule(r, next)
			case r.live == 0 && !r.registered() && len(r.rec.Leftovers) == 0:
				m.unqueue(r)
				delete(m.users, r.user)
			default:
				m.unqueue(r)
			}
			continue
		}
		m.pace.take(now)
		m.unqueue(r)
		r.busy, r.activity = true, act.activity
		m.inflight++
		wg.Go(func() {
			m.execute(ctx, r, act)
			m.finish(r)
		})
	}
	return now.Add(time.Hour)
}

// finish makes r schedulable again after its worker is done.
func (m *Manager) finish(r *reg) {
	m.mu.Lock()
	r.busy, r.activity = false, ""
	m.inflight--
	m.schedule(r, m.now())
	m.mu.Unlock()
	m.kick()
}
