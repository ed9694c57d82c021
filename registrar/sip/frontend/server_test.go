package frontend

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"go.uber.org/goleak"

	"github.com/edgewise-sip/edgewise/test/kit"
)

// startServer runs a server on loopback (UDP and TCP, ports picked by the
// kernel) and stops it when the test ends, failing if Run does not return.
func startServer(t *testing.T, setup func(*Server)) *Server {
	t.Helper()
	cert, key := writeTestCert(t)
	s, err := New(Settings{
		Listen: []Listen{{Transport: "udp", Host: "127.0.0.1"}, {Transport: "tcp", Host: "127.0.0.1"},
			{Transport: "tls", Host: "127.0.0.1"}},
		UserAgent:   "edgewise-test",
		TLSCertFile: cert,
		TLSKeyFile:  key,
	}, kit.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	if setup != nil {
		setup(s)
	}
	runServer(t, s)
	return s
}

// runServer runs s until the test ends, once it is ready.
func runServer(t *testing.T, s *Server) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	select {
	case <-s.Ready():
	case err := <-done:
		t.Fatalf("Run: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("server not ready")
	}
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run returned %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Run did not return after cancel")
		}
	})
}

// peer is a raw SIP endpoint for tests: it sends bytes and reads messages.
type peer struct {
	t    *testing.T
	udp  *net.UDPConn
	tcp  net.Conn
	rd   *bufio.Reader
	to   netip.AddrPort
	port int
	tls  bool // tcp is a TLS connection
}

func udpPeer(t *testing.T, s *Server) *peer {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &peer{t: t, udp: c, to: s.Addr("udp"), port: c.LocalAddr().(*net.UDPAddr).Port}
}

