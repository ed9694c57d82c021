package media

import (
	"bytes"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/edgewise-sip/edgewise/test/kit"
)

// newPeerOn is a peer on a chosen loopback address, so a test can have a
// phone, the same phone after its NAT moved it, and a stranger elsewhere.
func newPeerOn(t testing.TB, ip string) *peer {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(ip)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &peer{t: t, conn: c}
}

// TestStrictSource plays the stranger who sends RTP to a phone leg's port,
// while the phone rings, right after it answers and mid-call: the stranger
// never latches the leg, never hears the far end, and never gets its audio
// into the call; the phone's NAT moving it to another port is followed.
func TestStrictSource(t *testing.T) {
	r := startRelay(t, nil)
	s, err := r.NewSession("strict")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	phone := newPeerOn(t, "127.0.0.1")
	twilio := newPeerOn(t, "127.0.0.1")
	stranger := newPeerOn(t, "127.0.0.3")
	a, b := s.Leg(A), s.Leg(B)
	a.SetRemote(phone.addr(), netip.AddrPort{})
	b.SetRemote(twilio.addr(), netip.AddrPort{})
	a.RestrictSources(phone.addr().Addr())
	la, lb := local(a), local(b)

	strangerIn := func(phase string, seq uint16) {
		t.Helper()
		before := s.Stats().Legs[A].RX.Dropped["stranger"]
		stranger.send(la, rtpPacket(t, seq, 0, 0xBAD, 0, []byte("intruder")))
		kit.WaitFor(t, 5*time.Second, phase+": stranger's packet dropped", func() bool {
			return s.Stats().Legs[A].RX.Dropped["stranger"] == before+1
		})
	}
	farEnd := func(phase string, to *peer, seq uint16) {
		t.Helper()
		p := rtpPacket(t, seq, uint32(seq)*160, 0xB, 0, []byte(phase))
		twilio.send(lb, p)
		if got, _ := to.recv(); !bytes.Equal(got, p) {
			t.Fatalf("%s: the phone did not get the far end's audio", phase)
		}
		if _, _, ok := stranger.tryRecv(20 * time.Millisecond); ok {
			t.Fatalf("%s: the stranger heard the call", phase)
		}
	}

	// Ringing: nobody latched yet.
	strangerIn("ringing", 1)
	if _, latched := a.Remote(); latched {
		t.Fatal("ringing: a stranger's packet latched the phone leg")
	}
	farEnd("ringing", phone, 1)

	// Answer: the phone's first packet latches.
	pa := rtpPacket(t, 1, 160, 0xA, 0, []byte("hello"))
	phone.send(la, pa)
	if got, _ := twilio.recv(); !bytes.Equal(got, pa) {
		t.Fatal("answer: the phone's audio was not relayed")
	}
	strangerIn("right after answer", 2)
	farEnd("right after answer", phone, 2)

	// Mid-call, and the phone's NAT moves it to another port of the same
	// address: followed, and the stranger still gets nothing.
	moved := newPeerOn(t, "127.0.0.1")
	pm := rtpPacket(t, 2, 320, 0xA, 0, []byte("moved"))
	moved.send(la, pm)
	if got, _ := twilio.recv(); !bytes.Equal(got, pm) {
		t.Fatal("mid-call: the phone's audio from its new port was not relayed")
	}
	if rem, latched := a.Remote(); rem != moved.addr() || !latched {
		t.Fatalf("after the NAT move: remote %v latched %v, want %v", rem, latched, moved.addr())
	}
	strangerIn("mid-call", 3)
	farEnd("mid-call", moved, 3)
	if _, _, ok := twilio.tryRecv(20 * time.Millisecond); ok {
		t.Fatal("a stranger's audio reached the far end")
	}

	// Another phone answered (a fork): the latch to this one is undone.
	a.RestrictSources(netip.MustParseAddr("127.0.0.4"))
	if _, latched := a.Remote(); latched {
		t.Fatal("latch kept after the trusted addresses changed")
	}
}

// TestStrictSourceAddresses: a strict leg trusts the addresses it was given
// and its peer's SDP address only when that is public.
func TestStrictSourceAddresses(t *testing.T) {
	r := startRelay(t, nil)
	s, err := r.NewSession("addrs")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	l := s.Leg(A)
	l.RestrictSources(netip.MustParseAddr("::ffff:198.51.100.7"))
	sdpFrom := func(ip string) {
		body := []byte("v=0\r\no=- 1 1 IN IP4 " + ip + "\r\ns=-\r\nc=IN IP4 " + ip + "\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n")
		if _, err := s.Translate(A, Offer, body); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		sdp, from string
		want      bool
	}{
		{"192.168.1.20", "198.51.100.7", true},  // the signalling source, mapped or not
		{"192.168.1.20", "192.168.1.20", false}, // private SDP address: not trusted
		{"10.0.0.5", "10.0.0.5", false},
		{"100.64.1.1", "100.64.1.1", false},  // carrier-grade NAT space
		{"203.0.113.5", "203.0.113.5", true}, // public SDP address
		{"203.0.113.5", "203.0.113.6", false},
		{"127.0.0.1", "127.0.0.1", false},
	}
	for _, tt := range tests {
		sdpFrom(tt.sdp)
		s.mu.Lock()
		got := l.trusted(netip.MustParseAddr(tt.from))
		s.mu.Unlock()
		if got != tt.want {
			t.Errorf("SDP %s, packet from %s: trusted %v, want %v", tt.sdp, tt.from, got, tt.want)
		}
	}
}
