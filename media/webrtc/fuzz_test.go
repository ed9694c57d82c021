package webrtc

import (
	"errors"
	"testing"

	"github.com/edgewise-sip/edgewise/media/sdp"
)

// FuzzParseAudio: descriptions from browsers and far ends are untrusted.
// Parsing must never panic, and every refusal must wrap sdp.ErrInvalid so
// the B2BUA answers 488 rather than 500.
func FuzzParseAudio(f *testing.F) {
	f.Add([]byte("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\na=sendonly\r\n"))
	f.Add([]byte("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111 0\r\nc=IN IP4 0.0.0.0\r\n" +
		"a=mid:0\r\na=ice-ufrag:abcd\r\na=ice-pwd:0123456789012345678901\r\na=fingerprint:sha-256 AB:CD\r\na=setup:actpass\r\na=rtcp-mux\r\n" +
		"a=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=10\r\na=candidate:1 1 udp 1 127.0.0.1 5000 typ host\r\n"))
	f.Add([]byte("v=0\r\nm=audio 0 RTP/AVP 0\r\n"))
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, parse := range []func([]byte) (any, error){
			func(b []byte) (any, error) { a, err := parseAudio(b); return a, err },
			func(b []byte) (any, error) { a, err := parsePlain(b); return a, err },
		} {
			if _, err := parse(body); err != nil && !errors.Is(err, sdp.ErrInvalid) {
				t.Fatalf("refusal %v does not wrap sdp.ErrInvalid", err)
			}
		}
		sdp.IsWebRTC(body)
	})
}

// FuzzFastPathIn: what the fast path decrypts comes from the network.
// Whatever the bytes, fastIn must not panic, and nothing that fails SRTP
// authentication may reach the plain side.
func FuzzFastPathIn(f *testing.F) {
	fb := newFastPathBench(f)
	good, err := fb.browser.EncryptRTP(nil, rtpPacket(7), nil)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add(good[:12])
	f.Add(append([]byte{0x90, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0xbe, 0xde, 0, 9}, make([]byte, 30)...))
	dec := make([]byte, 0, sharedMTU)
	f.Fuzz(func(t *testing.T, pkt []byte) {
		before := fb.b.c.plain.out.packets.Load()
		authentic := false
		if _, err := fb.rx().DecryptRTP(nil, pkt, nil); err == nil {
			authentic = true
		}
		fb.b.fastIn(append([]byte(nil), pkt...), dec)
		if sent := fb.b.c.plain.out.packets.Load() - before; sent > 0 && !authentic {
			t.Fatalf("%d packets that fail authentication reached the plain side", sent)
		}
	})
}