func tcpPeer(t *testing.T, s *Server) *peer {
	t.Helper()
	c, err := net.Dial("tcp", s.Addr("tcp").String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &peer{t: t, tcp: c, rd: bufio.NewReader(c), to: s.Addr("tcp"), port: c.LocalAddr().(*net.TCPAddr).Port}
}

// tlsPeer talks SIP over TLS (RFC 3261 §26.2) to the tls listener.
func tlsPeer(t *testing.T, s *Server) *peer {
	t.Helper()
	c, err := tls.Dial("tcp", s.Addr("tls").String(), &tls.Config{InsecureSkipVerify: true}) // the test's self-signed cert
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &peer{t: t, tcp: c, rd: bufio.NewReader(c), to: s.Addr("tls"), port: c.LocalAddr().(*net.TCPAddr).Port, tls: true}
}

func (p *peer) transport() string {
	switch {
	case p.udp != nil:
		return "UDP"
	case p.tls:
		return "TLS"
	}
	return "TCP"
}

func (p *peer) send(msg string) {
	p.t.Helper()
	var err error
	if p.udp != nil {
		_, err = p.udp.WriteToUDPAddrPort([]byte(msg), p.to)
	} else {
		_, err = p.tcp.Write([]byte(msg))
	}
	if err != nil {
		p.t.Fatal(err)
	}
}

// recv returns the next message, or "" when none arrives within wait.
func (p *peer) recv(wait time.Duration) string {
	p.t.Helper()
	deadline := time.Now().Add(wait)
	if p.udp != nil {
		p.udp.SetReadDeadline(deadline)
		buf := make([]byte, 65536)
		n, _, err := p.udp.ReadFromUDPAddrPort(buf)
		if err != nil {
			return ""
		}
		return string(buf[:n])
	}
	p.tcp.SetReadDeadline(deadline)
	var hdr strings.Builder
	for {
		line, err := p.rd.ReadString('\n')
		if err != nil {
			return ""
		}
		if line == "\r\n" && hdr.Len() == 0 {
			continue // keepalive pong between messages
		}
		hdr.WriteString(line)
		if line == "\r\n" {
			break
		}
	}
	msg := hdr.String()
	if i := strings.Index(strings.ToLower(msg), "content-length:"); i >= 0 {
		var n int
		fmt.Sscanf(msg[i+len("content-length:"):], "%d", &n)
		body := make([]byte, n)
		if _, err := io.ReadFull(p.rd, body); err != nil {
			return ""
		}
		msg += string(body)
	}
	return msg
}

func (p *peer) expect(code int) string {
	p.t.Helper()
	msg := p.recv(5 * time.Second)
	if !strings.HasPrefix(msg, fmt.Sprintf("SIP/2.0 %d ", code)) {
		p.t.Fatalf("%s: want %d, got %q", p.transport(), code, msg)
	}
	return msg
}

func (p *peer) expectNothing() {
	p.t.Helper()
	// Proving an absence needs a timeout; keep it short.
	if msg := p.recv(300 * time.Millisecond); msg != "" {
		p.t.Fatalf("%s: expected no response, got %q", p.transport(), msg)
	}
}

var seq atomic.Int64

// request builds a request from this peer; extra lines end with CRLF.
func (p *peer) request(method string, extra string) string {
	n := seq.Add(1)
	return fmt.Sprintf("%s sip:edgewise@%s SIP/2.0\r\n"+
		"Via: SIP/2.0/%s 127.0.0.1:%d;branch=z9hG4bK-%d;rport\r\n"+
		"Max-Forwards: 70\r\n"+
		"From: <sip:alice@edgewise>;tag=f%d\r\n"+
		"To: <sip:alice@edgewise>\r\n"+
		"Call-ID: call-%d\r\n"+
		"CSeq: 1 %s\r\n"+
		"%s"+
		"Content-Length: 0\r\n\r\n", method, p.to, p.transport(), p.port, n, n, n, method, extra)
}

func header(msg, name string) string {
	for _, line := range strings.Split(msg, "\r\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.EqualFold(strings.TrimSpace(k), name) {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

func eachTransport(t *testing.T, s *Server, f func(t *testing.T, p *peer)) {
	t.Run("udp", func(t *testing.T) { f(t, udpPeer(t, s)) })
	t.Run("tcp", func(t *testing.T) { f(t, tcpPeer(t, s)) })
	t.Run("tls", func(t *testing.T) { f(t, tlsPeer(t, s)) })
}

func okHandler(req *sip.Request, tx sip.ServerTransaction) {
	res := sip.NewResponseFromRequest(req, 200, "OK", nil)
	res.AppendHeader(sip.NewHeader("X-Source", req.Source()))
	res.AppendHeader(sip.NewHeader("X-Local", req.Laddr.String()))
	tx.Respond(res)
}

func TestBuiltinResponses(t *testing.T) {
	s := startServer(t, func(s *Server) {
		s.HandleStateless(sip.REGISTER, okHandler)
		s.Handle(sip.MESSAGE, okHandler)
	})
	eachTransport(t, s, func(t *testing.T, p *peer) {
		tests := []struct {
			method string
			code   int
		}{
			{"OPTIONS", 200},
			{"REGISTER", 200},
			{"MESSAGE", 200}, // through sipgo's transaction layer
			{"SUBSCRIBE", 405},
			{"FROBNICATE", 501},
			{"CANCEL", 481},
		}
		for _, tt := range tests {
			p.send(p.request(tt.method, ""))
			res := p.expect(tt.code)
			if tt.code == 200 && tt.method == "OPTIONS" || tt.code == 405 || tt.code == 501 {
				if got := header(res, "Allow"); got != "MESSAGE, OPTIONS, REGISTER" {
					t.Errorf("%s: Allow = %q", tt.method, got)
				}
			}
			if tt.method != "MESSAGE" && header(res, "Server") != "edgewise-test" {
				t.Errorf("%s: no Server header in %q", tt.method, res)
			}
		}
		p.send(p.request("ACK", ""))
		p.expectNothing()
	})
}

func TestStatelessRequestDetails(t *testing.T) {
	s := startServer(t, func(s *Server) { s.HandleStateless(sip.REGISTER, okHandler) })
	eachTransport(t, s, func(t *testing.T, p *peer) {
		p.send(p.request("REGISTER", ""))
		res := p.expect(200)
		wantSrc := fmt.Sprintf("127.0.0.1:%d", p.port)
		if got := header(res, "X-Source"); got != wantSrc {
			t.Errorf("Source = %q, want %q", got, wantSrc)
		}
		if got := header(res, "X-Local"); got != p.to.String() {
			t.Errorf("Laddr = %q, want %q", got, p.to)
		}
		if via := header(res, "Via"); !strings.Contains(via, fmt.Sprintf("rport=%d", p.port)) || !strings.Contains(via, "received=127.0.0.1") {
			t.Errorf("Via = %q, want rport and received", via)
		}
	})
	t.Run("udp without rport goes to the Via port", func(t *testing.T) {
		sender, listener := udpPeer(t, s), udpPeer(t, s)
		msg := strings.Replace(sender.request("REGISTER", ""), fmt.Sprintf("127.0.0.1:%d;branch", sender.port), fmt.Sprintf("127.0.0.1:%d;branch", listener.port), 1)
		msg = strings.Replace(msg, ";rport", "", 1)
		sender.send(msg)
		listener.expect(200)
	})
}

func TestMalformedMessages(t *testing.T) {
	s := startServer(t, func(s *Server) { s.HandleStateless(sip.REGISTER, okHandler) })
	eachTransport(t, s, func(t *testing.T, p *peer) {
		// A header sipgo cannot parse: answered 400 from the raw lines.
		p.send(strings.Replace(p.request("REGISTER", ""), "To: <sip:alice@edgewise>", "To: <sip:alice@edgewise", 1))
		if res := p.expect(400); header(res, "CSeq") != "1 REGISTER" || !strings.Contains(header(res, "To"), ";tag=") {
			t.Errorf("400 lacks CSeq or To tag: %q", res)
		}
		// Parsable but missing Call-ID: 400 as well.
		p.send(strings.Replace(p.request("OPTIONS", ""), "Call-ID:", "X-Call-ID:", 1))
		p.expect(400)
		// CSeq method differs from the request method.
		p.send(strings.Replace(p.request("OPTIONS", ""), "CSeq: 1 OPTIONS", "CSeq: 1 INVITE", 1))
		p.expect(400)
		// No Via: nothing to answer to.
		p.send(strings.Replace(p.request("OPTIONS", ""), "Via:", "X-Via:", 1))
		if p.udp != nil {
			p.expectNothing()
		}
		// The server is still fine.
		p.send(p.request("OPTIONS", ""))
		p.expect(200)
	})
}

func TestGarbage(t *testing.T) {
	s := startServer(t, func(s *Server) { s.HandleStateless(sip.REGISTER, okHandler) })
	garbage := []string{
		"\x00\x01\x02\x03 binary junk \xff\xfe",
		"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
		"REGISTER\r\n\r\n",
		"SIP/2.0\r\n\r\n",
		"INVITE sip:x SIP/2.0\r\nVia: \r\nCSeq: x\r\n\r\n",
		strings.Repeat("A", 4000),
		"\r\n\r\n",
	}
	t.Run("udp", func(t *testing.T) {
		p := udpPeer(t, s)
		for _, g := range garbage {
			p.send(g)
		}
		p.expectNothing()
		p.send(p.request("OPTIONS", ""))
		p.expect(200)
		if s.Stats().Garbage.Load() == 0 {
			t.Error("garbage not counted")
		}
	})
	t.Run("tcp", func(t *testing.T) {
		for _, g := range garbage {
			p := tcpPeer(t, s)
			p.send(g + "\r\n\r\n")
			p.send(p.request("OPTIONS", ""))
			// Framing survives junk with a blank line after it.
			p.expect(200)
		}
	})
	t.Run("tcp oversized header closes the connection", func(t *testing.T) {
		p := tcpPeer(t, s)
		p.send("OPTIONS sip:x SIP/2.0\r\nX: " + strings.Repeat("a", maxHeaderBytes+10))
		p.tcp.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := p.rd.ReadByte(); err != io.EOF {
			t.Fatalf("read after oversized header: %v, want EOF", err)
		}
	})
	t.Run("tcp huge Content-Length", func(t *testing.T) {
		p := tcpPeer(t, s)
		p.send(strings.Replace(p.request("OPTIONS", ""), "Content-Length: 0", "Content-Length: 99999999", 1))
		p.expect(513)
	})
	t.Run("tcp keepalive ping", func(t *testing.T) {
		p := tcpPeer(t, s)
		p.send("\r\n\r\n")
		p.tcp.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 2)
		if _, err := io.ReadFull(p.rd, buf); err != nil || string(buf) != "\r\n" {
			t.Fatalf("pong = %q, %v", buf, err)
		}
	})
}

func TestGuard(t *testing.T) {
	var block atomic.Bool
	var handled atomic.Int64
	s := startServer(t, func(s *Server) {
		s.HandleStateless(sip.REGISTER, func(req *sip.Request, tx sip.ServerTransaction) {
			handled.Add(1)
			okHandler(req, tx)
		})
		s.SetGuard(func(a netip.Addr) bool { return block.Load() && a == netip.MustParseAddr("127.0.0.1") })
	})
	block.Store(true)
	eachTransport(t, s, func(t *testing.T, p *peer) {
		before := s.Stats().Blocked.Load()
		p.send(p.request("REGISTER", ""))
		if p.udp != nil {
			p.expectNothing()
		} else {
			p.expect(403)
		}
		// The request was stopped by the guard, not lost or answered by
		// the handler.
		if got := s.Stats().Blocked.Load() - before; got != 1 {
			t.Fatalf("blocked counter rose by %d, want 1", got)
		}
		if n := handled.Load(); n != 0 {
			t.Fatalf("the handler saw %d requests from a blocked source", n)
		}
	})
	block.Store(false)
	eachTransport(t, s, func(t *testing.T, p *peer) {
		p.send(p.request("REGISTER", ""))
		p.expect(200)
	})
}

// TestGuardPassesResponses: a locked-out source's responses still complete
// our client transactions. Were they dropped, a forged request that locks
// out Twilio's address would make its edge look dead.
func TestGuardPassesResponses(t *testing.T) {
	s := startServer(t, func(s *Server) {
		s.SetGuard(func(netip.Addr) bool { return true })
	})
	phone := udpPeer(t, s)
	phoneAddr := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(phone.port))
	errc := make(chan error, 1)
	go func() {
		errc <- s.Ping(context.Background(), "udp", s.Addr("udp"), phoneAddr, fmt.Sprintf("sip:alice@127.0.0.1:%d", phone.port))
	}()
	phone.udp.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 65536)
	n, from, err := phone.udp.ReadFromUDPAddrPort(buf)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := sip.ParseMessage(buf[:n])
	if err != nil {
		t.Fatal(err)
	}
	res := sip.NewResponseFromRequest(msg.(*sip.Request), 200, "OK", nil)
	phone.udp.WriteToUDPAddrPort([]byte(res.String()), from)
	select {
	case err := <-errc:
		if err != nil {
			t.Fatalf("Ping through a guarded source's response: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the response of a guarded source was dropped")
	}
}

func TestHandlerPanicDoesNotCrash(t *testing.T) {
	s := startServer(t, func(s *Server) {
		s.HandleStateless(sip.REGISTER, func(*sip.Request, sip.ServerTransaction) { panic("boom") })
	})
	p := udpPeer(t, s)
	p.send(p.request("REGISTER", ""))
	p.send(p.request("OPTIONS", ""))
	p.expect(200)
}

func TestPing(t *testing.T) {
	s := startServer(t, nil)
	phone := udpPeer(t, s)
	phoneAddr := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(phone.port))
	errc := make(chan error, 1)
	go func() {
		errc <- s.Ping(context.Background(), "udp", s.Addr("udp"), phoneAddr, fmt.Sprintf("sip:alice@127.0.0.1:%d", phone.port))
	}()
	phone.udp.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 65536)
	n, from, err := phone.udp.ReadFromUDPAddrPort(buf)
	if err != nil {
		select {
		case perr := <-errc:
			t.Fatalf("no OPTIONS: %v; Ping: %v", err, perr)
		default:
			t.Fatal(err)
		}
	}
	if from != s.Addr("udp") {
		t.Errorf("OPTIONS came from %s, want the listening socket %s", from, s.Addr("udp"))
	}
	msg, err := sip.ParseMessage(buf[:n])
	if err != nil {
		t.Fatal(err)
	}
	req := msg.(*sip.Request)
	if req.Method != sip.OPTIONS {
		t.Fatalf("got %s", req.Method)
	}
	res := sip.NewResponseFromRequest(req, 200, "OK", nil)
	phone.udp.WriteToUDPAddrPort([]byte(res.String()), from)
	if err := <-errc; err != nil {
		t.Fatalf("Ping: %v", err)
	}

	// A silent contact: Ping fails when its context ends.
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := s.Ping(ctx, "udp", s.Addr("udp"), phoneAddr, "sip:alice@127.0.0.1"); err == nil {
		t.Fatal("Ping of a silent contact succeeded")
	}
}

