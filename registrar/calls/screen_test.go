package calls

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
)

// TestScreenedWithoutTransactions plays a flood's unit: an INVITE without
// credentials and a BYE for a dialog that never existed, from a source that
// may be forged. Each gets exactly one answer (407, 481) and nothing is
// retransmitted: no transaction was made. A real phone's retransmission of
// its INVITE gets the same 407 again, with the same To tag.
func TestScreenedWithoutTransactions(t *testing.T) {
	e := newEnv(t)
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: e.n.IP(9).AsSlice()})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	me := conn.LocalAddr().(*net.UDPAddr)
	msg := func(method, toTag string) string {
		to := "<sip:15550001111@edgewise>"
		if toTag != "" {
			to += ";tag=" + toTag
		}
		return fmt.Sprintf("%s sip:15550001111@%s SIP/2.0\r\nVia: SIP/2.0/UDP %s;branch=z9hG4bK-%s-1;rport\r\n"+
			"Max-Forwards: 70\r\nFrom: <sip:alice@edgewise>;tag=f1\r\nTo: %s\r\nCall-ID: screen-%s@test\r\n"+
			"CSeq: 1 %s\r\nContact: <sip:alice@%s>\r\nContent-Length: 0\r\n\r\n", method, e.udp(), me, method, to, method, method, me)
	}
	read := func(window time.Duration) []*sip.Response {
		var out []*sip.Response
		buf := make([]byte, 65535)
		deadline := time.Now().Add(window)
		for {
			conn.SetReadDeadline(deadline)
			n, err := conn.Read(buf)
			if err != nil {
				return out
			}
			m, err := sip.ParseMessage(buf[:n])
			if err != nil {
				t.Fatalf("unparsable answer: %v", err)
			}
			if r, ok := m.(*sip.Response); ok {
				out = append(out, r)
			}
		}
	}
	// settle waits (up to 3 s: the box may be busy) for the first answer,
	// then for tail more, to see that no second one follows.
	settle := func(tail time.Duration) []*sip.Response {
		buf := make([]byte, 65535)
		conn.SetReadDeadline(time.Now().Add(3 * time.Second))
		n, err := conn.Read(buf)
		if err != nil {
			return nil
		}
		m, err := sip.ParseMessage(buf[:n])
		if err != nil {
			t.Fatalf("unparsable answer: %v", err)
		}
		r, ok := m.(*sip.Response)
		if !ok {
			t.Fatalf("a request, not an answer: %s", buf[:n])
		}
		return append([]*sip.Response{r}, read(tail)...)
	}
	invite := msg("INVITE", "")
	conn.WriteToUDP([]byte(invite), net.UDPAddrFromAddrPort(e.udp()))
	// Timer A would have retransmitted a stateful 407 at 0.5 s and 1.5 s.
	got := read(2500 * time.Millisecond)
	if len(got) != 1 || got[0].StatusCode != 407 || got[0].GetHeader("Proxy-Authenticate") == nil {
		t.Fatalf("INVITE without credentials: got %d answers %v, want exactly one 407", len(got), got)
	}
	tag := tagOf(got[0].To().Params)
	// The phone's own retransmission: the same 407 (same tag) again.
	conn.WriteToUDP([]byte(invite), net.UDPAddrFromAddrPort(e.udp()))
	again := settle(300 * time.Millisecond)
	if len(again) != 1 || again[0].StatusCode != 407 || tagOf(again[0].To().Params) != tag {
		t.Fatalf("retransmitted INVITE: %v, want one 407 with tag %s", again, tag)
	}
	// Its ACK is dropped, not answered, and completes nothing.
	ack := strings.Replace(msg("ACK", tag), "branch=z9hG4bK-ACK-1", "branch=z9hG4bK-INVITE-1", 1)
	conn.WriteToUDP([]byte(ack), net.UDPAddrFromAddrPort(e.udp()))

	for _, m := range []string{"BYE", "INFO", "UPDATE"} {
		conn.WriteToUDP([]byte(msg(m, "never-existed")), net.UDPAddrFromAddrPort(e.udp()))
		got := settle(300 * time.Millisecond)
		if len(got) != 1 || got[0].StatusCode != 481 {
			t.Fatalf("%s for an unknown dialog: %v, want exactly one 481", m, got)
		}
	}
	if n := e.srv.Stats().Screened.Load(); n != 6 {
		t.Errorf("screened %d requests, want 6 (INVITE twice, ACK, BYE, INFO, UPDATE)", n)
	}
	if n := len(e.b.Calls()); n != 0 {
		t.Errorf("%d calls after junk", n)
	}
}
