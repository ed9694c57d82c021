package media

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/edgewise-sip/edgewise/test/kit"
)

func TestRelayBothWays(t *testing.T) {
	r := startRelay(t, nil)
	s, a, b := call(t, r, "both")
	la, lb := local(s.Leg(A)), local(s.Leg(B))

	for i := range 10 {
		pa := rtpPacket(t, uint16(i), uint32(i*160), 0xA, 0, bytes.Repeat([]byte{0xff}, 160))
		a.send(la, pa)
		got, from := b.recv()
		if !bytes.Equal(got, pa) || from != lb {
			t.Fatalf("A→B: got %d bytes from %v, want %d from %v", len(got), from, len(pa), lb)
		}
		pb := rtpPacket(t, uint16(i), uint32(i*160), 0xB, 8, bytes.Repeat([]byte{0xd5}, 160))
		b.send(lb, pb)
		got, from = a.recv()
		if !bytes.Equal(got, pb) || from != la {
			t.Fatalf("B→A: got %d bytes from %v, want from %v", len(got), from, la)
		}
	}
	st := s.Stats()
	for _, l := range st.Legs {
		if l.RX.Packets != 10 || l.TX.Packets != 10 || l.RX.Bytes != 1720 || l.RX.Lost != 0 || !l.Latched {
			t.Errorf("leg %v: %+v", l.Side, l)
		}
	}
	if _, err := json.Marshal(r.Sessions()); err != nil {
		t.Fatal(err)
	}
}

