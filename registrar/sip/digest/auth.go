package digest

import (
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
	"time"
)

// Secret is what the server knows about a user's password: the password itself,
// or HA1 = hex(MD5(user ":" realm ":" password)) as many PBX user tables store
// it. An MD5 HA1 can only verify MD5 responses: a phone that answers the
// SHA-256 challenge for a user configured with an HA1 fails, so deployments
// that store HA1 should offer MD5 only, or MD5 first.
type Secret struct {
	Password string
	HA1      string
}

// Config is the part of the authenticator that may change on reload.
type Config struct {
	// Realm is sent in challenges and must match the credentials' realm.
	Realm string
	// NonceTTL is how long a nonce is accepted; older nonces get stale=true.
	// Zero means 30 s.
	NonceTTL time.Duration
	// Algorithms lists the algorithms offered, one challenge each, in order.
	// Empty means DefaultAlgorithms.
	Algorithms []Algorithm
}

// Options are fixed for the life of an Authenticator.
type Options struct {
	// MaxTrackedNonces bounds the nonce-count cache. Zero means 1<<20 entries
	// (~40 MB worst case), enough for 18,000 authentications a second with a
	// 30 s TTL. When full, new nonces are refused with stale=true.
	MaxTrackedNonces int
	// Key signs nonces. Empty means a random per-process key, which is what a
	// single daemon wants: nonces from before a restart become stale.
	Key []byte
}

// DefaultNonceTTL is used when Config.NonceTTL is zero.
const DefaultNonceTTL = 30 * time.Second

// clockSkew tolerates nonces stamped slightly in the future, e.g. after a
// small wall-clock step back.
const clockSkew = 2 * time.Second

// Authenticator issues challenges and verifies credentials. It is safe for
// concurrent use; SetConfig swaps the configuration atomically and keeps
// outstanding nonces valid.
type Authenticator struct {
	cfg    atomic.Pointer[config]
	signer *nonceSigner
	nc     *ncCache
	// ncPeriod is the longest TTL ever configured, so nonces issued under an
	// older, longer TTL stay protected after a reload shortens it.
	ncPeriod atomic.Int64
	// dummyHA1 stands in for unknown users so that they cost the same work
	// as known ones.
	dummyHA1 [16]byte
}

type config struct {
	Config
	prefix   string   // `Digest realm="…", nonce="`
	suffixes []string // per algorithm: `", algorithm=…, qop="auth"`
}

// NewAuthenticator returns an Authenticator for cfg.
func NewAuthenticator(cfg Config, opts Options) (*Authenticator, error) {
	max := opts.MaxTrackedNonces
	if max <= 0 {
		max = 1 << 20
	}
	a := &Authenticator{
		signer: newNonceSigner(opts.Key),
		nc:     newNCCache(max),
	}
	copy(a.dummyHA1[:], a.signer.issue(time.Now(), netip.IPv6Unspecified()))
	if err := a.SetConfig(cfg); err != nil {
		return nil, err
	}
	return a, nil
}

// SetConfig validates cfg and makes it current.
func (a *Authenticator) SetConfig(cfg Config) error {
	c, err := cfg.build()
	if err != nil {
		return err
	}
	for {
		old := a.ncPeriod.Load()
		if int64(c.NonceTTL) <= old || a.ncPeriod.CompareAndSwap(old, int64(c.NonceTTL)) {
			break
		}
	}
	a.cfg.Store(c)
	return nil
}

// Validate reports whether SetConfig would accept cfg.
func (cfg Config) Validate() error {
	_, err := cfg.build()
	return err
}

