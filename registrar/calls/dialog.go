package calls

import (
	"context"
	"math/rand/v2"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"

	"github.com/edgewise-sip/edgewise/media"
	"github.com/edgewise-sip/edgewise/media/webrtc"
)

// leg is one of a call's two dialogs (RFC 3261 §12): the phone's (side A)
// or Twilio's (side B). Either party may send requests inside it, so it
// keeps both CSeq spaces.
type leg struct {
	c    *call
	side media.Side

	// Fixed once the leg is created.
	callID   string
	localTag string
	local    nameAddr // our identity: From of our requests
	remote   nameAddr // the peer's: To of our requests

	client    *sipgo.Client
	transport string   // UDP, TCP or TLS
	dest      string   // explicit destination ip:port; "" routes by Route, then target
	laddr     sip.Addr // UDP socket requests leave from (NAT pinholes, symmetric signalling)
	sentBy    hostPort // our Via sent-by
	contact   sip.ContactHeader
	// phone: the peer is a local phone or browser (its media may need a
	// WebRTC bridge). faceLocal: the leg is on side B, where the relay
	// advertises the public address, but its peer is on the phones'
	// network: SDP sent to it carries the local address instead.
	phone     bool
	faceLocal bool
	// viaNode names the cluster node this fork goes through (the phone
	// registered there); its INVITE carries PeerHeader.
	viaNode string

	mu         sync.Mutex
	remoteTag  string
	target     sip.Uri  // the peer's Contact (remote target)
	routes     []string // route set, as Route header values in order
	cseq       uint32   // last CSeq we sent
	remoteCSeq uint32   // last CSeq the peer sent
	acks       map[uint32]chan *sip.Request
	browser    *webrtc.Bridge // the peer's WebRTC media, when it is a browser
}

type nameAddr struct {
	name string
	uri  sip.Uri
}

// prebuilt tells sipgo the request is complete: it adds nothing.
func prebuilt(*sipgo.Client, *sip.Request) error { return nil }

// newTag is a dialog tag: 64 random bits (RFC 3261 §19.3 asks for 32).
func newTag() string { return strconv.FormatUint(rand.Uint64(), 36) }

// newCallID is a Call-ID (and our call id): 128 random bits.
func newCallID() string {
	return strconv.FormatUint(rand.Uint64(), 36) + strconv.FormatUint(rand.Uint64(), 36)
}

// initialCSeq starts a CSeq space low enough never to wrap (RFC 3261 §8.1.1.5).
func initialCSeq() uint32 { return 1 + rand.Uint32N(1<<15) }

// nextCSeq returns the CSeq of a new request in the dialog.
func (l *leg) nextCSeq() uint32 {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.cseq++
	return l.cseq
}

// checkRemoteCSeq applies RFC 3261 §12.2.2: a request with a CSeq lower than
// the last one seen in the dialog is out of order (500). Equal is allowed:
// a merged request is another story, and sipgo absorbs retransmissions.
func (l *leg) checkRemoteCSeq(n uint32) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if n < l.remoteCSeq {
		return false
	}
	l.remoteCSeq = n
	return true
}

// setPeer records the remote tag, target and route set learnt from a
// response that established the dialog (UAC side: Record-Route reversed,
// RFC 3261 §12.1.2).
func (l *leg) setPeer(res *sip.Response) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if to := res.To(); to != nil {
		l.remoteTag, _ = to.Params.Get("tag")
	}
	if c := res.Contact(); c != nil {
		l.target = *c.Address.Clone()
	}
	rr := routeValues(res.GetHeaders("Record-Route"))
	for i, j := 0, len(rr)-1; i < j; i, j = i+1, j-1 {
		rr[i], rr[j] = rr[j], rr[i]
	}
	l.routes = rr
}

