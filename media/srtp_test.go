package media

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/srtp/v3"

	"github.com/edgewise-sip/edgewise/media/sdp"
	"github.com/edgewise-sip/edgewise/test/kit"
)

// sdesPeer is a test endpoint that speaks SDES-SRTP as Twilio's Secure
// Media or baresip would.
type sdesPeer struct {
	*peer
	key    sdp.Crypto    // what it sends with
	tx, rx *srtp.Context // rx: keyed by the relay's a=crypto
}

func newSDESPeer(t *testing.T, tag int, suite string) *sdesPeer {
	t.Helper()
	c, err := newCrypto(tag, suite)
	if err != nil {
		t.Fatal(err)
	}
	tx, err := srtpContext(c)
	if err != nil {
		t.Fatal(err)
	}
	return &sdesPeer{peer: newPeer(t), key: *c, tx: tx}
}

// sdpBody is a description from ap; lines are extra media attributes.
func sdpBody(p *peer, proto string, lines ...string) []byte {
	ap := p.addr()
	b := fmt.Sprintf("v=0\r\no=- 1 1 IN IP4 %s\r\ns=-\r\nc=IN IP4 %s\r\nt=0 0\r\nm=audio %d %s 0 101\r\n"+
		"a=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n", ap.Addr(), ap.Addr(), ap.Port(), proto)
	for _, l := range lines {
		b += l + "\r\n"
	}
	return []byte(b)
}

func (p *sdesPeer) line() string {
	return "a=crypto:" + fmt.Sprint(p.key.Tag) + " " + p.key.Suite + " inline:" + base64.StdEncoding.EncodeToString(p.key.Key)
}

// learn keys rx from the relay's description to this peer.
func (p *sdesPeer) learn(t *testing.T, body []byte) {
	t.Helper()
	info, err := sdp.Parse(body)
	if err != nil {
		t.Fatal(err)
	}
	m, _ := info.Audio()
	if m.Proto != "RTP/SAVP" || len(m.Crypto) != 1 {
		t.Fatalf("relay's SDP to an SRTP peer is %s with %d a=crypto:\n%s", m.Proto, len(m.Crypto), body)
	}
	if p.rx, err = srtpContext(&m.Crypto[0]); err != nil {
		t.Fatal(err)
	}
}

func (p *sdesPeer) sendRTP(t *testing.T, to *Leg, seq uint16, payload []byte) []byte {
	t.Helper()
	plain := rtpPacket(t, seq, uint32(seq)*160, 0xabc, 0, payload)
	enc, err := p.tx.EncryptRTP(nil, plain, nil)
	if err != nil {
		t.Fatal(err)
	}
	p.send(local(to), enc)
	return enc
}

func (p *sdesPeer) recvRTP(t *testing.T) *rtp.Packet {
	t.Helper()
	b, _ := p.recv()
	var h rtp.Header
	plain, err := p.rx.DecryptRTP(nil, b, &h)
	if err != nil {
		t.Fatalf("relay's SRTP does not decrypt with its a=crypto: %v", err)
	}
	var pkt rtp.Packet
	if err := pkt.Unmarshal(plain); err != nil {
		t.Fatal(err)
	}
	return &pkt
}

// TestSRTPOutbound: a plain phone calls a peer that requires SRTP (Twilio's
// Secure Media). The relay offers RTP/SAVP with its own key, takes the
// peer's key from the answer, and carries audio both ways, encrypting and
// decrypting; forgeries and replays are dropped and counted, never relayed.
func TestSRTPOutbound(t *testing.T) {
	r := startRelay(t, nil)
	s, err := r.NewSession("srtp-out")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.SetSRTP(B, SRTPRequired)
	phone, twilio := newPeer(t), newSDESPeer(t, 1, "AES_CM_128_HMAC_SHA1_80")

	toTwilio, err := s.Translate(A, Offer, sdpBody(phone, "RTP/AVP"))
	if err != nil {
		t.Fatal(err)
	}
	twilio.learn(t, toTwilio)
	if !strings.Contains(string(toTwilio), "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:") {
		t.Fatalf("offer to Twilio:\n%s", toTwilio)
	}
	toPhone, err := s.Translate(B, Answer, sdpBody(twilio.peer, "RTP/SAVP", twilio.line()))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(toPhone), "crypto") || !strings.Contains(string(toPhone), "RTP/AVP 0 101") {
		t.Fatalf("answer to the plain phone:\n%s", toPhone)
	}
	// A 200 that repeats the 183's answer changes nothing.
	if _, err := s.Translate(B, Answer, sdpBody(twilio.peer, "RTP/SAVP", twilio.line())); err != nil {
		t.Fatal(err)
	}
	s.Answered()

	for seq := uint16(1); seq <= 3; seq++ {
		phone.send(local(s.Leg(A)), rtpPacket(t, seq, uint32(seq)*160, 0x123, 0, []byte("hello twilio")))
		if got := twilio.recvRTP(t); string(got.Payload) != "hello twilio" || got.SequenceNumber != seq {
			t.Fatalf("Twilio got seq %d %q", got.SequenceNumber, got.Payload)
		}
	}
	var sent []byte
	for seq := uint16(1); seq <= 3; seq++ {
		sent = twilio.sendRTP(t, s.Leg(B), seq, []byte("hello phone"))
		b, _ := phone.recv()
		var got rtp.Packet
		if err := got.Unmarshal(b); err != nil || string(got.Payload) != "hello phone" {
			t.Fatalf("phone got %x (%v)", b, err)
		}
	}

	// Attacks on the SRTP leg, from Twilio's own address: a packet under
	// the wrong key, a replay of one already relayed, a plain RTP packet.
	mallory := newSDESPeer(t, 1, "AES_CM_128_HMAC_SHA1_80")
	forged, _ := mallory.tx.EncryptRTP(nil, rtpPacket(t, 4, 640, 0xabc, 0, []byte("noise")), nil)
	twilio.send(local(s.Leg(B)), forged)
	twilio.send(local(s.Leg(B)), sent)
	twilio.send(local(s.Leg(B)), rtpPacket(t, 5, 800, 0xabc, 0, []byte("plain")))
	kit.WaitFor(t, 5*time.Second, "three SRTP drops", func() bool {
		return s.Stats().Legs[B].RX.Dropped["srtp"] == 3
	})
	if b, _, ok := phone.tryRecv(200 * time.Millisecond); ok {
		t.Fatalf("relayed a forged, replayed or plain packet to the phone: %x", b)
	}
	// The next genuine packet still goes through.
	twilio.sendRTP(t, s.Leg(B), 6, []byte("still here"))
	if b, _ := phone.recv(); !bytes.Contains(b, []byte("still here")) {
		t.Fatalf("after the attack: %x", b)
	}
	if st := s.Stats().Legs[B]; st.SRTP != "AES_CM_128_HMAC_SHA1_80" {
		t.Errorf("leg B srtp = %q", st.SRTP)
	}
}

