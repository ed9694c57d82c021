package upstream

import (
	"context"
	"net/netip"
	"slices"
	"time"

	"github.com/edgewise-sip/edgewise/registrar/twilio/edge"
)

type actionKind int

const (
	actRegister actionKind = iota + 1 // register at the active edge
	actCleanup                        // Expires: 0 for leftover contacts
)

// Metric kinds of work (bounded label values).
const (
	kindRegister = "register"
	kindRefresh  = "refresh"
	kindMove     = "move"
	kindCleanup  = "cleanup"
)

// ident is who a REGISTER is for: the AOR, its credentials and the
// registration's Call-ID.
type ident struct {
	aor, password, domain, callID string
}

// action is one piece of work for one user, with everything it needs copied
// out under the lock so the worker runs without it.
type action struct {
	kind     actionKind
	metric   string // kind label
	activity string // Status state while it runs ("" = unchanged)
	s        Settings
	edges    edge.Settings

	// Register.
	probe       netip.Addr // IP to try first (register-method keepalive)
	id          ident
	expires     int // seconds asked for
	fromEdge    string
	fromContact string

	// Cleanup.
	items []cleanupItem
}

type cleanupItem struct {
	lo leftover
	id ident
}

// decide settles what needs no network and returns the work r needs now,
// or nil and when to look again (zero: nothing scheduled). Called with mu held.
func (m *Manager) decide(r *reg, now time.Time) (*action, time.Time) {
	m.settle(r, now)
	var next time.Time
	earliest := func(t time.Time) {
		if !t.IsZero() && (next.IsZero() || t.Before(next)) {
			next = t
		}
	}
	if r.want() {
		switch {
		case now.Before(r.retryAt):
			earliest(r.retryAt)
		default:
			if metric, ok := m.registerReason(r, now); ok {
				return m.registerAction(r, metric), time.Time{}
			}
			if r.registered() {
				earliest(r.rec.RefreshAt)
			}
		}
	}
	if len(r.rec.Leftovers) > 0 {
		if !now.Before(r.leftRetryAt) {
			return m.cleanupAction(r), time.Time{}
		}
		earliest(r.leftRetryAt)
	}
	return nil, next
}

// settle applies transitions that need no request: a registration that is
// no longer wanted, or whose AOR changed, becomes a leftover to remove;
// leftovers past their expiry are forgotten. Called with mu held.
func (m *Manager) settle(r *reg, now time.Time) {
	changed := false
	if r.registered() {
		aorChanged := r.configured && (r.creds.User != r.rec.AOR || r.rec.Domain != m.s.Domain)
		if !r.want() || aorChanged {
			if now.Before(r.rec.ExpiresAt) {
				m.addLeftover(r, leftover{Edge: r.rec.Edge, Contact: r.rec.Contact, AOR: r.rec.AOR,
					Domain: r.rec.Domain, ExpiresAt: r.rec.ExpiresAt}, r.regPass)
				r.leftRetryAt = time.Time{}
			}
			r.rec.Edge, r.rec.IP, r.rec.Contact = "", "", ""
			r.rec.ExpiresAt, r.rec.RefreshAt = time.Time{}, time.Time{}
			r.regPass = ""
			if aorChanged {
				r.rec.CallID = "" // a new AOR is a new registration
			}
			changed = true
		}
	}
	if !r.want() && (r.failures > 0 || !r.retryAt.IsZero()) {
		r.failures, r.failingSince, r.userFault, r.retryAt = 0, time.Time{}, false, time.Time{}
		r.lastErr = ""
	}
	n := len(r.rec.Leftovers)
	r.rec.Leftovers = slices.DeleteFunc(r.rec.Leftovers, func(lo leftover) bool {
		gone := !now.Before(lo.ExpiresAt) || lo.Contact == r.rec.Contact && lo.AOR == r.rec.AOR
		if gone {
			delete(r.leftPass, lo.key())
		}
		return gone
	})
	if changed || len(r.rec.Leftovers) != n {
		m.persistLocked(r)
	}
}

// addLeftover records lo (replacing one for the same contact). Called with mu held.
func (m *Manager) addLeftover(r *reg, lo leftover, password string) {
	r.rec.Leftovers = slices.DeleteFunc(r.rec.Leftovers, func(x leftover) bool { return x.key() == lo.key() })
	r.rec.Leftovers = append(r.rec.Leftovers, lo)
	if password != "" {
		r.leftPass[lo.key()] = password
	}
}