// refreshTarget applies a target refresh (re-INVITE, UPDATE, their 2xx):
// a new Contact replaces the remote target (RFC 3261 §12.2).
func (l *leg) refreshTarget(h *sip.ContactHeader) {
	if h == nil || h.Address.Host == "" {
		return
	}
	l.mu.Lock()
	l.target = *h.Address.Clone()
	l.mu.Unlock()
}

// via returns a fresh top Via for a request on this leg.
func (l *leg) via() *sip.ViaHeader {
	v := &sip.ViaHeader{
		ProtocolName:    "SIP",
		ProtocolVersion: "2.0",
		Transport:       l.transport,
		Host:            l.sentBy.host,
		Port:            l.sentBy.port,
		Params:          sip.NewParams(),
	}
	v.Params.Add("branch", sip.GenerateBranchN(16))
	v.Params.Add("rport", "")
	return v
}

// route points req at the peer: explicit destination, transport and socket.
func (l *leg) route(req *sip.Request) {
	req.SetTransport(l.transport)
	if l.dest != "" {
		req.SetDestination(l.dest)
	}
	if l.laddr.IP != nil && l.transport == "UDP" {
		req.Laddr = l.laddr
	}
}

// request builds a request inside the dialog (RFC 3261 §12.2.1.1). cseq 0
// takes the next one.
func (l *leg) request(method sip.RequestMethod, cseq uint32) *sip.Request {
	if cseq == 0 {
		cseq = l.nextCSeq()
	}
	l.mu.Lock()
	target := *l.target.Clone()
	routes := append([]string(nil), l.routes...)
	remoteTag := l.remoteTag
	l.mu.Unlock()

	req := sip.NewRequest(method, target)
	req.AppendHeader(l.via())
	maxFwd := sip.MaxForwardsHeader(70)
	req.AppendHeader(&maxFwd)
	for _, r := range routes {
		req.AppendHeader(sip.NewHeader("Route", r))
	}
	from := &sip.FromHeader{DisplayName: l.local.name, Address: *l.local.uri.Clone(), Params: sip.NewParams()}
	from.Params.Add("tag", l.localTag)
	req.AppendHeader(from)
	to := &sip.ToHeader{DisplayName: l.remote.name, Address: *l.remote.uri.Clone(), Params: sip.NewParams()}
	if remoteTag != "" {
		to.Params.Add("tag", remoteTag)
	}
	req.AppendHeader(to)
	callID := sip.CallIDHeader(l.callID)
	req.AppendHeader(&callID)
	req.AppendHeader(&sip.CSeqHeader{SeqNo: cseq, MethodName: method})
	if method != sip.BYE && method != sip.CANCEL && method != sip.ACK {
		req.AppendHeader(l.contact.Clone())
	}
	if ua := l.c.st.s.UserAgent; ua != "" {
		req.AppendHeader(sip.NewHeader("User-Agent", ua))
	}
	l.route(req)
	return req
}

// send starts a client transaction for a complete request.
func (l *leg) send(ctx context.Context, req *sip.Request) (sip.ClientTransaction, error) {
	if req.Body() == nil {
		req.SetBody(nil)
	}
	return l.client.TransactionRequest(ctx, req, prebuilt)
}

// write sends a request without a transaction (ACK).
func (l *leg) write(req *sip.Request) error {
	if req.Body() == nil {
		req.SetBody(nil)
	}
	return l.client.WriteRequest(req, prebuilt)
}

// respond builds a response to a request the peer sent in (or to create)
// this dialog: our To tag, our Contact on 1xx/2xx to an INVITE.
func (l *leg) response(req *sip.Request, code int, reason string, body []byte) *sip.Response {
	res := sip.NewResponseFromRequest(req, code, reason, body)
	if code != 100 {
		if to := res.To(); to != nil {
			to.Params.Add("tag", l.localTag)
		}
	}
	if req.IsInvite() && code > 100 && code < 300 || req.Method == sip.UPDATE && code < 300 {
		res.AppendHeader(l.contact.Clone())
	}
	if ua := l.c.st.s.UserAgent; ua != "" {
		res.AppendHeader(sip.NewHeader("Server", ua))
	}
	return res
}