func TestRTCPBothWaysAndMuxed(t *testing.T) {
	r := startRelay(t, nil)
	s, err := r.NewSession("rtcp")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	a, ac, b, bc := newPeer(t), newPeer(t), newPeer(t), newPeer(t)
	s.Leg(A).SetRemote(a.addr(), ac.addr())
	s.Leg(B).SetRemote(b.addr(), bc.addr())
	la, lb := local(s.Leg(A)), local(s.Leg(B))

	rr, err := (&rtcp.ReceiverReport{SSRC: 7, Reports: []rtcp.ReceptionReport{{SSRC: 9, FractionLost: 3}}}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	ac.send(rtcpOf(la), rr)
	if got, from := bc.recv(); !bytes.Equal(got, rr) || from != rtcpOf(lb) {
		t.Fatalf("A→B RTCP: %x from %v", got, from)
	}
	bc.send(rtcpOf(lb), rr)
	if got, _ := ac.recv(); !bytes.Equal(got, rr) {
		t.Fatalf("B→A RTCP: %x", got)
	}
	// rtcp-mux: RTCP on the RTP port goes out the RTP port (RFC 5761).
	a.send(la, rr)
	if got, from := b.recv(); !bytes.Equal(got, rr) || from != lb {
		t.Fatalf("muxed RTCP: %x from %v", got, from)
	}
	st := s.Stats()
	if st.Legs[0].RX.RTCPPackets != 2 || st.Legs[1].TX.RTCPPackets != 2 || st.Legs[0].RX.Packets != 0 {
		t.Errorf("counters: %+v", st.Legs)
	}
}

// TestLatching: the SDP names a private address the peer never sends from
// (it is behind NAT); the relay sends there until the peer's first valid
// packet, then only to the source it learned, and drops other sources.
func TestLatching(t *testing.T) {
	r := startRelay(t, nil)
	s, err := r.NewSession("nat")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	sdpAddr, natted, b, stranger := newPeer(t), newPeer(t), newPeer(t), newPeer(t)
	s.Leg(A).SetRemote(sdpAddr.addr(), netip.AddrPort{})
	s.Leg(B).SetRemote(b.addr(), netip.AddrPort{})
	la, lb := local(s.Leg(A)), local(s.Leg(B))

	// Before latching, B's media goes to the SDP address.
	p0 := rtpPacket(t, 1, 160, 0xB, 0, []byte("before"))
	b.send(lb, p0)
	if got, _ := sdpAddr.recv(); !bytes.Equal(got, p0) {
		t.Fatal("before latching: not sent to the SDP address")
	}
	// Garbage from a stranger must not latch.
	stranger.send(la, []byte("not rtp at all"))
	// The phone's first valid packet, from its NATed source, latches.
	pa := rtpPacket(t, 1, 160, 0xA, 0, []byte("hello"))
	natted.send(la, pa)
	if got, _ := b.recv(); !bytes.Equal(got, pa) {
		t.Fatal("first packet not relayed")
	}
	if rem, latched := s.Leg(A).Remote(); rem != natted.addr() || !latched {
		t.Fatalf("remote %v latched %v, want %v", rem, latched, natted.addr())
	}
	p1 := rtpPacket(t, 2, 320, 0xB, 0, []byte("after"))
	b.send(lb, p1)
	if got, _ := natted.recv(); !bytes.Equal(got, p1) {
		t.Fatal("after latching: not sent to the learned source")
	}
	// A stranger's valid RTP is dropped and counted, never relayed.
	for i := range 3 {
		stranger.send(la, rtpPacket(t, uint16(100+i), 0, 0xBAD, 0, []byte("intruder")))
	}
	marker := rtpPacket(t, 3, 480, 0xA, 0, []byte("marker"))
	natted.send(la, marker)
	if got, _ := b.recv(); !bytes.Equal(got, marker) {
		t.Fatalf("got %q, want the marker (stranger's packet relayed?)", got)
	}
	st := s.Stats().Legs[A]
	if st.RX.Dropped["stranger"] != 3 || st.RX.Dropped["malformed"] != 1 || st.RX.Packets != 2 {
		t.Errorf("leg A rx: %+v", st.RX)
	}
	if _, _, ok := sdpAddr.tryRecv(10 * time.Millisecond); ok {
		t.Error("SDP address still gets media after latching")
	}

	// A new SDP address (re-INVITE) re-opens latching.
	s.Leg(A).SetRemote(stranger.addr(), netip.AddrPort{})
	if _, latched := s.Leg(A).Remote(); latched {
		t.Fatal("still latched after a new SDP address")
	}
}

func TestAllowB(t *testing.T) {
	r := startRelay(t, func(s *Settings, r *Relay) {
		s.AllowB = []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32")}
	})
	s, a, b := call(t, r, "acl")
	b.send(local(s.Leg(B)), rtpPacket(t, 1, 0, 1, 0, nil))
	marker := rtpPacket(t, 1, 0, 2, 0, []byte("m"))
	a.send(local(s.Leg(A)), marker)
	if got, _ := b.recv(); !bytes.Equal(got, marker) {
		t.Fatal("A→B broken")
	}
	kit.WaitFor(t, 5*time.Second, "not_allowed counted", func() bool { return s.Stats().Legs[B].RX.Dropped["not_allowed"] == 1 })
	if _, _, ok := a.tryRecv(10 * time.Millisecond); ok {
		t.Error("packet from outside AllowB relayed")
	}
}

// TestGarbage: non-RTP bytes, truncated RTP and RTCP garbage are dropped
// and counted, never relayed.
func TestGarbage(t *testing.T) {
	r := startRelay(t, nil)
	s, err := r.NewSession("garbage")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	a, ac, b, bc := newPeer(t), newPeer(t), newPeer(t), newPeer(t)
	s.Leg(A).SetRemote(a.addr(), ac.addr())
	s.Leg(B).SetRemote(b.addr(), bc.addr())
	la := local(s.Leg(A))

	valid := rtpPacket(t, 1, 0, 5, 0, []byte("ok"))
	withCSRC := append([]byte{}, valid...)
	withCSRC[0] |= 0x0f // claims 15 CSRCs it does not carry
	withExt := append([]byte{}, valid[:12]...)
	withExt[0] |= 0x10 // extension bit, no extension header
	badPad := append([]byte{}, valid...)
	badPad[0] |= 0x20
	badPad[len(badPad)-1] = 200 // more padding than packet
	rtpGarbage := map[string][]byte{
		"text":        []byte("GET / HTTP/1.1\r\n\r\n"),
		"version 1":   append([]byte{0x40}, valid[1:]...),
		"short":       valid[:8],
		"csrc":        withCSRC,
		"extension":   withExt,
		"bad padding": badPad,
		"empty":       {},
	}
	for _, g := range rtpGarbage {
		a.send(la, g)
	}
	rtcpGarbage := map[string][]byte{
		"text":       []byte("garbage garbage"),
		"short":      {0x80, 0xc9},
		"long claim": {0x80, 0xc9, 0x00, 0x20, 0, 0, 0, 1},
		"not rtcp":   {0x80, 0x10, 0x00, 0x01, 0, 0, 0, 1},
	}
	for _, g := range rtcpGarbage {
		ac.send(rtcpOf(la), g)
	}
	a.send(la, valid)
	if got, _ := b.recv(); !bytes.Equal(got, valid) {
		t.Fatalf("first packet at B is %x, want the valid one", got)
	}
	kit.WaitFor(t, 5*time.Second, "every rtcp datagram counted", func() bool {
		d := s.Stats().Legs[A].RX.Dropped
		return d["malformed"]+d["truncated"] == uint64(len(rtpGarbage)+len(rtcpGarbage))
	})
	st := s.Stats().Legs[A].RX
	if st.Dropped["malformed"] != 6 || st.Dropped["truncated"] != 5 || st.Packets != 1 || st.RTCPPackets != 0 {
		t.Errorf("rx: %+v", st)
	}
	if _, _, ok := bc.tryRecv(10 * time.Millisecond); ok {
		t.Error("RTCP garbage relayed")
	}
	if _, latched := s.Leg(A).Remote(); !latched {
		t.Error("valid packet did not latch")
	}
}

func TestOversize(t *testing.T) {
	r := startRelay(t, nil)
	s, a, b := call(t, r, "big")
	a.send(local(s.Leg(A)), rtpPacket(t, 1, 0, 1, 0, make([]byte, 4000)))
	marker := rtpPacket(t, 2, 0, 1, 0, []byte("m"))
	a.send(local(s.Leg(A)), marker)
	if got, _ := b.recv(); !bytes.Equal(got, marker) {
		t.Fatal("oversize datagram relayed")
	}
	if d := s.Stats().Legs[A].RX.Dropped["oversize"]; d != 1 {
		t.Errorf("oversize drops %d", d)
	}
}

// TestTelephoneEvent: RFC 4733 events, CSRCs, header extensions and padding
// pass byte for byte.
func TestTelephoneEventUntouched(t *testing.T) {
	r := startRelay(t, nil)
	s, a, b := call(t, r, "dtmf")
	ev := func(seq uint16, end bool, dur uint16) []byte {
		flags := byte(10) // volume 10
		if end {
			flags |= 0x80
		}
		p := rtp.Packet{Header: rtp.Header{Version: 2, Marker: seq == 1, PayloadType: 101, SequenceNumber: seq,
			Timestamp: 8000, SSRC: 0xDEADBEEF}, Payload: []byte{5, flags, byte(dur >> 8), byte(dur)}}
		out, err := p.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	var pkts [][]byte
	for i := uint16(1); i <= 5; i++ {
		pkts = append(pkts, ev(i, i >= 4, i*160))
	}
	ext := rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 96, SequenceNumber: 6, SSRC: 0xDEADBEEF,
		CSRC: []uint32{1, 2}}, Payload: []byte{1, 2, 3}, PaddingSize: 4}
	ext.Padding = true
	if err := ext.SetExtension(1, []byte{0xAA, 0xBB}); err != nil {
		t.Fatal(err)
	}
	eb, err := ext.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	pkts = append(pkts, eb)
	for _, p := range pkts {
		a.send(local(s.Leg(A)), p)
		if got, _ := b.recv(); !bytes.Equal(got, p) {
			t.Fatalf("got %x, want %x", got, p)
		}
	}
}

