package frontend

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"golang.org/x/sys/unix"

	"github.com/edgewise-sip/edgewise/test/kit"
)

// wsServer is a server with ws and wss listeners, a REGISTER handler that
// answers from another goroutine (as the registrar does) and a record of
// closed connections.
type wsServer struct {
	*Server
	closed chan closedConn
	seen   chan *sip.Request
}

func startWSServer(t *testing.T) *wsServer {
	t.Helper()
	cert, key := writeTestCert(t)
	s, err := New(Settings{
		Listen:      []Listen{{Transport: "ws", Host: "127.0.0.1"}, {Transport: "wss", Host: "127.0.0.1"}},
		UserAgent:   "edgewise-test",
		TLSCertFile: cert,
		TLSKeyFile:  key,
	}, kit.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	w := &wsServer{Server: s, closed: make(chan closedConn, 16), seen: make(chan *sip.Request, 16)}
	s.HandleStateless(sip.REGISTER, func(req *sip.Request, tx sip.ServerTransaction) {
		w.seen <- req
		d, ok := tx.(interface{ Detached() bool })
		if !ok || !d.Detached() {
			t.Error("REGISTER over websocket: transaction cannot be answered later")
		}
		go func() {
			res := sip.NewResponseFromRequest(req, 200, "OK", nil)
			if c := req.Contact(); c != nil {
				res.AppendHeader(c.Clone())
			}
			tx.Respond(res)
		}()
	})
	s.OnConnClosed(func(transport string, remote netip.AddrPort) {
		w.closed <- closedConn{transport, remote}
	})
	runServer(t, s)
	return w
}

// writeTestCert writes a self-signed certificate for 127.0.0.1.
func writeTestCert(t *testing.T) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "edgewise-test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// browser is a WebSocket SIP client, as a browser softphone is one.
type browser struct {
	t    *testing.T
	conn net.Conn
	rd   io.Reader
	port int
	tp   string // WS or WSS
}

func dialWS(t *testing.T, s *Server, transport string, protocols ...string) (*browser, error) {
	t.Helper()
	d := ws.Dialer{Protocols: protocols, Timeout: 5 * time.Second}
	scheme := transport
	if transport == "wss" {
		d.TLSConfig = &tls.Config{InsecureSkipVerify: true}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, br, _, err := d.Dial(ctx, scheme+"://"+s.Addr(transport).String())
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { conn.Close() })
	b := &browser{t: t, conn: conn, rd: conn, port: conn.LocalAddr().(*net.TCPAddr).Port, tp: strings.ToUpper(transport)}
	if br != nil {
		b.rd = io.MultiReader(br, conn)
	}
	return b, nil
}

func mustDialWS(t *testing.T, s *Server, transport string) *browser {
	t.Helper()
	b, err := dialWS(t, s, transport, "sip")
	if err != nil {
		t.Fatalf("dial %s: %v", transport, err)
	}
	return b
}

func (b *browser) addr() netip.AddrPort {
	return netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(b.port))
}

func (b *browser) send(msg string) {
	b.t.Helper()
	if err := wsutil.WriteClientText(b.conn, []byte(msg)); err != nil {
		b.t.Fatal(err)
	}
}

// recv returns the next text message, or an error (the connection closed,
// or nothing within wait).
func (b *browser) recv(wait time.Duration) (string, error) {
	b.conn.SetReadDeadline(time.Now().Add(wait))
	rw := struct {
		io.Reader
		io.Writer
	}{b.rd, b.conn}
	for {
		data, op, err := wsutil.ReadServerData(rw)
		if err != nil {
			return "", err
		}
		if op == ws.OpText {
			return string(data), nil
		}
	}
}

func (b *browser) expect(code int) string {
	b.t.Helper()
	msg, err := b.recv(5 * time.Second)
	if err != nil || !strings.HasPrefix(msg, fmt.Sprintf("SIP/2.0 %d ", code)) {
		b.t.Fatalf("%s: want %d, got %q (%v)", b.tp, code, msg, err)
	}
	return msg
}

// expectClosed waits for the server to close the connection.
func (b *browser) expectClosed() {
	b.t.Helper()
	for {
		_, err := b.recv(5 * time.Second)
		if err == nil {
			continue
		}
		if isTimeout(err) {
			b.t.Fatalf("%s: connection still open", b.tp)
		}
		return
	}
}

var wsSeq atomic.Int64