// expectAck arms delivery of the ACK for our 2xx to the peer's INVITE with
// CSeq n.
func (l *leg) expectAck(n uint32) chan *sip.Request {
	ch := make(chan *sip.Request, 1)
	l.mu.Lock()
	if l.acks == nil {
		l.acks = make(map[uint32]chan *sip.Request)
	}
	l.acks[n] = ch
	l.mu.Unlock()
	return ch
}

func (l *leg) dropAck(n uint32) {
	l.mu.Lock()
	delete(l.acks, n)
	l.mu.Unlock()
}

// deliverAck hands an ACK to whoever waits for it; retransmitted ACKs find
// nobody and are dropped.
func (l *leg) deliverAck(ack *sip.Request) bool {
	n := ack.CSeq().SeqNo
	l.mu.Lock()
	ch := l.acks[n]
	delete(l.acks, n)
	l.mu.Unlock()
	if ch == nil {
		return false
	}
	ch <- ack
	return true
}

// ackFor builds the ACK for a 2xx to our INVITE with CSeq n (RFC 3261
// §13.2.2.4): a new transaction-less request in the dialog.
func (l *leg) ackFor(n uint32, body []byte, contentType string) *sip.Request {
	ack := l.request(sip.ACK, n)
	if len(body) > 0 {
		ack.AppendHeader(sip.NewHeader("Content-Type", contentType))
	}
	ack.SetBody(body)
	return ack
}

// status describes the leg for Calls.
func (l *leg) status() LegStatus {
	st := LegStatus{CallID: l.callID, Transport: strings.ToLower(l.transport)}
	l.mu.Lock()
	st.Contact = l.target.String()
	l.mu.Unlock()
	if l.dest != "" {
		st.Remote = l.dest
	}
	return st
}

// routeValues splits Record-Route headers into single route values, in
// order; one header line may carry several, comma-separated.
func routeValues(hs []sip.Header) []string {
	var out []string
	for _, h := range hs {
		out = append(out, splitList(h.Value())...)
	}
	return out
}

// splitList splits a header value at commas outside <> and quotes.
func splitList(v string) []string {
	var out []string
	depth, quoted, start := 0, false, 0
	for i := 0; i < len(v); i++ {
		switch c := v[i]; {
		case c == '"' && (i == 0 || v[i-1] != '\\'):
			quoted = !quoted
		case quoted:
		case c == '<':
			depth++
		case c == '>':
			depth--
		case c == ',' && depth == 0:
			if s := strings.TrimSpace(v[start:i]); s != "" {
				out = append(out, s)
			}
			start = i + 1
		}
	}
	if s := strings.TrimSpace(v[start:]); s != "" {
		out = append(out, s)
	}
	return out
}

// sipAddr is the sipgo form of a socket address, the key sipgo files its
// listening UDP sockets under.
func sipAddr(ap netip.AddrPort) sip.Addr {
	if !ap.IsValid() {
		return sip.Addr{}
	}
	return sip.Addr{IP: net.IP(ap.Addr().AsSlice()), Port: int(ap.Port()), Hostname: ap.Addr().String()}
}

