package sdp

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Crypto is one a=crypto line (RFC 4568 §9.1): an SDES master key and salt
// for SRTP, sent in the clear inside SIP, which is why SDES is only as safe
// as the signalling (TLS) that carries it.
type Crypto struct {
	Tag   int    // 1..999999999; an answer repeats the tag of the offer's line it accepts
	Suite string // e.g. AES_CM_128_HMAC_SHA1_80
	Key   []byte // master key followed by master salt
}

// ErrCrypto wraps every failure to read an a=crypto line.
var ErrCrypto = errors.New("sdp: unusable a=crypto")

// String names the line without its key, so a Crypto can be logged.
func (c Crypto) String() string { return fmt.Sprintf("crypto:%d %s", c.Tag, c.Suite) }

// GoString keeps %#v from printing the key either.
func (c Crypto) GoString() string { return "sdp.Crypto{" + c.String() + "}" }

// Equal reports whether c and o carry the same tag, suite and key.
func (c Crypto) Equal(o Crypto) bool {
	return c.Tag == o.Tag && c.Suite == o.Suite && string(c.Key) == string(o.Key)
}

// attrValue is the a=crypto value: tag, suite and one inline key.
func (c Crypto) attrValue() string {
	return strconv.Itoa(c.Tag) + " " + c.Suite + " inline:" + base64.StdEncoding.EncodeToString(c.Key)
}

// ParseCrypto reads the value of an a=crypto attribute. It accepts one
// inline key with an optional lifetime, which it ignores: a call never
// comes near 2^31 packets. It refuses what the relay cannot honour rather
// than ignore it: several keys or an MKI (key rotation it does not do) and
// any session parameter (UNENCRYPTED_SRTP, KDR, ... change the keying).
// Whether the suite is known is the caller's business. Errors wrap
// ErrCrypto.
func ParseCrypto(v string) (Crypto, error) {
	fields := strings.Fields(v)
	if len(fields) < 3 {
		return Crypto{}, fmt.Errorf("%w: want \"<tag> <suite> inline:<key>\"", ErrCrypto)
	}
	if len(fields) > 3 {
		return Crypto{}, fmt.Errorf("%w: session parameter %q is not supported", ErrCrypto, fields[3])
	}
	tag, err := strconv.Atoi(fields[0])
	if err != nil || tag < 0 || len(fields[0]) > 9 {
		return Crypto{}, fmt.Errorf("%w: tag %q is not 1 to 9 digits", ErrCrypto, fields[0])
	}
	suite := fields[1]
	for i := 0; i < len(suite); i++ {
		if c := suite[i]; !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_') {
			return Crypto{}, fmt.Errorf("%w: suite %q is not a name", ErrCrypto, suite)
		}
	}
	params := fields[2]
	if strings.Contains(params, ";") {
		return Crypto{}, fmt.Errorf("%w: more than one key is not supported", ErrCrypto)
	}
	info, ok := strings.CutPrefix(params, "inline:")
	if !ok {
		return Crypto{}, fmt.Errorf("%w: key method %q is not inline", ErrCrypto, strings.SplitN(params, ":", 2)[0])
	}
	parts := strings.Split(info, "|")
	if len(parts) > 3 {
		return Crypto{}, fmt.Errorf("%w: key has too many |-fields", ErrCrypto)
	}
	for _, p := range parts[1:] {
		if strings.Contains(p, ":") {
			return Crypto{}, fmt.Errorf("%w: MKI %q is not supported", ErrCrypto, p)
		}
		if !validLifetime(p) {
			return Crypto{}, fmt.Errorf("%w: lifetime %q is not a number or 2^n", ErrCrypto, p)
		}
	}
	key, err := decodeKey(parts[0])
	if err != nil {
		return Crypto{}, fmt.Errorf("%w: key is not base64", ErrCrypto)
	}
	return Crypto{Tag: tag, Suite: suite, Key: key}, nil
}

// decodeKey takes base64 with or without padding: RFC 4568 pads, and some
// implementations drop it.
func decodeKey(s string) ([]byte, error) {
	if k, err := base64.StdEncoding.DecodeString(s); err == nil {
		return k, nil
	}
	return base64.RawStdEncoding.DecodeString(s)
}

func validLifetime(s string) bool {
	s = strings.TrimPrefix(s, "2^")
	if s == "" || len(s) > 20 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// IsSecure reports whether an m= line's protocol is SRTP (RTP/SAVP or
// RTP/SAVPF).
func IsSecure(proto string) bool { return proto == "RTP/SAVP" || proto == "RTP/SAVPF" }

// secureProto maps an RTP profile to its SRTP or plain counterpart,
// keeping AVPF feedback (RFC 5124) either way.
func secureProto(proto string, secure bool) string {
	feedback := strings.HasSuffix(proto, "F")
	switch {
	case secure && feedback:
		return "RTP/SAVPF"
	case secure:
		return "RTP/SAVP"
	case feedback:
		return "RTP/AVPF"
	default:
		return "RTP/AVP"
	}
}