// build checks cfg and precomputes the challenge text.
func (cfg Config) build() (*config, error) {
	if cfg.Realm == "" {
		return nil, errors.New("digest: empty realm")
	}
	if strings.ContainsAny(cfg.Realm, "\r\n") {
		return nil, errors.New("digest: realm contains a line break")
	}
	if cfg.NonceTTL == 0 {
		cfg.NonceTTL = DefaultNonceTTL
	}
	if cfg.NonceTTL < 0 {
		return nil, fmt.Errorf("digest: negative nonce TTL %s", cfg.NonceTTL)
	}
	if len(cfg.Algorithms) == 0 {
		cfg.Algorithms = DefaultAlgorithms
	}
	cfg.Algorithms = slices.Clone(cfg.Algorithms)
	c := &config{Config: cfg}
	for i, alg := range cfg.Algorithms {
		if alg != MD5 && alg != SHA256 {
			return nil, fmt.Errorf("digest: unsupported algorithm %s", alg)
		}
		if slices.Contains(cfg.Algorithms[:i], alg) {
			return nil, fmt.Errorf("digest: algorithm %s listed twice", alg)
		}
		c.suffixes = append(c.suffixes, `", algorithm=`+alg.String()+`, qop="auth"`)
	}
	c.prefix = `Digest realm="` + quote(cfg.Realm) + `", nonce="`
	return c, nil
}

// Config returns the current configuration.
func (a *Authenticator) Config() Config {
	c := a.cfg.Load().Config
	c.Algorithms = slices.Clone(c.Algorithms)
	return c
}

// Challenges appends one challenge value per configured algorithm, in order,
// all carrying the same fresh nonce, to dst. The caller sends each as its own
// WWW-Authenticate (401) or Proxy-Authenticate (407) header. stale tells the
// client its credentials were fine but the nonce was not, so it retries without
// asking the user (RFC 7616 §3.3).
//
// The nonce is bound to src, the IP address the challenged request came from:
// credentials computed with it are accepted only from that address, so a
// captured request cannot be replayed from elsewhere. The port is not bound,
// so a phone whose NAT mapping changes keeps working.
func (a *Authenticator) Challenges(dst []string, src netip.Addr, stale bool, now time.Time) []string {
	c := a.cfg.Load()
	nonce := a.signer.issue(now, src)
	for _, sfx := range c.suffixes {
		n := len(c.prefix) + len(nonce) + len(sfx)
		if stale {
			n += len(", stale=true")
		}
		var b strings.Builder
		b.Grow(n)
		b.WriteString(c.prefix)
		b.WriteString(nonce)
		b.WriteString(sfx)
		if stale {
			b.WriteString(", stale=true")
		}
		dst = append(dst, b.String())
	}
	return dst
}

// Outcome classifies a verification.
type Outcome uint8

const (
	// OK: the credentials are valid and fresh.
	OK Outcome = iota
	// Challenge: the credentials cannot be used here (another realm, an
	// algorithm or qop that was not offered, hashed user names). Answer with a
	// fresh challenge; this is not a failed login.
	Challenge
	// Stale: the nonce expired, is not ours (e.g. from before a restart, or
	// issued to another address), or its nonce-count was used by another
	// request. Answer with a challenge carrying stale=true.
	Stale
	// Failed: wrong password, unknown user, or credentials for another
	// Request-URI. Answer 403 and count it.
	Failed
	// Malformed: required parameters missing or unparsable. Answer 400.
	Malformed
)

func (o Outcome) String() string {
	switch o {
	case OK:
		return "ok"
	case Challenge:
		return "challenge"
	case Stale:
		return "stale"
	case Failed:
		return "failed"
	case Malformed:
		return "malformed"
	}
	return fmt.Sprintf("Outcome(%d)", uint8(o))
}

// Result is what Verify found.
type Result struct {
	Outcome Outcome
	// Reason explains a non-OK outcome, for logs; never send it to the client,
	// it may tell an unknown user from a wrong password.
	Reason string
	// Retransmission is set with OK when the same request (same nonce-count and
	// fingerprint) was verified before: a UDP retransmission, to be answered
	// again without applying it twice.
	Retransmission bool
	// UnknownUser is set with Failed when no such user exists, so lockout
	// need not track a user name a stranger made up.
	UnknownUser bool
}

