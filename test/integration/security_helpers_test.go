package integration

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	icholy "github.com/icholy/digest"
)

// The security tests play the attacker with raw SIP: they need to send
// exactly the bytes a capture would hold, changed in one place, which no SIP
// client nobody on the team wrote will do. Legitimate traffic in the same
// tests comes from SIPp and baresip.

// rawSIP is a SIP endpoint on one loopback address that sends hand-built
// messages and reads what comes back.
type rawSIP struct {
	t       *testing.T
	network string // udp or tcp
	ip      string
	conn    net.Conn
	r       *bufio.Reader // tcp
}

// dialRawSIP opens a socket from ip (port chosen by the kernel) to server.
func dialRawSIP(t *testing.T, network, ip, server string) *rawSIP {
	t.Helper()
	var local net.Addr
	if network == "udp" {
		local = &net.UDPAddr{IP: net.ParseIP(ip)}
	} else {
		local = &net.TCPAddr{IP: net.ParseIP(ip)}
	}
	d := net.Dialer{LocalAddr: local, Timeout: 5 * time.Second}
	c, err := d.Dial(network, server)
	if err != nil {
		t.Fatalf("dial %s %s from %s: %v", network, server, ip, err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawSIP{t: t, network: network, ip: ip, conn: c, r: bufio.NewReader(c)}
}

// port is the local port, for Via and Contact.
func (c *rawSIP) port() int {
	switch a := c.conn.LocalAddr().(type) {
	case *net.UDPAddr:
		return a.Port
	case *net.TCPAddr:
		return a.Port
	}
	return 0
}

func (c *rawSIP) send(msg string) {
	c.t.Helper()
	if _, err := c.conn.Write([]byte(msg)); err != nil {
		c.t.Fatalf("send: %v", err)
	}
}

// recv returns the next message, or nil when none arrives within wait.
func (c *rawSIP) recv(wait time.Duration) sip.Message {
	c.t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(wait))
	var data []byte
	if c.network == "udp" {
		buf := make([]byte, 65535)
		n, err := c.conn.Read(buf)
		if err != nil {
			return nil
		}
		data = buf[:n]
	} else {
		var err error
		if data, err = readStreamMessage(c.r); err != nil {
			return nil
		}
	}
	m, err := sip.ParseMessage(data)
	if err != nil {
		c.t.Fatalf("unparsable message from edgewise: %v\n%s", err, data)
	}
	return m
}

// final waits for the final response to req (matched by CSeq and Via
// branch; provisional responses, other responses and requests edgewise sends
// meanwhile are skipped) and returns it, or nil when none comes within wait.
func (c *rawSIP) final(req sipRequest, wait time.Duration) *sip.Response {
	c.t.Helper()
	cseq := fmt.Sprintf("%d %s", req.CSeq, req.Method)
	deadline := time.Now().Add(wait)
	for time.Now().Before(deadline) {
		m := c.recv(time.Until(deadline))
		if m == nil {
			return nil
		}
		res, ok := m.(*sip.Response)
		if !ok || res.StatusCode < 200 || res.CSeq().Value() != cseq {
			continue
		}
		if b, _ := res.Via().Params.Get("branch"); b == "z9hG4bK"+req.Branch {
			return res
		}
	}
	return nil
}

// expectFinal is final that fails the test unless the code is want.
func (c *rawSIP) expectFinal(req sipRequest, want int, what string) *sip.Response {
	c.t.Helper()
	res := c.final(req, 5*time.Second)
	if res == nil {
		c.t.Fatalf("%s: no final response, want %d", what, want)
	}
	if res.StatusCode != want {
		c.t.Fatalf("%s: got %d %s, want %d\n%s", what, res.StatusCode, res.Reason, want, res)
	}
	return res
}

// readStreamMessage reads one SIP message framed by Content-Length.
func readStreamMessage(r *bufio.Reader) ([]byte, error) {
	var b strings.Builder
	length := 0
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return nil, err
		}
		if b.Len() == 0 && strings.TrimSpace(line) == "" {
			continue // keepalive
		}
		b.WriteString(line)
		if name, v, ok := strings.Cut(line, ":"); ok {
			if n := strings.TrimSpace(strings.ToLower(name)); n == "content-length" || n == "l" {
				fmt.Sscan(strings.TrimSpace(v), &length)
			}
		}
		if line == "\r\n" || line == "\n" {
			break
		}
	}
	body := make([]byte, length)
	if _, err := io.ReadFull(r, body); err != nil {
		return nil, err
	}
	b.Write(body)
	return []byte(b.String()), nil
}