func TestLossAndJitter(t *testing.T) {
	r := startRelay(t, nil)
	s, a, b := call(t, r, "loss")
	s.Leg(A).SetCodecs(map[uint8]uint32{0: 8000}, nil)
	// 200 packets from near the top of the sequence space (so it wraps),
	// 12 of them skipped and two neighbours swapped.
	skip := map[int]bool{3: true, 50: true, 51: true, 52: true, 120: true, 150: true, 151: true, 152: true, 153: true, 154: true, 180: true, 199: true}
	order := make([]int, 0, 200)
	for i := range 200 {
		order = append(order, i)
	}
	order[90], order[91] = order[91], order[90]
	sent := 0
	for _, i := range order {
		if skip[i] {
			continue
		}
		a.send(local(s.Leg(A)), rtpPacket(t, uint16(65500+i), uint32(i*160), 0x1234, 0, make([]byte, 160)))
		sent++
	}
	for range sent {
		b.recv()
	}
	st := s.Stats().Legs[A].RX
	// 199 is the last one and skipped: nobody knows it is missing yet.
	if st.Lost != 11 || st.Packets != uint64(sent) {
		t.Errorf("lost %d packets %d, want 11 and %d", st.Lost, st.Packets, sent)
	}
	// Sent back to back, 20 ms of media apart: each transit difference is
	// about 20 ms (100 ms across the gap of five), so the estimate climbs
	// toward 20 ms. TestRxStream checks the arithmetic exactly.
	if st.JitterMs < 10 || st.JitterMs > 40 {
		t.Errorf("jitter %.2f ms, want between 10 and 40", st.JitterMs)
	}
	// The call's loss joins the relay's counter when the call ends.
	lost := metricFrom(t, r, "edgewise_media_lost_packets_total", "")
	if got := testutil.ToFloat64(lost); got != 0 {
		t.Errorf("lost_packets_total %v during the call, want 0", got)
	}
	s.Close()
	kit.WaitFor(t, 5*time.Second, "the session freed", func() bool { return r.Pool().InUse == 0 })
	if got := testutil.ToFloat64(metricFrom(t, r, "edgewise_media_lost_packets_total", "")); got != 11 {
		t.Errorf("lost_packets_total %v after the call, want 11", got)
	}
}

