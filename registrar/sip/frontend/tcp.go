package frontend

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"
)

// Limits on one TCP message. sipgo's parser refuses more than 64 KB too.
const (
	maxHeaderBytes = 16 << 10
	maxBodyBytes   = 48 << 10
)

// tcpListener wraps the TCP socket sipgo serves: each accepted connection is a
// tcpConn that frames messages itself, answers stateless ones and passes only
// complete, parsable messages on to sipgo's stream parser.
type tcpListener struct {
	*net.TCPListener
	transport string      // tcp or tls
	tls       *tls.Config // nil for tcp
	addr      netip.AddrPort
	laddr     sip.Addr
	s         *Server

	tracked[*tcpConn]
}

// listenTCP listens for SIP over TCP, or over TLS (RFC 3261 §26.2) when
// conf is not nil: each accepted connection is then a TLS server
// connection, framed after decryption exactly like TCP.
func listenTCP(ap netip.AddrPort, s *Server, conf *tls.Config) (*tcpListener, error) {
	l, err := net.ListenTCP("tcp", net.TCPAddrFromAddrPort(ap))
	if err != nil {
		return nil, err
	}
	bound := l.Addr().(*net.TCPAddr).AddrPort()
	bound = netip.AddrPortFrom(bound.Addr().Unmap(), bound.Port())
	transport := "tcp"
	if conf != nil {
		transport = "tls"
	}
	return &tcpListener{
		TCPListener: l,
		transport:   transport,
		tls:         conf,
		addr:        bound,
		laddr:       sipAddr(bound),
		s:           s,
		tracked:     newTracked[*tcpConn](),
	}, nil
}

// Accept retries temporary errors (EMFILE, ECONNABORTED) with backoff instead
// of returning them: sipgo stops serving on the first Accept error.
func (l *tcpListener) Accept() (net.Conn, error) {
	backoff := 5 * time.Millisecond
	for {
		c, err := l.TCPListener.Accept()
		if err != nil {
			select {
			case <-l.closed:
				return nil, net.ErrClosed
			default:
			}
			if errors.Is(err, net.ErrClosed) {
				return nil, err
			}
			l.s.log.Warn("tcp accept failed, retrying", "addr", l.addr.String(), "error", err, "backoff", backoff)
			t := time.NewTimer(backoff)
			select {
			case <-t.C:
			case <-l.closed:
				t.Stop()
				return nil, net.ErrClosed
			}
			backoff = min(2*backoff, time.Second)
			continue
		}
		remote := c.RemoteAddr().(*net.TCPAddr).AddrPort()
		remote = netip.AddrPortFrom(remote.Addr().Unmap(), remote.Port())
		if !l.s.admitConn(remote.Addr(), l.transport) {
			c.Close()
			continue
		}
		// The handshake and the first message must come within the setup
		// timeout; after that the deadline moves with every message.
		_ = c.SetReadDeadline(time.Now().Add(l.s.settings.Connections.SetupTimeout))
		if l.tls != nil {
			// The handshake runs on the first read, in sipgo's reader
			// for this connection, never in the accept loop.
			c = tls.Server(c, l.tls)
		}
		tc := &tcpConn{
			Conn:   c,
			l:      l,
			remote: remote,
			rbuf:   make([]byte, 8192),
		}
		l.mu.Lock()
		added := l.addLocked(tc)
		l.mu.Unlock()
		if !added {
			tc.Close()
			return nil, net.ErrClosed
		}
		return tc, nil
	}
}

// closeAll closes the listener and every connection it accepted.
func (l *tcpListener) closeAll() { l.tracked.closeAll(l.TCPListener) }

// tcpConn frames SIP messages on a stream (RFC 3261 §18.3: headers, blank
// line, Content-Length bytes of body).
type tcpConn struct {
	net.Conn
	l      *tcpListener
	remote netip.AddrPort

	// Only sipgo's reader goroutine calls Read; these are its state.
	rbuf   []byte
	in     []byte // received, not yet framed
	out    []byte // framed messages for sipgo
	outOff int    // how much of out sipgo has read
	rerr   error
	// talked is set once a SIP message arrived: from then on the read
	// deadline is the idle timeout, not the setup timeout.
	talked bool

	closeOnce sync.Once
}

func (c *tcpConn) Close() error {
	var err error
	c.closeOnce.Do(func() {
		err = c.Conn.Close()
		c.l.mu.Lock()
		delete(c.l.conns, c)
		c.l.mu.Unlock()
		c.l.s.conns.release(c.remote.Addr())
	})
	return err
}

