// Package directory says who is who: a phone's local digest credential,
// the Twilio user it registers as upstream, and the Contact user part that
// names a (user, edge) pair at Twilio. The registrar, the upstream manager
// and the calls read it; cmd/edgewise builds it from the phones: section on
// every reload. It imports nothing of edgewise.
package directory

// Credential is a phone user's local secret: Password, or HA1 =
// hex(MD5(user:realm:password)) when only that is stored (MD5 only).
type Credential struct {
	User     string
	Password string
	HA1      string
}

// Phones finds local credentials by user name. Implementations must be
// safe for concurrent use and fast: it is called for every authenticated
// REGISTER and INVITE.
type Phones interface {
	Credential(user string) (Credential, bool)
}

// PhoneMap is Phones backed by a map, keyed by user.
type PhoneMap map[string]Credential

var _ Phones = PhoneMap(nil)

// Credential implements Phones.
func (d PhoneMap) Credential(user string) (Credential, bool) {
	c, ok := d[user]
	return c, ok
}

// TwilioUser is one phone user's Twilio credentials (an entry of a
// credential list mapped to the SIP Domain).
type TwilioUser struct {
	// User is the Twilio user name; it is the AOR's user part.
	User     string
	Password string
}

// Twilio gives the Twilio credentials of a local user; ok is false when the
// user is not (or no longer) a configured phone, which unregisters it
// upstream.
type Twilio interface {
	Upstream(user string) (c TwilioUser, ok bool)
}

// TwilioMap is Twilio backed by a map from local user to credentials.
type TwilioMap map[string]TwilioUser

var _ Twilio = TwilioMap(nil)

// Upstream implements Twilio.
func (d TwilioMap) Upstream(user string) (TwilioUser, bool) {
	c, ok := d[user]
	return c, ok
}
