package frontend

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgewise-sip/edgewise/test/kit"
)

// TestSequencerReleasesInOrder: tickets settled out of order reach sipgo in
// ticket order, passed tickets release those behind them, and a ticket
// behind an unsettled one waits for it.
func TestSequencerReleasesInOrder(t *testing.T) {
	tests := []struct {
		name    string
		settle  []int // ticket numbers in settling order; negative: pass
		want    []int // tickets delivered, in order
		pending int   // tickets still parked at the end
	}{
		{"in order", []int{0, 1, 2}, []int{0, 1, 2}, 0},
		{"reversed", []int{2, 1, 0}, []int{0, 1, 2}, 0},
		{"pass releases", []int{2, -1, 0}, []int{0, 2}, 0},
		{"gap holds", []int{1, 2}, nil, 2},
		{"grows past the ring", []int{1, 2, 3, 4, 5, 6, 7, 8, 9, 0}, []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, 0},
		{"grows, then holds", []int{1, 2, 3, 4, 5, 6}, nil, 6},
		{"wraps the ring", []int{1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14, 17, 16, 19, 18},
			[]int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q := sequencer{slots: make([]slot, 4)}
			inbox := make(chan datagram, 32)
			var st Stats
			for _, n := range tt.settle {
				seq, fwd := n, true
				if n < 0 {
					seq, fwd = -n, false
				}
				q.settle(uint64(seq), fwd, datagram{data: []byte(strconv.Itoa(seq))}, inbox, &st)
			}
			close(inbox)
			var got []int
			for d := range inbox {
				n, _ := strconv.Atoi(string(d.data))
				got = append(got, n)
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("delivered %v, want %v", got, tt.want)
			}
			parked := 0
			for _, sl := range q.slots {
				if sl.settled {
					parked++
				}
			}
			if parked != tt.pending {
				t.Errorf("%d tickets parked, want %d", parked, tt.pending)
			}
		})
	}
}

// TestUDPKeepsOrderForSipgo: one peer sends numbered responses back to back,
// as a phone sends 180 Ringing and 200 OK when it answers at once. Several
// readers share the socket, yet sipgo must see them in the order sent.
func TestUDPKeepsOrderForSipgo(t *testing.T) {
	log := kit.Logger(t)
	u, err := listenUDP(netip.MustParseAddrPort("127.0.0.1:0"), 4<<20, log)
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{log: log}
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() { u.readLoop(s) })
	}
	var last atomic.Int64
	last.Store(-1)
	outOfOrder := make(chan string, 1)
	wg.Go(func() {
		conn := u.sipgoConn()
		buf := make([]byte, 2048)
		for {
			n, _, err := conn.ReadFrom(buf)
			if err != nil {
				return
			}
			msg := string(buf[:n])
			i := strings.Index(msg, "CSeq: ")
			seq, _ := strconv.Atoi(strings.Fields(msg[i+len("CSeq: "):])[0])
			if prev := last.Load(); int64(seq) <= prev {
				select {
				case outOfOrder <- fmt.Sprintf("response %d reached sipgo after %d", seq, prev):
				default:
				}
			}
			last.Store(int64(seq))
		}
	})
	t.Cleanup(func() {
		u.close()
		wg.Wait()
	})

	c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(u.addr))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const total, burst = 20000, 64
	for first := 0; first < total; first += burst {
		for i := first; i < first+burst; i++ {
			fmt.Fprintf(c, "SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-order\r\n"+
				"From: <sip:a@x>;tag=1\r\nTo: <sip:b@x>;tag=2\r\nCall-ID: order\r\nCSeq: %d INVITE\r\nContent-Length: 0\r\n\r\n", i)
		}
		// Let the burst drain (a datagram the kernel dropped would
		// never arrive, so the wait is bounded), then send the next.
		deadline := time.Now().Add(2 * time.Second)
		for last.Load() < int64(first+burst-1) && time.Now().Before(deadline) {
			time.Sleep(100 * time.Microsecond)
		}
		select {
		case msg := <-outOfOrder:
			t.Fatal(msg)
		default:
		}
	}
	if got := last.Load(); got < total/2 {
		t.Fatalf("sipgo saw responses up to %d of %d", got, total)
	}
}

// TestFingerprint: a retransmission (the same bytes from the same source)
// has the same fingerprint; a request that differs in one byte, or the same
// bytes from another source, another; none is 0 (0 means "not known" to the
// digest check).
func TestFingerprint(t *testing.T) {
	src := netip.MustParseAddrPort("192.0.2.1:5060")
	req := []byte("REGISTER sip:example.com SIP/2.0\r\nCSeq: 1 REGISTER\r\n\r\n")
	again := append([]byte(nil), req...)
	changed := append([]byte(nil), req...)
	changed[len("REGISTER sip:example.com SIP/2.0\r\nCSeq: ")] = '2'
	if fingerprint(src, req) != fingerprint(src, again) {
		t.Error("a retransmission has another fingerprint")
	}
	if fingerprint(src, req) == fingerprint(src, changed) {
		t.Error("a changed request has the same fingerprint")
	}
	if fingerprint(src, req) == fingerprint(netip.MustParseAddrPort("192.0.2.1:5061"), req) {
		t.Error("the same bytes from another port have the same fingerprint")
	}
	for _, p := range [][]byte{nil, {}, req} {
		if fingerprint(src, p) == 0 {
			t.Errorf("fingerprint(%q) = 0", p)
		}
	}
}

// TestForwardCopiesSurviveReuse: datagrams waiting in the inbox keep their
// own bytes while the reader's buffer and recycled copies are reused.
func TestForwardCopiesSurviveReuse(t *testing.T) {
	u := &udpListener{order: sequencer{slots: make([]slot, 4)}, inbox: make(chan datagram, 64), closed: make(chan struct{}), sipgoReady: make(chan struct{})}
	s := &Server{}
	tk := &ticket{u: u}
	buf := make([]byte, 4096)
	conn := u.sipgoConn()
	out := make([]byte, 4096)
	for round := range 3 {
		sizes := []int{10, 1500, 2049, 7}
		for i, n := range sizes {
			for k := range n {
				buf[k] = byte('a' + (round*len(sizes)+i)%26)
			}
			u.issue(tk)
			tk.forward(s, buf[:n], netip.MustParseAddrPort("127.0.0.1:5060"))
		}
		for i, n := range sizes {
			got, _, err := conn.ReadFrom(out)
			if err != nil {
				t.Fatal(err)
			}
			want := strings.Repeat(string(rune('a'+(round*len(sizes)+i)%26)), n)
			if string(out[:got]) != want {
				t.Fatalf("round %d datagram %d: %d bytes %.20q…, want %d bytes of %q", round, i, got, out[:got], n, want[:1])
			}
		}
	}
}

// BenchmarkForwardToSipgo is every message of a call on its way from a
// reader to sipgo: the copy out of the read buffer and sipgo's read.
func BenchmarkForwardToSipgo(b *testing.B) {
	u := &udpListener{order: sequencer{slots: make([]slot, 4)}, inbox: make(chan datagram, 64), closed: make(chan struct{}), sipgoReady: make(chan struct{})}
	s := &Server{}
	tk := &ticket{u: u}
	msg := make([]byte, 900) // an INVITE with SDP
	out := make([]byte, 65536)
	conn := u.sipgoConn()
	from := netip.MustParseAddrPort("127.0.0.1:5060")
	b.ReportAllocs()
	for b.Loop() {
		u.issue(tk)
		tk.forward(s, msg, from)
		if _, _, err := conn.ReadFrom(out); err != nil {
			b.Fatal(err)
		}
	}
}
