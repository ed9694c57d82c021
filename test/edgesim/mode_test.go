package edgesim

import (
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/edgewise-sip/edgewise/test/kit"
)

var transports = []string{"udp", "tcp"}

// TestModes breaks a whole edge, or one IP while the edge's other IPs stay
// up, in every mode, checks both transports, then heals it.
func TestModes(t *testing.T) {
	t.Parallel()
	for _, mode := range []Mode{ModeDrop, ModeReject, ModeSlow, ModeRefuse} {
		for _, scope := range []string{"edge", "ip"} {
			t.Run(fmt.Sprintf("%s/%s", mode, scope), func(t *testing.T) {
				t.Parallel()
				testMode(t, kit.NewNet(t), mode, scope)
			})
		}
	}
}

func testMode(t *testing.T, n kit.Net, mode Mode, scope string) {
	sim := startSim(t, testConfig(n))
	c := newSIPClient(t)
	target := n.Addr(2)

	// An open TCP connection must be cut when its IP is refused.
	var preTCP net.Conn
	if mode == ModeRefuse {
		addr, _ := sim.SIPAddr(target)
		var err error
		if preTCP, err = net.Dial("tcp", addr); err != nil {
			t.Fatal(err)
		}
		defer preTCP.Close()
	}

	var broken, healthy []string
	delay := testSlow
	switch scope {
	case "edge":
		putMode(t, sim, "/v1/edges/ashburn", fmt.Sprintf(`{"mode":%q}`, mode))
		broken = []string{n.Addr(1), n.Addr(2), n.Addr(3)}
		healthy = []string{n.Addr(11), n.Addr(13)}
	case "ip":
		body := fmt.Sprintf(`{"mode":%q}`, mode)
		if mode == ModeSlow {
			delay = 150 * time.Millisecond
			body = `{"mode":"slow","delay":"150ms"}`
		}
		putMode(t, sim, "/v1/ips/"+target, body)
		broken = []string{target}
		healthy = []string{n.Addr(1), n.Addr(3), n.Addr(11)}
	}

	for _, ip := range broken {
		addr, _ := sim.SIPAddr(ip)
		for _, tr := range transports {
			switch mode {
			case ModeDrop:
				expectSilence(t, sim, c, ip, tr)
			case ModeReject:
				expectAnswer(t, c, addr, tr, sip.StatusServiceUnavailable, 0)
			case ModeSlow:
				expectAnswer(t, c, addr, tr, 200, delay)
			case ModeRefuse:
				if tr == "udp" {
					expectUDPRefused(t, addr)
				} else {
					expectTCPRefused(t, addr)
				}
			}
		}
	}
	if preTCP != nil {
		expectClosed(t, preTCP)
	}
	for _, ip := range healthy {
		addr, _ := sim.SIPAddr(ip)
		for _, tr := range transports {
			expectAnswer(t, c, addr, tr, 200, 0)
		}
	}

	// Heal: the edge back up, or the IP back to following its edge.
	if scope == "edge" {
		putMode(t, sim, "/v1/edges/ashburn", `{"mode":"up"}`)
	} else {
		putMode(t, sim, "/v1/ips/"+target, `{"mode":"inherit"}`)
	}
	for _, ip := range broken {
		addr, _ := sim.SIPAddr(ip)
		for _, tr := range transports {
			expectAnswer(t, c, addr, tr, 200, 0)
		}
	}
	if st, _ := sim.IP(target); st.Mode != ModeUp || !st.Open || st.Override != "" {
		t.Errorf("after healing: %+v", st)
	}
}

func putMode(t *testing.T, sim *Sim, path, body string) {
	t.Helper()
	if code := api(t, sim, "PUT", path, body, nil); code != 200 {
		t.Fatalf("PUT %s %s: %d", path, body, code)
	}
}

// expectAnswer sends OPTIONS and wants code, no sooner than minDelay.
func expectAnswer(t *testing.T, c *sipClient, addr, transport string, code int, minDelay time.Duration) {
	t.Helper()
	start := time.Now()
	res, err := c.options(addr, transport, 5*time.Second)
	if err != nil {
		t.Fatalf("OPTIONS %s %s: %v", transport, addr, err)
	}
	if took := time.Since(start); took < minDelay {
		t.Errorf("OPTIONS %s %s answered after %s, want at least %s", transport, addr, took, minDelay)
	}
	if res.StatusCode != code {
		t.Fatalf("OPTIONS %s %s: %d, want %d", transport, addr, res.StatusCode, code)
	}
}

// expectSilence wants no answer at all, and the request counted as
// received, so it was ignored rather than lost.
func expectSilence(t *testing.T, sim *Sim, c *sipClient, ip, transport string) {
	t.Helper()
	addr, _ := sim.SIPAddr(ip)
	before := optionsCount(sim, ip)
	res, err := c.options(addr, transport, silenceAfter)
	if err == nil {
		t.Fatalf("OPTIONS %s %s answered %d in drop mode", transport, addr, res.StatusCode)
	}
	kit.WaitFor(t, 5*time.Second, "the dropped OPTIONS to be counted", func() bool { return optionsCount(sim, ip) > before })
}

func optionsCount(sim *Sim, ip string) uint64 {
	st, _ := sim.IP(ip)
	return st.Requests["OPTIONS"]
}

const rawOptions = "OPTIONS sip:probe@127.0.0.1 SIP/2.0\r\n" +
	"Via: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK-probe\r\n" +
	"From: <sip:probe@127.0.0.1>;tag=1\r\nTo: <sip:probe@127.0.0.1>\r\n" +
	"Call-ID: probe\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"

// expectUDPRefused wants ICMP port unreachable, which a connected UDP
// socket reports as ECONNREFUSED.
func expectUDPRefused(t *testing.T, addr string) {
	t.Helper()
	conn, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	buf := make([]byte, 2048)
	for range 5 {
		if _, err := conn.Write([]byte(rawOptions)); errors.Is(err, syscall.ECONNREFUSED) {
			return
		} else if err != nil {
			t.Fatalf("udp write to %s: %v", addr, err)
		}
		_ = conn.SetReadDeadline(time.Now().Add(time.Second))
		_, err := conn.Read(buf)
		var ne net.Error
		switch {
		case errors.Is(err, syscall.ECONNREFUSED):
			return
		case errors.As(err, &ne) && ne.Timeout():
			continue // ICMP can be lost; try again
		case err == nil:
			t.Fatalf("udp %s answered in refuse mode", addr)
		default:
			t.Fatalf("udp %s: %v, want connection refused", addr, err)
		}
	}
	t.Fatalf("udp %s: no ICMP port unreachable", addr)
}

func expectTCPRefused(t *testing.T, addr string) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err == nil {
		conn.Close()
		t.Fatalf("tcp %s accepted a connection in refuse mode", addr)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("tcp %s: %v, want connection refused", addr, err)
	}
}

// expectClosed wants the peer to have closed or reset conn.
func expectClosed(t *testing.T, conn net.Conn) {
	t.Helper()
	_ = conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	_, err := conn.Read(make([]byte, 1))
	var ne net.Error
	if err == nil || (errors.As(err, &ne) && ne.Timeout()) {
		t.Fatalf("open tcp connection survived refuse mode (read: %v)", err)
	}
	if !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
		t.Logf("open tcp connection ended with %v", err)
	}
}
