package frontend

import (
	"bufio"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/edgewise-sip/edgewise/test/kit"
)

// connsServer is startServer with tight connection bounds.
func connsServer(t *testing.T, c Connections) *Server {
	return startServer(t, func(s *Server) {
		s.HandleStateless(sip.REGISTER, okHandler)
		s.settings.Connections = c.withDefaults()
	})
}

// dialFrom opens a TCP connection to addr from a chosen loopback address.
func dialFrom(t *testing.T, ip, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// closedByServer waits (bounded) for the server to close c.
func closedByServer(c net.Conn, within time.Duration) bool {
	c.SetReadDeadline(time.Now().Add(within))
	buf := make([]byte, 512)
	for {
		_, err := c.Read(buf)
		if err == nil {
			continue
		}
		var ne net.Error
		return !(errors.As(err, &ne) && ne.Timeout())
	}
}

// TestConnectionCaps: connections over the per-source or the total cap are
// closed at accept; the ones already open, a phone's among them, work on.
func TestConnectionCaps(t *testing.T) {
	s := connsServer(t, Connections{Max: 5, MaxPerSource: 3})
	addr := s.Addr("tcp").String()
	phone := &peer{t: t, tcp: dialFrom(t, "127.0.0.1", addr)}
	phone.rd = bufio.NewReader(phone.tcp)
	phone.port = phone.tcp.LocalAddr().(*net.TCPAddr).Port
	phone.to = s.Addr("tcp")
	phone.send(phone.request("REGISTER", ""))
	phone.expect(200)
	var held []net.Conn
	for range 2 {
		held = append(held, dialFrom(t, "127.0.0.1", addr))
	}
	if !closedByServer(dialFrom(t, "127.0.0.1", addr), 2*time.Second) {
		t.Fatal("a fourth connection from one source stayed open")
	}
	for _, ip := range []string{"127.0.0.2", "127.0.0.3"} {
		held = append(held, dialFrom(t, ip, addr))
	}
	if !closedByServer(dialFrom(t, "127.0.0.4", addr), 2*time.Second) {
		t.Fatal("a sixth connection stayed open")
	}
	for i, c := range held {
		if closedByServer(c, 100*time.Millisecond) {
			t.Fatalf("held connection %d was closed", i)
		}
	}
	phone.send(phone.request("REGISTER", ""))
	phone.expect(200)
	if n := s.Stats().ConnRefused.Load(); n != 2 {
		t.Errorf("refused %d connections, want 2", n)
	}
	// A closed connection gives its place back.
	held[0].Close()
	kit.WaitFor(t, 5*time.Second, "the place to be free", func() bool { return s.OpenConns() == 4 })
	if closedByServer(dialFrom(t, "127.0.0.1", addr), 200*time.Millisecond) {
		t.Fatal("a connection after one closed was refused")
	}
}

// TestConnectionSetupTimeout: a TLS connection that never sends its
// ClientHello, and a TCP connection that never sends SIP, are closed after
// the setup timeout; keepalive pings before any SIP do not keep them.
func TestConnectionSetupTimeout(t *testing.T) {
	s := connsServer(t, Connections{SetupTimeout: 300 * time.Millisecond})
	silentTLS := dialFrom(t, "127.0.0.1", s.Addr("tls").String())
	pinger := dialFrom(t, "127.0.0.1", s.Addr("tcp").String())
	pinger.Write([]byte("\r\n\r\n"))
	start := time.Now()
	if !closedByServer(silentTLS, 3*time.Second) || !closedByServer(pinger, 3*time.Second) {
		t.Fatal("a connection that sent no SIP was kept")
	}
	if d := time.Since(start); d < 250*time.Millisecond {
		t.Fatalf("closed after %s, before the setup timeout", d)
	}
	if n := s.Stats().SetupTimeouts.Load(); n != 2 {
		t.Errorf("setup timeouts %d, want 2", n)
	}
}

// TestConnectionIdleTimeout: a phone that keeps its flow alive with RFC
// 5626 CRLF pings (each answered CRLF) stays connected past the idle
// timeout; one that falls silent after registering is closed.
func TestConnectionIdleTimeout(t *testing.T) {
	s := connsServer(t, Connections{IdleTimeout: 400 * time.Millisecond})
	for _, tr := range []string{"tcp", "tls"} {
		t.Run(tr, func(t *testing.T) {
			dial := func() *peer {
				if tr == "tls" {
					return tlsPeer(t, s)
				}
				return tcpPeer(t, s)
			}
			alive, silent := dial(), dial()
			for _, p := range []*peer{alive, silent} {
				p.send(p.request("REGISTER", ""))
				p.expect(200)
			}
			for range 6 { // 1.2 s: three idle timeouts
				alive.tcp.Write([]byte("\r\n\r\n"))
				alive.tcp.SetReadDeadline(time.Now().Add(2 * time.Second))
				pong := make([]byte, 2)
				if _, err := io.ReadFull(alive.rd, pong); err != nil || string(pong) != "\r\n" {
					t.Fatalf("ping: %q %v", pong, err)
				}
				time.Sleep(200 * time.Millisecond) // the phone's ping interval, not synchronisation
			}
			alive.send(alive.request("REGISTER", ""))
			alive.expect(200)
			if !closedByServer(silent.tcp, 3*time.Second) {
				t.Fatal("a silent connection outlived the idle timeout")
			}
		})
	}
	if n := s.Stats().IdleClosed.Load(); n != 2 {
		t.Errorf("idle closes %d, want 2", n)
	}
}
