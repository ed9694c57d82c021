package frontend

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
)

// TestRetransmissionAnsweredAgain: a retransmitted stateless request gets
// the very response the first copy got (here a challenge with a fresh
// nonce each time the handler runs) without reaching the handler again; the
// same bytes from another source, and a changed request, are handled anew.
func TestRetransmissionAnsweredAgain(t *testing.T) {
	var handled atomic.Int64
	s := startServer(t, func(s *Server) {
		s.HandleStateless(sip.REGISTER, func(req *sip.Request, tx sip.ServerTransaction) {
			n := handled.Add(1)
			res := sip.NewResponseFromRequest(req, 401, "Unauthorized", nil)
			res.AppendHeader(sip.NewHeader("WWW-Authenticate", fmt.Sprintf(`Digest realm="edgewise", nonce="n%d"`, n)))
			tx.Respond(res)
		})
	})
	p := udpPeer(t, s)
	req := p.request("REGISTER", "")
	p.send(req)
	first := p.expect(401)
	p.send(req)
	if again := p.expect(401); again != first {
		t.Fatalf("retransmission answered with\n%s\nwant the first response\n%s", again, first)
	}
	if n := handled.Load(); n != 1 {
		t.Fatalf("handler ran %d times for a request and its retransmission", n)
	}
	if n := s.Stats().Retransmissions.Load(); n != 1 {
		t.Fatalf("Retransmissions = %d, want 1", n)
	}

	// The same bytes from another source: a new request (a stranger who
	// captured the datagram learns nothing from the first answer).
	other := udpPeer(t, s)
	other.send(strings.Replace(req, fmt.Sprintf(":%d;branch", p.port), fmt.Sprintf(":%d;branch", other.port), 1))
	other.expect(401)
	p2 := &peer{t: t, udp: other.udp, to: other.to, port: other.port}
	p2.send(req) // p's exact bytes, from other's socket; rport sends it back here
	if res := p2.expect(401); header(res, "WWW-Authenticate") == header(first, "WWW-Authenticate") {
		t.Fatal("p's request sent from another source was answered with p's response")
	}
	// A request that changes anything is handled.
	p.send(strings.Replace(req, "CSeq: 1 REGISTER", "CSeq: 2 REGISTER", 1))
	p.expect(401)
	if n := handled.Load(); n != 4 {
		t.Fatalf("handler ran %d times, want 4", n)
	}
}

func TestRepliesRotateAndBound(t *testing.T) {
	dst := netip.MustParseAddrPort("192.0.2.1:5060")
	now := time.Unix(1000, 0)
	r := newReplies(replyShards * 2 * 2 * (replyHeader + 1)) // two 1-byte replies per shard and generation
	r.put(16, dst, []byte("a"), now)
	if b, to, ok := r.get(16, nil, now.Add(replyKeep+time.Millisecond)); !ok || string(b) != "a" || to != dst {
		t.Fatalf("after one rotation: %q %v %v, want the reply to %v", b, to, ok, dst)
	}
	if _, _, ok := r.get(16, nil, now.Add(2*replyKeep+2*time.Millisecond)); ok {
		t.Fatal("a reply outlived two rotations")
	}
	// Shard 0 holds two per generation: the third is not remembered.
	later := now.Add(10 * replyKeep)
	for _, fp := range []uint64{32, 48, 64} {
		r.put(fp, dst, []byte("x"), later)
	}
	if _, _, ok := r.get(64, nil, later); ok {
		t.Fatal("a full shard remembered one more reply")
	}
	if n := r.len(); n != 2 {
		t.Fatalf("len = %d, want 2", n)
	}
}

// TestRepliesReuseMemory: records survive the rotation that reuses the
// oldest generation's slab, keep their destination (IPv4, IPv6), and once
// the slabs have grown, remembering responses allocates nothing.
func TestRepliesReuseMemory(t *testing.T) {
	r := newReplies(64 << 20)
	v4 := netip.MustParseAddrPort("192.0.2.1:5060")
	v6 := netip.MustParseAddrPort("[2001:db8::1]:5062")
	now := time.Unix(1000, 0)
	body := []byte(strings.Repeat("SIP/2.0 200 OK\r\n", 20))
	msgs := make([][]byte, 1000)
	for i := range msgs {
		msgs[i] = append(slices.Clip(body), byte(i))
	}
	fill := func(gen int, at time.Time) {
		for i := range 1000 {
			fp := uint64(gen*1000 + i + 1) // fingerprints are never 0
			dst := v4
			if i%2 == 1 {
				dst = v6
			}
			r.put(fp, dst, msgs[i], at)
		}
	}
	for gen := range 4 {
		at := now.Add(time.Duration(gen) * replyKeep)
		fill(gen, at)
		for _, g := range []int{gen, gen - 1} { // this generation and the one before
			if g < 0 {
				continue
			}
			for _, i := range []int{0, 1, 999} {
				b, dst, ok := r.get(uint64(g*1000+i+1), nil, at)
				want := v4
				if i%2 == 1 {
					want = v6
				}
				if !ok || dst != want || string(b) != string(msgs[i]) {
					t.Fatalf("generation %d, record %d read at generation %d: ok=%v dst=%v len=%d", g, i, gen, ok, dst, len(b))
				}
			}
		}
		if _, _, ok := r.get(uint64((gen-2)*1000+1), nil, at); gen >= 2 && ok {
			t.Fatalf("generation %d still remembered at generation %d", gen-2, gen)
		}
	}
	gen := 4
	allocs := testing.AllocsPerRun(5, func() {
		fill(gen, now.Add(time.Duration(gen)*replyKeep))
		gen++
	})
	if allocs > 0 {
		t.Fatalf("remembering 1,000 responses allocated %.0f times once the slabs had grown", allocs)
	}
}

