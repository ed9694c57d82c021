package calls

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/pion/ice/v4"
	"github.com/pion/interceptor"
	"github.com/pion/rtp"
	pion "github.com/pion/webrtc/v4"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/edgewise-sip/edgewise/media/webrtc"
	"github.com/edgewise-sip/edgewise/test/kit"
)

// testBrowser is a pion PeerConnection playing a browser softphone on
// loopback: PCMU only, full ICE, DTLS-SRTP.
type testBrowser struct {
	pc    *pion.PeerConnection
	track *pion.TrackLocalStaticRTP
	got   atomic.Int64
	wg    sync.WaitGroup
}

func newTestBrowser(t *testing.T) *testBrowser {
	t.Helper()
	me := &pion.MediaEngine{}
	if err := me.RegisterCodec(pion.RTPCodecParameters{
		RTPCodecCapability: pion.RTPCodecCapability{MimeType: pion.MimeTypePCMU, ClockRate: 8000, Channels: 1},
		PayloadType:        0,
	}, pion.RTPCodecTypeAudio); err != nil {
		t.Fatal(err)
	}
	var se pion.SettingEngine
	se.SetIncludeLoopbackCandidate(true)
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	se.SetNetworkTypes([]pion.NetworkType{pion.NetworkTypeUDP4})
	se.SetInterfaceFilter(func(name string) bool { return name == "lo" })
	api := pion.NewAPI(pion.WithMediaEngine(me), pion.WithSettingEngine(se), pion.WithInterceptorRegistry(&interceptor.Registry{}))
	pc, err := api.NewPeerConnection(pion.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	track, err := pion.NewTrackLocalStaticRTP(pion.RTPCodecCapability{MimeType: pion.MimeTypePCMU, ClockRate: 8000}, "audio", "browser")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pc.AddTrack(track); err != nil {
		t.Fatal(err)
	}
	b := &testBrowser{pc: pc, track: track}
	pc.OnTrack(func(tr *pion.TrackRemote, _ *pion.RTPReceiver) {
		b.wg.Go(func() {
			for {
				if _, _, err := tr.ReadRTP(); err != nil {
					return
				}
				b.got.Add(1)
			}
		})
	})
	t.Cleanup(func() {
		pc.Close()
		b.wg.Wait()
	})
	return b
}

// offer is the browser's complete offer (candidates gathered).
func (b *testBrowser) offer(t *testing.T) []byte {
	t.Helper()
	o, err := b.pc.CreateOffer(nil)
	if err != nil {
		t.Fatal(err)
	}
	done := pion.GatheringCompletePromise(b.pc)
	if err := b.pc.SetLocalDescription(o); err != nil {
		t.Fatal(err)
	}
	<-done
	return []byte(b.pc.LocalDescription().SDP)
}

// speak sends PCMU packets every 20 ms until the browser heard want
// packets back or ctx ends.
func (b *testBrowser) speak(ctx context.Context, want int64) {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	p := &rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 0}, Payload: make([]byte, 160)}
	for b.got.Load() < want {
		p.SequenceNumber++
		p.Timestamp += 160
		_ = b.track.WriteRTP(p)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// dialOutTCP calls out as alice over TCP, as a browser does over its
// WebSocket: WebRTC descriptions do not fit a UDP datagram.
func (e *env) dialOutTCP(ctx context.Context, p *peer, dialled string, body []byte) (*sipgo.DialogClientSession, error) {
	ruri := sip.Uri{Scheme: "sip", User: dialled, Host: e.ip.String(), Port: int(e.tcp().Port())}
	req := p.newInvite(ruri, "alice", e.tcp(), body)
	req.SetTransport("TCP")
	req.Laddr = sip.Addr{}
	ua := p.dialogUA("alice")
	ua.ContactHDR.Address.UriParams = sip.NewParams()
	ua.ContactHDR.Address.UriParams.Add("transport", "tcp")
	sess, err := ua.WriteInvite(ctx, req)
	if err != nil {
		return nil, err
	}
	if err := sess.WaitAnswer(ctx, sipgoAnswer("alice", alicePass)); err != nil {
		return sess, err
	}
	return sess, sess.Ack(ctx)
}

// TestBrowserCallsOut: a browser's WebRTC offer (ICE, DTLS-SRTP) reaches
// Twilio as plain RTP/AVP on edgewise's relay; Twilio's echo comes back to
// the browser over SRTP; the call's status shows both sides counting.
func TestBrowserCallsOut(t *testing.T) {
	e := newEnv(t, func(c *envConfig) { c.browsers = true })
	tw := newTwilioEdge(e, 2, "answer")
	e.edges.setPlan(twilioTarget("ashburn", tw.addr))
	phone := newPeer(e, "browser-signalling", 3)
	br := newTestBrowser(t)
	ctx := testCtx(t)

	sess, err := e.dialOutTCP(ctx, phone, "+15551230000", br.offer(t))
	if err != nil {
		t.Fatalf("call failed: %v", err)
	}
	answer := string(sess.InviteResponse.Body())
	for _, want := range []string{"UDP/TLS/RTP/SAVPF", "a=fingerprint:", "a=ice-lite", "a=rtcp-mux"} {
		if !strings.Contains(answer, want) {
			t.Errorf("answer to the browser lacks %q:\n%s", want, answer)
		}
	}
	inv := tw.waitRequest(sip.INVITE, 1)
	if plain := string(inv.Body()); !strings.Contains(plain, "RTP/AVP") || strings.Contains(plain, "fingerprint") {
		t.Errorf("Twilio's offer is not plain RTP/AVP:\n%s", plain)
	}
	if err := br.pc.SetRemoteDescription(pion.SessionDescription{Type: pion.SDPTypeAnswer, SDP: answer}); err != nil {
		t.Fatal(err)
	}
	br.speak(ctx, 25)
	if br.got.Load() < 25 {
		t.Fatalf("the browser heard %d packets of Twilio's echo", br.got.Load())
	}
	st := e.onlyCall()
	if st.Browser == nil || st.Browser.SRTP.Rx.Packets == 0 || st.Browser.SRTP.Tx.Packets == 0 || st.Browser.DTLS != "connected" {
		t.Errorf("browser status = %+v", st.Browser)
	}
	if err := sess.Bye(ctx); err != nil {
		t.Fatal(err)
	}
	tw.waitRequest(sip.BYE, 1)
	kit.WaitFor(t, 5*time.Second, "the bridge to close", func() bool { return len(e.hub.Bridges()) == 0 })
}

// TestBrowserOfferWithoutWebRTC: no hub configured → 488 with a warning.
func TestBrowserOfferWithoutWebRTC(t *testing.T) {
	e, _, phone, _ := outboundSetup(t, "answer")
	br := newTestBrowser(t)
	_, err := e.dialOutTCP(testCtx(t), phone, "100", br.offer(t))
	if code := statusCode(err); code != 488 {
		t.Fatalf("got %v (code %d), want 488", err, code)
	}
}

// TestBrowserMediaFailureEndsTheCall: when the browser's media never comes
// up — no ICE at all, or a DTLS certificate that does not match the
// offer's fingerprint — the call ends on both legs with the reason, rather
// than staying up silent.
func TestBrowserMediaFailureEndsTheCall(t *testing.T) {
	for _, tc := range []struct {
		name   string
		tamper func(offer string) string // what the browser's offer claims
		apply  bool                      // whether the browser applies the answer (starts ICE)
		reason string
	}{
		{"ice timeout", nil, false, "ice failed"},
		{"dtls fingerprint mismatch", flipFingerprint, true, "dtls failed: fingerprint mismatch"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, func(c *envConfig) {
				c.browsers = true
				c.hub = func(s *webrtc.Settings) { s.ConnectTimeout = 1500 * time.Millisecond }
			})
			tw := newTwilioEdge(e, 2, "answer")
			e.edges.setPlan(twilioTarget("ashburn", tw.addr))
			phone := newPeer(e, "browser-signalling", 3)
			br := newTestBrowser(t)
			ctx := testCtx(t)
			offer := string(br.offer(t))
			if tc.tamper != nil {
				offer = tc.tamper(offer)
			}
			sess, err := e.dialOutTCP(ctx, phone, "+15551230000", []byte(offer))
			if err != nil {
				t.Fatalf("call failed: %v", err)
			}
			if tc.apply {
				if err := br.pc.SetRemoteDescription(pion.SessionDescription{Type: pion.SDPTypeAnswer, SDP: string(sess.InviteResponse.Body())}); err != nil {
					t.Fatal(err)
				}
			}
			bye := tw.waitRequest(sip.BYE, 1)
			if h := bye.GetHeader("Reason"); h == nil || !strings.Contains(h.Value(), tc.reason) {
				t.Errorf("Twilio's BYE Reason = %v, want %q", h, tc.reason)
			}
			phone.waitRequest(sip.BYE, 1)
			if got := testutil.ToFloat64(e.b.metrics.browserFailures); got != 1 {
				t.Errorf("browser_media_failures_total = %v", got)
			}
		})
	}
}

// flipFingerprint changes the last hex digit of the offer's DTLS
// fingerprint, so the browser's certificate no longer matches it.
func flipFingerprint(offer string) string {
	i := strings.Index(offer, "a=fingerprint:")
	end := i + strings.Index(offer[i:], "\r\n")
	last := offer[end-1]
	repl := byte('0')
	if last == '0' {
		repl = '1'
	}
	return offer[:end-1] + string(repl) + offer[end:]
}
