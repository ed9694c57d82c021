// Package clientid is the one naming rule for Twilio client identities: which
// strings Twilio accepts in an access token, and the identity each phone user
// gets. configs uses it to refuse users whose identities would meet, token to
// mint them. It imports nothing of edgewise.
package clientid

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// MaxLen is Twilio's limit for a Voice SDK client identity.
const MaxLen = 121

// ErrInvalid is wrapped by Valid's errors.
var ErrInvalid = errors.New("not a valid Twilio client identity")

// Valid applies Twilio's rule for Voice SDK identities: 1..121
// characters, ASCII letters, digits and underscore only.
func Valid(id string) error {
	if id == "" {
		return fmt.Errorf("%w: empty", ErrInvalid)
	}
	if len(id) > MaxLen {
		return fmt.Errorf("%w: %d characters, at most %d allowed", ErrInvalid, len(id), MaxLen)
	}
	for i := 0; i < len(id); i++ {
		if !identityByte(id[i]) {
			return fmt.Errorf("%w: only letters, digits and underscore are allowed", ErrInvalid)
		}
	}
	return nil
}

func identityByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_'
}

// hashedSuffixLen is the length of "_h" plus the hex digest that ends an
// identity shortened to fit MaxLen.
const hashedSuffixLen = 2 + 24

// Of is the Twilio client identity of a phone user. Phone users may
// hold '.' and '-' and be up to 128 characters long, which Twilio refuses in
// a token; rather than deny those users a browser phone, the identity spells
// each other byte as _XX_ (its hex code): "anna.lee" is "anna_2E_lee". A user
// that is already a valid identity is its own identity, so existing browser
// phones and TwiML that dials client:alice keep working. An encoding longer
// than Twilio allows keeps its first characters and ends in a hash of the
// whole user name, so it stays unique and stable.
//
// The mapping is not injective on its own ("a.b" and a user literally named
// "a_2E_b" meet); the config refuses such pairs.
func Of(user string) string {
	if Valid(user) == nil {
		return user
	}
	var b strings.Builder
	for i := 0; i < len(user); i++ {
		c := user[i]
		if identityByte(c) {
			b.WriteByte(c)
			continue
		}
		fmt.Fprintf(&b, "_%02X_", c)
	}
	id := b.String()
	if id == "" {
		return ""
	}
	if len(id) > MaxLen {
		sum := sha256.Sum256([]byte(user))
		id = id[:MaxLen-hashedSuffixLen] + "_h" + hex.EncodeToString(sum[:])[:hashedSuffixLen-2]
	}
	return id
}

// UserOf undoes Of's escapes: "anna_2E_lee" gives
// "anna.lee", true. It reports false when id holds no escape, so a name that
// only looks like an identity is never taken for another user's.
func UserOf(id string) (string, bool) {
	var b strings.Builder
	found := false
	for i := 0; i < len(id); i++ {
		if id[i] == '_' && i+3 < len(id) && id[i+3] == '_' {
			if v, err := hex.DecodeString(id[i+1 : i+3]); err == nil && strings.ToUpper(id[i+1:i+3]) == id[i+1:i+3] && !identityByte(v[0]) {
				b.WriteByte(v[0])
				i += 3
				found = true
				continue
			}
		}
		b.WriteByte(id[i])
	}
	return b.String(), found
}