func (c *tcpConn) Read(b []byte) (int, error) {
	for {
		if c.outOff < len(c.out) {
			n := copy(b, c.out[c.outOff:])
			c.outOff += n
			if c.outOff == len(c.out) {
				c.out, c.outOff = c.out[:0], 0
			}
			return n, nil
		}
		if c.rerr != nil {
			return 0, c.rerr
		}
		n, err := c.Conn.Read(c.rbuf)
		if n > 0 {
			c.in = append(c.in, c.rbuf[:n]...)
			active, ferr := c.frame()
			if ferr != nil {
				c.l.s.log.Debug("closing tcp connection", "remote", c.remote.String(), "reason", ferr)
				// io.EOF makes sipgo close quietly.
				c.rerr = io.EOF
			}
			if active {
				_ = c.Conn.SetReadDeadline(time.Now().Add(c.l.s.settings.Connections.IdleTimeout))
			}
		}
		if err != nil && c.rerr == nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				c.timedOut()
				err = io.EOF // closed on purpose: sipgo closes quietly
			}
			c.rerr = err
		}
	}
}

// timedOut counts and logs a connection closed for silence.
func (c *tcpConn) timedOut() {
	s := c.l.s
	if c.talked {
		s.stats.IdleClosed.Add(1)
		s.log.Debug("closing idle connection", "transport", c.l.transport, "remote", c.remote.String(), "idle_timeout", s.settings.Connections.IdleTimeout)
		return
	}
	s.stats.SetupTimeouts.Add(1)
	s.log.Debug("closing connection that sent no SIP in time", "transport", c.l.transport, "remote", c.remote.String(), "setup_timeout", s.settings.Connections.SetupTimeout)
}

var (
	errHeaderTooLarge = errors.New("header section too large")
	errBodyTooLarge   = errors.New("body too large")
	errBadLength      = errors.New("unreadable Content-Length")
)

// frame handles every complete message in c.in and keeps the rest. active
// reports traffic that keeps the connection alive: a SIP message, or, once
// one has come, a keepalive ping.
func (c *tcpConn) frame() (active bool, err error) {
	in := c.in
	// Keep the remainder at the front of the buffer.
	defer func() { c.in = append(c.in[:0], in...) }()
	for {
		// RFC 5626 §3.5.1: CRLFCRLF between messages is a keepalive ping,
		// answered with CRLF. Lone CRLFs are ignored (RFC 3261 §7.5).
		crlf := 0
		for len(in) >= 2 && in[0] == '\r' && in[1] == '\n' {
			in = in[2:]
			crlf++
		}
		for ; crlf >= 2; crlf -= 2 {
			active = active || c.talked
			if _, err := c.Conn.Write([]byte("\r\n")); err != nil {
				return active, err
			}
		}
		if len(in) == 0 {
			return active, nil
		}
		end := bytes.Index(in, []byte("\r\n\r\n"))
		if end < 0 {
			if len(in) > maxHeaderBytes {
				return active, errHeaderTooLarge
			}
			return active, nil
		}
		if end+4 > maxHeaderBytes {
			return active, errHeaderTooLarge
		}
		cl, ok := contentLength(in[:end+2])
		if !ok {
			c.reject(in[:end+4], 400, "Bad Request")
			return active, errBadLength
		}
		if cl > maxBodyBytes {
			c.reject(in[:end+4], 513, "Message Too Large")
			return active, errBodyTooLarge
		}
		total := end + 4 + cl
		if len(in) < total {
			return active, nil
		}
		c.talked, active = true, true
		c.l.s.handleMessage(origin{tcp: c, from: c.remote, local: c.l.laddr}, in[:total])
		in = in[total:]
	}
}

// reject answers a message whose framing is broken, if it is a request.
func (c *tcpConn) reject(hdr []byte, code int, reason string) {
	if resp := rawResponse(hdr, code, reason, c.l.s.settings.UserAgent, ""); resp != nil {
		c.Conn.Write(resp)
	}
}

// contentLength finds Content-Length (or l) in a header section; absent
// means 0, which is what a request without a body has.
func contentLength(hdr []byte) (int, bool) {
	for len(hdr) > 0 {
		i := bytes.Index(hdr, []byte("\r\n"))
		if i < 0 {
			i = len(hdr)
		}
		line := hdr[:i]
		hdr = hdr[min(i+2, len(hdr)):]
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			continue
		}
		name = bytes.TrimSpace(name)
		if !bytes.EqualFold(name, []byte("content-length")) && !bytes.EqualFold(name, []byte("l")) {
			continue
		}
		value = bytes.TrimSpace(value)
		if len(value) == 0 || len(value) > 9 {
			return 0, false
		}
		n := 0
		for _, d := range value {
			if d < '0' || d > '9' {
				return 0, false
			}
			n = n*10 + int(d-'0')
		}
		return n, true
	}
	return 0, true
}

// forward appends a framed message to what sipgo reads next.
func (c *tcpConn) forward(msg []byte) { c.out = append(c.out, msg...) }
