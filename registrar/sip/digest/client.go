package digest

import (
	"errors"
	"fmt"
	"strings"

	icholy "github.com/icholy/digest"
)

// The client side: edgewise answers Twilio's challenges to its REGISTERs
// (upstream registration) and INVITEs (calls) with the user's Twilio
// credentials. The response is computed by github.com/icholy/digest, an
// implementation independent of the server side above.

// Header names of a challenge and of the credentials that answer it: 401
// (a registrar) or 407 (a proxy).
func Headers(status int) (challenge, credentials string) {
	if status == 407 {
		return "Proxy-Authenticate", "Proxy-Authorization"
	}
	return "WWW-Authenticate", "Authorization"
}

// Answerer keeps a server's last challenge and answers it for one set of
// credentials, with a rising nonce-count, so a request sent again (a
// refresh, the next IP of an edge) carries credentials at once instead of
// costing another 401/407 round trip. The zero value has no challenge.
type Answerer struct {
	chal   *icholy.Challenge
	status int // 401 or 407
	nc     int
}

// ErrNoChallenge is Learn's error when the response carries no challenge.
var ErrNoChallenge = errors.New("digest: no challenge")

// Learn takes the challenge of a 401 or 407 whose header values are given
// (the first one edgewise can answer is kept).
func (a *Answerer) Learn(status int, values []string) error {
	if len(values) == 0 {
		name, _ := Headers(status)
		return fmt.Errorf("%w: %d without %s", ErrNoChallenge, status, name)
	}
	var last error
	for _, v := range values {
		chal, err := icholy.ParseChallenge(v)
		if err != nil {
			last = fmt.Errorf("digest: bad challenge: %w", err)
			continue
		}
		chal.Algorithm = strings.ToUpper(chal.Algorithm)
		if !icholy.CanDigest(chal) {
			last = fmt.Errorf("digest: unsupported challenge (algorithm %q, qop %v)", chal.Algorithm, chal.QOP)
			continue
		}
		a.chal, a.status, a.nc = chal, status, 0
		return nil
	}
	return last
}

// Nonce is the kept challenge's nonce, "" without one; Stale reports its
// stale flag. A second challenge with the nonce just answered, not stale,
// means the credentials were refused.
func (a *Answerer) Nonce() string {
	if a.chal == nil {
		return ""
	}
	return a.chal.Nonce
}

// Stale reports whether the kept challenge said stale=true.
func (a *Answerer) Stale() bool { return a.chal != nil && a.chal.Stale }

// Forget drops the kept challenge.
func (a *Answerer) Forget() { a.chal = nil }

// Answer computes credentials for a request (method, Request-URI) and
// returns the header to add; ok is false when no challenge is kept.
func (a *Answerer) Answer(method, uri, user, password string) (name, value string, ok bool, err error) {
	if a.chal == nil {
		return "", "", false, nil
	}
	a.nc++
	cred, err := icholy.Digest(a.chal, icholy.Options{Method: method, URI: uri, Username: user, Password: password, Count: a.nc})
	if err != nil {
		a.chal = nil
		return "", "", false, fmt.Errorf("digest for %s: %w", user, err)
	}
	_, name = Headers(a.status)
	return name, cred.String(), true, nil
}
