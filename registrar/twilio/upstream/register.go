package upstream

import (
	"context"
	"fmt"
	"hash/fnv"
	"log/slog"
	"net/netip"
	"slices"
	"time"

	"github.com/edgewise-sip/edgewise/registrar/twilio/edge"
)

// failure describes why an attempt failed.
type failure struct {
	err        string
	userFault  bool
	retryAfter time.Duration
}

// doRegister registers r at the active edge: every IP of it in the monitor's
// order, then, once the monitor has given the edge up, the next active edge.
// Every outcome is reported to the monitor. Errors that are the user's
// (403, 404, rejected credentials) stop at once: another edge would say the
// same.
func (m *Manager) doRegister(ctx context.Context, r *reg, a *action) {
	tried := map[string]bool{}
	last := failure{err: "every edge is down"}
	maybeBound := map[string]bool{} // contacts a REGISTER went unanswered for
	for {
		name, ok := m.mon.Active()
		if !ok || tried[name] {
			break
		}
		tried[name] = true
		targets := m.spread(m.targets(ctx, name, a.edges), r.user, a.probe)
		if len(targets) == 0 {
			last = failure{err: fmt.Sprintf("edge %s has no address (dns has never answered)", name)}
			continue
		}
		contact := contactURI(a.s, r.user, name)
		cs := contact.String()
		if cs != a.fromContact {
			// Make-before-break and crash safety: remember the new contact
			// before asking for it, so a restart that never saw the answer
			// still removes it.
			m.intend(r, a, name, cs)
		}
		intent := leftover{AOR: a.id.aor, Contact: cs}.key()
		if cs == a.fromContact {
			intent = ""
		}
		for i, t := range targets {
			if i > 0 {
				if cur, ok := m.mon.Active(); !ok || cur != name {
					break // the monitor gave this edge up meanwhile
				}
			}
			x := m.exchange(ctx, r, a.metric, a.edges.Timeout, t, a.id, contact, a.expires)
			switch x.out {
			case outAborted:
				return
			case outOK:
				m.registered(ctx, r, a, t, cs, x)
				return
			case outUser, outLimited:
				m.failed(r, failure{err: x.err.Error(), userFault: x.out == outUser, retryAfter: x.retryAfter}, intent, maybeBound[cs])
				return
			case outEdge, outAbandoned:
				last = failure{err: fmt.Sprintf("%s: %v", t, x.err), retryAfter: x.retryAfter}
				if x.res == nil {
					maybeBound[cs] = true
				}
			}
			if x.out == outAbandoned {
				break // to the edge the monitor chose instead
			}
		}
		if intent != "" && !maybeBound[cs] {
			m.forgetIntent(r, intent)
		}
	}
	m.failed(r, last, "", true)
}

// targets is the monitor's order of IPs for edge, waiting (bounded) for the
// first DNS answer when there has been none.
func (m *Manager) targets(ctx context.Context, name string, es edge.Settings) []edge.Target {
	if ts := m.mon.Targets(name); len(ts) > 0 {
		return ts
	}
	rctx, cancel := context.WithTimeout(ctx, max(es.Timeout, 2*time.Second))
	defer cancel()
	ts, err := m.mon.Resolve(rctx, name)
	if err != nil {
		return nil
	}
	return ts
}

// spread reorders the monitor's targets for one user. prefer, when it is
// one of them, goes first (a register-method probe of that IP). Otherwise
// the leading IPs not known to be bad (up or not yet tried, outside any
// Retry-After) are rotated by a hash of the user, so users spread over every
// IP of the edge as Twilio asks, IPs nobody probes still get traffic (and
// so a health state), and when an edge dies their REGISTERs find its IPs
// silent in parallel rather than one after another.
func (m *Manager) spread(ts []edge.Target, user string, prefer netip.Addr) []edge.Target {
	if len(ts) < 2 {
		return ts
	}
	if prefer.IsValid() {
		if i := slices.IndexFunc(ts, func(t edge.Target) bool { return t.IP == prefer }); i > 0 {
			out := slices.Clone(ts)
			copy(out[1:i+1], ts[:i])
			out[0] = ts[i]
			return out
		}
		return ts
	}
	states := m.mon.IPHealth(ts[0].Edge)
	n := 0
	for n < len(ts) {
		st, ok := states[ts[n].IP]
		if !ok || st.InRetryAfter || st.State == edge.StateDown {
			break
		}
		n++
	}
	if n < 2 {
		return ts
	}
	h := fnv.New32a()
	_, _ = h.Write([]byte(user))
	k := int(h.Sum32() % uint32(n))
	out := make([]edge.Target, 0, len(ts))
	out = append(out, ts[k:n]...)
	out = append(out, ts[:k]...)
	return append(out, ts[n:]...)
}

// intend records contact as possibly bound before a REGISTER for it is
// sent, and waits until that is durable.
func (m *Manager) intend(r *reg, a *action, name, contact string) {
	m.mu.Lock()
	m.addLeftover(r, leftover{Edge: name, Contact: contact, AOR: a.id.aor, Domain: a.id.domain,
		ExpiresAt: m.now().Add(time.Duration(a.expires)*time.Second + time.Minute)}, a.id.password)
	wait := m.persistLocked(r)
	m.mu.Unlock()
	_ = wait() // a failed save is logged by the store; registering matters more
}

