package media

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"testing"

	"github.com/edgewise-sip/edgewise/media/mmsg"
)

func TestPortRangePairs(t *testing.T) {
	tests := []struct {
		r    PortRange
		want int
	}{
		{PortRange{20000, 20001}, 1},
		{PortRange{20000, 20002}, 1},
		{PortRange{20001, 20004}, 1}, // odd start: 20002/20003 only
		{PortRange{20000, 29999}, 5000},
		{PortRange{65534, 65535}, 1},
		{PortRange{20000, 20000}, 0},
	}
	for _, tc := range tests {
		if got := len(tc.r.pairs()); got != tc.want {
			t.Errorf("%v: %d pairs, want %d", tc.r, got, tc.want)
		}
	}
	if _, err := NewPortPool(PortRange{20000, 20000}, loopback, mmsg.SocketOptions{}); err == nil {
		t.Error("empty range accepted")
	}
}

// TestPoolSkipsBusyPorts: pairs held by another program are skipped, stay
// free, and the counts stay exact.
func TestPoolSkipsBusyPorts(t *testing.T) {
	rg := testRange(8)
	// Another program holds the RTP port of pair 2 and the RTCP port of pair 5.
	for _, port := range []int{rg.Min + 4, rg.Min + 11} {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	p, err := NewPortPool(rg, loopback, mmsg.SocketOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var got []pair
	for {
		pr, err := p.allocate()
		if errors.Is(err, ErrNoPorts) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, pr)
	}
	if len(got) != 6 {
		t.Fatalf("allocated %d pairs, want 6", len(got))
	}
	st := p.Stats()
	if st.InUse != 6 || st.Free != 2 || st.Pairs != 8 || st.BindFailed == 0 {
		t.Errorf("stats %+v", st)
	}
	for _, pr := range got {
		if pr.port == uint16(rg.Min+4) || pr.port == uint16(rg.Min+10) {
			t.Errorf("busy pair %d allocated", pr.port)
		}
		if err := p.release(pr); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.release(got[0]); err == nil {
		t.Error("double release accepted")
	}
	if st := p.Stats(); st.InUse != 0 || st.Free != 8 {
		t.Errorf("after release: %+v", st)
	}
}

// TestPoolWholeAfterManySessions runs 500 call setups through a small pool —
// completed calls with media, setups cancelled before any packet, setups
// refused for lack of ports, duplicates, double closes — and checks the
// pool is whole afterwards, including for sessions left open when Run stops.
func TestPoolWholeAfterManySessions(t *testing.T) {
	var r *Relay
	r = startRelay(t, func(s *Settings, rr *Relay) {
		p, err := NewPortPool(testRange(40), loopback, mmsg.SocketOptions{})
		if err != nil {
			t.Fatal(err)
		}
		rr.pool = p
	})
	rng := rand.New(rand.NewPCG(1, 2))
	a, b := newPeer(t), newPeer(t)
	var open []*Session
	var refused, cancelled, completed int
	for i := range 500 {
		if len(open) > 0 && rng.IntN(3) == 0 {
			k := rng.IntN(len(open))
			open[k].Close()
			open[k].Close()
			open = append(open[:k], open[k+1:]...)
		}
		s, err := r.NewSession(fmt.Sprintf("call-%d", i))
		if errors.Is(err, ErrNoPorts) {
			refused++
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if _, err := r.NewSession(fmt.Sprintf("call-%d", i)); !errors.Is(err, ErrDuplicate) {
			t.Fatalf("duplicate: %v", err)
		}
		switch rng.IntN(3) {
		case 0: // cancelled before answer
			s.Close()
			cancelled++
		case 1: // media flows
			s.Leg(A).SetRemote(a.addr(), netip.AddrPort{})
			s.Leg(B).SetRemote(b.addr(), netip.AddrPort{})
			a.send(local(s.Leg(A)), rtpPacket(t, 1, 0, uint32(i), 0, nil))
			b.recv()
			completed++
			open = append(open, s)
		default:
			open = append(open, s)
		}
	}
	if refused == 0 || cancelled == 0 || completed == 0 {
		t.Fatalf("refused %d cancelled %d completed %d: the mix did not happen", refused, cancelled, completed)
	}
	for _, s := range open[:len(open)/2] {
		s.Close()
	}
	st := r.Pool()
	if st.InUse != 2*(len(open)-len(open)/2) || st.InUse+st.Free != st.Pairs {
		t.Errorf("pool %+v with %d sessions open", st, len(open)-len(open)/2)
	}
	// The rest stay open: Run's shutdown must free them (startRelay checks).
}
