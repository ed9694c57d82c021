package frontend

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"hash/maphash"
	"log/slog"
	"net/netip"
	"runtime/debug"
	"strconv"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/edgewise-sip/edgewise/registrar/sip/digest"
)

// origin is where a message came from and how to answer it.
type origin struct {
	udp    *udpListener // exactly one of udp, tcp
	ticket *ticket      // with udp: the datagram's place in the socket's order
	tcp    *tcpConn
	from   netip.AddrPort
	local  sip.Addr
}

func (o origin) transport() string {
	switch {
	case o.udp != nil:
		return "UDP"
	case o.tcp.l.tls != nil:
		return "TLS"
	}
	return "TCP"
}

func (o origin) write(b []byte, dst netip.AddrPort) error {
	if o.udp != nil {
		_, err := o.udp.conn.WriteToUDPAddrPort(b, dst)
		return err
	}
	_, err := o.tcp.Conn.Write(b)
	return err
}

func (o origin) forward(s *Server, pkt []byte) {
	if o.udp != nil {
		o.ticket.forward(s, pkt, o.from)
		return
	}
	o.tcp.forward(pkt)
}

// pass tells the socket's sequencer that this datagram does not go to
// sipgo, before a handler spends time on it. Stream messages need nothing:
// one goroutine reads each connection in order.
func (o origin) pass(s *Server) {
	if o.ticket != nil {
		o.ticket.pass(s)
	}
}

// handleMessage classifies one datagram or framed stream message, parses it
// once, and answers, dispatches or forwards it to sipgo.
func (s *Server) handleMessage(o origin, pkt []byte) {
	if isKeepalive(pkt) {
		return
	}
	isResp, method, ok := classify(pkt)
	if !ok {
		s.stats.Garbage.Add(1)
		if s.log.Enabled(context.Background(), slog.LevelDebug) {
			s.log.Debug("dropping non-SIP message", "transport", o.transport(), "from", o.from.String(), "bytes", len(pkt))
		}
		return
	}
	if isResp {
		// Responses are never guarded: they only complete our own client
		// transactions (REGISTER and OPTIONS to Twilio, calls), so a
		// stranger gains nothing by sending them, while dropping them
		// because their source was locked out — which a forged UDP
		// request can arrange — would make a healthy edge look dead.
		o.forward(s, pkt)
		return
	}
	if s.blocked(o.from.Addr()) {
		s.stats.Blocked.Add(1)
		// UDP: silence, so a locked-out source learns nothing and costs
		// nothing. TCP: the peer is real (handshake done); tell it.
		if o.tcp != nil && method != sip.ACK {
			if resp := rawResponse(pkt, 403, "Forbidden", s.settings.UserAgent, ""); resp != nil {
				o.write(resp, o.from)
			}
		}
		return
	}

	h, stateless := s.stateless[method]
	var sum uint64
	if stateless {
		sum = fingerprint(o.from, pkt)
		if o.udp != nil && s.answerAgain(o, sum) {
			return
		}
	}
	_, toSipgo := s.transactional[method]
	if !toSipgo && (method == sip.ACK || method == sip.CANCEL) {
		_, toSipgo = s.transactional[sip.INVITE]
	}

	msg, err := s.parser.ParseSIP(pkt)
	var req *sip.Request
	if err == nil {
		req, _ = msg.(*sip.Request)
	}
	if req == nil {
		s.malformed(o, pkt, "unparsable", err)
		return
	}
	if reason := validate(req); reason != "" {
		s.malformed(o, pkt, reason, nil)
		return
	}
	req.SetTransport(o.transport())
	req.SetSource(o.from.String())
	// Laddr tells handlers which socket received the request, so requests
	// to this peer can later leave from the same one.
	req.Laddr = o.local
	tx := &statelessTx{s: s, o: o, dst: s.responseDest(o, req), req: req}
	if toSipgo {
		if scr := s.screens[method]; scr != nil && s.screen(scr, req, tx) {
			s.stats.Screened.Add(1)
			return
		}
		o.forward(s, pkt)
		return
	}
	o.pass(s)
	if stateless {
		tx.sum = sum
		s.dispatch(h, req, tx)
		return
	}
	s.builtin(req, tx)
}