// Request is what Verify must know about the request that carried the
// credentials.
type Request struct {
	// Method is the request's method, part of the digest (RFC 7616 §3.4.3).
	Method string
	// URIMatches reports whether the credentials' digest-uri names this
	// request's Request-URI (RFC 3261 §22.4, RFC 7616 §3.4). The response
	// covers the digest-uri, not the Request-URI, so without this check
	// credentials captured from one request could be replayed with another
	// destination. Nil refuses every credential.
	URIMatches func(digestURI string) bool
	// Source is the IP address the request came from; the nonce must have
	// been issued to it (see Challenges).
	Source netip.Addr
	// Fingerprint identifies the whole request, every header and the body,
	// for retransmission detection: a retransmission of a verified request
	// (same nonce-count, same fingerprint) is accepted again, any other use
	// of a nonce-count already used is refused as a replay. Zero disables
	// that allowance.
	Fingerprint uint64
}

// Verify checks credentials cred sent with req. lookup returns the secret of
// a user.
func (a *Authenticator) Verify(req Request, cred *Authorization, lookup func(user string) (Secret, bool), now time.Time) Result {
	c := a.cfg.Load()
	if cred.Realm != c.Realm {
		return Result{Outcome: Challenge, Reason: "realm mismatch"}
	}
	if strings.EqualFold(cred.UserHash, "true") {
		return Result{Outcome: Challenge, Reason: "hashed user names are not supported"}
	}
	alg, err := ParseAlgorithm(cred.Algorithm)
	if err != nil || !slices.Contains(c.Algorithms, alg) {
		return Result{Outcome: Challenge, Reason: "algorithm not offered: " + cred.Algorithm}
	}
	if !strings.EqualFold(cred.QOP, "auth") {
		return Result{Outcome: Challenge, Reason: "qop=auth required"}
	}
	if cred.Username == "" || cred.Nonce == "" || cred.URI == "" || cred.Response == "" || cred.CNonce == "" || cred.NC == "" {
		return Result{Outcome: Malformed, Reason: "missing digest parameter"}
	}
	nc, ok := parseNC(cred.NC)
	if !ok {
		return Result{Outcome: Malformed, Reason: "bad nonce-count"}
	}
	var got [32]byte
	if len(cred.Response) != 2*alg.size() {
		return Result{Outcome: Malformed, Reason: "bad response length"}
	}
	if !decodeHex(got[:alg.size()], cred.Response) {
		return Result{Outcome: Malformed, Reason: "response is not hex"}
	}

	if req.URIMatches == nil || !req.URIMatches(cred.URI) {
		return Result{Outcome: Failed, Reason: "digest uri does not match the Request-URI"}
	}

	issued, id, ok := a.signer.open(cred.Nonce, req.Source)
	if !ok {
		return Result{Outcome: Stale, Reason: "nonce not issued by this process to this address"}
	}
	if age := now.Sub(issued); age > c.NonceTTL || age < -clockSkew {
		return Result{Outcome: Stale, Reason: "nonce expired"}
	}

	secret, known := lookup(cred.Username)
	exists := known
	var ha1Buf [64]byte
	var ha1 []byte
	reason := ""
	switch {
	case !known:
		ha1 = alg.hexSum(ha1Buf[:0], a.dummyHA1[:])
		reason = "unknown user"
	case secret.Password != "":
		ha1 = a.ha1(ha1Buf[:0], alg, cred.Username, c.Realm, secret.Password)
	case secret.HA1 != "" && alg == MD5:
		ha1 = appendLower(ha1Buf[:0], secret.HA1)
	default:
		ha1 = alg.hexSum(ha1Buf[:0], a.dummyHA1[:])
		known = false
		reason = "stored HA1 is MD5 but the client answered " + alg.String()
	}

	want := responseDigest(alg, ha1, req.Method, cred)
	if subtle.ConstantTimeCompare(want[:alg.size()], got[:alg.size()]) != 1 || !known {
		if reason == "" {
			reason = "wrong password"
		}
		return Result{Outcome: Failed, Reason: reason, UnknownUser: !exists}
	}

	switch a.nc.use(id, nc, req.Fingerprint, issued, now, time.Duration(a.ncPeriod.Load())) {
	case ncReplay:
		return Result{Outcome: Stale, Reason: "nonce-count replayed"}
	case ncFull:
		return Result{Outcome: Stale, Reason: "nonce-count cache full"}
	case ncRetransmission:
		return Result{Outcome: OK, Retransmission: true}
	}
	return Result{Outcome: OK}
}

