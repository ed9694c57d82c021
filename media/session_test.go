package media

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/edgewise-sip/edgewise/media/sdp"
	"github.com/edgewise-sip/edgewise/test/kit"
)

func offerFrom(p *peer, dir string) []byte {
	ap := p.addr()
	return []byte(fmt.Sprintf("v=0\r\no=- 1 1 IN IP4 192.168.1.20\r\ns=-\r\nc=IN IP4 %s\r\nt=0 0\r\n"+
		"m=audio %d RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n"+
		"a=fmtp:101 0-16\r\na=%s\r\n", ap.Addr(), ap.Port(), dir))
}

// TestTranslateCallFlow follows a B2BUA: offer from the phone (A) rewritten
// toward Twilio (B), answer back, media, hold and resume by re-INVITE.
func TestTranslateCallFlow(t *testing.T) {
	r := startRelay(t, func(s *Settings, _ *Relay) { s.PublicIP = netip.MustParseAddr("127.0.0.1") })
	s, err := r.NewSession("flow")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	phone, twilio := newPeer(t), newPeer(t)

	toTwilio, err := s.Translate(A, Offer, offerFrom(phone, "sendrecv"))
	if err != nil {
		t.Fatal(err)
	}
	info, err := sdp.Parse(toTwilio)
	if err != nil {
		t.Fatal(err)
	}
	m, _ := info.Audio()
	if m.RTP != s.Leg(B).LocalAddr() || !strings.Contains(string(toTwilio), "a=rtpmap:101 telephone-event/8000") {
		t.Fatalf("offer toward Twilio:\n%s", toTwilio)
	}
	toPhone, err := s.Translate(B, Answer, offerFrom(twilio, "sendrecv"))
	if err != nil {
		t.Fatal(err)
	}
	info, _ = sdp.Parse(toPhone)
	if m, _ := info.Audio(); m.RTP != s.Leg(A).LocalAddr() {
		t.Fatalf("answer toward phone:\n%s", toPhone)
	}
	s.Answered()

	// Media goes where the rewritten SDPs say.
	pkt := rtpPacket(t, 1, 0, 1, 0, []byte("hi"))
	phone.send(s.Leg(A).LocalAddr(), pkt)
	if got, _ := twilio.recv(); !bytes.Equal(got, pkt) {
		t.Fatal("phone → twilio")
	}

	// Hold: the phone sends sendonly, Twilio answers recvonly.
	if _, err := s.Translate(A, Offer, offerFrom(phone, "sendonly")); err != nil {
		t.Fatal(err)
	}
	if !s.Hold() {
		t.Error("sendonly did not hold")
	}
	if _, err := s.Translate(B, Answer, offerFrom(twilio, "recvonly")); err != nil || !s.Hold() {
		t.Errorf("recvonly answer: hold %v err %v", s.Hold(), err)
	}
	if rem, latched := s.Leg(A).Remote(); !latched || rem != phone.addr() {
		t.Error("re-INVITE with the same address lost the latch")
	}
	if _, err := s.Translate(A, Offer, offerFrom(phone, "sendrecv")); err != nil || s.Hold() {
		t.Errorf("resume: hold %v err %v", s.Hold(), err)
	}

	// Bad SDP maps to 488.
	if _, err := s.Translate(A, Offer, []byte("this is not sdp")); !errors.Is(err, sdp.ErrInvalid) {
		t.Errorf("bad sdp: %v", err)
	}
	video := []byte("v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nc=IN IP4 1.2.3.4\r\nt=0 0\r\nm=video 5000 RTP/AVP 96\r\n")
	if _, err := s.Translate(A, Offer, video); !errors.Is(err, sdp.ErrInvalid) {
		t.Errorf("no audio: %v", err)
	}
}

func TestOldStyleHold(t *testing.T) {
	r := startRelay(t, nil)
	s, phone, _ := call(t, r, "c0")
	phone.send(s.Leg(A).LocalAddr(), rtpPacket(t, 1, 0, 1, 0, nil))
	kit.WaitFor(t, 5*time.Second, "latch", func() bool { _, l := s.Leg(A).Remote(); return l })
	body := []byte("v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\ns=-\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n")
	if _, err := s.Translate(A, Offer, body); err != nil {
		t.Fatal(err)
	}
	if !s.Hold() {
		t.Error("c=0.0.0.0 did not hold")
	}
	if rem, latched := s.Leg(A).Remote(); !latched || rem != phone.addr() {
		t.Errorf("c=0.0.0.0 moved the remote to %v", rem)
	}
}

// TestLifecycle: sessions made before Run work once it starts; closing
// before Run frees at once; after Run, NewSession fails and Close is a no-op.
func TestLifecycle(t *testing.T) {
	leaks := goleak.IgnoreCurrent()
	r, err := NewRelay(Settings{Ports: testRange(8), LocalIP: loopback, BindIP: loopback}, nil)
	if err != nil {
		t.Fatal(err)
	}
	early, err := r.NewSession("early")
	if err != nil {
		t.Fatal(err)
	}
	cancelled, err := r.NewSession("cancelled")
	if err != nil {
		t.Fatal(err)
	}
	cancelled.Close()
	if st := r.Pool(); st.InUse != 2 {
		t.Fatalf("pool before Run: %+v", st)
	}
	a, b := newPeer(t), newPeer(t)
	early.Leg(A).SetRemote(a.addr(), netip.AddrPort{})
	early.Leg(B).SetRemote(b.addr(), netip.AddrPort{})
	pkt := rtpPacket(t, 1, 0, 1, 0, []byte("queued"))
	a.send(early.Leg(A).LocalAddr(), pkt) // waits in the socket until Run

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	if got, _ := b.recv(); !bytes.Equal(got, pkt) {
		t.Fatal("packet queued before Run not relayed")
	}
	if err := r.Run(ctx); err == nil {
		t.Error("second Run accepted")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := r.NewSession("late"); !errors.Is(err, ErrClosed) {
		t.Errorf("after Run: %v", err)
	}
	early.Close()
	if st := r.Pool(); st.InUse != 0 || st.Free != st.Pairs {
		t.Errorf("pool after Run: %+v", st)
	}
	if len(r.Sessions()) != 0 {
		t.Error("sessions listed after Run")
	}
	goleak.VerifyNone(t, leaks)
}