// register builds a REGISTER the way SIP.js writes one (RFC 7118 §5:
// .invalid Via host and Contact).
func (b *browser) register() string {
	n := wsSeq.Add(1)
	return fmt.Sprintf("REGISTER sip:edgewise SIP/2.0\r\n"+
		"Via: SIP/2.0/%s df7jal23ls0d.invalid;branch=z9hG4bKws%d\r\n"+
		"Max-Forwards: 70\r\n"+
		"From: <sip:alice@edgewise>;tag=w%d\r\n"+
		"To: <sip:alice@edgewise>\r\n"+
		"Call-ID: ws-%d\r\n"+
		"CSeq: 1 REGISTER\r\n"+
		"Contact: <sip:k3j2l1@df7jal23ls0d.invalid;transport=ws>;expires=600\r\n"+
		"Content-Length: 0\r\n\r\n", b.tp, n, n, n)
}

func (w *wsServer) expectClosedConn(t *testing.T, transport string, remote netip.AddrPort) {
	t.Helper()
	select {
	case c := <-w.closed:
		if c.transport != transport || c.remote != remote {
			t.Fatalf("OnConnClosed(%s, %s), want (%s, %s)", c.transport, c.remote, transport, remote)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("OnConnClosed not called for %s %s", transport, remote)
	}
}

func TestWebSocketRegister(t *testing.T) {
	w := startWSServer(t)
	for _, tp := range []string{"ws", "wss"} {
		t.Run(tp, func(t *testing.T) {
			b := mustDialWS(t, w.Server, tp)
			b.send(b.register())
			res := b.expect(200)
			if !strings.Contains(res, "df7jal23ls0d.invalid;transport=ws") {
				t.Errorf("200 OK does not list the contact:\n%s", res)
			}
			req := <-w.seen
			if req.Transport() != strings.ToUpper(tp) || req.Source() != b.addr().String() {
				t.Errorf("handler saw transport %s source %s, want %s %s", req.Transport(), req.Source(), strings.ToUpper(tp), b.addr())
			}

			// Built-in OPTIONS and CRLF keepalives work as over TCP.
			b.send(strings.Replace(strings.Replace(b.register(), "REGISTER", "OPTIONS", -1), "Contact: <sip:k3j2l1@df7jal23ls0d.invalid;transport=ws>;expires=600\r\n", "", 1))
			if res := b.expect(200); !strings.Contains(res, "Allow: ") {
				t.Errorf("OPTIONS answer without Allow:\n%s", res)
			}

			// A request to the browser leaves over its connection.
			pinged := make(chan error, 1)
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				pinged <- w.Ping(ctx, tp, netip.AddrPort{}, b.addr(), "sip:k3j2l1@df7jal23ls0d.invalid;transport=ws")
			}()
			opt, err := b.recv(5 * time.Second)
			if err != nil || !strings.HasPrefix(opt, "OPTIONS sip:k3j2l1@df7jal23ls0d.invalid;transport=ws SIP/2.0") {
				t.Fatalf("browser got %q (%v), want the server's OPTIONS", opt, err)
			}
			if v := header(opt, "Via"); !strings.HasPrefix(v, "SIP/2.0/"+strings.ToUpper(tp)+" ") {
				t.Errorf("Via %q names another transport", v)
			}
			b.send(okTo(opt))
			if err := <-pinged; err != nil {
				t.Fatalf("Ping: %v", err)
			}

			if !w.Connected(tp, b.addr()) {
				t.Error("Connected = false for an open connection")
			}
			b.conn.Close()
			w.expectClosedConn(t, tp, b.addr())
			if w.Connected(tp, b.addr()) {
				t.Error("Connected = true after the close")
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := w.Ping(ctx, tp, netip.AddrPort{}, b.addr(), "sip:k3j2l1@df7jal23ls0d.invalid;transport=ws"); err == nil {
				t.Error("Ping over a closed connection succeeded")
			}
		})
	}
}

// okTo answers a request with 200, as a browser would.
func okTo(req string) string {
	var b strings.Builder
	b.WriteString("SIP/2.0 200 OK\r\n")
	for _, line := range strings.Split(req, "\r\n")[1:] {
		k, _, _ := strings.Cut(line, ":")
		switch strings.ToLower(strings.TrimSpace(k)) {
		case "via", "from", "call-id", "cseq":
			b.WriteString(line + "\r\n")
		case "to":
			b.WriteString(line + ";tag=browser\r\n")
		}
	}
	b.WriteString("Content-Length: 0\r\n\r\n")
	return b.String()
}

func TestWebSocketUpgradeRefused(t *testing.T) {
	w := startWSServer(t)
	for _, tc := range []struct {
		name      string
		protocols []string
	}{
		{"no subprotocol", nil},
		{"other subprotocol", []string{"chat"}},
		{"wrong case", []string{"SIP"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := dialWS(t, w.Server, "ws", tc.protocols...)
			var se ws.StatusError
			if !errors.As(err, &se) || int(se) != http.StatusBadRequest {
				t.Fatalf("dial error %v, want HTTP 400", err)
			}
		})
	}
	t.Run("sip among others", func(t *testing.T) {
		b, err := dialWS(t, w.Server, "ws", "chat", "sip")
		if err != nil {
			t.Fatal(err)
		}
		b.send(b.register())
		b.expect(200)
		<-w.seen
	})
	t.Run("plain HTTP", func(t *testing.T) {
		res, err := http.Get("http://" + w.Addr("ws").String() + "/")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusUpgradeRequired || !strings.Contains(string(body), "subprotocol sip") {
			t.Fatalf("got %d %q, want 426 naming the sip subprotocol", res.StatusCode, body)
		}
	})
	t.Run("not HTTP", func(t *testing.T) {
		c, err := net.Dial("tcp", w.Addr("ws").String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fmt.Fprintf(c, "REGISTER sip:edgewise SIP/2.0\r\n\r\n")
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		line, _ := bufio.NewReader(c).ReadString('\n')
		if !strings.HasPrefix(line, "HTTP/1.1 400 ") {
			t.Fatalf("got %q, want HTTP 400", line)
		}
	})
	if got := w.Stats().WSRefused.Load(); got < 5 {
		t.Errorf("WSRefused = %d, want at least 5", got)
	}
}

func TestWebSocketOversized(t *testing.T) {
	w := startWSServer(t)
	big := strings.Repeat("x", maxWSMessage+1)
	half := []byte(strings.Repeat("y", maxWSMessage/2+1))
	for _, tc := range []struct {
		name   string
		frames []ws.Frame
	}{
		{"one frame", []ws.Frame{ws.MaskFrame(ws.NewTextFrame([]byte(big)))}},
		{"fragmented message", []ws.Frame{
			ws.MaskFrame(ws.NewFrame(ws.OpText, false, half)),
			ws.MaskFrame(ws.NewFrame(ws.OpContinuation, true, half)),
		}},
		{"unmasked frame", []ws.Frame{ws.NewTextFrame([]byte("OPTIONS"))}},
		{"long ping", []ws.Frame{ws.MaskFrame(ws.NewFrame(ws.OpPing, true, half[:200]))}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := w.Stats().WSOversized.Load()
			b := mustDialWS(t, w.Server, "ws")
			// The connection may already be closed before the last frame
			// is written; only the close matters.
			for _, f := range tc.frames {
				if err := ws.WriteFrame(b.conn, f); err != nil {
					break
				}
			}
			b.expectClosed()
			w.expectClosedConn(t, "ws", b.addr())
			if w.Stats().WSOversized.Load() != before+1 {
				t.Errorf("WSOversized not counted")
			}
		})
	}
	t.Run("largest message passes", func(t *testing.T) {
		b := mustDialWS(t, w.Server, "ws")
		reg := b.register()
		pad := "X-Pad: " + strings.Repeat("p", maxWSMessage-len(reg)-len("X-Pad: \r\n")) + "\r\n"
		reg = strings.Replace(reg, "Content-Length", pad+"Content-Length", 1)
		if len(reg) != maxWSMessage {
			t.Fatalf("message is %d bytes, want %d", len(reg), maxWSMessage)
		}
		b.send(reg)
		b.expect(200)
		<-w.seen
	})
}

func TestWebSocketGuard(t *testing.T) {
	w := startWSServer(t)
	b := mustDialWS(t, w.Server, "ws")
	b.send(b.register())
	b.expect(200)
	<-w.seen

	var locked atomic.Bool
	w.SetGuard(func(a netip.Addr) bool { return locked.Load() && a.IsLoopback() })
	locked.Store(true)
	// An established connection from a locked-out source closes on its
	// next message (or sooner: the write may already find it closed); new
	// upgrades are refused.
	wsutil.WriteClientText(b.conn, []byte(b.register()))
	b.expectClosed()
	w.expectClosedConn(t, "ws", b.addr())
	select {
	case req := <-w.seen:
		t.Errorf("a request read after the lockout reached the handler: %s", req.StartLine())
	default:
	}
	_, err := dialWS(t, w.Server, "ws", "sip")
	var se ws.StatusError
	if !errors.As(err, &se) || int(se) != http.StatusForbidden {
		t.Fatalf("dial error %v, want HTTP 403", err)
	}
}

func TestWebSocketLimitFitsSipgoBuffer(t *testing.T) {
	if maxWSMessage > int(sip.TransportBufferReadSize) {
		t.Fatalf("maxWSMessage %d exceeds sipgo's read buffer %d: sipgo would truncate messages", maxWSMessage, sip.TransportBufferReadSize)
	}
}

func TestFrameLimit(t *testing.T) {
	mask := [4]byte{1, 2, 3, 4}
	frame := func(op ws.OpCode, fin bool, n int, masked bool) []byte {
		h := ws.Header{Fin: fin, OpCode: op, Length: int64(n), Masked: masked, Mask: mask}
		var b strings.Builder
		if err := ws.WriteHeader(&b, h); err != nil {
			t.Fatal(err)
		}
		return append([]byte(b.String()), make([]byte, n)...)
	}
	cat := func(fs ...[]byte) []byte {
		var out []byte
		for _, f := range fs {
			out = append(out, f...)
		}
		return out
	}
	for _, tc := range []struct {
		name   string
		stream []byte
		want   error
	}{
		{"small", frame(ws.OpText, true, 100, true), nil},
		{"16-bit length", frame(ws.OpText, true, 20000, true), nil},
		{"limit", frame(ws.OpText, true, maxWSMessage, true), nil},
		{"over", frame(ws.OpText, true, maxWSMessage+1, true), errWSFrameTooLarge},
		{"64-bit length", frame(ws.OpBinary, true, 70000, true)[:14], errWSFrameTooLarge},
		{"fragments", cat(frame(ws.OpText, false, 20000, true), frame(ws.OpPing, true, 4, true), frame(ws.OpContinuation, true, 20000, true)), errWSMessageTooLong},
		{"messages", cat(frame(ws.OpText, true, 20000, true), frame(ws.OpText, true, 20000, true)), nil},
		{"unmasked", frame(ws.OpText, true, 10, false), errWSUnmasked},
		{"long control", frame(ws.OpPong, true, 126, true), errWSBadControl},
		{"fragmented control", frame(ws.OpClose, false, 2, true), errWSBadControl},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Byte by byte and all at once must agree.
			for _, chunk := range []int{1, 7, len(tc.stream)} {
				var f frameLimit
				var err error
				for i := 0; i < len(tc.stream) && err == nil; i += chunk {
					err = f.feed(tc.stream[i:min(i+chunk, len(tc.stream))])
				}
				if !errors.Is(err, tc.want) {
					t.Errorf("chunk %d: %v, want %v", chunk, err, tc.want)
				}
			}
		})
	}
}