// registerReason says whether a wanted user must register now and with
// which metric kind; it consumes the move/force requests. Called with mu held.
func (m *Manager) registerReason(r *reg, now time.Time) (string, bool) {
	force, move := r.force, r.move
	r.force, r.move = false, false
	switch {
	case !r.registered():
		return kindRegister, true
	case force, r.regPass != r.creds.Password,
		r.rec.Contact != m.contactFor(r.user, r.rec.Edge),
		!now.Before(r.rec.RefreshAt):
		return kindRefresh, true
	case move:
		if active, ok := m.mon.Active(); ok && active != r.rec.Edge {
			return kindMove, true
		}
	}
	return "", false
}

func (m *Manager) contactFor(user, edgeName string) string {
	u := contactURI(m.s, user, edgeName)
	return u.String()
}

// registerAction snapshots a register. Called with mu held.
func (m *Manager) registerAction(r *reg, metric string) *action {
	if r.rec.CallID == "" {
		r.rec.CallID = newCallID()
	}
	a := &action{
		kind:   actRegister,
		metric: metric,
		s:      m.s,
		edges:  m.mon.Settings(),
		id: ident{aor: r.creds.User, password: r.creds.Password, domain: m.s.Domain,
			callID: r.rec.CallID},
		expires:     max(int(m.s.RegisterExpires/time.Second), r.minExpires),
		fromEdge:    r.rec.Edge,
		fromContact: r.rec.Contact,
		probe:       r.probe,
	}
	r.probe = netip.Addr{}
	switch metric {
	case kindRegister:
		a.activity = StateRegistering
	case kindMove:
		a.activity = StateMoving
	}
	return a
}

// cleanupAction snapshots the removal of every leftover. Called with mu held.
func (m *Manager) cleanupAction(r *reg) *action {
	a := &action{kind: actCleanup, metric: kindCleanup, s: m.s, edges: m.mon.Settings()}
	if !r.registered() {
		a.activity = StateUnregistering
	}
	for _, lo := range r.rec.Leftovers {
		a.items = append(a.items, m.cleanupItemLocked(r, lo))
	}
	return a
}

// cleanupItemLocked pairs a leftover with the identity to remove it as.
// Called with mu held.
func (m *Manager) cleanupItemLocked(r *reg, lo leftover) cleanupItem {
	pw := r.leftPass[lo.key()]
	if pw == "" && r.configured && r.creds.User == lo.AOR {
		pw = r.creds.Password
	}
	callID := r.rec.CallID
	if lo.AOR != r.rec.AOR || callID == "" {
		// Another AOR's registration: its Call-ID is gone; any will do
		// for a removal.
		callID = newCallID()
	}
	domain := lo.Domain
	if domain == "" {
		domain = m.s.Domain
	}
	return cleanupItem{lo: lo, id: ident{aor: lo.AOR, password: pw, domain: domain, callID: callID}}
}

// execute runs one action on a worker goroutine.
func (m *Manager) execute(ctx context.Context, r *reg, a *action) {
	switch a.kind {
	case actRegister:
		m.doRegister(ctx, r, a)
	case actCleanup:
		m.doCleanup(ctx, r, a, a.items)
	}
}

// persistLocked saves r's record (or deletes it when nothing is left to
// resume or clean up) and returns a function that waits until it is
// durable. Called with mu held.
func (m *Manager) persistLocked(r *reg) func() error {
	if m.store == nil {
		return func() error { return nil }
	}
	if !r.registered() && len(r.rec.Leftovers) == 0 {
		return m.store.save(r.user, nil)
	}
	rec := r.rec
	rec.Leftovers = slices.Clone(r.rec.Leftovers)
	return m.store.save(r.user, &rec)
}

// nextCSeq returns the CSeq for r's next REGISTER. When it passes the
// persisted ceiling a new ceiling is saved first, so a restart never reuses
// a CSeq Twilio has seen (RFC 3261 §10.3 step 7 would refuse it).
func (m *Manager) nextCSeq(r *reg) uint32 {
	m.mu.Lock()
	r.cseq++
	n := r.cseq
	var wait func() error
	if n > r.rec.CSeq {
		r.rec.CSeq = n + cseqBlock
		if r.registered() || len(r.rec.Leftovers) > 0 {
			wait = m.persistLocked(r)
		}
	}
	m.mu.Unlock()
	if wait != nil {
		_ = wait()
	}
	return n
}
