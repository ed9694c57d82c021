package frontend

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// SIP over WebSocket (RFC 7118) for browser softphones.
//
// sipgo frames WebSocket messages and runs every request that arrives over
// it through its transaction layer, REGISTER and OPTIONS included: browsers
// register at human rates, so the stateless fast path UDP and TCP need is
// not worth a second WebSocket implementation here. What sipgo does not do
// is done by the listener it serves, which hands sipgo only connections
// that passed these checks:
//
//   - the source is not locked out (SetGuard), at the upgrade and before
//     every read afterwards;
//   - the upgrade is a well-formed RFC 6455 handshake offering the "sip"
//     subprotocol (RFC 7118 §4.1), else it is refused with an HTTP error;
//   - every frame from the browser is masked (RFC 6455 §5.1) and no frame
//     or fragmented message is larger than maxWSMessage;
//
// and it tells the owner (OnConnClosed) when a connection ends, so the
// bindings registered over it can go: nothing can reach a browser once its
// connection is gone.
//
// Requests to a browser (an INVITE, a qualify OPTIONS) are sent by sipgo
// with transport WS (or WSS) to the binding's source address, which is the
// key sipgo files the connection under, so they leave over the connection
// the browser registered on. sipgo would dial a new connection if that one
// were gone; the bindings are removed first, and Ping checks.

const (
	// maxWSMessage bounds one WebSocket frame and one fragmented message.
	// sipgo reads a message into a buffer of sip.TransportBufferReadSize
	// (32 KiB) and would silently truncate anything longer, so the limit
	// must not exceed it (a test checks). A browser's INVITE with a full
	// WebRTC offer is 3-8 KB.
	maxWSMessage = 32 << 10
	// maxWSHandshake bounds the HTTP upgrade request.
	maxWSHandshake = 8 << 10
	// wsHandshakeTimeout bounds the TLS and HTTP handshakes together.
	wsHandshakeTimeout = 10 * time.Second
	// maxWSPending bounds handshakes in progress per listener; connections
	// beyond it are closed at once.
	maxWSPending = 256
)

// wsListener is the TCP socket of a ws: or wss: listener. Its accept loop
// runs every handshake on its own goroutine and queues the connections that
// pass for sipgo, which reads them from Accept.
type wsListener struct {
	tcp       *net.TCPListener
	addr      netip.AddrPort
	transport string      // "ws" or "wss"
	tls       *tls.Config // nil for ws
	s         *Server

	accepted chan *wsConn
	pending  sync.WaitGroup // handshakes in progress

	// tracked holds every open connection; its mu also guards these.
	tracked[*wsConn]
	byRemote map[netip.AddrPort]*wsConn // connections handed to sipgo
	npending int
}

func listenWS(ap netip.AddrPort, transport string, tlsConf *tls.Config, s *Server) (*wsListener, error) {
	l, err := net.ListenTCP("tcp", net.TCPAddrFromAddrPort(ap))
	if err != nil {
		return nil, err
	}
	bound := l.Addr().(*net.TCPAddr).AddrPort()
	return &wsListener{
		tcp:       l,
		addr:      netip.AddrPortFrom(bound.Addr().Unmap(), bound.Port()),
		transport: transport,
		tls:       tlsConf,
		s:         s,
		accepted:  make(chan *wsConn),
		tracked:   newTracked[*wsConn](),
		byRemote:  make(map[netip.AddrPort]*wsConn),
	}, nil
}

