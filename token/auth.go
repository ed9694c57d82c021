package token

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"net/http"
	"net/netip"
	"strings"
	"time"
)

// Directory checks a user's password; the caller backs it with the phones
// section of the config, so browser users log in as their desk phone.
type Directory interface {
	// CheckPassword reports whether user exists and password is theirs. It
	// must take about the same time for unknown users as for known ones.
	CheckPassword(user, password string) bool
	// Exists reports whether user exists. It is asked only after a failed
	// login, so the Guard tracks real users and not names a stranger made up.
	Exists(user string) bool
}

// Guard is the lockout the token endpoint shares with SIP when both run in
// one process (and a replica's own otherwise): failures here count toward
// the same source lockout and per-user guard as wrong SIP passwords.
// Addresses are the client's (see clientAddr), never a trusted proxy's.
type Guard interface {
	// Allow says whether client may try to log in as user (empty when the
	// request names nobody); when not, for how long, and why, in words.
	Allow(client netip.Addr, user string) (ok bool, retryAfter time.Duration, why string)
	// Known reports whether client has logged in as user before.
	Known(client netip.Addr, user string) bool
	// Failed counts a failed login; user is empty when no such user exists.
	Failed(client netip.Addr, user string)
	// Succeeded makes client a known source of user.
	Succeeded(client netip.Addr, user string)
}

// Passwords is a Directory of plain-text passwords by user.
type Passwords map[string]string

// Exists implements Directory.
func (p Passwords) Exists(user string) bool {
	_, ok := p[user]
	return ok
}

// CheckPassword implements Directory with a constant-time compare; unknown
// users go through the same compare so timing does not reveal who exists.
func (p Passwords) CheckPassword(user, password string) bool {
	want, ok := p[user]
	// Hashing first makes the compare independent of the password length.
	w, g := sha256.Sum256([]byte(want)), sha256.Sum256([]byte(password))
	eq := subtle.ConstantTimeCompare(w[:], g[:]) == 1
	return ok && eq
}

var _ Directory = Passwords(nil)

// Outcomes of an authenticator, mapped to HTTP statuses by the handler.
var (
	// ErrNoCredentials: this authenticator found nothing to check; try the next.
	ErrNoCredentials = errors.New("no credentials")
	// ErrBadCredentials: credentials were given and are wrong (401).
	ErrBadCredentials = errors.New("wrong user or password")
	// ErrForbidden: authenticated, but may not hold a token (403).
	ErrForbidden = errors.New("not allowed to get a token")
)

// Authenticator decides who is asking for a token. peer is the address of
// the connection, not of any forwarded header. It returns the identity,
// ErrNoCredentials when it has nothing to say (the next one is asked),
// ErrForbidden (wrapped) for a known user who may not have a token, or any
// other error for wrong credentials. Built-in: a trusted-proxy header (when
// configured) and HTTP Basic against the Directory; WithAuthenticator adds
// more, asked first.
type Authenticator interface {
	Authenticate(r *http.Request, peer netip.Addr) (identity string, err error)
}

// AuthenticatorFunc adapts a function to Authenticator.
type AuthenticatorFunc func(r *http.Request, peer netip.Addr) (string, error)

// Authenticate implements Authenticator.
func (f AuthenticatorFunc) Authenticate(r *http.Request, peer netip.Addr) (string, error) {
	return f(r, peer)
}

var (
	_ Authenticator = basicAuth{}
	_ Authenticator = headerAuth{}
	_ Authenticator = AuthenticatorFunc(nil)
)

// basicAuth checks HTTP Basic credentials against the phones directory.
type basicAuth struct{ dir Directory }

// Authenticate implements Authenticator.
func (b basicAuth) Authenticate(r *http.Request, _ netip.Addr) (string, error) {
	user, password, ok := r.BasicAuth()
	if !ok {
		return "", ErrNoCredentials
	}
	if b.dir == nil || !b.dir.CheckPassword(user, password) {
		return "", ErrBadCredentials
	}
	return user, nil
}

// headerAuth trusts an identity header, but only on connections from the
// configured proxies; from anywhere else the header is ignored, which is what
// stops a browser from naming itself.
type headerAuth struct {
	header  string
	proxies []netip.Prefix
}

// Authenticate implements Authenticator.
func (h headerAuth) Authenticate(r *http.Request, peer netip.Addr) (string, error) {
	if h.header == "" || !inPrefixes(peer, h.proxies) {
		return "", ErrNoCredentials
	}
	v := strings.TrimSpace(r.Header.Get(h.header))
	if v == "" {
		return "", ErrNoCredentials
	}
	return v, nil
}

func inPrefixes(a netip.Addr, list []netip.Prefix) bool {
	a = a.Unmap()
	for _, p := range list {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// clientAddr is the address a per-address rate limit applies to. Requests
// from a trusted proxy are keyed by the rightmost X-Forwarded-For entry the
// proxies did not add, so all users behind one proxy do not share a budget.
func clientAddr(r *http.Request, peer netip.Addr, proxies []netip.Prefix) netip.Addr {
	if !inPrefixes(peer, proxies) {
		return peer
	}
	hops := strings.Split(strings.Join(r.Header.Values("X-Forwarded-For"), ","), ",")
	for i := len(hops) - 1; i >= 0; i-- {
		a, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
		if err != nil {
			break
		}
		if !inPrefixes(a, proxies) {
			return a.Unmap()
		}
	}
	return peer
}

// peerAddr parses the connection's remote address.
func peerAddr(r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// addrKey groups IPv6 clients by /64, the usual smallest allocation, so one
// host cannot dodge the limit by rotating addresses.
func addrKey(a netip.Addr) string {
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.String()
	}
	return a.String()
}
