package registrar

import (
	"net/netip"
	"time"
)

// AuthFailed records an authentication failure that happened outside
// REGISTER (a phone's INVITE with a wrong password, say) against source, so
// guessing passwords through calls locks the source out just as guessing
// them through registrations does. It reports whether this failure started a
// lockout.
func (r *Registrar) AuthFailed(source netip.Addr, user string) bool {
	return r.authFailed(source.Unmap(), user, r.now(), r.state.Load().s.Lockout)
}

// authFailed counts one failure and reports whether it started a lockout.
func (r *Registrar) authFailed(source netip.Addr, user string, now time.Time, cfg Lockout) bool {
	if !r.lockout.fail(source, now, cfg, user) {
		return false
	}
	r.metrics.lockouts.Inc()
	if r.onLockout != nil {
		r.onLockout(source, user, now.Add(cfg.Duration))
	}
	return true
}