func TestNoRemoteCounted(t *testing.T) {
	r := startRelay(t, nil)
	s, err := r.NewSession("noremote")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	a := newPeer(t)
	a.send(local(s.Leg(A)), rtpPacket(t, 1, 0, 1, 0, nil))
	kit.WaitFor(t, 5*time.Second, "no_remote", func() bool { return s.Stats().Legs[B].TX.Dropped["no_remote"] == 1 })
	// A latched anyway: B's packets can come back.
	if _, latched := s.Leg(A).Remote(); !latched {
		t.Error("A not latched")
	}
}

func TestTimeout(t *testing.T) {
	r := startRelay(t, func(s *Settings, _ *Relay) { s.Timeout = 100 * time.Millisecond })
	s, a, _ := call(t, r, "silent")
	fired := make(chan Side, 2)
	s.OnTimeout(func(side Side) { fired <- side })
	s.Answered()
	// Keep A talking; B stays silent and times out.
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Millisecond): // media pacing
			}
			a.conn.WriteToUDPAddrPort(rtpPacket(t, uint16(i), 0, 1, 0, nil), local(s.Leg(A)))
		}
	}()
	defer func() { close(stop); <-done }()
	select {
	case side := <-fired:
		if side != B {
			t.Errorf("timed out side %v, want B", side)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no timeout")
	}
	if !s.Stats().TimedOut {
		t.Error("stats do not show the timeout")
	}
}

func TestNoTimeoutOnHoldOrBeforeAnswer(t *testing.T) {
	sweeps := make(chan int64, 1000)
	r := startRelay(t, func(s *Settings, r *Relay) {
		s.Timeout = 50 * time.Millisecond
		r.afterCheck = func(now int64) {
			select {
			case sweeps <- now:
			default:
			}
		}
	})
	s, _, _ := call(t, r, "held")
	fired := make(chan Side, 2)
	s.OnTimeout(func(side Side) { fired <- side })
	// waitSweeps waits until the sweeper has run at least 4 timeouts past now.
	waitSweeps := func() {
		from := r.now()
		for now := range sweeps {
			if now-from > 4*int64(r.set.Timeout) {
				return
			}
		}
	}
	waitSweeps() // not answered yet: silence allowed
	s.SetHold(true)
	s.Answered()
	waitSweeps() // answered but held
	select {
	case <-fired:
		t.Fatal("timeout fired before answer or on hold")
	default:
	}
	s.SetHold(false)
	select {
	case <-fired:
	case <-time.After(5 * time.Second):
		t.Fatal("no timeout after resume")
	}
}

func TestSessionErrors(t *testing.T) {
	r := startRelay(t, nil)
	s, err := r.NewSession("x")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.NewSession("x"); !errors.Is(err, ErrDuplicate) {
		t.Errorf("duplicate: %v", err)
	}
	if r.Session("x") != s || len(r.Sessions()) != 1 {
		t.Error("lookup")
	}
	s.Close()
	s.Close()
	if r.Session("x") != nil {
		t.Error("closed session still listed")
	}
}

// TestReloadTuning: a reload changes the timeout and Twilio's ranges of a
// running relay; the ports and addresses need a restart and are left alone.
func TestReloadTuning(t *testing.T) {
	r := startRelay(t, nil)
	s := r.Settings()
	s.Timeout, s.AllowB = 2*time.Second, []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}
	commit, err := r.Prepare(s)
	if err != nil {
		t.Fatal(err)
	}
	if r.tuned.Load().timeout != time.Minute {
		t.Fatal("Prepare changed something")
	}
	commit()
	if tu := r.tuned.Load(); tu.timeout != 2*time.Second || len(tu.allowB) != 1 {
		t.Fatalf("after commit: %+v", tu)
	}
	moved := r.Settings()
	moved.Ports.Min += 2
	commit, err = r.Prepare(moved)
	if err != nil {
		t.Fatal(err)
	}
	commit()
	if r.Settings().Ports == moved.Ports {
		t.Fatal("a new port range was applied to a running relay")
	}
}
