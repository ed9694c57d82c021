package integration

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgewise-sip/edgewise/test/kit"
)

// frontendSecConfig is a daemon with TCP and TLS listeners and tight
// connection bounds: 2 s to send SIP, 300 connections in all.
func frontendSecConfig(t *testing.T) func(ip, dir string) string {
	return func(ip, dir string) string {
		cert, key := writeCert(t, dir, ip)
		cfg := daemonConfig(ip, dir, "")
		old := fmt.Sprintf(`listen: ["udp:%[1]s:5060", "tcp:%[1]s:5060"]`, ip)
		return strings.Replace(cfg, old, fmt.Sprintf(`listen: ["udp:%[1]s:5060", "tcp:%[1]s:5060", "tls:%[1]s:5061"]
  tls: {cert_file: %[2]s, key_file: %[3]s}
  connections: {max: 300, max_per_source: 256, setup_timeout: 2s}`, ip, cert, key), 1)
	}
}

// frontendSecRegister registers alice over a raw connection of network from
// ip and returns it, still open.
func frontendSecRegister(t *testing.T, network, ip string, d *daemon) *rawSIP {
	t.Helper()
	phone := dialRawSIP(t, network, ip, d.ip+":5060")
	uri := "sip:" + d.ip
	req := sipRequest{
		Method: "REGISTER", URI: uri, Transport: strings.ToUpper(network),
		ViaHost: ip, ViaPort: phone.port(), Branch: randHex(8),
		From: "sip:alice@edgewise.test", FromTag: randHex(4), To: "sip:alice@edgewise.test",
		CallID: randHex(10), CSeq: 1, Contact: fmt.Sprintf("sip:alice@%s:%d;transport=%s", ip, phone.port(), network),
		Extra: []string{"Expires: 600"},
	}
	phone.send(req.String())
	chal := phone.expectFinal(req, 401, "REGISTER")
	req.CSeq, req.Branch = 2, randHex(8)
	req.Auth = answerChallenge(t, chal, "REGISTER", uri, "alice", "alice-secret", 1)
	phone.send(req.String())
	phone.expectFinal(req, 200, "authenticated REGISTER")
	return phone
}

// TestSecurityIdleConnections plays an attacker who opens 1,500 TCP
// connections and a handful of TLS ones without sending a byte: past the
// per-source and total caps new connections are closed at accept, and the
// ones accepted are closed after the setup timeout; a phone registered over
// TCP before the attack keeps its connection and registers again on it,
// and a new phone connects once the attacker's connections are gone.
func TestSecurityIdleConnections(t *testing.T) {
	d := startDaemon(t, frontendSecConfig(t))
	phone := frontendSecRegister(t, "tcp", nextIP(t), d)

	attacker := nextIP(t)
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range 1500 {
		dl := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(attacker)}, Timeout: 2 * time.Second}
		c, err := dl.Dial("tcp", d.ip+":5060")
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		conns = append(conns, c)
	}
	tlsAttacker := nextIP(t)
	for range 5 {
		dl := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(tlsAttacker)}, Timeout: 2 * time.Second}
		c, err := dl.Dial("tcp", d.ip+":5061") // and no ClientHello
		if err != nil {
			t.Fatalf("dial tls: %v", err)
		}
		conns = append(conns, c)
	}
	// Every attacker connection is closed: at once (over the cap) or after
	// the 2 s setup timeout.
	var open, closedFast atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for _, c := range conns {
		wg.Go(func() {
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			_, err := c.Read(make([]byte, 1))
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				open.Add(1)
				return
			}
			if time.Since(start) < time.Second {
				closedFast.Add(1)
			}
		})
	}
	wg.Wait()
	if n := open.Load(); n != 0 {
		t.Fatalf("%d attacker connections still open after 10 s", n)
	}
	if n := closedFast.Load(); n < 1500-256 {
		t.Errorf("%d connections closed at accept, want at least %d (over the per-source cap)", n, 1500-256)
	}
	m := scrapeMetrics(t, d)
	if got := m.value("edgewise_sip_connections_refused_total"); got < 1500-256 {
		t.Errorf("connections_refused_total = %v", got)
	}
	if got := m.value("edgewise_sip_connection_setup_timeouts_total"); got < 256 {
		t.Errorf("connection_setup_timeouts_total = %v, want the accepted ones (at least 256)", got)
	}
	// The phone's connection survived it all; it registers again on it.
	req := sipRequest{
		Method: "OPTIONS", URI: "sip:" + d.ip, Transport: "TCP", ViaHost: phone.ip, ViaPort: phone.port(), Branch: randHex(8),
		From: "sip:alice@edgewise.test", FromTag: randHex(4), To: "sip:" + d.ip, CallID: randHex(10), CSeq: 1,
	}
	phone.send(req.String())
	phone.expectFinal(req, 200, "OPTIONS on the phone's connection after the attack")
	frontendSecRegister(t, "tcp", nextIP(t), d)
}