// TestRunStopsCleanly checks that Run returns and leaves no goroutine behind,
// with TCP connections open and requests in flight.
func TestRunStopsCleanly(t *testing.T) {
	leaks := goleak.IgnoreCurrent()
	func() {
		s, err := New(Settings{Listen: []Listen{{Transport: "udp", Host: "127.0.0.1"}, {Transport: "tcp", Host: "127.0.0.1"}}}, kit.Logger(t))
		if err != nil {
			t.Fatal(err)
		}
		// Answers later, from its own goroutine, as the registrar does
		// while its bindings are written.
		release := make(chan struct{})
		s.HandleStateless(sip.REGISTER, func(req *sip.Request, tx sip.ServerTransaction) {
			if d, ok := tx.(interface{ Detached() bool }); !ok || !d.Detached() {
				t.Error("stateless transaction is not detached")
			}
			go func() {
				<-release
				okHandler(req, tx)
			}()
		})
		s.Handle(sip.MESSAGE, okHandler)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- s.Run(ctx) }()
		<-s.Ready()
		u, tc := udpPeer(t, s), tcpPeer(t, s)
		for _, p := range []*peer{u, tc} {
			p.send(p.request("MESSAGE", ""))
			p.expect(200)
			p.send(p.request("REGISTER", "")) // answered after release
		}
		close(release)
		u.expect(200)
		tc.expect(200)
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Run did not return")
		}
		u.udp.Close()
		tc.tcp.Close()
	}()
	goleak.VerifyNone(t, leaks)
}

