package media

import (
	"net/netip"
	"testing"
	"time"
)

// BenchmarkRelayPacket measures one RTP packet through the relay on
// loopback — recvmmsg, validation, latching, counters, sendmmsg — from a test
// sender to a test receiver, with up to 32 packets in flight. The figure
// includes the sender's and receiver's syscalls, which share the CPUs.
func BenchmarkRelayPacket(b *testing.B) {
	r := startRelay(b, nil)
	s, err := r.NewSession("bench")
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	a, dst := newPeer(b), newPeer(b)
	dst.conn.SetReadBuffer(4 << 20)
	s.Leg(A).SetRemote(a.addr(), netip.AddrPort{})
	s.Leg(B).SetRemote(dst.addr(), netip.AddrPort{})
	to := s.Leg(A).LocalAddr()
	pkt := rtpPacket(b, 0, 0, 1, 0, make([]byte, 160))
	buf := make([]byte, 2048)
	const window = 32
	b.ReportAllocs()
	b.ResetTimer()
	sent, got := 0, 0
	for got < b.N {
		for sent < b.N && sent-got < window {
			pkt[2], pkt[3] = byte(sent>>8), byte(sent)
			if _, err := a.conn.WriteToUDPAddrPort(pkt, to); err != nil {
				b.Fatal(err)
			}
			sent++
		}
		dst.conn.SetReadDeadline(time.Now().Add(time.Second))
		if _, _, err := dst.conn.ReadFromUDPAddrPort(buf); err != nil {
			b.Fatalf("after %d of %d: %v", got, b.N, err)
		}
		got++
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "pkt/s")
}

// BenchmarkCheckAndCount is the per-packet work without the syscalls.
func BenchmarkCheckAndCount(b *testing.B) {
	r, err := NewRelay(Settings{Ports: PortRange{20000, 20001}, LocalIP: loopback}, nil)
	if err != nil {
		b.Fatal(err)
	}
	w := newWorker(r)
	s := &Session{r: r}
	leg := &s.legs[A]
	leg.s = s
	src := netip.MustParseAddrPort("127.0.0.1:4000")
	pkt := rtpPacket(b, 0, 0, 1, 0, make([]byte, 160))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		pkt[2], pkt[3] = byte(i>>8), byte(i)
		if w.checkRTP(pkt, false) != reasonOK || leg.accept(&leg.rtp, src, false) != reasonOK {
			b.Fatal("rejected")
		}
		leg.rx.stream.update(w.hdr.SSRC, w.hdr.SequenceNumber, w.hdr.Timestamp, 8000, false, int64(i)*int64(20*time.Millisecond))
	}
}

// BenchmarkTranslateOfferAnswer is the SDP work of one call's setup through
// the B2BUA: the phone's offer carried to Twilio and Twilio's answer back.
func BenchmarkTranslateOfferAnswer(b *testing.B) {
	r := startRelay(b, nil)
	s, err := r.NewSession("bench")
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	phone, twilio := newPeer(b), newPeer(b)
	offer, answer := offerFrom(phone, "sendrecv"), offerFrom(twilio, "sendrecv")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Translate(A, Offer, offer); err != nil {
			b.Fatal(err)
		}
		if _, err := s.Translate(B, Answer, answer); err != nil {
			b.Fatal(err)
		}
	}
}