// TrackedNonces reports how many nonces the nonce-count cache remembers.
func (a *Authenticator) TrackedNonces() int { return a.nc.len() }

func (a *Authenticator) ha1(dst []byte, alg Algorithm, user, realm, password string) []byte {
	var buf [256]byte
	p := append(buf[:0], user...)
	p = append(p, ':')
	p = append(p, realm...)
	p = append(p, ':')
	p = append(p, password...)
	return alg.hexSum(dst, p)
}

// HA1 returns hex(H(user ":" realm ":" password)) for alg, the value a user
// table may store instead of the password (MD5 only, see Secret).
func HA1(alg Algorithm, user, realm, password string) string {
	var buf [256]byte
	p := append(buf[:0], user...)
	p = append(p, ':')
	p = append(p, realm...)
	p = append(p, ':')
	p = append(p, password...)
	return string(alg.hexSum(nil, p))
}

// responseDigest computes H(HA1:nonce:nc:cnonce:qop:H(method:uri)) (RFC 7616 §3.4.1).
func responseDigest(alg Algorithm, ha1 []byte, method string, cred *Authorization) [32]byte {
	var buf [512]byte
	p := append(buf[:0], method...)
	p = append(p, ':')
	p = append(p, cred.URI...)
	var ha2Buf [64]byte
	ha2 := alg.hexSum(ha2Buf[:0], p)

	p = append(buf[:0], ha1...)
	p = append(p, ':')
	p = append(p, cred.Nonce...)
	p = append(p, ':')
	p = append(p, cred.NC...)
	p = append(p, ':')
	p = append(p, cred.CNonce...)
	p = append(p, ':')
	p = append(p, cred.QOP...)
	p = append(p, ':')
	p = append(p, ha2...)
	var out [32]byte
	alg.sum(&out, p)
	return out
}

// Response computes the response a client sends, for tests and clients:
// HA1 is hex(H(user:realm:password)).
func Response(alg Algorithm, ha1, method string, cred *Authorization) string {
	d := responseDigest(alg, []byte(ha1), method, cred)
	return hex.EncodeToString(d[:alg.size()])
}

func parseNC(s string) (uint32, bool) {
	if len(s) != 8 {
		return 0, false
	}
	var n uint32
	for i := 0; i < 8; i++ {
		v, ok := fromHex(s[i])
		if !ok {
			return 0, false
		}
		n = n<<4 | uint32(v)
	}
	return n, n != 0
}

// decodeHex decodes s, which is 2*len(dst) characters, into dst without the
// allocation a []byte conversion would cost.
func decodeHex(dst []byte, s string) bool {
	for i := range dst {
		hi, ok1 := fromHex(s[2*i])
		lo, ok2 := fromHex(s[2*i+1])
		if !ok1 || !ok2 {
			return false
		}
		dst[i] = hi<<4 | lo
	}
	return true
}

func fromHex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

func appendLower(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		dst = append(dst, c)
	}
	return dst
}

// quote escapes a value for use inside a quoted-string.
func quote(s string) string {
	if !strings.ContainsAny(s, `"\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '"' || s[i] == '\\' {
			b.WriteByte('\\')
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
