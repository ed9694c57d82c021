package webrtc

import (
	"crypto/rand"
	"net"
	"net/netip"
	"testing"

	"github.com/pion/rtp"
	"github.com/pion/srtp/v3"

	"github.com/edgewise-sip/edgewise/media/sdp"
)

// fastPathBench is a bridge on a hub with its fast path up, a plain peer
// and a browser as UDP sinks, and SRTP contexts keyed as the browser's.
type fastPathBench struct {
	h       *Hub
	b       *Bridge
	browser *srtp.Context // encrypts as the browser would
	sink    *net.UDPConn
	check   *srtp.Context
}

func newFastPathBench(tb testing.TB) *fastPathBench {
	h := newTestHub(tb, nil)
	b, err := h.New(tb.Context())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = b.Close() })
	sink, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(loopback, 0)))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = sink.Close() })
	_ = sink.SetReadBuffer(8 << 20)
	key, salt := make([]byte, 16), make([]byte, 12)
	_, _ = rand.Read(key)
	_, _ = rand.Read(salt)
	p := srtp.ProtectionProfileAeadAes128Gcm
	browser, err := srtp.CreateContext(key, salt, p)
	if err != nil {
		tb.Fatal(err)
	}
	// No replay window: the benchmark decrypts one packet over and over.
	rx, err := srtp.CreateContext(key, salt, p, srtp.SRTPNoReplayProtection())
	if err != nil {
		tb.Fatal(err)
	}
	tx, err := srtp.CreateContext(key, salt, p)
	if err != nil {
		tb.Fatal(err)
	}
	f := &fastPath{rx: rx, tx: tx}
	f.verified.Store(true)
	b.fast.Store(f)
	b.trackUp.Store(true)
	to := sink.LocalAddr().(*net.UDPAddr).AddrPort()
	b.peer.Store(&to)
	b.remote.Store(&remote{rtp: to, rtcp: to})
	b.toPlain.Store(newPTMap([]sdp.Codec{pcmu}, []sdp.Codec{pcmu}))
	b.toBrowser.Store(newPTMap([]sdp.Codec{pcmu}, []sdp.Codec{pcmu}))
	b.track.bound.Store(&binding{ssrc: 0x1234})
	check, err := srtp.CreateContext(key, salt, p, srtp.SRTPNoReplayProtection())
	if err != nil {
		tb.Fatal(err)
	}
	return &fastPathBench{h: h, b: b, browser: browser, sink: sink, check: check}
}

// rx is a context keyed as the bridge's rx, for checking what is authentic.
func (fb *fastPathBench) rx() *srtp.Context { return fb.check }

func rtpPacket(seq uint16) []byte {
	raw, _ := (&rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 0, SequenceNumber: seq,
		Timestamp: uint32(seq) * 160, SSRC: 0xb0b}, Payload: make([]byte, 160)}).Marshal()
	return raw
}

// BenchmarkFastPathIn: one browser packet through the shared reader's
// fast path: SRTP decrypt, payload type, sendto on the plain socket.
func BenchmarkFastPathIn(b *testing.B) {
	fb := newFastPathBench(b)
	enc, err := fb.browser.EncryptRTP(nil, rtpPacket(1), nil)
	if err != nil {
		b.Fatal(err)
	}
	dec := make([]byte, 0, sharedMTU)
	b.ReportAllocs()
	for b.Loop() {
		fb.b.fastIn(enc, dec) // false one time in feedEvery: pion gets a copy
	}
	if d := fb.b.c.drops[dropAuth].Load(); d != 0 {
		b.Fatalf("%d packets failed authentication", d)
	}
}

// BenchmarkFastPathOut: one plain packet through the worker toward the
// browser: SRTP encrypt, queued, and one sendmmsg per 32 packets.
func BenchmarkFastPathOut(b *testing.B) {
	fb := newFastPathBench(b)
	w := fb.h.worker
	pkt := rtpPacket(1)
	buf := make([]byte, len(pkt))
	seq := uint16(0)
	b.ReportAllocs()
	for b.Loop() {
		seq++
		copy(buf, pkt)
		buf[2], buf[3] = byte(seq>>8), byte(seq)
		w.plainIn(fb.b, buf)
	}
	w.flush()
	if d := fb.b.c.drops[dropSendError].Load(); d != 0 {
		b.Logf("%d send errors (sink buffer full)", d)
	}
}
