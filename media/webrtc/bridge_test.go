package webrtc

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/edgewise-sip/edgewise/media/sdp"
	"github.com/edgewise-sip/edgewise/test/kit"
)

var (
	pcmu     = sdp.Codec{PT: 0, Name: "PCMU", Rate: 8000}
	pcma     = sdp.Codec{PT: 8, Name: "PCMA", Rate: 8000}
	opus     = sdp.Codec{PT: 111, Name: "opus", Rate: 48000, Channels: 2, Fmtp: "minptime=10;useinbandfec=1"}
	event101 = sdp.Codec{PT: 101, Name: "telephone-event", Rate: 8000, Fmtp: "0-16"}
)

// TestOutbound: the browser calls out. Its offer becomes a plain RTP/AVP
// offer at the bridge's socket; the far end's answer (numbering
// telephone-event differently) becomes a WebRTC answer; audio and DTMF
// pass both ways with payload types renumbered, and the counters show it.
func TestOutbound(t *testing.T) {
	h := newTestHub(t, nil)
	br := newBrowser(t, chromeCodecs)
	f := newFar(t)
	b, plainOffer, web := connectOutbound(t, h, br, f, []sdp.Codec{pcmu, event101})

	if sdp.IsWebRTC(plainOffer) {
		t.Errorf("plain offer reads as WebRTC:\n%s", plainOffer)
	}
	if !sdp.IsWebRTC(web) {
		t.Errorf("answer to the browser does not read as WebRTC:\n%s", web)
	}
	contains(t, plainOffer, "RTP/AVP 111 0 8 126", "c=IN IP4 127.0.0.1",
		fmt.Sprintf("m=audio %d ", b.PlainAddr().Port()), "a=rtpmap:126 telephone-event/8000", "a=sendrecv")
	lacks(t, plainOffer, "ice-ufrag", "fingerprint", "candidate")
	contains(t, web, "a=ice-lite", "a=fingerprint:", "a=setup:passive", "a=rtcp-mux", "a=group:BUNDLE",
		"UDP/TLS/RTP/SAVPF 0 126", "a=candidate:", "a=sendrecv")
	lacks(t, web, "opus")

	flow(t, "browser → far PCMU", func(s uint16) bool { return br.send(0, s) }, func() uint64 { return f.got(0) }, 50)
	flow(t, "far → browser PCMU", func(s uint16) bool { return f.send(0, s) }, func() uint64 { return br.got(0) }, 50)
	// DTMF: the far end numbers telephone-event 101, the browser 126.
	flow(t, "browser → far DTMF", func(s uint16) bool { return br.send(126, s) }, func() uint64 { return f.got(101) }, 10)
	flow(t, "far → browser DTMF", func(s uint16) bool { return f.send(101, s) }, func() uint64 { return br.got(126) }, 10)
	// A codec nobody accepted (CN) is dropped, not sent under its number.
	f.send(13, 1)

	st := b.Stats()
	if st.SRTP.Rx.Packets < 60 || st.SRTP.Tx.Packets < 60 || st.RTP.Rx.Packets < 60 || st.RTP.Tx.Packets < 60 {
		t.Errorf("counters: %+v", st)
	}
	if st.ICE != "connected" || st.DTLS != "connected" || st.Remote == "" || len(st.Codecs) != 2 || st.Path != "bridge" {
		t.Errorf("status: %+v", st)
	}
	if got := br.ssrc.Load(); got == 0xfa5e {
		t.Errorf("browser got the far end's SSRC, not the announced one")
	}
	kit.WaitFor(t, 5e9, "CN dropped", func() bool { return b.Stats().Dropped["codec"] >= 1 })
	if b.Err() != nil {
		t.Errorf("bridge failed: %v", b.Err())
	}
}

// TestInbound: a call to the browser. The plain offer becomes a WebRTC
// offer (Opus only when the plain side offers it); the browser's answer
// becomes a plain answer; media and DTMF flow both ways.
func TestInbound(t *testing.T) {
	for _, tc := range []struct {
		name     string
		offer    []sdp.Codec
		wantOpus bool
	}{
		{"g711", []sdp.Codec{pcmu, pcma, event101}, false},
		{"opus offered", []sdp.Codec{opus, pcmu, event101}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newTestHub(t, nil)
			br := newBrowser(t, chromeCodecs)
			f := newFar(t)
			b, web, err := h.NewOffer(context.Background(), f.sdp(1, tc.offer, sdp.SendRecv))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = b.Close() })
			contains(t, web, "a=ice-lite", "a=setup:actpass", "a=fingerprint:", "a=candidate:", "telephone-event/8000")
			if got := hasOpus(web); got != tc.wantOpus {
				t.Errorf("opus in offer = %v, want %v:\n%s", got, tc.wantOpus, web)
			}
			plain, err := b.FromBrowser(br.answer(web, sdp.SendRecv))
			if err != nil {
				t.Fatal(err)
			}
			f.learn(plain)
			contains(t, plain, "RTP/AVP", "a=rtpmap:101 telephone-event/8000", "a=sendrecv")
			if sdp.IsWebRTC(plain) {
				t.Errorf("plain answer reads as WebRTC:\n%s", plain)
			}
			kit.WaitFor(t, 10e9, "dtls connected", func() bool { return b.Stats().DTLS == "connected" && br.connected() })

			speech := uint8(0)
			if tc.wantOpus {
				speech = 111
			}
			flow(t, "browser → far", func(s uint16) bool { return br.send(speech, s) }, func() uint64 { return f.got(speech) }, 50)
			flow(t, "far → browser", func(s uint16) bool { return f.send(speech, s) }, func() uint64 { return br.got(speech) }, 50)
			flow(t, "browser → far DTMF", func(s uint16) bool { return br.send(101, s) }, func() uint64 { return f.got(101) }, 10)
			flow(t, "far → browser DTMF", func(s uint16) bool { return f.send(101, s) }, func() uint64 { return br.got(101) }, 10)
		})
	}
}

func hasOpus(body []byte) bool {
	a, err := parseAudio(body)
	if err != nil {
		return false
	}
	for _, c := range a.codecs {
		if c.Name == "opus" {
			return true
		}
	}
	return false
}

// TestNoCommonCodec: a plain offer with nothing a browser decodes is
// refused with an error the B2BUA answers 488.
func TestNoCommonCodec(t *testing.T) {
	h := newTestHub(t, nil)
	f := newFar(t)
	g729 := sdp.Codec{PT: 18, Name: "G729", Rate: 8000}
	_, _, err := h.NewOffer(context.Background(), f.sdp(1, []sdp.Codec{g729, event101}, sdp.SendRecv))
	if !errors.Is(err, ErrNoCodec) || !errors.Is(err, sdp.ErrInvalid) {
		t.Fatalf("err = %v, want ErrNoCodec wrapping sdp.ErrInvalid", err)
	}
	if n := len(h.Bridges()); n != 0 {
		t.Errorf("%d bridges left open", n)
	}
}