// Accept gives sipgo the next connection that passed the handshake checks.
func (l *wsListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.accepted:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

// Close is a no-op for sipgo: the Server closes the listener in Run.
func (l *wsListener) Close() error   { return nil }
func (l *wsListener) Addr() net.Addr { return l.tcp.Addr() }

// acceptLoop accepts TCP connections until the listener closes, then waits
// for the handshakes it started.
// wsKeepAlive probes an idle browser connection after 15 s, every 5 s, and
// gives up after 3 unanswered probes.
var wsKeepAlive = net.KeepAliveConfig{Enable: true, Idle: 15 * time.Second, Interval: 5 * time.Second, Count: 3}

func (l *wsListener) acceptLoop() {
	defer l.pending.Wait()
	backoff := 5 * time.Millisecond
	for {
		c, err := l.tcp.AcceptTCP()
		if err != nil {
			select {
			case <-l.closed:
				return
			default:
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			l.s.log.Warn("websocket accept failed, retrying", "addr", l.addr.String(), "error", err, "backoff", backoff)
			t := time.NewTimer(backoff)
			select {
			case <-t.C:
			case <-l.closed:
				t.Stop()
				return
			}
			backoff = min(2*backoff, time.Second)
			continue
		}
		backoff = 5 * time.Millisecond
		// A browser is only reachable over this connection. If its host
		// vanishes (sleep, network gone) without closing it, TCP keepalive
		// notices within about 30 s and the close removes its bindings;
		// the kernel default would wait over two hours.
		if err := c.SetKeepAliveConfig(wsKeepAlive); err != nil {
			l.s.log.Debug("websocket keepalive not set", "error", err)
		}
		remote := c.RemoteAddr().(*net.TCPAddr).AddrPort()
		remote = netip.AddrPortFrom(remote.Addr().Unmap(), remote.Port())
		if !l.s.admitConn(remote.Addr(), l.transport) {
			c.Close()
			continue
		}
		wc := &wsConn{Conn: c, l: l, remote: remote}
		l.mu.Lock()
		full := l.npending >= maxWSPending || !l.addLocked(wc)
		if !full {
			l.npending++
			l.pending.Add(1)
		}
		l.mu.Unlock()
		if full {
			l.s.stats.WSRefused.Add(1)
			c.Close()
			continue
		}
		go func() {
			defer l.pending.Done()
			ok := l.handshake(wc)
			l.mu.Lock()
			l.npending--
			l.mu.Unlock()
			if !ok {
				wc.Close()
			}
		}()
	}
}

// closeAll closes the listener and every connection; OnConnClosed is not
// called for them, the server is stopping.
func (l *wsListener) closeAll() { l.tracked.closeAll(l.tcp) }

// conn returns the open connection from remote, if any.
func (l *wsListener) conn(remote netip.AddrPort) *wsConn {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.byRemote[remote]
}

// handshake runs TLS (wss) and checks the HTTP upgrade, answering an HTTP
// error when it is refused. On success the connection is queued for sipgo,
// which reads the same upgrade request again and answers it.
func (l *wsListener) handshake(c *wsConn) bool {
	s := l.s
	if s.blocked(c.remote.Addr()) {
		s.stats.Blocked.Add(1)
		// Before TLS: a locked-out source gets no handshake at all.
		if l.tls == nil {
			writeHTTPError(c.Conn, http.StatusForbidden, "source locked out", nil)
		}
		return false
	}
	if err := c.Conn.SetDeadline(time.Now().Add(wsHandshakeTimeout)); err != nil {
		return false
	}
	if l.tls != nil {
		tc := tls.Server(c.Conn, l.tls)
		ctx, cancel := context.WithTimeout(context.Background(), wsHandshakeTimeout)
		err := tc.HandshakeContext(ctx)
		cancel()
		if err != nil {
			s.log.Debug("websocket TLS handshake failed", "remote", c.remote.String(), "error", err)
			s.stats.WSRefused.Add(1)
			return false
		}
		c.mu.Lock()
		c.Conn = tc
		c.mu.Unlock()
	}

	var seen bytes.Buffer
	br := bufio.NewReaderSize(io.TeeReader(io.LimitReader(c.Conn, maxWSHandshake), &seen), 4096)
	req, err := http.ReadRequest(br)
	if err != nil {
		s.stats.WSRefused.Add(1)
		s.log.Debug("websocket upgrade unreadable", "remote", c.remote.String(), "error", err)
		if seen.Len() >= maxWSHandshake {
			writeHTTPError(c.Conn, http.StatusRequestHeaderFieldsTooLarge, "upgrade request too large", nil)
		} else if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) && !isTimeout(err) {
			writeHTTPError(c.Conn, http.StatusBadRequest, "not an HTTP request", nil)
		}
		return false
	}
	req.Body.Close()
	if code, reason, hdr := checkUpgrade(req); code != 0 {
		s.stats.WSRefused.Add(1)
		s.log.Info("websocket upgrade refused", "transport", l.transport, "remote", c.remote.String(), "reason", reason,
			"protocols", req.Header.Values("Sec-WebSocket-Protocol"), "user_agent", req.UserAgent())
		writeHTTPError(c.Conn, code, reason, hdr)
		return false
	}
	// Bytes a client sent after its request, before our answer, are frames
	// already: they count against the limits like any later ones.
	reqLen := seen.Len() - br.Buffered()
	if err := c.limit.feed(seen.Bytes()[reqLen:]); err != nil {
		s.stats.WSRefused.Add(1)
		return false
	}
	if err := c.Conn.SetDeadline(time.Time{}); err != nil {
		return false
	}
	c.replay = seen.Bytes()

	l.mu.Lock()
	if l.stopping() {
		l.mu.Unlock()
		return false
	}
	c.open = true
	l.byRemote[c.remote] = c
	l.mu.Unlock()
	select {
	case l.accepted <- c:
		s.log.Debug("websocket connected", "transport", l.transport, "remote", c.remote.String(), "user_agent", req.UserAgent())
		return true
	case <-l.closed:
		return false
	}
}

// checkUpgrade checks an RFC 6455 §4.2.1 opening handshake and the SIP
// subprotocol (RFC 7118 §4.1). It returns 0, or the HTTP status, a reason
// and extra headers to refuse it with.
func checkUpgrade(req *http.Request) (int, string, http.Header) {
	switch {
	case req.Method != http.MethodGet:
		return http.StatusMethodNotAllowed, "the upgrade must be a GET", http.Header{"Allow": {"GET"}}
	case req.ProtoMajor != 1 || req.ProtoMinor < 1:
		return http.StatusBadRequest, "HTTP/1.1 required", nil
	case !headerHasToken(req.Header, "Upgrade", "websocket"):
		return http.StatusUpgradeRequired, "this is a SIP WebSocket endpoint: upgrade to websocket with subprotocol sip",
			http.Header{"Upgrade": {"websocket"}, "Sec-WebSocket-Protocol": {"sip"}}
	case !headerHasToken(req.Header, "Connection", "upgrade"):
		return http.StatusBadRequest, "Connection: Upgrade missing", nil
	case req.Header.Get("Sec-WebSocket-Version") != "13":
		return http.StatusUpgradeRequired, "WebSocket version 13 required", http.Header{"Sec-WebSocket-Version": {"13"}}
	case req.Header.Get("Sec-WebSocket-Key") == "":
		return http.StatusBadRequest, "Sec-WebSocket-Key missing", nil
	case !offersSIP(req.Header.Values("Sec-WebSocket-Protocol")):
		return http.StatusBadRequest, "Sec-WebSocket-Protocol must offer sip (RFC 7118)", http.Header{"Sec-WebSocket-Protocol": {"sip"}}
	}
	return 0, "", nil
}

// offersSIP reports whether the client's subprotocols include "sip".
// Subprotocol names compare case-sensitively (RFC 6455 §4.1).
func offersSIP(values []string) bool {
	for _, v := range values {
		for p := range strings.SplitSeq(v, ",") {
			if strings.TrimSpace(p) == "sip" {
				return true
			}
		}
	}
	return false
}

func headerHasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for p := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(p), token) {
				return true
			}
		}
	}
	return false
}