// randHex is a random token for tags, branches and Call-IDs.
func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// sipRequest is a hand-built request; String renders it with a correct
// Content-Length, so tests change fields and render again.
type sipRequest struct {
	Method, URI string
	Transport   string // UDP or TCP, for Via
	ViaHost     string
	ViaPort     int
	Branch      string
	From, FromTag,
	To, CallID string
	CSeq    int
	Contact string
	Auth    string // the whole Authorization/Proxy-Authorization line, or ""
	Extra   []string
	Body    string
}

func (r sipRequest) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s SIP/2.0\r\n", r.Method, r.URI)
	fmt.Fprintf(&b, "Via: SIP/2.0/%s %s:%d;branch=z9hG4bK%s;rport\r\n", r.Transport, r.ViaHost, r.ViaPort, r.Branch)
	b.WriteString("Max-Forwards: 70\r\n")
	fmt.Fprintf(&b, "From: <%s>;tag=%s\r\n", r.From, r.FromTag)
	fmt.Fprintf(&b, "To: <%s>\r\n", r.To)
	fmt.Fprintf(&b, "Call-ID: %s\r\n", r.CallID)
	fmt.Fprintf(&b, "CSeq: %d %s\r\n", r.CSeq, r.Method)
	if r.Contact != "" {
		fmt.Fprintf(&b, "Contact: <%s>\r\n", r.Contact)
	}
	if r.Auth != "" {
		b.WriteString(r.Auth + "\r\n")
	}
	for _, h := range r.Extra {
		b.WriteString(h + "\r\n")
	}
	if r.Body != "" {
		b.WriteString("Content-Type: application/sdp\r\n")
	}
	fmt.Fprintf(&b, "Content-Length: %d\r\n\r\n%s", len(r.Body), r.Body)
	return b.String()
}

// answerChallenge computes the credentials header for res's challenge with
// an independent digest implementation (icholy/digest), for method and uri.
func answerChallenge(t *testing.T, res *sip.Response, method, uri, user, password string, nc int) string {
	t.Helper()
	name, credName := "WWW-Authenticate", "Authorization"
	if res.StatusCode == 407 {
		name, credName = "Proxy-Authenticate", "Proxy-Authorization"
	}
	h := res.GetHeader(name)
	if h == nil {
		t.Fatalf("%d without %s:\n%s", res.StatusCode, name, res)
	}
	chal, err := icholy.ParseChallenge(h.Value())
	if err != nil {
		t.Fatalf("challenge %q: %v", h.Value(), err)
	}
	cred, err := icholy.Digest(chal, icholy.Options{Method: method, URI: uri, Username: user, Password: password, Count: nc})
	if err != nil {
		t.Fatal(err)
	}
	return credName + ": " + cred.String()
}

// isStale reports whether a 401/407 says stale=true.
func isStale(res *sip.Response) bool {
	for _, name := range []string{"WWW-Authenticate", "Proxy-Authenticate"} {
		for _, h := range res.GetHeaders(name) {
			if strings.Contains(strings.ToLower(h.Value()), "stale=true") {
				return true
			}
		}
	}
	return false
}

// edgesimCIDRs lists edgesim's edge addresses as /32s: the tests' Twilio
// signalling ranges, so every other loopback address is a stranger.
func edgesimCIDRs(s *sim) string {
	var out []string
	for _, ips := range s.ips {
		for _, ip := range ips {
			out = append(out, ip+"/32")
		}
	}
	return "[" + strings.Join(out, ", ") + "]"
}

// strangerConfig is upstreamConfig with only edgesim's own addresses as
// Twilio's signalling and media ranges, so a test's other loopback
// addresses are strangers to edgewise.
func strangerConfig(s *sim, extraPhones string) func(ip, dir string) string {
	return func(ip, dir string) string {
		cfg := upstreamConfig(s, extraPhones)(ip, dir)
		cfg = strings.Replace(cfg, "  signalling_cidrs: [127.0.0.0/8]\n", "  signalling_cidrs: "+edgesimCIDRs(s)+"\n", 1)
		return strings.Replace(cfg, "  media_cidrs: [127.0.0.0/8]\n", "  media_cidrs: "+edgesimCIDRs(s)+"\n", 1)
	}
}