// validate checks what every request needs before anyone answers it
// (RFC 3261 §8.2). It returns a reason for 400, or "".
func validate(req *sip.Request) string {
	switch {
	case req.SipVersion != "SIP/2.0":
		return "SIP version not supported"
	case req.Via() == nil:
		return "missing Via"
	case req.From() == nil:
		return "missing From"
	case req.To() == nil:
		return "missing To"
	case req.CallID() == nil:
		return "missing Call-ID"
	case req.CSeq() == nil:
		return "missing CSeq"
	case req.CSeq().MethodName != req.Method:
		return "CSeq method does not match"
	}
	return ""
}

// malformed answers 400 if the raw message has enough headers to be matched
// by its sender, and otherwise drops it.
func (s *Server) malformed(o origin, pkt []byte, reason string, err error) {
	s.stats.Malformed.Add(1)
	if s.log.Enabled(context.Background(), slog.LevelDebug) {
		s.log.Debug("malformed SIP message", "transport", o.transport(), "from", o.from.String(), "reason", reason, "error", err)
	}
	if resp := rawResponse(pkt, 400, "Bad Request", s.settings.UserAgent, ""); resp != nil {
		o.write(resp, o.from)
	}
}

// dispatch runs a stateless handler on the reading goroutine. Handlers do not
// block (see Handler), so this costs no handoff; a panic is contained to the
// one message.
func (s *Server) dispatch(h Handler, req *sip.Request, tx sip.ServerTransaction) {
	defer func() {
		if p := recover(); p != nil {
			s.log.Error("handler panicked", "method", string(req.Method), "panic", p, "stack", string(debug.Stack()))
		}
	}()
	h(req, tx)
}

// screen runs a Screen on the reading goroutine; a panic counts as not
// screened, so the request still gets its transaction.
func (s *Server) screen(f Screen, req *sip.Request, tx sip.ServerTransaction) (done bool) {
	defer func() {
		if p := recover(); p != nil {
			s.log.Error("screen panicked", "method", string(req.Method), "panic", p, "stack", string(debug.Stack()))
			done = false
		}
	}()
	return f(req, tx)
}

// builtin answers requests nobody handles: OPTIONS to the server itself,
// CANCEL of nothing, methods without a handler.
func (s *Server) builtin(req *sip.Request, tx sip.ServerTransaction) {
	var res *sip.Response
	switch req.Method {
	case sip.ACK:
		return
	case sip.OPTIONS:
		res = sip.NewResponseFromRequest(req, 200, "OK", nil)
		res.AppendHeader(sip.NewHeader("Allow", s.allow))
		res.AppendHeader(sip.NewHeader("Accept", "application/sdp"))
	case sip.CANCEL:
		res = sip.NewResponseFromRequest(req, 481, "Call/Transaction Does Not Exist", nil)
	default:
		code, reason := 501, "Not Implemented"
		if isKnownMethod(req.Method) {
			code, reason = 405, "Method Not Allowed"
		}
		res = sip.NewResponseFromRequest(req, code, reason, nil)
		res.AppendHeader(sip.NewHeader("Allow", s.allow))
	}
	if err := tx.Respond(res); err != nil {
		s.log.Debug("builtin response failed", "error", err)
	}
}

// noRoute answers requests sipgo received for a method without a handler:
// over UDP and TCP only ACK/CANCEL routing gaps, over WebSocket everything
// the built-in answers cover (OPTIONS to the server, unknown methods).
func (s *Server) noRoute(req *sip.Request, tx sip.ServerTransaction) {
	if reason := validate(req); reason != "" {
		s.stats.Malformed.Add(1)
		s.respond(tx, sip.NewResponseFromRequest(req, 400, "Bad Request - "+reason, nil))
		return
	}
	s.builtin(req, tx)
}

func isKnownMethod(m sip.RequestMethod) bool {
	for _, k := range knownMethods {
		if k == m {
			return true
		}
	}
	return false
}

// responseDest is where a UDP response goes (RFC 3261 §18.2.2 with RFC 3581):
// the source address, and the source port if the client asked for rport (or
// ForceRport is set), else the port in its Via.
func (s *Server) responseDest(o origin, req *sip.Request) netip.AddrPort {
	if o.tcp != nil {
		return o.from
	}
	via := req.Via()
	if s.settings.ForceRport || via.Params.Has("rport") {
		return o.from
	}
	port := via.Port
	if port <= 0 || port > 65535 {
		port = sip.DefaultUdpPort
	}
	return netip.AddrPortFrom(o.from.Addr(), uint16(port))
}

