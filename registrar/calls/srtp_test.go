package calls

import (
	"strings"
	"testing"

	"github.com/emiago/sipgo/sip"

	"github.com/edgewise-sip/edgewise/media/sdp"
)

func withTwilioSRTP(c *envConfig) { c.tune = func(s *Settings) { s.TwilioSRTP = true } }

// TestTwilioSRTPOutboundOffer: with Secure Media, the INVITE to Twilio
// offers RTP/SAVP with edgewise's own key, while the phone offered plain
// RTP; Twilio's plain answer is refused (the phone gets 488, Twilio a BYE).
func TestTwilioSRTPOutboundOffer(t *testing.T) {
	e := newEnv(t, withTwilioSRTP)
	tw := newTwilioEdge(e, 2, "answer")
	e.edges.setPlan(twilioTarget("ashburn", tw.addr))
	phone := newPeer(e, "phone", 3)
	prtp := newRTP(e, 3, false)

	_, err := e.dialOut(testCtx(t), phone, "+15551230000", offer(prtp.addr, "sendrecv"), nil)
	if code := statusCode(err); code != 488 {
		t.Fatalf("got %v (code %d), want 488 for Twilio's plain answer", err, code)
	}
	inv := tw.requests(sip.INVITE)
	if len(inv) == 0 {
		t.Fatal("no INVITE reached Twilio")
	}
	info, err := sdp.Parse(inv[len(inv)-1].Body())
	if err != nil {
		t.Fatal(err)
	}
	m, _ := info.Audio()
	if m.Proto != "RTP/SAVP" || len(m.Crypto) != 1 || m.Crypto[0].Suite != "AES_CM_128_HMAC_SHA1_80" || len(m.Crypto[0].Key) != 30 {
		t.Fatalf("offer to Twilio: %s %v\n%s", m.Proto, m.Crypto, inv[len(inv)-1].Body())
	}
	tw.waitRequest(sip.BYE, 1)
}

// TestTwilioSRTPInboundPlainRefused: with Secure Media, a call from Twilio
// offering plain RTP is refused with 488 and a Warning that says why,
// before any phone rings.
func TestTwilioSRTPInboundPlainRefused(t *testing.T) {
	e := newEnv(t, withTwilioSRTP)
	tc := newTwilioCaller(e, 2)
	ph := newPhone(e, 3, "answer", nil)
	e.binds.set("alice", e.bindingFor("alice", ph.peer))
	var warning string
	_, err := tc.call(testCtx(t), e, "alice", "", func(res *sip.Response) error {
		if h := res.GetHeader("Warning"); h != nil {
			warning = h.Value()
		}
		return nil
	})
	if code := statusCode(err); code != 488 {
		t.Fatalf("got %v (code %d), want 488", err, code)
	}
	if !strings.Contains(warning, "plain RTP where SRTP is required") {
		t.Errorf("Warning = %q", warning)
	}
	if n := len(ph.requests(sip.INVITE)); n != 0 {
		t.Errorf("the phone got %d INVITEs", n)
	}
}