func writeHTTPError(w io.Writer, code int, reason string, hdr http.Header) {
	var b bytes.Buffer
	b.WriteString("HTTP/1.1 " + strconv.Itoa(code) + " " + http.StatusText(code) + "\r\n")
	for k, vs := range hdr {
		for _, v := range vs {
			b.WriteString(k + ": " + v + "\r\n")
		}
	}
	body := reason + "\n"
	b.WriteString("Content-Type: text/plain; charset=utf-8\r\nConnection: close\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n")
	b.WriteString(body)
	w.Write(b.Bytes())
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// wsConn is one browser connection as sipgo sees it: the upgrade request is
// replayed to sipgo's upgrader, and every byte read afterwards passes the
// frame limits and the guard.
type wsConn struct {
	mu sync.Mutex // guards Conn while the TLS handshake replaces it
	net.Conn
	l      *wsListener
	remote netip.AddrPort

	// Only sipgo's reader goroutine calls Read after the handshake.
	replay []byte
	limit  frameLimit
	rerr   error

	open      bool // handed to sipgo (set under l.mu)
	closeOnce sync.Once
}

var errWSBlocked = errors.New("source locked out")

func (c *wsConn) Read(b []byte) (int, error) {
	if len(c.replay) > 0 {
		n := copy(b, c.replay)
		c.replay = c.replay[n:]
		return n, nil
	}
	if c.rerr != nil {
		return 0, c.rerr
	}
	if c.l.s.blocked(c.remote.Addr()) {
		c.l.s.stats.Blocked.Add(1)
		c.fail(errWSBlocked)
		return 0, c.rerr
	}
	// A browser that sends nothing, not even a keepalive, for the idle
	// timeout is gone (SIP.js re-registers every few minutes).
	idle := c.l.s.settings.Connections.IdleTimeout
	_ = c.Conn.SetReadDeadline(time.Now().Add(idle))
	n, err := c.Conn.Read(b)
	if err != nil && errors.Is(err, os.ErrDeadlineExceeded) {
		c.l.s.stats.IdleClosed.Add(1)
		c.fail(fmt.Errorf("silent for %s", idle))
		return n, c.rerr
	}
	if n > 0 {
		// Again after the wait: nothing read once the source is locked
		// out reaches sipgo.
		if c.l.s.blocked(c.remote.Addr()) {
			c.l.s.stats.Blocked.Add(1)
			c.fail(errWSBlocked)
			return 0, c.rerr
		}
		if ferr := c.limit.feed(b[:n]); ferr != nil {
			c.l.s.stats.WSOversized.Add(1)
			c.fail(ferr)
			return 0, c.rerr
		}
	}
	if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
		// A browser that vanishes resets its connection: routine, so
		// sipgo should close quietly rather than log an error.
		c.l.s.log.Debug("websocket read failed", "transport", c.l.transport, "remote", c.remote.String(), "error", err)
		err = fmt.Errorf("%w: %w", err, net.ErrClosed)
	}
	return n, err
}