// statelessTx stands in for a server transaction: Respond writes the response
// and nothing is kept. It satisfies sip.ServerTransaction so handlers work the
// same whichever way a method is routed.
type statelessTx struct {
	s   *Server
	o   origin
	dst netip.AddrPort
	req *sip.Request
	sum uint64 // Fingerprint
}

var fingerprintSeed = maphash.MakeSeed()

// fingerprint hashes a request's source and bytes, never 0.
func fingerprint(from netip.AddrPort, pkt []byte) uint64 {
	var h maphash.Hash
	h.SetSeed(fingerprintSeed)
	a := from.Addr().As16()
	h.Write(a[:])
	h.WriteByte(byte(from.Port() >> 8))
	h.WriteByte(byte(from.Port()))
	h.Write(pkt)
	if v := h.Sum64(); v != 0 {
		return v
	}
	return 1
}

// Fingerprint is a hash of the request's source and bytes as they arrived,
// never 0. A UDP retransmission is the same datagram from the same place
// (RFC 3261 §17.1.2.2), so it has the same fingerprint; a request that
// changes anything, or comes from elsewhere, has another. The registrar's
// digest nonce-count check uses it rather than hashing the parsed request
// again.
func (t *statelessTx) Fingerprint() uint64 { return t.sum }

var _ sip.ServerTransaction = (*statelessTx)(nil)

var bufPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// Respond writes res to the requester. It adds a Server header when res has
// none, and a received parameter when the Via host is not the source address
// (RFC 3261 §18.2.1; NewResponseFromRequest only handles rport).
func (t *statelessTx) Respond(res *sip.Response) error {
	if v := res.Via(); v != nil && !v.Params.Has("received") {
		if a, err := netip.ParseAddr(v.Host); err != nil || a.Unmap() != t.o.from.Addr() {
			v.Params.Add("received", t.o.from.Addr().String())
		}
	}
	hasServer := false
	for _, h := range res.Headers() {
		if h.Name() == "Server" {
			hasServer = true
			break
		}
	}
	if !hasServer {
		res.AppendHeader(sip.NewHeader("Server", t.s.settings.UserAgent))
	}
	buf := bufPool.Get().(*bytes.Buffer)
	buf.Reset()
	res.StringWrite(buf)
	// Remembered before it is sent: a client may retransmit the moment the
	// response reaches it, and that copy must find the response, not be
	// handled afresh. Should the write fail, answering a retransmission
	// with the same bytes is what a transaction would do anyway.
	if t.o.udp != nil && t.sum != 0 && res.StatusCode >= 200 {
		t.o.udp.replies.put(t.sum, t.dst, buf.Bytes(), time.Now())
	}
	err := t.o.write(buf.Bytes(), t.dst)
	bufPool.Put(buf)
	return err
}

// answerAgain sends the response already sent for a retransmitted request
// (same source, same bytes) and reports whether it did; see replies.
func (s *Server) answerAgain(o origin, sum uint64) bool {
	// Nearly every lookup misses, so no buffer is taken for it; a hit
	// (a retransmission) allocates its copy.
	b, dst, ok := o.udp.replies.get(sum, nil, time.Now())
	if !ok {
		return false
	}
	o.pass(s)
	s.stats.Retransmissions.Add(1)
	if err := o.write(b, dst); err != nil && s.log.Enabled(context.Background(), slog.LevelDebug) {
		s.log.Debug("answering a retransmission failed", "to", dst.String(), "error", err)
	}
	return true
}

// Detached reports that Respond may be called after the handler returned:
// nothing is torn down when it does. Handlers that wait for slow work (the
// registrar's commit) use this to answer from a callback instead of blocking
// the reader.
func (t *statelessTx) Detached() bool { return true }

func (t *statelessTx) Terminate()                         {}
func (t *statelessTx) OnTerminate(sip.FnTxTerminate) bool { return false }
func (t *statelessTx) Done() <-chan struct{}              { return closedChan }
func (t *statelessTx) Err() error                         { return nil }
func (t *statelessTx) Acks() <-chan *sip.Request          { return nil }
func (t *statelessTx) OnCancel(f sip.FnTxCancel) bool     { return false }

var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// isKeepalive reports CRLF (or NUL) keepalives some phones send over UDP.
func isKeepalive(p []byte) bool {
	for _, c := range p {
		if c != '\r' && c != '\n' && c != 0 && c != ' ' {
			return false
		}
	}
	return true
}

