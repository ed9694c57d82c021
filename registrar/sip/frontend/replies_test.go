package frontend

import (
	"fmt"
	"net/netip"
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
	r := newReplies(replyShards * 2 * 2) // two per shard and generation
	r.put(16, dst, []byte("a"), now)
	if rep, ok := r.get(16, now.Add(replyKeep+time.Millisecond)); !ok || string(rep.b) != "a" {
		t.Fatalf("after one rotation: %q %v, want the reply", rep.b, ok)
	}
	if _, ok := r.get(16, now.Add(2*replyKeep+2*time.Millisecond)); ok {
		t.Fatal("a reply outlived two rotations")
	}
	// Shard 0 holds two per generation: the third is not remembered.
	later := now.Add(10 * replyKeep)
	for _, fp := range []uint64{32, 48, 64} {
		r.put(fp, dst, []byte("x"), later)
	}
	if _, ok := r.get(64, later); ok {
		t.Fatal("a full shard remembered one more reply")
	}
	if n := r.len(); n != 2 {
		t.Fatalf("len = %d, want 2", n)
	}
}