// sourceOf is where a request came from.
func sourceOf(req *sip.Request) netip.AddrPort {
	ap, err := netip.ParseAddrPort(req.Source())
	if err != nil {
		return netip.AddrPort{}
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

func tagOf(p sip.HeaderParams) string {
	t, _ := p.Get("tag")
	return t
}

// newInvite builds the initial INVITE of this leg (RFC 3261 §8.1.1) toward
// target, carrying the headers worth passing on from the other leg's request
// and the (already rewritten) offer, which may be empty for a delayed offer.
func (l *leg) newInvite(target sip.Uri, cseq uint32, userAgent string, other *sip.Request, offer []byte) *sip.Request {
	req := sip.NewRequest(sip.INVITE, target)
	req.AppendHeader(l.via())
	maxFwd := sip.MaxForwardsHeader(70)
	req.AppendHeader(&maxFwd)
	from := &sip.FromHeader{DisplayName: l.local.name, Address: l.local.uri, Params: sip.NewParams()}
	from.Params.Add("tag", l.localTag)
	req.AppendHeader(from)
	req.AppendHeader(&sip.ToHeader{Address: l.remote.uri, Params: sip.NewParams()})
	callID := sip.CallIDHeader(l.callID)
	req.AppendHeader(&callID)
	req.AppendHeader(&sip.CSeqHeader{SeqNo: cseq, MethodName: sip.INVITE})
	req.AppendHeader(l.contact.Clone())
	req.AppendHeader(sip.NewHeader("Allow", allowed))
	if userAgent != "" {
		req.AppendHeader(sip.NewHeader("User-Agent", userAgent))
	}
	copyHeaders(req, other)
	if len(offer) > 0 {
		req.AppendHeader(sdpHeader())
	}
	req.SetBody(offer)
	l.route(req)
	return req
}

// uasLeg is the dialog a caller's INVITE creates, with us as UAS.
func (b *B2BUA) uasLeg(c *call, req *sip.Request, side media.Side) *leg {
	from, to := req.From(), req.To()
	tp := strings.ToUpper(req.Transport())
	l := &leg{
		c:         c,
		side:      side,
		callID:    string(*req.CallID()),
		localTag:  newTag(),
		local:     nameAddr{name: to.DisplayName, uri: *to.Address.Clone()},
		remote:    nameAddr{name: from.DisplayName, uri: *from.Address.Clone()},
		client:    b.sip.Client(),
		transport: tp,
		remoteTag: tagOf(from.Params),
		target:    *from.Address.Clone(),
		routes:    routeValues(req.GetHeaders("Record-Route")),
		cseq:      initialCSeq(),
		phone:     side == media.A,
	}
	l.remoteCSeq = req.CSeq().SeqNo
	if ct := req.Contact(); ct != nil && ct.Address.Host != "" {
		l.target = *ct.Address.Clone()
	}
	sock := b.sip.Addr(strings.ToLower(tp))
	if tp == "UDP" {
		l.laddr = sipAddr(sock)
	}
	if side == media.A {
		// A phone may sit behind NAT: its Contact is often a private
		// address. Everything goes back where its packets came from.
		l.dest = req.Source()
		l.sentBy = c.st.towardPhones(sock)
		l.contact = contactHeader("edgewise", l.sentBy, tp)
	} else {
		l.sentBy = advertise(c.st.public, sock)
		l.contact = contactHeader(req.Recipient.User, l.sentBy, tp)
	}
	return l
}

// towardPhones is the address advertised to phones: LocalAddress, else the
// socket's address, else (a wildcard socket) the public address.
func (st *state) towardPhones(sock netip.AddrPort) hostPort {
	hp := advertise(st.local, sock)
	if hp.host == "" {
		hp.host = st.public.host
	}
	return hp
}

// advertise fills an advertised address's gaps from the socket.
func advertise(hp hostPort, sock netip.AddrPort) hostPort {
	if hp.host == "" && sock.IsValid() && !sock.Addr().IsUnspecified() {
		hp.host = sock.Addr().String()
	}
	if hp.port == 0 && sock.IsValid() {
		hp.port = int(sock.Port())
	}
	return hp
}

func contactHeader(user string, hp hostPort, transport string) sip.ContactHeader {
	u := sip.Uri{Scheme: "sip", User: user, Host: hp.host, Port: hp.port}
	if tp := strings.ToLower(transport); tp != "udp" && tp != "" {
		u.UriParams = sip.NewParams()
		u.UriParams.Add("transport", tp)
	}
	return sip.ContactHeader{Address: u}
}