// TestSRTPInbound: Twilio offers two a=crypto lines, the first with a suite
// the relay does not know; the relay answers the second's tag and suite
// with its own key, and the phone sees plain RTP.
func TestSRTPInbound(t *testing.T) {
	r := startRelay(t, nil)
	s, err := r.NewSession("srtp-in")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.SetSRTP(B, SRTPRequired)
	phone, twilio := newPeer(t), newSDESPeer(t, 7, "AES_CM_128_HMAC_SHA1_32")
	offer := sdpBody(twilio.peer, "RTP/SAVP",
		"a=crypto:3 F8_128_HMAC_SHA1_80 inline:MTIzNDU2Nzg5QUJDREUwMTIzNDU2Nzg5QUJjZGVm",
		twilio.line())
	toPhone, err := s.Translate(B, Offer, offer)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(toPhone), "crypto") || !strings.Contains(string(toPhone), " RTP/AVP ") {
		t.Fatalf("offer to the phone:\n%s", toPhone)
	}
	toTwilio, err := s.Translate(A, Answer, sdpBody(phone, "RTP/AVP"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(toTwilio), "a=crypto:7 AES_CM_128_HMAC_SHA1_32 inline:") {
		t.Fatalf("answer to Twilio:\n%s", toTwilio)
	}
	twilio.learn(t, toTwilio)
	s.Answered()
	twilio.sendRTP(t, s.Leg(B), 1, []byte("ring ring"))
	if b, _ := phone.recv(); !bytes.Contains(b, []byte("ring ring")) {
		t.Fatalf("phone got %x", b)
	}
	phone.send(local(s.Leg(A)), rtpPacket(t, 1, 160, 0x55, 0, []byte("hello")))
	if got := twilio.recvRTP(t); string(got.Payload) != "hello" {
		t.Fatalf("Twilio got %q", got.Payload)
	}

	// A re-INVITE that repeats Twilio's key keeps the streams going: the
	// relay's answer repeats its key too.
	if _, err := s.Translate(B, Offer, offer); err != nil {
		t.Fatal(err)
	}
	again, err := s.Translate(A, Answer, sdpBody(phone, "RTP/AVP"))
	if err != nil {
		t.Fatal(err)
	}
	if string(cryptoLine(again)) != string(cryptoLine(toTwilio)) {
		t.Errorf("re-answer changed the relay's key")
	}
	twilio.sendRTP(t, s.Leg(B), 2, []byte("after reinvite"))
	if b, _ := phone.recv(); !bytes.Contains(b, []byte("after reinvite")) {
		t.Fatalf("phone got %x", b)
	}
}

func cryptoLine(body []byte) []byte {
	for _, l := range bytes.Split(body, []byte("\r\n")) {
		if bytes.HasPrefix(l, []byte("a=crypto:")) {
			return l
		}
	}
	return nil
}

