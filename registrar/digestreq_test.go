package registrar

import (
	"strings"
	"testing"

	"github.com/emiago/sipgo/sip"
)

func TestSameURI(t *testing.T) {
	tests := []struct {
		a, b string
		want bool
	}{
		{"sip:alice@edgewise.test", "sip:alice@edgewise.test", true},
		{"sip:alice@edgewise.test", "SIP:alice@EDGEWISE.test", true},
		{"sip:+15551234@edgewise.test;user=phone", "sip:+15551234@edgewise.test;User=Phone", true},
		{"sip:alice@edgewise.test;transport=tcp", "sip:alice@edgewise.test;transport=TCP", true},
		{"sip:alice@edgewise.test;foo=1", "sip:alice@edgewise.test", true}, // other params only when both have them
		{"sip:alice@edgewise.test;foo=1", "sip:alice@edgewise.test;foo=2", false},
		{"sip:+15551234@edgewise.test", "sip:+19005550100@edgewise.test", false},
		{"sip:alice@edgewise.test", "sip:Alice@edgewise.test", false}, // user is case-sensitive
		{"sip:alice@edgewise.test", "sip:alice@evil.test", false},
		{"sip:alice@edgewise.test", "sip:alice@edgewise.test:5060", false}, // explicit default port
		{"sip:alice@edgewise.test:5060", "sip:alice@edgewise.test:5080", false},
		{"sip:alice@edgewise.test", "sip:alice@edgewise.test;transport=udp", false},
		{"sip:alice@edgewise.test", "sip:alice@edgewise.test;user=phone", false},
		{"sip:alice@edgewise.test", "sips:alice@edgewise.test", false},
		{"sip:alice@edgewise.test?subject=x", "sip:alice@edgewise.test", false},
		{"sip:alice@edgewise.test", "sip:alice@edgewise.test?subject=x", false},
		{"sip:alice@edgewise.test", "not a uri at all <>", false},
		{"sip:alice@edgewise.test", "", false},
	}
	for _, tt := range tests {
		var u sip.Uri
		if err := sip.ParseUri(tt.a, &u); err != nil {
			t.Fatalf("parse %q: %v", tt.a, err)
		}
		if got := SameURI(&u, tt.b); got != tt.want {
			t.Errorf("SameURI(%q, %q) = %v, want %v", tt.a, tt.b, got, tt.want)
		}
	}
}

// TestFingerprintCoversTheWholeRequest: any change an attacker could make to
// a captured request — destination, tags, Via, any header, the body — gives
// another fingerprint, so a used nonce-count cannot be spent again by it.
func TestFingerprintCoversTheWholeRequest(t *testing.T) {
	const raw = "INVITE sip:+15551234@edgewise.test SIP/2.0\r\n" +
		"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds\r\n" +
		"Max-Forwards: 70\r\n" +
		"From: <sip:alice@edgewise.test>;tag=1928301774\r\n" +
		"To: <sip:+15551234@edgewise.test>\r\n" +
		"Call-ID: a84b4c76e66710@192.0.2.10\r\n" +
		"CSeq: 2 INVITE\r\n" +
		"Contact: <sip:alice@192.0.2.10:5060>\r\n" +
		"Content-Type: application/sdp\r\n" +
		"Content-Length: 4\r\n\r\nv=0\n"
	parse := func(s string) *sip.Request {
		t.Helper()
		m, err := sip.NewParser().ParseSIP([]byte(s))
		if err != nil {
			t.Fatalf("parse: %v\n%s", err, s)
		}
		return m.(*sip.Request)
	}
	base := Fingerprint(parse(raw))
	if base != Fingerprint(parse(raw)) {
		t.Fatal("the same request gave two fingerprints")
	}
	for _, change := range []struct{ old, new string }{
		{"INVITE sip:+15551234@", "INVITE sip:+19005550100@"},
		{"tag=1928301774", "tag=1928301775"},
		{"192.0.2.10:5060;branch", "203.0.113.9:5060;branch"},
		{"z9hG4bK776asdhds", "z9hG4bK776asdhdt"},
		{"Max-Forwards: 70", "Max-Forwards: 69"},
		{"Call-ID: a84b", "Call-ID: a85b"},
		{"v=0\n", "v=1\n"},
		{"Content-Type: application/sdp\r\n", "Content-Type: application/sdp\r\nX-Extra: 1\r\n"},
	} {
		mod := strings.Replace(raw, change.old, change.new, 1)
		if mod == raw {
			t.Fatalf("%q not in the request", change.old)
		}
		if Fingerprint(parse(mod)) == base {
			t.Errorf("changing %q to %q kept the fingerprint", change.old, change.new)
		}
	}
}
