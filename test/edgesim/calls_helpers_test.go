package edgesim

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/pion/rtp"
)

// Call tests play the gateway (a UAC that calls through edgesim) and the
// phones edgesim calls (UAS) with plain sipgo dialogs, an implementation
// independent of edgesim's own.

// sipPeer is a sipgo UA listening on one loopback IP (UDP and TCP on one
// port), with a client whose requests leave from that address. Handlers
// are registered before serve starts the sockets, so the race detector
// sees them written before they are read.
type sipPeer struct {
	ip, addr string
	port     int
	ua       *sipgo.UserAgent
	srv      *sipgo.Server
	udp      *sipgo.Client // sends from the listening UDP socket
	tcp      *sipgo.Client // sends over new TCP connections from ip
	pc       net.PacketConn
	ln       net.Listener
}

func newSIPPeer(t *testing.T, ip string) *sipPeer {
	t.Helper()
	pc, ln, err := bindPair(netip.MustParseAddr(ip), 0, true, true)
	if err != nil {
		t.Fatal(err)
	}
	port := pc.LocalAddr().(*net.UDPAddr).Port
	ua, err := sipgo.NewUA(sipgo.WithUserAgent("peer"), sipgo.WithUserAgentHostname(ip))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := sipgo.NewServer(ua)
	if err != nil {
		t.Fatal(err)
	}
	udp, err := sipgo.NewClient(ua, sipgo.WithClientHostname(ip), sipgo.WithClientConnectionAddr(fmt.Sprintf("%s:%d", ip, port)))
	if err != nil {
		t.Fatal(err)
	}
	tcp, err := sipgo.NewClient(ua, sipgo.WithClientHostname(ip), sipgo.WithClientConnectionAddr(ip+":0"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ua.Close() })
	return &sipPeer{ip: ip, addr: fmt.Sprintf("%s:%d", ip, port), port: port, ua: ua, srv: srv, udp: udp, tcp: tcp, pc: pc, ln: ln}
}

// serve starts the sockets; the test's cleanup stops them.
func (p *sipPeer) serve(t *testing.T) {
	var wg sync.WaitGroup
	wg.Go(func() { _ = p.srv.ServeUDP(p.pc) })
	wg.Go(func() { _ = p.srv.ServeTCP(p.ln) })
	waitUDPPooled(p.ua)
	t.Cleanup(func() {
		_ = p.ua.Close()
		_ = p.pc.Close()
		_ = p.ln.Close()
		wg.Wait()
	})
}

func (p *sipPeer) client(transport string) *sipgo.Client {
	if strings.EqualFold(transport, "tcp") {
		return p.tcp
	}
	return p.udp
}

func (p *sipPeer) contact(user, transport string) sip.ContactHeader {
	u := sip.Uri{Scheme: "sip", User: user, Host: p.ip, Port: p.port}
	if strings.EqualFold(transport, "tcp") {
		u.UriParams = sip.HeaderParams{{K: "transport", V: "tcp"}}
	}
	return sip.ContactHeader{Address: u}
}

// testGateway is the edgewise stand-in that calls through edgesim.
type testGateway struct {
	*sipPeer
	transport string
	dc        *sipgo.DialogClientCache
	byes      chan *sip.Request
}

func newTestGateway(t *testing.T, ip, transport string) *testGateway {
	t.Helper()
	p := newSIPPeer(t, ip)
	g := &testGateway{sipPeer: p, transport: transport, byes: make(chan *sip.Request, 10)}
	g.dc = sipgo.NewDialogClientCache(p.client(transport), p.contact("gw", transport))
	p.srv.OnBye(func(req *sip.Request, tx sip.ServerTransaction) {
		if err := g.dc.ReadBye(req, tx); err != nil {
			_ = tx.Respond(sip.NewResponseFromRequest(req, sip.StatusCallTransactionDoesNotExists, "No Dialog", nil))
			return
		}
		g.byes <- req
	})
	p.serve(t)
	return g
}

