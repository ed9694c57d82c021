package integration

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/edgewise-sip/edgewise/test/kit"
)

// TestSecureMediaCallsBothWays: edgesim as a SIP Domain with Secure Media
// (TLS and SDES-SRTP required). edgewise, with twilio.media_encryption:
// srtp, carries a call each way between a plain-RTP SIPp phone and edgesim:
// edgesim decrypts what edgewise sends under the key edgewise offered or
// answered (its packet counts), echoes it under its own key, and the phone
// hears the echo in the clear; nothing fails authentication. A second
// edgewise with media_encryption: none gets Twilio's 488 for its plain
// offer, passed on to the phone with the reason.
func TestSecureMediaCallsBothWays(t *testing.T) {
	s := tlsTwStartSimWith(t, "calls: {secure_media: true}\n")
	srtp := func(ip, dir string) string {
		cfg := tlsTwConfig(t, s, s.caFile)(ip, dir)
		return strings.Replace(cfg, "  transport: tls\n", "  transport: tls\n  media_encryption: srtp\n", 1)
	}
	d := startDaemon(t, srtp)
	phoneIP := tlsTwRegisterPhone(t, d)
	tlsTwRegisteredAt(t, s, d, 15*time.Second)

	// Phone → Twilio.
	res := sippAsync(t, "call_rtp.xml", nextIP(t), d.ip+":5060", dialRow("alice", "15550001111"))
	checkRTPFlow(t, d)
	checkSRTPLegs(t, d)
	waitSipp(t, res, "outbound call with SRTP toward Twilio")
	kit.WaitFor(t, 10*time.Second, "edgesim to see the outbound call ended", func() bool {
		cs := tlsTwCalls(t, s)
		return len(cs) == 1 && cs[0].State == "ended"
	})
	out := tlsTwCalls(t, s)[0]
	if out.Transport != "TLS" || out.Media == nil || !out.Media.SRTP || out.Media.PacketsReceived < 20 ||
		out.Media.PacketsEchoed != out.Media.PacketsReceived || out.Media.SRTPFailed != 0 {
		t.Fatalf("outbound call at edgesim: %+v media %+v, want TLS, SRTP decrypted and echoed, no failures", out, out.Media)
	}
	t.Logf("outbound: edgesim decrypted %d SRTP packets from edgewise and echoed them", out.Media.PacketsReceived)
	noCallsLeft(t, d)

	// Twilio → phone: edgesim offers SRTP over TLS, the phone answers plain.
	phone := sippUAS(t, "uas_answer_rtp.xml", phoneIP)
	placed := s.placeCall(t, "alice")
	var in tlsTwCall
	kit.WaitFor(t, 15*time.Second, "the inbound call answered, SRTP decrypted and echoed", func() bool {
		for _, c := range tlsTwCalls(t, s) {
			if c.ID == placed.ID {
				in = c
			}
		}
		return in.State == "answered" && in.Media != nil && in.Media.PacketsReceived > 20 && in.Media.PacketsEchoed > 20
	})
	if !in.Media.SRTP || in.Media.SRTPFailed != 0 || in.Transport != "TLS" {
		t.Fatalf("inbound call at edgesim %+v media %+v", in, in.Media)
	}
	checkRTPFlow(t, d)
	checkSRTPLegs(t, d)
	// The keys travel in SDP only: never in the log (at debug level) or
	// the status document.
	resp, err := http.Get(d.adminURL + "/v1/status")
	if err != nil {
		t.Fatal(err)
	}
	doc, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if strings.Contains(string(doc), "inline:") || strings.Contains(d.out.String(), "inline:") {
		t.Error("an SRTP key (a=crypto inline:) appears in /v1/status or edgewise's log")
	}
	s.hangUp(t, placed.ID)
	waitSipp(t, phone, "the phone that answered the inbound call")
	noCallsLeft(t, d)

	// A gateway that offers plain RTP is refused, and the phone learns why.
	plain := startDaemon(t, tlsTwConfig(t, s, s.caFile))
	tlsTwRegisterPhone(t, plain)
	if code, out := sippRun(t, "call_refused_488.xml", nextIP(t), plain.ip+":5060", dialRow("bob", "15550002222"), 1); code != 0 {
		t.Fatalf("plain offer to a Secure Media domain: sipp exited %d, want the 488 with its Warning:\n%s", code, out)
	}
}

// checkSRTPLegs: the call's Twilio leg speaks SRTP (the suite edgewise
// offered), the phone's leg plain RTP, and no packet failed on either.
func checkSRTPLegs(t *testing.T, d *daemon) {
	t.Helper()
	cs := d.calls()
	if len(cs) != 1 || cs[0].Media == nil {
		t.Fatalf("calls %+v", cs)
	}
	for _, l := range cs[0].Media.Legs {
		want := ""
		if l.Side.String() == "B" {
			want = "AES_CM_128_HMAC_SHA1_80"
		}
		if l.SRTP != want || l.RX.Dropped["srtp"] != 0 {
			t.Errorf("leg %s: srtp %q, want %q; dropped %v", l.Side, l.SRTP, want, l.RX.Dropped)
		}
	}
}