func TestListenErrors(t *testing.T) {
	if _, err := New(Settings{}, nil); err == nil {
		t.Error("no listen address accepted")
	}
	if _, err := New(Settings{Listen: []Listen{{Transport: "sctp"}}}, nil); err == nil {
		t.Error("sctp accepted")
	}
	if _, err := New(Settings{Listen: []Listen{{Transport: "udp", Host: "example.com"}}}, nil); err == nil {
		t.Error("host name accepted")
	}
	// A port in use makes Run fail fast, not hang.
	busy, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	s, err := New(Settings{Listen: []Listen{{Transport: "udp", Host: "127.0.0.1", Port: busy.LocalAddr().(*net.UDPAddr).Port}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Run(context.Background()); err == nil {
		t.Fatal("Run on a busy port succeeded")
	}
}

func TestRawResponse(t *testing.T) {
	req := "REGISTER sip:x SIP/2.0\r\nv: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1\r\nf: <sip:a@x>;tag=1\r\nt: <sip:a@x>\r\ni: abc\r\nCSeq: 2 REGISTER\r\nContact: <broken\r\n\r\n"
	res := string(rawResponse([]byte(req), 400, "Bad Request", "ua", ""))
	for _, want := range []string{"SIP/2.0 400 Bad Request\r\n", "Via: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1\r\n", "Call-ID: abc\r\n", "CSeq: 2 REGISTER\r\n", "To: <sip:a@x>;tag="} {
		if !strings.Contains(res, want) {
			t.Errorf("missing %q in\n%s", want, res)
		}
	}
	for _, bad := range []string{
		strings.Replace(req, "CSeq: 2 REGISTER", "CSeq: 2 ACK", 1),
		strings.Replace(req, "v: ", "x: ", 1),
		"SIP/2.0 200 OK\r\nVia: a\r\nCSeq: 1 X\r\n\r\n",
	} {
		if r := rawResponse([]byte(bad), 400, "Bad Request", "ua", ""); r != nil {
			t.Errorf("answered %q", bad)
		}
	}
	if !bytes.Contains(rawResponse([]byte(req), 403, "Forbidden", "ua", ""), []byte("403 Forbidden")) {
		t.Error("403 not built")
	}
}
