package registrar

import "net/netip"

// AuthFailed records an authentication failure that happened outside
// REGISTER (a phone's INVITE with a wrong password, say) against source, so
// guessing passwords through calls locks the source out just as guessing
// them through registrations does. It reports whether this failure started a
// lockout.
func (r *Registrar) AuthFailed(source netip.Addr, user string) bool {
	if !r.lockout.fail(source.Unmap(), r.now(), r.state.Load().s.Lockout, user) {
		return false
	}
	r.metrics.lockouts.Inc()
	return true
}
