package frontend

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/emiago/sipgo/sip"
)

// FuzzFraming feeds arbitrary bytes to the functions that look at messages
// before sipgo's parser does (classify, rawResponse, contentLength,
// isKeepalive): none may panic, and a response built from raw headers must be
// a single well-formed header section.
func FuzzFraming(f *testing.F) {
	f.Add([]byte("REGISTER sip:x SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nCSeq: 1 REGISTER\r\nContent-Length: 0\r\n\r\n"))
	f.Add([]byte("SIP/2.0 200 OK\r\n\r\n"))
	f.Add([]byte("\r\n\r\n"))
	f.Add([]byte("INVITE sip:x SIP/2.0\r\nl: 12\r\nv: a\r\nCSeq: 1 INVITE\r\n\r\n"))
	f.Fuzz(func(t *testing.T, p []byte) {
		isKeepalive(p)
		classify(p)
		if end := bytes.Index(p, []byte("\r\n\r\n")); end >= 0 {
			contentLength(p[:end+2])
		}
		res := rawResponse(p, 400, "Bad Request", "ua", "")
		if res == nil {
			return
		}
		if !bytes.HasPrefix(res, []byte("SIP/2.0 400 Bad Request\r\n")) || !bytes.HasSuffix(res, []byte("\r\n\r\n")) {
			t.Fatalf("bad response %q", res)
		}
		if bytes.Count(res, []byte("\r\n\r\n")) != 1 || bytes.ContainsAny(bytes.ReplaceAll(res, []byte("\r\n"), nil), "\r\n\x00") {
			t.Fatalf("response carries stray line breaks or NULs: %q", res)
		}
	})
}

// tortureDir is RFC 4475's torture messages as sipgo's test data ships them
// ("valid", "invalid"), found in the module cache; "" when it cannot be
// found (then only the other seeds run).
func tortureDir() string {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/emiago/sipgo").Output()
	if err != nil {
		return ""
	}
	dir := filepath.Join(strings.TrimSpace(string(out)), "sip", "testdata", "torture")
	if _, err := os.Stat(dir); err != nil {
		return ""
	}
	return dir
}

// tortureMessages reads every RFC 4475 message.
func tortureMessages(tb testing.TB) map[string][]byte {
	dir := tortureDir()
	if dir == "" {
		tb.Log("RFC 4475 torture messages not found in the module cache")
		return nil
	}
	msgs := map[string][]byte{}
	for _, kind := range []string{"valid", "invalid"} {
		files, _ := filepath.Glob(filepath.Join(dir, kind, "*.dat"))
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				tb.Fatal(err)
			}
			msgs[kind+"/"+filepath.Base(f)] = b
		}
	}
	return msgs
}

// discardConn is the far end of a fuzzed TCP connection: writes vanish.
type discardConn struct{ net.Conn }

func (discardConn) Write(b []byte) (int, error) { return len(b), nil }
func (discardConn) Close() error                { return nil }

// FuzzFrontEnd feeds arbitrary bytes to the whole front end, as a UDP
// datagram and as a TCP stream: classification, the guard, parsing,
// validation, stateless handlers, screens and the hand-off to sipgo's
// transaction layer. It must never panic. Seeds: RFC 4475's torture
// messages and the framing corpus.
func FuzzFrontEnd(f *testing.F) {
	for _, m := range tortureMessages(f) {
		f.Add(m)
	}
	f.Add([]byte("INVITE sip:+15551234@h SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@h>;tag=1\r\nTo: <sip:b@h>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"))
	f.Add([]byte("BYE sip:x@h SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK2\r\nFrom: <sip:a@h>;tag=1\r\nTo: <sip:b@h>;tag=2\r\nCall-ID: c\r\nCSeq: 2 BYE\r\nl: 0\r\n\r\n"))
	var screened atomic.Int64
	s, err := New(Settings{Listen: []Listen{{Transport: "udp", Host: "127.0.0.1"}, {Transport: "tcp", Host: "127.0.0.1"}}}, slog.New(slog.DiscardHandler))
	if err != nil {
		f.Fatal(err)
	}
	s.HandleStateless(sip.REGISTER, okHandler)
	s.Handle(sip.INVITE, func(req *sip.Request, tx sip.ServerTransaction) {
		tx.Respond(sip.NewResponseFromRequest(req, 486, "Busy Here", nil))
	})
	s.Screen(sip.INVITE, func(req *sip.Request, tx sip.ServerTransaction) bool {
		if req.GetHeader("Proxy-Authorization") == nil {
			screened.Add(1)
			tx.Respond(sip.NewResponseFromRequest(req, 407, "Proxy Authentication Required", nil))
			return true
		}
		return false
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	<-s.Ready()
	f.Cleanup(func() {
		cancel()
		<-done
	})
	var udp *udpListener
	var tcp *tcpListener
	for _, l := range s.listeners {
		if l.udp != nil {
			udp = l.udp
		}
		if l.tcp != nil {
			tcp = l.tcp
		}
	}
	// Answers go to a socket nobody reads: the test is about what the
	// server does with the input, not what comes back.
	sink := netip.MustParseAddrPort("127.0.0.1:9")
	f.Fuzz(func(t *testing.T, p []byte) {
		// Nothing reaches the socket, so the readers take no tickets.
		tk := &ticket{u: udp}
		udp.issue(tk)
		s.handleMessage(origin{udp: udp, ticket: tk, from: sink, local: udp.laddr}, slices.Clone(p))
		tk.pass(s)
		c := &tcpConn{Conn: discardConn{}, l: tcp, remote: sink, rbuf: make([]byte, 1)}
		c.in = append(c.in, p...)
		c.frame()
	})
}