func TestWebSocketListenErrors(t *testing.T) {
	_, err := New(Settings{Listen: []Listen{{Transport: "wss", Host: "127.0.0.1"}}}, nil)
	if err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("wss without certificate: %v", err)
	}
	_, err = New(Settings{Listen: []Listen{{Transport: "wss", Host: "127.0.0.1"}}, TLSCertFile: "/nonexistent.pem", TLSKeyFile: "/nonexistent.key"}, nil)
	if err == nil || !strings.Contains(err.Error(), "nonexistent") {
		t.Errorf("wss with missing files: %v", err)
	}
}

// TestWebSocketKeepAlive: a browser's connection probes its peer with TCP
// keepalive (15 s idle, 5 s apart, 3 probes), so a host that vanished
// without closing it loses its bindings in about 30 s, not hours.
func TestWebSocketKeepAlive(t *testing.T) {
	w := startWSServer(t)
	b := mustDialWS(t, w.Server, "ws")
	var server *net.TCPConn
	for _, ln := range w.listeners {
		if ln.ws == nil || ln.transport != "ws" {
			continue
		}
		ln.ws.mu.Lock()
		for c := range ln.ws.conns {
			if c.remote == b.addr() {
				server, _ = c.Conn.(*net.TCPConn)
			}
		}
		ln.ws.mu.Unlock()
	}
	if server == nil {
		t.Fatal("server side of the browser's connection not found")
	}
	raw, err := server.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	if err := raw.Control(func(fd uintptr) {
		for name, opt := range map[string][2]int{
			"keepalive": {unix.SOL_SOCKET, unix.SO_KEEPALIVE},
			"idle":      {unix.IPPROTO_TCP, unix.TCP_KEEPIDLE},
			"interval":  {unix.IPPROTO_TCP, unix.TCP_KEEPINTVL},
			"count":     {unix.IPPROTO_TCP, unix.TCP_KEEPCNT},
		} {
			v, err := unix.GetsockoptInt(int(fd), opt[0], opt[1])
			if err != nil {
				t.Errorf("getsockopt %s: %v", name, err)
			}
			got[name] = v
		}
	}); err != nil {
		t.Fatal(err)
	}
	want := map[string]int{"keepalive": 1, "idle": 15, "interval": 5, "count": 3}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %d, want %d", k, got[k], v)
		}
	}
}