// fail ends reading with reason; sipgo closes the connection when Read
// fails. The error wraps net.ErrClosed so that it does so without logging
// an error of its own.
func (c *wsConn) fail(reason error) {
	c.l.s.log.Info("closing websocket connection", "transport", c.l.transport, "remote", c.remote.String(), "reason", reason)
	c.rerr = fmt.Errorf("frontend: websocket %s: %w: %w", c.remote, reason, net.ErrClosed)
}

func (c *wsConn) Close() error {
	var err error
	c.closeOnce.Do(func() {
		c.mu.Lock()
		conn := c.Conn
		c.mu.Unlock()
		if err = conn.Close(); errors.Is(err, net.ErrClosed) {
			err = nil
		}
		l := c.l
		l.s.conns.release(c.remote.Addr())
		l.mu.Lock()
		delete(l.conns, c)
		wasOpen := c.open
		if wasOpen && l.byRemote[c.remote] == c {
			delete(l.byRemote, c.remote)
		}
		stopping := false
		select {
		case <-l.closed:
			stopping = true
		default:
		}
		l.mu.Unlock()
		if wasOpen && !stopping {
			l.s.log.Debug("websocket closed", "transport", l.transport, "remote", c.remote.String())
			l.s.connClosed(l.transport, c.remote)
		}
	})
	return err
}

var (
	errWSUnmasked       = errors.New("unmasked frame from client (RFC 6455 §5.1)")
	errWSFrameTooLarge  = fmt.Errorf("frame larger than %d bytes", maxWSMessage)
	errWSMessageTooLong = fmt.Errorf("message larger than %d bytes", maxWSMessage)
	errWSBadControl     = errors.New("control frame fragmented or longer than 125 bytes")
)

// frameLimit follows the frame headers in a client's byte stream (RFC 6455
// §5.2) and refuses frames and fragmented messages above maxWSMessage,
// unmasked frames and malformed control frames, before sipgo allocates or
// reads their payload.
type frameLimit struct {
	hdr     [14]byte
	nhdr    int
	payload uint64 // payload bytes of the current frame still to come
	msg     uint64 // data bytes of the current message so far
}

func (f *frameLimit) feed(p []byte) error {
	for len(p) > 0 {
		if f.payload > 0 {
			n := min(uint64(len(p)), f.payload)
			f.payload -= n
			p = p[n:]
			continue
		}
		f.hdr[f.nhdr] = p[0]
		f.nhdr++
		p = p[1:]
		if f.nhdr < 2 {
			continue
		}
		need := 2
		switch f.hdr[1] & 0x7f {
		case 126:
			need += 2
		case 127:
			need += 8
		}
		masked := f.hdr[1]&0x80 != 0
		if masked {
			need += 4
		}
		if f.nhdr < need {
			continue
		}
		f.nhdr = 0
		if !masked {
			return errWSUnmasked
		}
		var length uint64
		switch l := f.hdr[1] & 0x7f; l {
		case 126:
			length = uint64(f.hdr[2])<<8 | uint64(f.hdr[3])
		case 127:
			for _, b := range f.hdr[2:10] {
				length = length<<8 | uint64(b)
			}
		default:
			length = uint64(l)
		}
		fin := f.hdr[0]&0x80 != 0
		if op := f.hdr[0] & 0x0f; op >= 0x8 {
			if length > 125 || !fin {
				return errWSBadControl
			}
		} else {
			if length > maxWSMessage {
				return errWSFrameTooLarge
			}
			f.msg += length
			if f.msg > maxWSMessage {
				return errWSMessageTooLong
			}
			if fin {
				f.msg = 0
			}
		}
		f.payload = length
	}
	return nil
}
