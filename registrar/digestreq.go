package registrar

import (
	"hash/maphash"
	"net/netip"
	"strings"

	"github.com/emiago/sipgo/sip"

	"github.com/edgewise-sip/edgewise/registrar/sip/digest"
)

// DigestRequest describes req, received from src, for
// digest.Authenticator.Verify: its method, the check that the credentials
// were computed for its Request-URI, the source the nonce must have been
// issued to, and its fingerprint. The B2BUA uses it for INVITEs too, so a
// phone's REGISTER and INVITE are checked by the same rules.
func DigestRequest(req *sip.Request, src netip.Addr) digest.Request {
	return digestRequest(req, src, Fingerprint(req))
}

func digestRequest(req *sip.Request, src netip.Addr, fingerprint uint64) digest.Request {
	return digest.Request{
		Method:      string(req.Method),
		URIMatches:  func(u string) bool { return SameURI(&req.Recipient, u) },
		Source:      src,
		Fingerprint: fingerprint,
	}
}

// fingerprinted is a transaction that knows its request's Fingerprint
// from the bytes that carried it (the front end's stateless path): cheaper
// than serialising the parsed request again, and as good for telling a
// retransmission from a replay.
type fingerprinted interface {
	Fingerprint() uint64
}

var fingerprintSeed = maphash.MakeSeed()

// Fingerprint identifies the whole request — request line, every header in
// order and the body — for the digest nonce-count check: a nonce-count may be
// used again only by a retransmission of the request that first used it
// (RFC 3261 §17.2.3: a retransmission is the same message), never by a
// request that changes anything, be it the Request-URI, a tag, a Via or the
// SDP. The request is hashed as sipgo serialises it, so two copies that differ
// only in how the phone spaced or cased its headers count as the same request;
// anything with a meaning is covered. Never 0.
func Fingerprint(req *sip.Request) uint64 {
	var h maphash.Hash
	h.SetSeed(fingerprintSeed)
	req.StringWrite(&h)
	if v := h.Sum64(); v != 0 {
		return v
	}
	return 1
}

// SameURI reports whether the URI text s names the same resource as u, by
// the comparison rules of RFC 3261 §19.1.4: scheme, host and parameter names
// and values without regard to case, user and password exactly, a port only
// equal to the same port (an absent port does not match an explicit 5060),
// the user, ttl, method, maddr and transport parameters equal whenever either
// URI has them, other parameters equal when both have them, and the same
// headers. A URI that does not parse never matches.
func SameURI(u *sip.Uri, s string) bool {
	var v sip.Uri
	if err := sip.ParseUri(s, &v); err != nil {
		return false
	}
	if !strings.EqualFold(schemeOf(u), schemeOf(&v)) {
		return false
	}
	if u.Raw() != "" || v.Raw() != "" {
		// Not a SIP URI (tel:, urn:): only the exact text is the same.
		return u.Raw() == v.Raw()
	}
	if u.User != v.User || u.Password != v.Password || !strings.EqualFold(u.Host, v.Host) || u.Port != v.Port {
		return false
	}
	return sameParams(u.UriParams, v.UriParams, true) && sameParams(u.Headers, v.Headers, false) && sameParams(v.Headers, u.Headers, false)
}

func schemeOf(u *sip.Uri) string {
	if u.Scheme == "" {
		return "sip"
	}
	return u.Scheme
}

// mustMatchParams are the URI parameters that must be equal when either URI
// has them (RFC 3261 §19.1.4).
var mustMatchParams = [...]string{"user", "ttl", "method", "maddr", "transport"}

// sameParams compares URI parameters (uri true) or URI headers (uri false,
// where every header of a must be in b with the same value; callers check
// both ways).
func sameParams(a, b sip.HeaderParams, uri bool) bool {
	get := func(p sip.HeaderParams, k string) (string, bool) {
		for _, kv := range p {
			if strings.EqualFold(kv.K, k) {
				return kv.V, true
			}
		}
		return "", false
	}
	if !uri {
		for _, kv := range a {
			w, ok := get(b, kv.K)
			if !ok || w != kv.V {
				return false
			}
		}
		return true
	}
	for _, k := range mustMatchParams {
		x, okA := get(a, k)
		y, okB := get(b, k)
		if okA != okB || !strings.EqualFold(x, y) {
			return false
		}
	}
	for _, kv := range a {
		if w, ok := get(b, kv.K); ok && !strings.EqualFold(w, kv.V) {
			return false
		}
	}
	return true
}