// outCall is one call the test gateway placed through edgesim.
type outCall struct {
	sess      *sipgo.DialogClientSession
	responses []*sip.Response
	answer    sdpInfo // parsed SDP of the 200
	rtp       *rtpPeer
}

// inviteOpts shape the test gateway's INVITE.
type inviteOpts struct {
	user, pass string // digest credentials
	from       string // From user; user when empty
	body       []byte // SDP offer; testOffer with offerDir when nil
	dialled    string // Request-URI user
	edge       string // edge in the Request-URI host
	// ipURI puts addr in the Request-URI instead of the edge FQDN: sipgo
	// sends its CANCEL to the Request-URI host, and the FQDN has no DNS.
	ipURI      bool
	addr       string // edgesim host:port to send to
	offerDir   string // a= direction of the offer; sendrecv when empty
	onResponse func(*sip.Response)
}

// invite sends an INVITE through edgesim, answers the 407 and waits for
// the final answer; it returns the call and WaitAnswer's error. Once the
// INVITE is out it only fails the test after a 2xx (ACK, SDP), so it may
// run on another goroutine for a call that is not answered.
func (g *testGateway) invite(ctx context.Context, t *testing.T, o inviteOpts) (*outCall, error) {
	t.Helper()
	if o.edge == "" {
		o.edge = "ashburn"
	}
	rp := newRTPPeer(t, g.ip)
	oc := &outCall{rtp: rp}
	ruri := sip.Uri{Scheme: "sip", User: o.dialled, Host: testDomain + ".sip." + o.edge + ".twilio.com"}
	if o.ipURI {
		host, port, _ := sip.ParseAddr(o.addr)
		ruri.Host, ruri.Port = host, port
	}
	req := sip.NewRequest(sip.INVITE, ruri)
	req.SetDestination(o.addr)
	req.SetTransport(strings.ToUpper(g.transport))
	if o.from == "" {
		o.from = o.user
	}
	if o.body == nil {
		o.body = testOffer(g.ip, rp.port(), o.offerDir)
	}
	from := &sip.FromHeader{Address: sip.Uri{Scheme: "sip", User: o.from, Host: testDomain + ".sip." + o.edge + ".twilio.com"}}
	from.Params.Add("tag", sip.GenerateTagN(8))
	req.AppendHeader(from)
	ct := sip.ContentTypeHeader("application/sdp")
	req.AppendHeader(&ct)
	req.SetBody(o.body)
	sess, err := g.dc.WriteInvite(ctx, req)
	if err != nil {
		return oc, fmt.Errorf("send INVITE: %w", err)
	}
	oc.sess = sess
	err = sess.WaitAnswer(ctx, sipgo.AnswerOptions{
		Username: o.user, Password: o.pass,
		OnResponse: func(res *sip.Response) error {
			oc.responses = append(oc.responses, res)
			if o.onResponse != nil {
				o.onResponse(res)
			}
			return nil
		},
	})
	if err != nil {
		return oc, err
	}
	if err := sess.Ack(ctx); err != nil {
		t.Fatalf("ACK: %v", err)
	}
	info, err := parseSDP(sess.InviteResponse.Body())
	if err != nil {
		t.Fatalf("answer SDP: %v\n%s", err, sess.InviteResponse.Body())
	}
	oc.answer = info
	return oc, nil
}

