package media

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/pion/rtp"
)

// Port ranges for tests sit below Linux's ephemeral range (32768+) so :0
// binds elsewhere cannot take them; each relay gets its own slice, and the
// pool skips any port that is taken anyway.
var nextRange atomic.Int32

func testRange(pairs int) PortRange {
	base := 24000 + int(nextRange.Add(1)-1)*200
	return PortRange{Min: base, Max: base + 2*pairs - 1}
}

var loopback = netip.MustParseAddr("127.0.0.1")

// startRelay runs a relay on 127.0.0.1 until the test ends, then checks that
// Run returned, the pool is whole and the goroutines are gone.
func startRelay(t testing.TB, mod func(*Settings, *Relay)) *Relay {
	t.Helper()
	leaks := goleak.IgnoreCurrent()
	s := Settings{Ports: testRange(64), LocalIP: loopback, BindIP: loopback, Timeout: time.Minute}
	r, err := NewRelay(s, nil)
	if err != nil {
		t.Fatal(err)
	}
	if mod != nil {
		mod(&r.set, r)
		// What a reload could change goes through Prepare, as it would.
		commit, err := r.Prepare(r.set)
		if err != nil {
			t.Fatal(err)
		}
		commit()
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Run did not return")
		}
		if ps := r.Pool(); ps.InUse != 0 || ps.Free != ps.Pairs {
			t.Errorf("pool after stop: %+v", ps)
		}
		goleak.VerifyNone(t, leaks)
	})
	return r
}

// peer is a test endpoint on loopback.
type peer struct {
	t    testing.TB
	conn *net.UDPConn
}

func newPeer(t testing.TB) *peer {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &peer{t: t, conn: c}
}

func (p *peer) addr() netip.AddrPort { return p.conn.LocalAddr().(*net.UDPAddr).AddrPort() }

func (p *peer) send(to netip.AddrPort, b []byte) {
	p.t.Helper()
	if _, err := p.conn.WriteToUDPAddrPort(b, to); err != nil {
		p.t.Fatal(err)
	}
}

// recv waits up to 2 s for a datagram.
func (p *peer) recv() ([]byte, netip.AddrPort) {
	p.t.Helper()
	b, from, ok := p.tryRecv(2 * time.Second)
	if !ok {
		p.t.Fatalf("%v: nothing received", p.addr())
	}
	return b, from
}

func (p *peer) tryRecv(d time.Duration) ([]byte, netip.AddrPort, bool) {
	buf := make([]byte, 2048)
	p.conn.SetReadDeadline(time.Now().Add(d))
	n, from, err := p.conn.ReadFromUDPAddrPort(buf)
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return nil, netip.AddrPort{}, false
		}
		p.t.Fatal(err)
	}
	return buf[:n], from, true
}

// rtpcp returns the RTCP address beside an RTP one.
func rtcpOf(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr(), ap.Port()+1)
}

// local is where a test peer sends to reach a leg (the relay binds 127.0.0.1).
func local(l *Leg) netip.AddrPort { return l.LocalAddr() }

func rtpPacket(t testing.TB, seq uint16, ts, ssrc uint32, pt uint8, payload []byte) []byte {
	t.Helper()
	p := rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: pt, SequenceNumber: seq, Timestamp: ts, SSRC: ssrc}, Payload: payload}
	b, err := p.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// call makes a session with both remotes pointed at fresh peers.
func call(t *testing.T, r *Relay, id string) (*Session, *peer, *peer) {
	t.Helper()
	s, err := r.NewSession(id)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	a, b := newPeer(t), newPeer(t)
	s.Leg(A).SetRemote(a.addr(), netip.AddrPort{})
	s.Leg(B).SetRemote(b.addr(), netip.AddrPort{})
	return s, a, b
}
