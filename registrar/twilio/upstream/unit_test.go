package upstream

import (
	"context"
	"encoding/json"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"

	"github.com/edgewise-sip/edgewise/registrar/twilio/edge"
)

func response(t *testing.T, code int, headers ...sip.Header) *sip.Response {
	t.Helper()
	req := sip.NewRequest(sip.REGISTER, sip.Uri{Host: "example.sip.ashburn.twilio.com"})
	res := sip.NewResponseFromRequest(req, code, "", nil)
	for _, h := range headers {
		res.AppendHeader(h)
	}
	return res
}

func TestGrantedExpiry(t *testing.T) {
	ours := sip.Uri{Scheme: "sip", User: "alice~ashburn", Host: "203.0.113.5", Port: 5060}
	other := sip.Uri{Scheme: "sip", User: "alice~umatilla", Host: "203.0.113.5", Port: 5060}
	contact := func(u sip.Uri, exp string) sip.Header {
		h := &sip.ContactHeader{Address: u}
		h.Params.Add("expires", exp)
		return h
	}
	exp := sip.ExpiresHeader(900)
	for _, tc := range []struct {
		name string
		res  *sip.Response
		want time.Duration
	}{
		{"our contact's parameter", response(t, 200, contact(other, "100"), contact(ours, "1800")), 1800 * time.Second},
		{"Expires header", response(t, 200, contact(other, "100"), &exp), 900 * time.Second},
		{"what was asked", response(t, 200), 600 * time.Second},
		{"a bad parameter", response(t, 200, contact(ours, "soon")), 600 * time.Second},
	} {
		if got := grantedExpiry(tc.res, ours, 600); got != tc.want {
			t.Errorf("%s: %s, want %s", tc.name, got, tc.want)
		}
	}
}

func TestRateLimitedAndMinExpires(t *testing.T) {
	if !rateLimited(response(t, 503, sip.NewHeader("Warning", `399 twilio "32008 rate limit"`))) {
		t.Error("503 with 32008 is the rate limit")
	}
	if rateLimited(response(t, 503)) || rateLimited(response(t, 500, sip.NewHeader("Warning", "32008"))) {
		t.Error("a plain 503 or another code is not the rate limit")
	}
	if n := minExpires(response(t, 423, sip.NewHeader("Min-Expires", " 600 "))); n != 600 {
		t.Errorf("Min-Expires %d", n)
	}
	if n := minExpires(response(t, 423)); n != 0 {
		t.Errorf("no Min-Expires: %d", n)
	}
}

func TestChallengeOf(t *testing.T) {
	good := response(t, 401, sip.NewHeader("WWW-Authenticate", `Digest realm="sip.twilio.com", nonce="abc", algorithm=md5, qop="auth"`))
	if c, err := challengeOf(good); err != nil || c.Nonce() != "abc" {
		t.Errorf("challengeOf = %+v, %v", c, err)
	}
	proxy := response(t, 407, sip.NewHeader("Proxy-Authenticate", `Digest realm="r", nonce="n"`))
	if _, err := challengeOf(proxy); err != nil {
		t.Errorf("407: %v", err)
	}
	for _, res := range []*sip.Response{
		response(t, 401),
		response(t, 401, sip.NewHeader("WWW-Authenticate", `Basic realm="x"`)),
		response(t, 401, sip.NewHeader("WWW-Authenticate", `Digest realm="r", nonce="n", algorithm=SHA-1024`)),
	} {
		if _, err := challengeOf(res); err == nil {
			t.Errorf("accepted %v", res.GetHeader("WWW-Authenticate"))
		}
	}
}

func TestClientSenderTLS(t *testing.T) {
	tlsTarget := edge.Target{Edge: "ashburn", FQDN: "example.sip.ashburn.twilio.com", IP: netip.MustParseAddr("127.0.0.1"), Port: 5061, Transport: "tls"}
	req := sip.NewRequest(sip.REGISTER, tlsTarget.URI(""))
	if _, err := (ClientSender{}).Send(context.Background(), tlsTarget, req); err == nil || !strings.Contains(err.Error(), "SNI") {
		t.Errorf("tls without a client pool: %v", err)
	}
	var asked string
	s := ClientSender{TLS: func(fqdn string) (*sipgo.Client, error) {
		asked = fqdn
		return nil, errors.New("no certificate")
	}}
	if _, err := s.Send(context.Background(), tlsTarget, req); err == nil || asked != tlsTarget.FQDN {
		t.Errorf("tls client asked for %q: %v", asked, err)
	}
	udp := tlsTarget
	udp.Transport = "udp"
	if _, err := (ClientSender{}).Send(context.Background(), udp, req); err == nil {
		t.Error("no client, no error")
	}
}

// The /v1/status shape per user: {edge, ip, state, expires_at, last_error,
// failing_since}, times omitted while zero.
func TestStatusJSON(t *testing.T) {
	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	b, err := json.Marshal([]Status{
		{User: "alice", AOR: "tw_alice", Edge: "ashburn", IP: "54.172.60.1", State: StateRegistered, ExpiresAt: at},
		{User: "bob", State: StateFailing, LastError: "403 Forbidden", FailingSince: at},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := `[{"user":"alice","aor":"tw_alice","edge":"ashburn","ip":"54.172.60.1","state":"registered","expires_at":"2026-03-01T12:00:00Z","last_error":""},` +
		`{"user":"bob","edge":"","ip":"","state":"failing","last_error":"403 Forbidden","failing_since":"2026-03-01T12:00:00Z"}]`
	if string(b) != want {
		t.Errorf("got  %s\nwant %s", b, want)
	}
}
