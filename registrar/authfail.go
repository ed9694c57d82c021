package registrar

import (
	"net/netip"

	"github.com/edgewise-sip/edgewise/registrar/sip/digest"
)

// AuthFailed records an authentication failure that happened outside
// REGISTER (a phone's INVITE with a wrong password, say) against source, so
// guessing passwords through calls locks the source out just as guessing
// them through registrations does. user is the user tried, empty if no such
// user exists. It reports whether this failure started a lockout.
func (r *Registrar) AuthFailed(source netip.Addr, user string) bool {
	return r.authFailed(source, user)
}

// authFailed counts one failure and reports whether it started a lockout.
func (r *Registrar) authFailed(source netip.Addr, user string) bool {
	return r.lockout.Failed(source, user)
}

// knownUser is the user a failed verification counts against for the
// per-user rule: none when the user does not exist.
func knownUser(user string, res digest.Result) string {
	if res.UnknownUser {
		return ""
	}
	return user
}
