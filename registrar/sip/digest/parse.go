package digest

import (
	"errors"
	"fmt"
	"strings"
)

// Authorization is a parsed Digest credentials value (RFC 7616 §3.4), as sent in
// an Authorization or Proxy-Authorization header. Fields are the raw parameter
// values with quoting removed; unknown parameters are ignored.
type Authorization struct {
	Username  string
	Realm     string
	Nonce     string
	URI       string
	Response  string
	Algorithm string
	CNonce    string
	Opaque    string
	QOP       string
	NC        string
	// UserHash is the RFC 7616 userhash parameter. Hashed user names are not
	// supported; Verify refuses credentials that set it to "true".
	UserHash string
}

// Errors returned by ParseAuthorization.
var (
	ErrNotDigest = errors.New("digest: not a Digest credentials value")
	ErrMalformed = errors.New("digest: malformed credentials")
)

const (
	// maxValueLen bounds the work done on one header value; real credentials are
	// a few hundred bytes.
	maxValueLen = 8192
	// maxParams bounds the number of parameters, known or not.
	maxParams = 32
)

// ParseAuthorization parses a credentials header value such as
//
//	Digest username="alice", realm="edgewise", nonce="...", uri="sip:example.com",
//	  response="...", algorithm=SHA-256, qop=auth, nc=00000001, cnonce="..."
//
// The scheme is matched case-insensitively. Parameter values may be tokens or
// quoted strings (with backslash escapes; commas inside quotes are data). Empty
// list elements are skipped (RFC 7230 §7). A parameter given twice, an
// unterminated quoted string, a control character or more than maxParams
// parameters make the value malformed. ParseAuthorization checks syntax only;
// which parameters are required is decided by Verify.
func ParseAuthorization(v string) (Authorization, error) {
	var a Authorization
	if len(v) > maxValueLen {
		return a, fmt.Errorf("%w: value longer than %d bytes", ErrMalformed, maxValueLen)
	}
	s := trimLWS(v)
	i := 0
	for i < len(s) && IsTokenChar(s[i]) {
		i++
	}
	if i == 0 || !strings.EqualFold(s[:i], "Digest") {
		return a, ErrNotDigest
	}
	if i < len(s) && !isLWS(s[i]) {
		return a, ErrNotDigest
	}
	s = s[i:]

	var seen uint16
	for n := 0; ; {
		s = trimLeftLWS(s)
		if s == "" {
			break
		}
		if s[0] == ',' {
			s = s[1:]
			continue
		}
		n++
		if n > maxParams {
			return a, fmt.Errorf("%w: more than %d parameters", ErrMalformed, maxParams)
		}

		j := 0
		for j < len(s) && IsTokenChar(s[j]) {
			j++
		}
		if j == 0 {
			return a, fmt.Errorf("%w: expected parameter name at %q", ErrMalformed, clip(s))
		}
		name := s[:j]
		s = trimLeftLWS(s[j:])
		if s == "" || s[0] != '=' {
			return a, fmt.Errorf("%w: parameter %q has no value", ErrMalformed, name)
		}
		s = trimLeftLWS(s[1:])

		var val string
		var err error
		if s != "" && s[0] == '"' {
			val, s, err = readQuoted(s)
			if err != nil {
				return a, err
			}
		} else {
			// Be liberal with unquoted values: some phones send uri or
			// nonce unquoted. Anything up to the next separator is the value.
			j = 0
			for j < len(s) && s[j] != ',' && s[j] != '"' && !isLWS(s[j]) && !isCTL(s[j]) {
				j++
			}
			if j == 0 {
				return a, fmt.Errorf("%w: parameter %q has an empty or invalid value", ErrMalformed, name)
			}
			val, s = s[:j], s[j:]
		}
		s = trimLeftLWS(s)
		if s != "" && s[0] != ',' {
			return a, fmt.Errorf("%w: expected ',' after parameter %q", ErrMalformed, name)
		}

		field, bit := a.field(name)
		if field == nil {
			continue
		}
		if seen&bit != 0 {
			return a, fmt.Errorf("%w: parameter %q given twice", ErrMalformed, name)
		}
		seen |= bit
		*field = val
	}
	return a, nil
}

// field returns where a known parameter is stored and its bit in the seen set.
func (a *Authorization) field(name string) (*string, uint16) {
	// Lengths first keeps the common case free of case-folding work.
	switch len(name) {
	case 2:
		if strings.EqualFold(name, "nc") {
			return &a.NC, 1 << 0
		}
	case 3:
		switch {
		case strings.EqualFold(name, "uri"):
			return &a.URI, 1 << 1
		case strings.EqualFold(name, "qop"):
			return &a.QOP, 1 << 2
		}
	case 5:
		switch {
		case strings.EqualFold(name, "realm"):
			return &a.Realm, 1 << 3
		case strings.EqualFold(name, "nonce"):
			return &a.Nonce, 1 << 4
		}
	case 6:
		switch {
		case strings.EqualFold(name, "cnonce"):
			return &a.CNonce, 1 << 5
		case strings.EqualFold(name, "opaque"):
			return &a.Opaque, 1 << 6
		}
	case 8:
		switch {
		case strings.EqualFold(name, "username"):
			return &a.Username, 1 << 7
		case strings.EqualFold(name, "response"):
			return &a.Response, 1 << 8
		case strings.EqualFold(name, "userhash"):
			return &a.UserHash, 1 << 9
		}
	case 9:
		if strings.EqualFold(name, "algorithm") {
			return &a.Algorithm, 1 << 10
		}
	}
	return nil, 0
}

// readQuoted reads a quoted-string (RFC 3261 §25.1) at the start of s and returns
// its unescaped content and the rest of s.
func readQuoted(s string) (val, rest string, err error) {
	escapes := false
	for i := 1; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\\':
			if i+1 >= len(s) {
				return "", "", fmt.Errorf("%w: unterminated quoted string", ErrMalformed)
			}
			if isCTL(s[i+1]) {
				return "", "", fmt.Errorf("%w: control character in quoted string", ErrMalformed)
			}
			escapes = true
			i++
		case c == '"':
			if !escapes {
				return s[1:i], s[i+1:], nil
			}
			return unescape(s[1:i]), s[i+1:], nil
		case isCTL(c) && c != '\t':
			return "", "", fmt.Errorf("%w: control character in quoted string", ErrMalformed)
		}
	}
	return "", "", fmt.Errorf("%w: unterminated quoted string", ErrMalformed)
}

func unescape(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+1 < len(s) {
			i++
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isLWS(c byte) bool { return c == ' ' || c == '\t' || c == '\r' || c == '\n' }

func isCTL(c byte) bool { return c < 0x20 || c == 0x7f }

func trimLeftLWS(s string) string {
	for s != "" && isLWS(s[0]) {
		s = s[1:]
	}
	return s
}

func trimLWS(s string) string {
	s = trimLeftLWS(s)
	for s != "" && isLWS(s[len(s)-1]) {
		s = s[:len(s)-1]
	}
	return s
}

// IsTokenChar reports whether c may appear in an RFC 3261 token (§25.1):
// the grammar of methods and of digest parameter names alike.
func IsTokenChar(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	switch c {
	case '-', '.', '!', '%', '*', '_', '+', '`', '\'', '~':
		return true
	}
	return false
}

func clip(s string) string {
	if len(s) > 24 {
		return s[:24] + "..."
	}
	return s
}
