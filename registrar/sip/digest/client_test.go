package digest

import (
	"net/netip"
	"strings"
	"testing"
)

// TestAnswererAgainstVerify: the client side answers the server side's
// challenge in a way Verify accepts, with a rising nonce-count, and a
// proxy challenge is answered in Proxy-Authorization.
func TestAnswererAgainstVerify(t *testing.T) {
	a := newTestAuth(t, Config{})
	lookup := users(map[string]Secret{"alice": {Password: "wonderland"}})
	src := netip.MustParseAddr("192.0.2.10")
	var ans Answerer
	if _, _, ok, _ := ans.Answer("REGISTER", "sip:edgewise", "alice", "wonderland"); ok {
		t.Fatal("answered without a challenge")
	}
	if err := ans.Learn(407, a.Challenges(nil, src, false, t0)); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 3; i++ {
		name, value, ok, err := ans.Answer("INVITE", "sip:+15551234@edgewise", "alice", "wonderland")
		if err != nil || !ok || name != "Proxy-Authorization" {
			t.Fatalf("answer %d: %s %v %v", i, name, ok, err)
		}
		cred, err := ParseAuthorization(value)
		if err != nil {
			t.Fatal(err)
		}
		req := Request{Method: "INVITE", URIMatches: func(u string) bool { return u == "sip:+15551234@edgewise" }, Source: src, Fingerprint: uint64(i)}
		if got := a.Verify(req, &cred, lookup, t0); got.Outcome != OK {
			t.Fatalf("answer %d refused: %+v", i, got)
		}
	}
	if err := ans.Learn(401, []string{`Basic realm="x"`}); err == nil || !strings.Contains(err.Error(), "bad challenge") {
		t.Fatalf("a Basic challenge: %v", err)
	}
	if err := ans.Learn(401, nil); err == nil {
		t.Fatal("no challenge accepted")
	}
}
