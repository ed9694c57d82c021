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

// TestTwilioSRTPFallbackIsPlain: with Secure Media toward Twilio, a call
// that finds every Twilio address silent goes to the fallback target with
// the caller's offer carried afresh, as plain RTP: SRTP is Twilio's, not
// the target's.
func TestTwilioSRTPFallbackIsPlain(t *testing.T) {
	e := newEnv(t, withTwilioSRTP)
	hole, tried := blackHole(e, 3) // Twilio, silent at its one address
	e.edges.setPlan(twilioTarget("ashburn", hole))
	gw := newPhone(e, 7, "answer", nil)
	e.setFallback(fallbackTarget(gw.addr, 1, 1))
	alice := newPeer(e, "alice", 5)
	media := newRTP(e, 5, false)
	ctx := testCtx(t)

	sess, err := e.dialOut(ctx, alice, "15550001111", offer(media.addr, "sendrecv"), nil)
	if err != nil {
		t.Fatalf("call falling back from a silent Twilio: %v", err)
	}
	if tried.Load() == 0 {
		t.Fatal("Twilio was never tried")
	}
	inv := gw.waitRequest(sip.INVITE, 1)
	info, err := sdp.Parse(inv.Body())
	if err != nil {
		t.Fatal(err)
	}
	if m, _ := info.Audio(); m.Proto != "RTP/AVP" || len(m.Crypto) != 0 {
		t.Fatalf("offer to the fallback target: %s with %d a=crypto\n%s", m.Proto, len(m.Crypto), inv.Body())
	}
	if err := sess.Bye(ctx); err != nil {
		t.Fatal(err)
	}
}
