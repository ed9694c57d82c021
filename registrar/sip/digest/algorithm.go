// Package digest implements the server side of HTTP Digest authentication as SIP
// uses it (RFC 3261 §22, RFC 7616, RFC 8760): challenges, stateless HMAC-signed
// nonces, response verification for MD5 and SHA-256 with qop=auth, and
// nonce-count replay protection.
//
// The package never names a header. A registrar passes the value of
// Authorization and sends challenges as WWW-Authenticate (401); a proxy or B2BUA
// uses Proxy-Authorization and Proxy-Authenticate (407) with the same calls.
//
// It imports nothing of edgewise.
package digest

import (
	"crypto/md5"
	"crypto/sha256"
	"fmt"
	"strings"
)

// Algorithm is a digest hash algorithm (RFC 7616 §3.3).
type Algorithm uint8

const (
	// MD5 is the RFC 2617 algorithm every SIP phone supports.
	MD5 Algorithm = iota + 1
	// SHA256 is "SHA-256" from RFC 7616, offered to SIP by RFC 8760.
	SHA256
)

// DefaultAlgorithms is the challenge order used when none is configured: SHA-256
// first, as RFC 8760 §2.4 asks of servers, then MD5 for older phones.
var DefaultAlgorithms = []Algorithm{SHA256, MD5}

// String returns the token used in the algorithm parameter.
func (a Algorithm) String() string {
	switch a {
	case MD5:
		return "MD5"
	case SHA256:
		return "SHA-256"
	default:
		return fmt.Sprintf("Algorithm(%d)", uint8(a))
	}
}

// ParseAlgorithm maps an algorithm token to an Algorithm, case-insensitively.
// An empty token means MD5 (RFC 2617 §3.2.1). The "-sess" variants are not
// supported: SIP phones rarely use them and they need per-session state.
func ParseAlgorithm(s string) (Algorithm, error) {
	switch {
	case s == "" || strings.EqualFold(s, "MD5"):
		return MD5, nil
	case strings.EqualFold(s, "SHA-256"):
		return SHA256, nil
	default:
		return 0, fmt.Errorf("digest: unsupported algorithm %q", s)
	}
}

// size is the digest length in bytes.
func (a Algorithm) size() int {
	if a == SHA256 {
		return sha256.Size
	}
	return md5.Size
}

// sum hashes p into dst, which must hold a.size() bytes, and returns the used part.
func (a Algorithm) sum(dst *[sha256.Size]byte, p []byte) []byte {
	if a == SHA256 {
		*dst = sha256.Sum256(p)
		return dst[:sha256.Size]
	}
	s := md5.Sum(p)
	copy(dst[:], s[:])
	return dst[:md5.Size]
}

// hexSum hashes p and appends the lowercase hex digest to out.
func (a Algorithm) hexSum(out, p []byte) []byte {
	var d [sha256.Size]byte
	return appendHex(out, a.sum(&d, p))
}

const hexDigits = "0123456789abcdef"

func appendHex(out, b []byte) []byte {
	for _, c := range b {
		out = append(out, hexDigits[c>>4], hexDigits[c&0x0f])
	}
	return out
}
