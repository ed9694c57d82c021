package token

import (
	"errors"
	"fmt"
)

// MaxIdentityLen is Twilio's limit for a Voice SDK client identity.
const MaxIdentityLen = 121

// ErrIdentity is wrapped by ValidIdentity's errors.
var ErrIdentity = errors.New("not a valid Twilio client identity")

// ValidIdentity applies Twilio's rule for Voice SDK identities: 1..121
// characters, ASCII letters, digits and underscore only. Phone users may
// contain '.' or '-', which Twilio would refuse, so such users get a 403
// rather than a token that fails later in the browser.
func ValidIdentity(id string) error {
	if id == "" {
		return fmt.Errorf("%w: empty", ErrIdentity)
	}
	if len(id) > MaxIdentityLen {
		return fmt.Errorf("%w: %d characters, at most %d allowed", ErrIdentity, len(id), MaxIdentityLen)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_') {
			return fmt.Errorf("%w: only letters, digits and underscore are allowed", ErrIdentity)
		}
	}
	return nil
}