// TestRepliesSetReplacement: when a set is full, a new response takes the
// slot of the previous generation's record before it takes a current one,
// and a response remembered again for the same request replaces its own.
func TestRepliesSetReplacement(t *testing.T) {
	dst := netip.MustParseAddrPort("192.0.2.1:5060")
	now := time.Unix(1000, 0)
	r := newReplies(1 << 20)
	// Fingerprints in shard 0 and set 0: multiples of replyShards*sets.
	step := uint64(replyShards * r.maxSets)
	a, b, c, d := step, 2*step, 3*step, 4*step
	r.put(a, dst, []byte("a"), now)
	later := now.Add(replyKeep) // a is now the previous generation's
	r.put(b, dst, []byte("b"), later)
	r.put(c, dst, []byte("c"), later) // the set is full: c replaces a
	for fp, want := range map[uint64]string{b: "b", c: "c"} {
		if got, _, ok := r.get(fp, nil, later); !ok || string(got) != want {
			t.Fatalf("get(%d) = %q %v, want %q", fp, got, ok, want)
		}
	}
	if _, _, ok := r.get(a, nil, later); ok {
		t.Fatal("the previous generation's record survived; a current one was replaced instead")
	}
	r.put(b, dst, []byte("b2"), later)
	if got, _, _ := r.get(b, nil, later); string(got) != "b2" {
		t.Fatalf("b remembered again reads %q, want b2", got)
	}
	if got, _, ok := r.get(c, nil, later); !ok || string(got) != "c" {
		t.Fatalf("remembering b again displaced c: %q %v", got, ok)
	}
	r.put(d, dst, []byte("d"), later) // both current: d takes the first slot
	if _, _, ok := r.get(d, nil, later); !ok {
		t.Fatal("d not remembered in a full set")
	}
	if n := r.len(); n != 2 {
		t.Fatalf("len = %d, want 2 (one set of two slots)", n)
	}
}

// TestRepliesIndexGrows: the index starts small, doubles as records come in
// without losing any (both generations'), and stops at its bound.
func TestRepliesIndexGrows(t *testing.T) {
	dst := netip.MustParseAddrPort("192.0.2.1:5060")
	now := time.Unix(1000, 0)
	r := newReplies(maxReplies)
	sh := &r.shards[0]
	fps := func(gen, n int) []uint64 { // n fingerprints of shard 0
		out := make([]uint64, n)
		for i := range out {
			out[i] = uint64((gen*n+i+1)*replyShards) ^ uint64(i)<<40
		}
		return out
	}
	r.put(replyShards, dst, []byte("x"), now)
	if got := len(sh.slots); got != replyMinSets*replyWays {
		t.Fatalf("first index: %d slots, want %d", got, replyMinSets*replyWays)
	}
	older, newer := fps(0, 3000), fps(1, 3000)
	for _, fp := range older {
		r.put(fp, dst, []byte("old"), now)
	}
	later := now.Add(replyKeep)
	for _, fp := range newer {
		r.put(fp, dst, []byte("new"), later)
	}
	if got := len(sh.slots); got < 3*6000/2 || got > 4*6000 {
		t.Fatalf("index for 6,000 records: %d slots", got)
	}
	for i, list := range [][]uint64{older, newer} {
		lost := 0
		for _, fp := range list {
			if _, _, ok := r.get(fp, nil, later); !ok {
				lost++
			}
		}
		// Two-way sets at most two thirds full lose a few records.
		if lost > len(list)/50 {
			t.Errorf("generation %d: %d of %d records lost while the index grew", i, lost, len(list))
		}
	}
	small := newReplies(replyShards * 2 * 4 * replyTypical) // 4 typical records per shard and generation
	for i := range 1000 {
		small.put(uint64((i+1)*replyShards), dst, []byte("y"), now)
	}
	if got, max := len(small.shards[0].slots), small.maxSets*replyWays; got != max {
		t.Fatalf("bounded index: %d slots, bound %d", got, max)
	}
}