// TestSRTPRefusals: what a leg that requires SRTP answers 488 to, with
// a reason that names the problem (and never the key).
func TestSRTPRefusals(t *testing.T) {
	r := startRelay(t, nil)
	twilio := newSDESPeer(t, 1, "AES_CM_128_HMAC_SHA1_80")
	short := "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:" + base64.StdEncoding.EncodeToString(make([]byte, 20))
	for i, tc := range []struct {
		name  string
		body  []byte
		kind  Kind
		setup func(*Session) // before the body arrives
		want  string
	}{
		{"plain offer", sdpBody(twilio.peer, "RTP/AVP"), Offer, nil, "RTP/AVP offered: plain RTP where SRTP is required"},
		{"SAVP without a=crypto", sdpBody(twilio.peer, "RTP/SAVP"), Offer, nil, "RTP/SAVP offered without a=crypto"},
		{"unknown suite only", sdpBody(twilio.peer, "RTP/SAVP", "a=crypto:1 F8_128_HMAC_SHA1_80 inline:"+base64.StdEncoding.EncodeToString(make([]byte, 30))), Offer, nil, "suite F8_128_HMAC_SHA1_80 is not supported"},
		{"short key", sdpBody(twilio.peer, "RTP/SAVP", short), Offer, nil, "key and salt are 20 bytes, want 30"},
		{"malformed line", sdpBody(twilio.peer, "RTP/SAVP", "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:@@@"), Offer, nil, "key is not base64"},
		{"MKI", sdpBody(twilio.peer, "RTP/SAVP", twilio.line()+"|2^20|1:4"), Offer, nil, "MKI"},
		{"session parameter", sdpBody(twilio.peer, "RTP/SAVP", twilio.line()+" UNENCRYPTED_SRTP"), Offer, nil, "UNENCRYPTED_SRTP"},
		{"plain answer", sdpBody(twilio.peer, "RTP/AVP"), Answer, offerToB, "RTP/AVP answered: plain RTP where SRTP is required"},
		{"answer with another tag", sdpBody(twilio.peer, "RTP/SAVP", strings.Replace(twilio.line(), "crypto:1", "crypto:2", 1)), Answer, offerToB, "no a=crypto with the offer's tag 1"},
		{"answer with another suite", sdpBody(twilio.peer, "RTP/SAVP", strings.Replace(twilio.line(), "_80", "_32", 1)), Answer, offerToB, "is AES_CM_128_HMAC_SHA1_32, the offer's is AES_CM_128_HMAC_SHA1_80"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := r.NewSession(fmt.Sprint("refuse-", i))
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			s.SetSRTP(B, SRTPRequired)
			if tc.setup != nil {
				tc.setup(s)
			}
			_, err = s.Translate(B, tc.kind, tc.body)
			if !errors.Is(err, sdp.ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want ErrInvalid with %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "inline:") || strings.Contains(err.Error(), base64.StdEncoding.EncodeToString(twilio.key.Key)) {
				t.Errorf("error shows a key: %v", err)
			}
		})
	}
}

func offerToB(s *Session) {
	phone := []byte("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n")
	if _, err := s.Translate(A, Offer, phone); err != nil {
		panic(err)
	}
}

// TestSRTPPhoneLeg: a phone that offers SDES (baresip over TLS) gets SRTP
// on its own leg while the other peer stays plain: each leg terminates its
// own keys.
func TestSRTPPhoneLeg(t *testing.T) {
	r := startRelay(t, nil)
	s, err := r.NewSession("srtp-phone")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	phone, twilio := newSDESPeer(t, 1, "AES_CM_128_HMAC_SHA1_80"), newPeer(t)
	toTwilio, err := s.Translate(A, Offer, sdpBody(phone.peer, "RTP/SAVP", phone.line()))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(toTwilio), "crypto") || !strings.Contains(string(toTwilio), " RTP/AVP ") {
		t.Fatalf("offer to a plain Twilio:\n%s", toTwilio)
	}
	toPhone, err := s.Translate(B, Answer, sdpBody(twilio, "RTP/AVP"))
	if err != nil {
		t.Fatal(err)
	}
	phone.learn(t, toPhone)
	s.Answered()
	phone.sendRTP(t, s.Leg(A), 1, []byte("secret"))
	if b, _ := twilio.recv(); !bytes.Contains(b, []byte("secret")) {
		t.Fatalf("Twilio got %x", b)
	}
	twilio.send(local(s.Leg(B)), rtpPacket(t, 1, 160, 9, 0, []byte("plain back")))
	if got := phone.recvRTP(t); string(got.Payload) != "plain back" {
		t.Fatalf("phone got %q", got.Payload)
	}
	// A re-offer toward the phone (Twilio's re-INVITE) stays SRTP.
	again, err := s.Translate(B, Offer, sdpBody(twilio, "RTP/AVP"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(cryptoLine(again), cryptoLine(toPhone)) {
		t.Errorf("re-offer to the SRTP phone:\n%s", again)
	}
}

func TestCryptoNeverPrintsItsKey(t *testing.T) {
	c, err := newCrypto(1, "AES_CM_128_HMAC_SHA1_80")
	if err != nil {
		t.Fatal(err)
	}
	key := base64.StdEncoding.EncodeToString(c.Key)
	for _, f := range []string{"%v", "%+v", "%#v", "%s"} {
		if out := fmt.Sprintf(f, *c); strings.Contains(out, key) || strings.Contains(out, fmt.Sprint(c.Key)) {
			t.Errorf("%s prints the key: %s", f, out)
		}
	}
}