// reinvite sends an in-dialog INVITE offering dir, ACKs its 200 and
// returns the answer.
func (oc *outCall) reinvite(ctx context.Context, t *testing.T, ip, dir string) sdpInfo {
	t.Helper()
	req := sip.NewRequest(sip.INVITE, oc.sess.InviteResponse.Contact().Address)
	ct := sip.ContentTypeHeader("application/sdp")
	req.AppendHeader(&ct)
	req.SetBody(testOffer(ip, oc.rtp.port(), dir))
	res, err := oc.sess.Do(ctx, req)
	if err != nil {
		t.Fatalf("re-INVITE %s: %v", dir, err)
	}
	expectStatus(t, res, 200)
	ack := sip.NewRequest(sip.ACK, oc.sess.InviteResponse.Contact().Address)
	if err := oc.sess.WriteAck(ctx, ack); err != nil {
		t.Fatalf("ACK re-INVITE: %v", err)
	}
	info, err := parseSDP(res.Body())
	if err != nil {
		t.Fatalf("re-INVITE answer SDP: %v", err)
	}
	return info
}

func (oc *outCall) codes() []int {
	out := make([]int, 0, len(oc.responses))
	for _, r := range oc.responses {
		out = append(out, r.StatusCode)
	}
	return out
}

// testOffer is the gateway's (or a phone's) SDP: PCMA first, so the
// answer's choice is visible, and telephone-event on 101.
func testOffer(ip string, port int, dir string) []byte {
	if dir == "" {
		dir = dirSendRecv
	}
	return []byte(strings.ReplaceAll(fmt.Sprintf(`v=0
o=test 1 1 IN IP4 %[1]s
s=test
c=IN IP4 %[1]s
t=0 0
m=audio %[2]d RTP/AVP 8 0 101
a=rtpmap:8 PCMA/8000
a=rtpmap:0 PCMU/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-15
a=%[3]s
`, ip, port, dir), "\n", "\r\n"))
}

// rtpPeer is the RTP socket of a test gateway or phone.
type rtpPeer struct {
	conn *net.UDPConn
	seq  uint16
}

func newRTPPeer(t *testing.T, ip string) *rtpPeer {
	t.Helper()
	conn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(ip), 0)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return &rtpPeer{conn: conn}
}

func (p *rtpPeer) port() int { return p.conn.LocalAddr().(*net.UDPAddr).Port }

func (p *rtpPeer) packet(t *testing.T) []byte {
	t.Helper()
	p.seq++
	pkt := rtp.Packet{
		Header:  rtp.Header{Version: 2, PayloadType: 8, SequenceNumber: p.seq, Timestamp: uint32(p.seq) * 160, SSRC: 0x1234abcd},
		Payload: make([]byte, 160),
	}
	b, err := pkt.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// send sends n RTP packets to dst.
func (p *rtpPeer) send(t *testing.T, dst netip.AddrPort, n int) {
	t.Helper()
	for range n {
		if _, err := p.conn.WriteToUDPAddrPort(p.packet(t), dst); err != nil {
			t.Fatal(err)
		}
	}
}

// echo sends n packets to dst one at a time and checks that each comes
// back unchanged from dst.
func (p *rtpPeer) echo(t *testing.T, dst netip.AddrPort, n int) {
	t.Helper()
	buf := make([]byte, 2048)
	for range n {
		pkt := p.packet(t)
		if _, err := p.conn.WriteToUDPAddrPort(pkt, dst); err != nil {
			t.Fatal(err)
		}
		_ = p.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		got, from, err := p.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			t.Fatalf("echo of packet %d: %v", p.seq, err)
		}
		if from != dst || string(buf[:got]) != string(pkt) {
			t.Fatalf("echo of packet %d from %s differs (sent to %s)", p.seq, from, dst)
		}
	}
}

// testPhone is a registered device edgesim calls: a sipgo UAS.
type testPhone struct {
	*sipPeer
	name    string
	ds      *sipgo.DialogServerCache
	invites chan *sip.Request
	// answer makes the phone answer (after 180) once it is closed.
	answer     chan struct{}
	rejectWith int // non-zero: answer the INVITE with this code
	cancelled  chan struct{}
	answered   chan *sipgo.DialogServerSession // sessions confirmed by ACK
	byes       chan *sip.Request
	rtp        *rtpPeer
}

