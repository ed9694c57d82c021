package upstream

import (
	"context"
	"slices"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/edgewise-sip/edgewise/registrar/twilio/edge"
)

// doCleanup sends Expires: 0 for each leftover: through its own edge while
// the monitor has it up, else through the active edge (Twilio's registrar
// is shared by every edge). A dead edge's binding that cannot be removed
// simply expires; it is retried with backoff until then.
func (m *Manager) doCleanup(ctx context.Context, r *reg, a *action, items []cleanupItem) {
	up := m.upEdges()
	var gone []string
	for _, it := range items {
		if ctx.Err() != nil {
			return
		}
		if m.removeContact(ctx, r, a, it, up) {
			gone = append(gone, it.lo.key())
		}
	}
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	r.rec.Leftovers = slices.DeleteFunc(r.rec.Leftovers, func(lo leftover) bool {
		if slices.Contains(gone, lo.key()) {
			delete(r.leftPass, lo.key())
			return true
		}
		return false
	})
	if len(r.rec.Leftovers) > 0 {
		r.leftFails++
		r.leftRetryAt = now.Add(backoff(r.leftFails, false))
	} else {
		r.leftFails, r.leftRetryAt = 0, time.Time{}
	}
	m.persistLocked(r)
}

// removeContact removes one leftover; true when it is gone or cannot be
// removed (no credentials, the registrar refuses), false to retry.
func (m *Manager) removeContact(ctx context.Context, r *reg, a *action, it cleanupItem, up map[string]bool) bool {
	if it.id.password == "" {
		m.log.Info("leftover upstream contact cannot be removed without its credentials; it will expire",
			"user", r.user, "contact", it.lo.Contact, "expires_at", it.lo.ExpiresAt)
		return true
	}
	var contact sip.Uri
	if err := sip.ParseUri(it.lo.Contact, &contact); err != nil {
		return true
	}
	var edges []string
	if up[it.lo.Edge] {
		edges = append(edges, it.lo.Edge)
	}
	if active, ok := m.mon.Active(); ok && active != it.lo.Edge {
		edges = append(edges, active)
	}
edges:
	for _, name := range edges {
		for _, t := range m.mon.Targets(name) {
			x := m.exchange(ctx, r, kindCleanup, a.edges.Timeout, t, it.id, contact, 0)
			switch x.out {
			case outOK:
				return true
			case outUser:
				m.log.Info("leftover upstream contact not removed; it will expire", "user", r.user,
					"contact", it.lo.Contact, "error", x.err)
				return true
			case outAborted, outLimited:
				return false
			case outAbandoned:
				continue edges
			}
		}
	}
	return false
}

// upEdges is the set of edges the monitor has up.
func (m *Manager) upEdges() map[string]bool {
	out := map[string]bool{}
	for _, e := range m.mon.Status() {
		if e.State == edge.StateUp {
			out[e.Name] = true
		}
	}
	return out
}