// TestSecurityJunkFloodLegitimateCallWorks: while a stranger floods UDP with
// INVITEs without credentials and BYEs for dialogs that never existed
// (2,000/s, bounded to 4 s), every junk request gets exactly one answer (no
// retransmissions: nothing was kept), and a phone registers and places a
// call through SIPp as usual.
func TestSecurityJunkFloodLegitimateCallWorks(t *testing.T) {
	s := startSim(t)
	d := startDaemon(t, strangerConfig(s, ""))
	flooder := dialRawSIP(t, "udp", nextIP(t), d.ip+":5060")
	var sent, answers atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { // reader: ends when the socket closes
		buf := make([]byte, 65535)
		for {
			if _, err := flooder.conn.Read(buf); err != nil {
				return
			}
			answers.Add(1)
		}
	})
	flooder.conn.SetReadDeadline(time.Time{})
	wg.Go(func() {
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		deadline := time.After(4 * time.Second)
		for i := 0; ; {
			select {
			case <-stop:
				return
			case <-deadline:
				return
			case <-tick.C:
			}
			for range 20 {
				i++
				method, toTag := "INVITE", ""
				if i%2 == 0 {
					method, toTag = "BYE", ";tag=never"
				}
				uri := "sip:+19005550100@" + d.ip
				msg := fmt.Sprintf("%s %s SIP/2.0\r\nVia: SIP/2.0/UDP %s:%d;branch=z9hG4bKj%d;rport\r\nMax-Forwards: 70\r\n"+
					"From: <sip:alice@edgewise.test>;tag=j%d\r\nTo: <%s>%s\r\nCall-ID: junk-%d\r\nCSeq: 1 %s\r\nContent-Length: 0\r\n\r\n",
					method, uri, flooder.ip, flooder.port(), i, i, uri, toTag, i, method)
				if _, err := flooder.conn.Write([]byte(msg)); err == nil {
					sent.Add(1)
				}
			}
		}
	})
	if code, out := sippRun(t, "call_rtp.xml", nextIP(t), d.ip+":5060", dialRow("alice", "15550001111"), 1); code != 0 {
		close(stop)
		t.Fatalf("the phone's call during the flood: sipp exited %d:\n%s", code, out)
	}
	close(stop)
	// Answers for the last requests may still be on their way: wait until
	// they match what was sent (bounded), then check none came twice.
	kit.WaitFor(t, 5*time.Second, "an answer for every junk request", func() bool { return answers.Load() >= sent.Load() })
	flooder.conn.SetReadDeadline(time.Now().Add(1500 * time.Millisecond)) // Timer A's first two retransmissions fit in it
	wg.Wait()
	if a, n := answers.Load(), sent.Load(); a != n {
		t.Fatalf("%d answers to %d junk requests: want exactly one each (retransmissions mean transactions were kept)", a, n)
	}
	noCallsLeft(t, d)
}
