package edgesim

import (
	"crypto/md5"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"
)

// digestRealm is the realm Twilio's SIP Domains put in their challenges.
const digestRealm = "sip.twilio.com"

const (
	// nonceTTL is how long a nonce is accepted; later uses get stale=true.
	nonceTTL = 5 * time.Minute
	// maxNonces bounds the store against a flood of unauthenticated
	// REGISTERs; the oldest are dropped first by the sweep, the rest refused.
	maxNonces = 100_000
)

// nonceStore issues and checks digest nonces for one edge. Nonces are per
// edge: a client that takes a challenge from one edge to another must be
// challenged again, which edgewise has to cope with when it fails over.
type nonceStore struct {
	mu     sync.Mutex
	opaque string
	nonces map[string]*nonceState
}

type nonceState struct {
	issued time.Time
	lastNC uint64 // highest nc accepted; a repeat is a replay
}

func newNonceStore() *nonceStore {
	return &nonceStore{opaque: randomHex(8), nonces: map[string]*nonceState{}}
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go ≥ 1.24)
	return hex.EncodeToString(b)
}

// challenge issues a fresh nonce and returns the WWW-Authenticate value.
func (s *nonceStore) challenge(now time.Time, stale bool) string {
	nonce := randomHex(16)
	s.mu.Lock()
	if len(s.nonces) >= maxNonces {
		s.dropOldestLocked()
	}
	s.nonces[nonce] = &nonceState{issued: now}
	s.mu.Unlock()
	v := fmt.Sprintf(`Digest realm="%s", nonce="%s", opaque="%s", algorithm=MD5, qop="auth"`, digestRealm, nonce, s.opaque)
	if stale {
		v += ", stale=true"
	}
	return v
}

func (s *nonceStore) dropOldestLocked() {
	var oldest string
	var at time.Time
	for n, st := range s.nonces {
		if oldest == "" || st.issued.Before(at) {
			oldest, at = n, st.issued
		}
	}
	delete(s.nonces, oldest)
}

// sweep forgets nonces past their lifetime.
func (s *nonceStore) sweep(now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for n, st := range s.nonces {
		if now.Sub(st.issued) > nonceTTL {
			delete(s.nonces, n)
		}
	}
}

// authOutcome is what the registrar answers after checking credentials.
type authOutcome int

const (
	authOK        authOutcome = iota
	authChallenge             // 401 with a fresh nonce
	authStale                 // 401 with a fresh nonce and stale=true
	authForbidden             // 403: unknown user or wrong password
	authBad                   // 400: the Authorization header is malformed or unsupported
)

// digestCredentials are the parameters of an Authorization header.
type digestCredentials struct {
	username, realm, nonce, uri, response string
	algorithm, cnonce, qop, nc, opaque    string
}

// verify checks an Authorization header for method. password looks a user
// up in the credential list; the user name must match exactly.
func (s *nonceStore) verify(c digestCredentials, method string, password func(user string) (string, bool), now time.Time) (authOutcome, string) {
	switch {
	case c.algorithm != "" && !strings.EqualFold(c.algorithm, "MD5"):
		return authBad, "unsupported digest algorithm " + c.algorithm
	case c.qop != "auth":
		return authBad, "digest qop=auth is required"
	case c.realm != digestRealm:
		return authChallenge, "wrong realm " + c.realm
	case c.opaque != s.opaque:
		return authChallenge, "opaque does not match the challenge"
	}
	nc, err := strconv.ParseUint(c.nc, 16, 32)
	if err != nil || len(c.nc) != 8 {
		return authBad, "nc is not 8 hex digits"
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	st, ok := s.nonces[c.nonce]
	switch {
	case !ok:
		return authChallenge, "unknown nonce"
	case now.Sub(st.issued) > nonceTTL:
		delete(s.nonces, c.nonce)
		return authStale, "nonce expired"
	case nc <= st.lastNC:
		return authChallenge, "nonce count replayed"
	}
	pw, ok := password(c.username)
	if !ok {
		return authForbidden, "unknown user " + c.username
	}
	ha1 := md5Hex(c.username + ":" + digestRealm + ":" + pw)
	ha2 := md5Hex(method + ":" + c.uri)
	want := md5Hex(ha1 + ":" + c.nonce + ":" + c.nc + ":" + c.cnonce + ":" + c.qop + ":" + ha2)
	if subtle.ConstantTimeCompare([]byte(want), []byte(strings.ToLower(c.response))) != 1 {
		return authForbidden, "wrong password or digest for " + c.username
	}
	st.lastNC = nc
	return authOK, ""
}

func md5Hex(s string) string {
	sum := md5.Sum([]byte(s))
	return hex.EncodeToString(sum[:])
}

// parseDigestCredentials parses `Digest k=v, k="v", …` (RFC 2617 §3.2.2).
func parseDigestCredentials(h string) (digestCredentials, error) {
	var c digestCredentials
	scheme, rest, _ := strings.Cut(strings.TrimSpace(h), " ")
	if !strings.EqualFold(scheme, "Digest") {
		return c, fmt.Errorf("authorization scheme %q is not Digest", scheme)
	}
	params, err := parseAuthParams(rest)
	if err != nil {
		return c, err
	}
	fields := map[string]*string{
		"username": &c.username, "realm": &c.realm, "nonce": &c.nonce, "uri": &c.uri,
		"response": &c.response, "algorithm": &c.algorithm, "cnonce": &c.cnonce,
		"qop": &c.qop, "nc": &c.nc, "opaque": &c.opaque,
	}
	for k, v := range params {
		if p, ok := fields[k]; ok {
			*p = v
		}
	}
	for _, k := range []string{"username", "realm", "nonce", "uri", "response"} {
		if _, ok := params[k]; !ok {
			return c, fmt.Errorf("digest parameter %s is missing", k)
		}
	}
	return c, nil
}

// parseAuthParams splits a comma-separated list of name=value pairs whose
// values may be quoted strings with backslash escapes.
func parseAuthParams(s string) (map[string]string, error) {
	out := map[string]string{}
	for {
		s = strings.TrimLeft(s, " \t,")
		if s == "" {
			return out, nil
		}
		eq := strings.IndexByte(s, '=')
		if eq <= 0 {
			return nil, fmt.Errorf("malformed auth parameter near %q", s)
		}
		name := strings.ToLower(strings.TrimSpace(s[:eq]))
		s = strings.TrimLeft(s[eq+1:], " \t")
		var val string
		if strings.HasPrefix(s, `"`) {
			var b strings.Builder
			i := 1
			for ; i < len(s) && s[i] != '"'; i++ {
				if s[i] == '\\' && i+1 < len(s) {
					i++
				}
				b.WriteByte(s[i])
			}
			if i >= len(s) {
				return nil, errors.New("unterminated quoted auth parameter")
			}
			val, s = b.String(), s[i+1:]
		} else {
			end := strings.IndexByte(s, ',')
			if end < 0 {
				end = len(s)
			}
			val, s = strings.TrimSpace(s[:end]), s[end:]
		}
		if _, dup := out[name]; dup {
			return nil, fmt.Errorf("auth parameter %s is repeated", name)
		}
		out[name] = val
	}
}