// classify looks at the start line only: a response, a request with its
// method, or not SIP at all.
func classify(p []byte) (response bool, method sip.RequestMethod, ok bool) {
	if bytes.HasPrefix(p, []byte("SIP/2.0 ")) {
		return true, "", true
	}
	sp := bytes.IndexByte(p, ' ')
	if sp <= 0 || sp > 32 {
		return false, "", false
	}
	for _, c := range p[:sp] {
		if !digest.IsTokenChar(c) {
			return false, "", false
		}
	}
	eol := bytes.IndexByte(p, '\r')
	if eol < 0 || !bytes.HasSuffix(p[:eol], []byte(" SIP/2.0")) {
		return false, "", false
	}
	return false, methodOf(p[:sp]), true
}

// methodOf returns the method, using the constants for common ones so that
// classifying costs no allocation.
func methodOf(b []byte) sip.RequestMethod {
	for _, m := range knownMethods {
		if string(b) == string(m) {
			return m
		}
	}
	return sip.RequestMethod(bytes.ToUpper(b))
}

// rawResponse builds a response to a request that could not be parsed, from
// its raw Via, From, To, Call-ID and CSeq lines (RFC 3261 §8.2.6). The top Via
// branch and the CSeq are what the client matches a response on (§17.1.3), so
// those two are required; the others are copied when present. It returns nil
// without them, for an ACK or a response, or when a header line carries bytes
// that must not be echoed.
func rawResponse(pkt []byte, code int, reason, server, extra string) []byte {
	if bytes.HasPrefix(pkt, []byte("SIP/")) {
		return nil
	}
	lineEnd := bytes.Index(pkt, []byte("\r\n"))
	if lineEnd < 0 {
		return nil
	}
	rest := pkt[lineEnd+2:]
	var vias [][]byte
	var from, to, callID, cseq []byte
	for len(rest) > 0 {
		i := bytes.Index(rest, []byte("\r\n"))
		if i <= 0 {
			break // end of headers (or a line without CRLF)
		}
		line := rest[:i]
		rest = rest[i+2:]
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			continue
		}
		name = bytes.TrimSpace(name)
		value = bytes.TrimSpace(value)
		if bytes.ContainsAny(value, "\x00\r\n") {
			return nil
		}
		switch {
		case bytes.EqualFold(name, []byte("via")) || bytes.EqualFold(name, []byte("v")):
			vias = append(vias, value)
		case bytes.EqualFold(name, []byte("from")) || bytes.EqualFold(name, []byte("f")):
			from = value
		case bytes.EqualFold(name, []byte("to")) || bytes.EqualFold(name, []byte("t")):
			to = value
		case bytes.EqualFold(name, []byte("call-id")) || bytes.EqualFold(name, []byte("i")):
			callID = value
		case bytes.EqualFold(name, []byte("cseq")):
			cseq = value
		}
	}
	if len(vias) == 0 || len(cseq) == 0 {
		return nil
	}
	if f := bytes.Fields(cseq); len(f) != 2 || bytes.EqualFold(f[1], []byte("ACK")) {
		return nil
	}
	var b bytes.Buffer
	b.WriteString("SIP/2.0 ")
	b.WriteString(strconv.Itoa(code))
	b.WriteByte(' ')
	b.WriteString(reason)
	b.WriteString("\r\n")
	for _, v := range vias {
		b.WriteString("Via: ")
		b.Write(v)
		b.WriteString("\r\n")
	}
	if len(from) > 0 {
		b.WriteString("From: ")
		b.Write(from)
		b.WriteString("\r\n")
	}
	if len(to) > 0 {
		b.WriteString("To: ")
		b.Write(to)
		if !bytes.Contains(bytes.ToLower(to), []byte(";tag=")) {
			var tag [6]byte
			rand.Read(tag[:])
			b.WriteString(";tag=")
			b.WriteString(hex.EncodeToString(tag[:]))
		}
		b.WriteString("\r\n")
	}
	if len(callID) > 0 {
		b.WriteString("Call-ID: ")
		b.Write(callID)
		b.WriteString("\r\n")
	}
	b.WriteString("CSeq: ")
	b.Write(cseq)
	b.WriteString("\r\nServer: ")
	b.WriteString(server)
	b.WriteString("\r\n")
	b.WriteString(extra)
	b.WriteString("Content-Length: 0\r\n\r\n")
	return b.Bytes()
}