// forgetIntent drops the intent with key: every answer said no binding was
// made.
func (m *Manager) forgetIntent(r *reg, key string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.dropLeftover(r, key)
}

// dropLeftover forgets the leftover with key. Called with mu held.
func (m *Manager) dropLeftover(r *reg, key string) {
	n := len(r.rec.Leftovers)
	r.rec.Leftovers = slices.DeleteFunc(r.rec.Leftovers, func(lo leftover) bool { return lo.key() == key })
	if len(r.rec.Leftovers) != n {
		delete(r.leftPass, key)
		m.persistLocked(r)
	}
}

// registered records a successful REGISTER and, after a move, removes the
// previous edge's contact (make-before-break).
func (m *Manager) registered(ctx context.Context, r *reg, a *action, t edge.Target, contact string, x exchangeResult) {
	cu := contactURI(a.s, r.user, t.Edge)
	granted := grantedExpiry(x.res, cu, x.expires)
	now := m.now()
	m.mu.Lock()
	var cleanup []cleanupItem
	if r.rec.Contact != "" && r.rec.Contact != contact && now.Before(r.rec.ExpiresAt) {
		lo := leftover{Edge: r.rec.Edge, Contact: r.rec.Contact, AOR: r.rec.AOR, Domain: r.rec.Domain, ExpiresAt: r.rec.ExpiresAt}
		m.addLeftover(r, lo, r.regPass)
		cleanup = append(cleanup, m.cleanupItemLocked(r, lo))
	}
	newKey := leftover{AOR: a.id.aor, Contact: contact}.key()
	r.rec.Leftovers = slices.DeleteFunc(r.rec.Leftovers, func(lo leftover) bool { return lo.key() == newKey })
	delete(r.leftPass, newKey)
	moved := r.rec.Edge != "" && r.rec.Edge != t.Edge
	if r.failures > 0 {
		level := slog.LevelDebug
		if r.userFault {
			level = slog.LevelInfo
		}
		m.log.Log(context.Background(), level, fmt.Sprintf("upstream registration of %s works again at %s after failing since %s",
			r.user, t.Edge, r.failingSince.Format(time.RFC3339)), "user", r.user, "edge", t.Edge)
	}
	r.rec.AOR, r.rec.Domain = a.id.aor, a.id.domain
	r.rec.Edge, r.rec.IP, r.rec.Contact = t.Edge, t.IP.String(), contact
	r.rec.ExpiresAt = now.Add(granted)
	r.rec.RefreshAt = now.Add(refreshDelay(granted))
	m.held.note(r.user, t.Edge, r.rec.ExpiresAt, now)
	r.regPass = a.id.password
	r.failures, r.failingSince, r.userFault, r.retryAt, r.lastErr = 0, time.Time{}, false, time.Time{}, ""
	if moved {
		m.metrics.moves.WithLabelValues(a.metric).Inc()
	}
	if b := r.batch; b != nil {
		r.batch = nil
		if b.to == t.Edge && m.batch == b {
			b.pending--
			if b.pending == 0 {
				d := now.Sub(b.start)
				m.metrics.batchSeconds.WithLabelValues(b.kind).Observe(d.Seconds())
				m.log.Debug(fmt.Sprintf("moved every registration to %s in %s", b.to, d.Round(time.Millisecond)), "to", b.to, "kind", b.kind)
				m.batch = nil
				if m.onMoved != nil {
					m.onMoved(b.kind, b.to, b.total, d)
				}
			}
		}
	}
	if len(cleanup) > 0 {
		// Cleaned inline below; not due again unless that fails.
		r.leftRetryAt = now.Add(time.Minute)
	}
	m.persistLocked(r)
	m.mu.Unlock()
	if len(cleanup) > 0 {
		m.doCleanup(ctx, r, a, cleanup)
	}
}

// failed records a failed attempt and schedules the retry: capped, jittered
// backoff, at least any Retry-After. It never gives up. intent is the key of
// the leftover recorded for the contact tried; it is dropped unless a
// request for it went unanswered (keepIntent).
func (m *Manager) failed(r *reg, f failure, intent string, keepIntent bool) {
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	r.failures++
	if r.failingSince.IsZero() {
		r.failingSince = now
	}
	r.lastErr, r.userFault = f.err, f.userFault
	d := max(backoff(r.failures, f.userFault), f.retryAfter)
	r.retryAt = now.Add(d)
	r.force = true // retry when the backoff ends
	if intent != "" && !keepIntent {
		m.dropLeftover(r, intent)
	}
	// A user's own problem (credentials, config) gets a line when it
	// starts; failures edges explain are told once per edge transition by
	// the monitor and the move line, not once per user.
	level := slog.LevelDebug
	if f.userFault && r.failures == 1 {
		level = slog.LevelWarn
	}
	m.log.Log(context.Background(), level, fmt.Sprintf("upstream registration of %s failed: %s; retrying in %s", r.user, f.err, d.Round(time.Millisecond)),
		"user", r.user, "aor", r.creds.User, "user_fault", f.userFault, "failures", r.failures, "failing_since", r.failingSince)
	m.metrics.failures.WithLabelValues(failureLabel(f)).Inc()
}

func failureLabel(f failure) string {
	if f.userFault {
		return "user"
	}
	return "edge"
}