// newTestPhone starts a phone; rejectWith, when non-zero, is its answer to
// every INVITE, else it rings until ph.answer is closed.
func newTestPhone(t *testing.T, name, ip string, rejectWith int) *testPhone {
	t.Helper()
	p := newSIPPeer(t, ip)
	ph := &testPhone{
		sipPeer: p, name: name,
		invites:    make(chan *sip.Request, 10),
		answer:     make(chan struct{}),
		rejectWith: rejectWith,
		cancelled:  make(chan struct{}, 10),
		answered:   make(chan *sipgo.DialogServerSession, 10),
		byes:       make(chan *sip.Request, 10),
		rtp:        newRTPPeer(t, ip),
	}
	ph.ds = sipgo.NewDialogServerCache(p.udp, p.contact(name, "udp"))
	p.srv.OnInvite(ph.onInvite)
	p.srv.OnAck(func(req *sip.Request, tx sip.ServerTransaction) { _ = ph.ds.ReadAck(req, tx) })
	p.srv.OnBye(func(req *sip.Request, tx sip.ServerTransaction) {
		if err := ph.ds.ReadBye(req, tx); err != nil {
			_ = tx.Respond(sip.NewResponseFromRequest(req, sip.StatusCallTransactionDoesNotExists, "No Dialog", nil))
			return
		}
		ph.byes <- req
	})
	p.serve(t)
	return ph
}

func (ph *testPhone) onInvite(req *sip.Request, tx sip.ServerTransaction) {
	sess, err := ph.ds.ReadInvite(req, tx)
	if err != nil {
		return
	}
	ph.invites <- req
	if ph.rejectWith != 0 {
		_ = sess.Respond(ph.rejectWith, reasonPhrase(ph.rejectWith), nil)
		return
	}
	if err := sess.Respond(sip.StatusRinging, "Ringing", nil); err != nil {
		return
	}
	select {
	case <-ph.answer:
		if err := sess.RespondSDP(testOffer(ph.ip, ph.rtp.port(), "")); err == nil {
			ph.answered <- sess
		}
	case <-sess.Context().Done():
		if errors.Is(context.Cause(sess.Context()), sip.ErrTransactionCanceled) {
			ph.cancelled <- struct{}{}
		}
	}
}

// contactURI is the phone's registered contact for user over udp or tcp.
func (ph *testPhone) contactURI(user string, transport ...string) string {
	tr := "udp"
	if len(transport) > 0 {
		tr = transport[0]
	}
	c := ph.contact(user, tr)
	return c.Address.String()
}

// onlyServerSession is the phone's answered call.
func onlyServerSession(t *testing.T, ph *testPhone) *sipgo.DialogServerSession {
	t.Helper()
	return recv(t, ph.answered, "phone "+ph.name+" answered and ACKed")
}

// registerPhone registers ph's contact for user through the edge IP ip.
func registerPhone(t *testing.T, sim *Sim, c *sipClient, ph *testPhone, user, pass, edge, ip string) {
	t.Helper()
	addr, err := sim.SIPAddr(ip)
	if err != nil {
		t.Fatal(err)
	}
	expectStatus(t, c.register(t, reg{edge: edge, addr: addr, user: user, pass: pass, contact: ph.contactURI(user), expires: 600}), 200)
}

func waitCall(t *testing.T, sim *Sim, id CallID, what string, cond func(CallStatus) bool) CallStatus {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := sim.WaitCall(ctx, id, cond)
	if err != nil {
		t.Fatalf("waiting for %s: %v\n%+v", what, err, st)
	}
	return st
}

func inState(s CallState) func(CallStatus) bool {
	return func(st CallStatus) bool { return st.State == s }
}

// onlyCall returns the simulator's single call.
func onlyCall(t *testing.T, sim *Sim) CallStatus {
	t.Helper()
	calls := sim.Calls()
	if len(calls) != 1 {
		t.Fatalf("calls = %+v, want one", calls)
	}
	return calls[0]
}

func recv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
		var zero T
		return zero
	}
}
