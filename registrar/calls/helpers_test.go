package calls

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	clientdigest "github.com/icholy/digest"
	"github.com/pion/rtp"
	"go.uber.org/goleak"

	"github.com/edgewise-sip/edgewise/media"
	"github.com/edgewise-sip/edgewise/media/sdp"
	"github.com/edgewise-sip/edgewise/media/webrtc"
	"github.com/edgewise-sip/edgewise/registrar/directory"
	"github.com/edgewise-sip/edgewise/registrar/location"
	"github.com/edgewise-sip/edgewise/registrar/lockout"
	"github.com/edgewise-sip/edgewise/registrar/sip/frontend"
	"github.com/edgewise-sip/edgewise/registrar/twilio/edge"
	"github.com/edgewise-sip/edgewise/test/kit"
)

// Test addresses: each test takes its own loopback /24 (kit.NewNet), so
// tests (and packages) running at once never share a socket. .1 is
// edgewise, .2 plays Twilio, .3 and .4 are phones, .9 a stranger.

const (
	alicePass  = "alice-secret-1"
	twilioUser = "alice_tw"
	twilioPass = "Tw1lioPassword"
	domain     = "example"
)

// fakeEdges is the edge monitor: a fixed plan, reports recorded; down
// makes every edge unusable (survival mode).
type fakeEdges struct {
	mu      sync.Mutex
	plan    []edge.Target
	reports []report
	down    atomic.Bool
}

func (e *fakeEdges) Active() (string, bool) { return "ashburn", !e.down.Load() }

type report struct {
	t   edge.Target
	res edge.Result
	err error
}

func (e *fakeEdges) Plan() []edge.Target {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]edge.Target(nil), e.plan...)
}

func (e *fakeEdges) Report(t edge.Target, res edge.Result, err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.reports = append(e.reports, report{t, res, err})
}

func (e *fakeEdges) Reports() []report {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]report(nil), e.reports...)
}

// fakeBindings is the location table.
type fakeBindings struct {
	mu sync.Mutex
	m  map[string][]location.Binding
}

func (f *fakeBindings) Routable(user string) []location.Binding {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]location.Binding(nil), f.m[user]...)
}

func (f *fakeBindings) set(user string, bs ...location.Binding) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.m == nil {
		f.m = map[string][]location.Binding{}
	}
	f.m[user] = bs
}

// env is edgewise's SIP side (SIP front end + B2BUA + media relay) on
// 127.203.<n>.1, and the addresses of its peers.
type env struct {
	t         *testing.T
	n         kit.Net
	ip        netip.Addr
	srv       *frontend.Server
	b         *B2BUA
	relay     *media.Relay
	edges     *fakeEdges
	binds     *fakeBindings
	lockout   *fakeLockout
	hub       *webrtc.Hub
	stopB2BUA func()
	// closers close the test's peers once edgewise has stopped, so nothing
	// is in flight toward a peer when it closes (sipgo may open a new
	// socket for a request that races its own shutdown).
	closers []func()
}

func (e *env) atEnd(f func()) { e.closers = append(e.closers, f) }

// envConfig is what a test may change before edgewise starts.
type envConfig struct {
	settings     Settings
	mediaTimeout time.Duration
	// n, edges and baseline let a test build parts (edgesim, an edge
	// monitor) before edgewise: its address block, its edge monitor, and
	// the goroutine count before any of it.
	n        kit.Net
	edges    Edges
	baseline goleak.Option
	// browsers gives edgewise WebRTC media (a webrtc.Hub on its address),
	// with hub adjusting its settings when set.
	browsers bool
	hub      func(*webrtc.Settings)
	// tune changes the default settings; contacts is Options.Contacts.
	tune     func(*Settings)
	contacts Contacts
	claims   CallClaims
	// mediaPublic is the relay's public address (leg B's SDP); zero means
	// edgewise's own, like the local one.
	mediaPublic netip.Addr
}

type envOption func(*envConfig)

func TestMain(m *testing.M) {
	if os.Getenv(kit.LogEnv) == "" {
		// The test peers' sipgo layers log through the default logger.
		sip.SetDefaultLogger(slog.New(slog.DiscardHandler))
	}
	os.Exit(m.Run())
}

func newEnv(t *testing.T, opts ...envOption) *env {
	t.Helper()
	cfg := envConfig{baseline: goleak.IgnoreCurrent(), mediaTimeout: 10 * time.Second}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.n == (kit.Net{}) {
		cfg.n = kit.NewNet(t)
	}
	baseline, n := cfg.baseline, cfg.n
	strays := strayReaders() // left over from an earlier test's shutdown
	ip := n.IP(1)
	log := kit.Logger(t)
	srv, err := frontend.New(frontend.Settings{
		Listen: []frontend.Listen{{Transport: "udp", Host: ip.String()}, {Transport: "tcp", Host: ip.String()}},
	}, log.With("component", "sip"))
	if err != nil {
		t.Fatal(err)
	}
	s := Settings{
		Domain:          domain,
		PublicAddress:   ip.String(),
		Timeout:         400 * time.Millisecond,
		SignallingCIDRs: []netip.Prefix{netip.PrefixFrom(n.IP(2), 32)},
		Realm:           "edgewise",
	}
	if cfg.settings.Domain != "" {
		s = cfg.settings
		if s.PublicAddress == "" {
			s.PublicAddress = ip.String()
		}
	}
	if cfg.tune != nil {
		cfg.tune(&s)
	}
	public := ip
	if cfg.mediaPublic.IsValid() {
		public = cfg.mediaPublic
	}
	relay, err := media.NewRelay(media.Settings{
		Ports: media.PortRange{Min: 40000, Max: 40599}, LocalIP: ip, PublicIP: public, BindIP: ip,
		Timeout: cfg.mediaTimeout,
	}, log.With("component", "media"))
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, n: n, ip: ip, srv: srv, relay: relay, edges: &fakeEdges{}, binds: &fakeBindings{}, lockout: &fakeLockout{}}
	phones := directory.PhoneMap{"alice": {User: "alice", Password: alicePass}, "bob": {User: "bob", Password: "bob-secret-1"}}
	tw := directory.TwilioMap{"alice": {User: twilioUser, Password: twilioPass}}
	var edges Edges = e.edges
	if cfg.edges != nil {
		edges = cfg.edges
	}
	bopts := Options{SIP: srv, Bindings: e.binds, Edges: edges, Relay: relay, Lockout: e.lockout, Contacts: cfg.contacts, Claims: cfg.claims, Logger: log.With("component", "b2bua")}
	if cfg.browsers {
		hs := webrtc.Settings{Listen: netip.AddrPortFrom(ip, 0)}
		if cfg.hub != nil {
			cfg.hub(&hs)
		}
		hub, err := webrtc.NewHub(hs, log.With("component", "webrtc"))
		if err != nil {
			t.Fatal(err)
		}
		e.hub = hub
		e.closers = append(e.closers, func() { hub.Close() })
		bopts.Browsers = hub
	}
	b, err := New(s, phones, tw, bopts)
	if err != nil {
		t.Fatal(err)
	}
	e.b = b
	b.Register(srv)

	// The B2BUA stops first: it hangs up calls through the server and the
	// relay, which stop after it (as cmd/edgewise should order them).
	ctx, cancel := context.WithCancel(context.Background())
	bctx, bcancel := context.WithCancel(ctx)
	var wg, bwg sync.WaitGroup
	wg.Go(func() {
		if err := srv.Run(ctx); err != nil {
			t.Errorf("frontend: %v", err)
		}
	})
	wg.Go(func() {
		if err := relay.Run(ctx); err != nil {
			t.Errorf("relay: %v", err)
		}
	})
	bwg.Go(func() {
		if err := b.Run(bctx); err != nil {
			t.Errorf("calls: %v", err)
		}
	})
	e.stopB2BUA = func() {
		bcancel()
		bwg.Wait()
	}
	select {
	case <-srv.Ready():
	case <-time.After(5 * time.Second):
		t.Fatal("SIP front end not ready")
	}
	t.Cleanup(func() {
		// Every test ends its calls; nothing may be left over.
		kit.WaitFor(t, 5*time.Second, "calls to end", func() bool { return len(b.Calls()) == 0 })
		kit.WaitFor(t, 5*time.Second, "the media pool to be whole", func() bool { return relay.Pool().InUse == 0 })
		if n := strayReaders() - strays; n > 0 {
			t.Errorf("sipgo opened %d UDP sockets besides the listeners while calls ran", n)
		}
		e.stopB2BUA()
		cancel()
		wg.Wait()
		for i := len(e.closers) - 1; i >= 0; i-- {
			e.closers[i]()
		}
		checkGoroutines(t, baseline)
	})
	return e
}

// checkGoroutines waits for the goroutines started since baseline to end.
//
// One kind is tolerated: a sipgo UDP reader on a socket sipgo opened for a
// request that was still being handled when its UserAgent closed (its
// transaction and connection tables are already empty then, so it opens a
// socket to answer). That is sipgo's shutdown race, not a leak of calls;
// strayReaders checks before shutdown that the B2BUA never makes sipgo
// open such sockets while it runs.
func checkGoroutines(t *testing.T, baseline goleak.Option) {
	t.Helper()
	goleak.VerifyNone(t, baseline, goleak.IgnoreAnyFunction("github.com/emiago/sipgo/sip.(*TransportUDP).readUDPConnection"))
}

// strayReaders counts sipgo readers of sockets opened on the fly.
func strayReaders() int {
	n := 0
	for _, g := range goroutineStacks() {
		if strings.Contains(g, "sip.(*TransportUDP).readUDPConnection") {
			n++
		}
	}
	return n
}

func goroutineStacks() []string {
	buf := make([]byte, 4<<20)
	n := runtime.Stack(buf, true)
	return strings.Split(strings.TrimSpace(string(buf[:n])), "\n\n")
}

func (e *env) udp() netip.AddrPort { return e.srv.Addr("udp") }
func (e *env) tcp() netip.AddrPort { return e.srv.Addr("tcp") }

// twilioTarget is a plan entry for a peer playing a Twilio edge IP.
func twilioTarget(edgeName string, ap netip.AddrPort) edge.Target {
	return edge.Target{Edge: edgeName, FQDN: domain + ".sip." + edgeName + ".twilio.com", IP: ap.Addr(), Port: int(ap.Port()), Transport: "udp"}
}

// bindingFor registers p as a phone of user.
func (e *env) bindingFor(user string, p *peer) location.Binding {
	return location.Binding{
		User:      user,
		Contact:   fmt.Sprintf("sip:%s@%s", user, p.addr),
		Source:    p.addr,
		Local:     e.udp(),
		Transport: "udp",
		Expires:   time.Now().Add(time.Hour),
	}
}

// peer is a SIP endpoint for tests: a phone, or a Twilio edge, on its own
// UDP socket, answering requests with per-method handlers and recording
// every request it receives.
type peer struct {
	t    testing.TB
	name string
	addr netip.AddrPort
	ua   *sipgo.UserAgent
	srv  *sipgo.Server
	cl   *sipgo.Client
	conn net.PacketConn

	mu       sync.Mutex
	handlers map[sip.RequestMethod]func(*sip.Request, sip.ServerTransaction)
	got      []*sip.Request
	gotCh    chan struct{}
}

func newPeer(e *env, name string, host int) *peer {
	t := e.t
	t.Helper()
	ip := e.n.IP(host)
	conn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, 0)))
	if err != nil {
		t.Fatal(err)
	}
	addr := conn.LocalAddr().(*net.UDPAddr).AddrPort()
	discard := slog.New(slog.DiscardHandler)
	ua, err := sipgo.NewUA(sipgo.WithUserAgent(name),
		sipgo.WithUserAgentTransportLayerOptions(sip.WithTransportLayerLogger(discard)),
		sipgo.WithUserAgentTransactionLayerOptions(sip.WithTransactionLayerLogger(discard)))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := sipgo.NewServer(ua, sipgo.WithServerLogger(discard))
	if err != nil {
		t.Fatal(err)
	}
	cl, err := sipgo.NewClient(ua, sipgo.WithClientLogger(discard), sipgo.WithClientHostname(ip.String()), sipgo.WithClientPort(int(addr.Port())))
	if err != nil {
		t.Fatal(err)
	}
	p := &peer{t: t, name: name, addr: addr, ua: ua, srv: srv, cl: cl, conn: conn,
		handlers: map[sip.RequestMethod]func(*sip.Request, sip.ServerTransaction){}, gotCh: make(chan struct{}, 1)}
	for _, m := range []sip.RequestMethod{sip.INVITE, sip.ACK, sip.BYE, sip.CANCEL, sip.UPDATE, sip.INFO, sip.OPTIONS} {
		srv.OnRequest(m, p.dispatch)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.ServeUDP(conn)
	}()
	kit.WaitFor(t, 2*time.Second, "the peer's socket in sipgo's pool", func() bool {
		c, _ := ua.TransportLayer().GetConnection("udp", addr.String())
		return c != nil
	})
	e.atEnd(func() {
		ua.Close()
		conn.Close()
		<-done
	})
	return p
}

func (p *peer) on(m sip.RequestMethod, h func(*sip.Request, sip.ServerTransaction)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.handlers[m] = h
}

func (p *peer) dispatch(req *sip.Request, tx sip.ServerTransaction) {
	p.mu.Lock()
	p.got = append(p.got, req)
	h := p.handlers[req.Method]
	p.mu.Unlock()
	select {
	case p.gotCh <- struct{}{}:
	default:
	}
	if h != nil {
		h(req, tx)
		return
	}
	switch req.Method {
	case sip.ACK:
	case sip.INVITE:
		tx.Respond(sip.NewResponseFromRequest(req, 603, "Decline", nil))
	default:
		tx.Respond(sip.NewResponseFromRequest(req, 200, "OK", nil))
	}
}

// requests returns what the peer received with method m.
func (p *peer) requests(m sip.RequestMethod) []*sip.Request {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []*sip.Request
	for _, r := range p.got {
		if r.Method == m {
			out = append(out, r)
		}
	}
	return out
}

// waitRequest waits until the peer received n requests with method m.
func (p *peer) waitRequest(m sip.RequestMethod, n int) *sip.Request {
	p.t.Helper()
	var last *sip.Request
	kit.WaitFor(p.t, 5*time.Second, fmt.Sprintf("%s to receive %d %s", p.name, n, m), func() bool {
		rs := p.requests(m)
		if len(rs) >= n {
			last = rs[n-1]
			return true
		}
		return false
	})
	return last
}

func (p *peer) laddr() sip.Addr {
	return sip.Addr{IP: net.IP(p.addr.Addr().AsSlice()), Port: int(p.addr.Port())}
}

func (p *peer) dialogUA(user string) *sipgo.DialogUA {
	return &sipgo.DialogUA{Client: p.cl, ContactHDR: sip.ContactHeader{
		Address: sip.Uri{Scheme: "sip", User: user, Host: p.addr.Addr().String(), Port: int(p.addr.Port())}}}
}

// newInvite builds an INVITE from the peer to dst.
func (p *peer) newInvite(ruri sip.Uri, fromUser string, dst netip.AddrPort, body []byte) *sip.Request {
	req := sip.NewRequest(sip.INVITE, ruri)
	from := &sip.FromHeader{DisplayName: "Test " + fromUser, Address: sip.Uri{Scheme: "sip", User: fromUser, Host: p.addr.Addr().String()}, Params: sip.NewParams()}
	from.Params.Add("tag", sip.GenerateTagN(10))
	req.AppendHeader(from)
	req.AppendHeader(&sip.ToHeader{Address: ruri, Params: sip.NewParams()})
	if body != nil {
		req.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
	}
	req.SetBody(body)
	req.SetDestination(dst.String())
	req.SetTransport("UDP")
	req.Laddr = p.laddr()
	return req
}

// rtpPeer is a media endpoint: it counts RTP received and can echo it back
// to where it came from, as edgesim's far end does.
type rtpPeer struct {
	conn  *net.UDPConn
	addr  netip.AddrPort
	echo  atomic.Bool
	got   atomic.Int64
	done  chan struct{}
	from  atomic.Pointer[netip.AddrPort]
	seq   uint16
	stamp uint32
}

func newRTP(e *env, host int, echo bool) *rtpPeer {
	t := e.t
	t.Helper()
	ip := e.n.IP(host)
	conn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, 0)))
	if err != nil {
		t.Fatal(err)
	}
	// A Twilio echo shared by many calls gets bursts: keep them all.
	conn.SetReadBuffer(4 << 20)
	r := &rtpPeer{conn: conn, addr: conn.LocalAddr().(*net.UDPAddr).AddrPort(), done: make(chan struct{})}
	r.echo.Store(echo)
	go func() {
		defer close(r.done)
		buf := make([]byte, 2048)
		for {
			n, from, err := conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			var pkt rtp.Packet
			if pkt.Unmarshal(buf[:n]) != nil {
				continue
			}
			r.got.Add(1)
			r.from.Store(&from)
			if r.echo.Load() {
				conn.WriteToUDPAddrPort(buf[:n], from)
			}
		}
	}()
	e.atEnd(func() {
		conn.Close()
		<-r.done
	})
	return r
}

// send sends n G.711 packets to dst.
func (r *rtpPeer) send(t testing.TB, dst netip.AddrPort, n int) {
	t.Helper()
	for range n {
		r.seq++
		r.stamp += 160
		pkt := rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 0, SequenceNumber: r.seq, Timestamp: r.stamp, SSRC: 0x1234}, Payload: make([]byte, 160)}
		b, err := pkt.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := r.conn.WriteToUDPAddrPort(b, dst); err != nil {
			t.Fatal(err)
		}
	}
}

// offer is a G.711 offer (or answer) for media at ap.
func offer(ap netip.AddrPort, direction string) []byte {
	ip := ap.Addr().String()
	return []byte("v=0\r\n" +
		"o=- 1 1 IN IP4 " + ip + "\r\n" +
		"s=-\r\n" +
		"c=IN IP4 " + ip + "\r\n" +
		"t=0 0\r\n" +
		fmt.Sprintf("m=audio %d RTP/AVP 0 101\r\n", ap.Port()) +
		"a=rtpmap:0 PCMU/8000\r\n" +
		"a=rtpmap:101 telephone-event/8000\r\n" +
		"a=fmtp:101 0-16\r\n" +
		"a=" + direction + "\r\n")
}

// mediaOf reads where a description wants media and its direction.
func mediaOf(t testing.TB, body []byte) (netip.AddrPort, sdp.Direction) {
	t.Helper()
	info, err := sdp.Parse(body)
	if err != nil {
		t.Fatalf("parse SDP: %v\n%s", err, body)
	}
	m, ok := info.Audio()
	if !ok {
		t.Fatalf("no audio in SDP:\n%s", body)
	}
	return m.RTP, m.Direction
}

// twilioChallenge is the fake edge's proxy challenge.
var twilioChallenge = &clientdigest.Challenge{Realm: "sip.twilio.com", Nonce: "c2lwLnR3aWxpby5jb20", Algorithm: "MD5", QOP: []string{"auth"}}

// twilioAuthorized checks an INVITE's Proxy-Authorization as Twilio would.
func twilioAuthorized(req *sip.Request) bool {
	h := req.GetHeader("Proxy-Authorization")
	if h == nil {
		return false
	}
	cred, err := clientdigest.ParseCredentials(h.Value())
	if err != nil || cred.Username != twilioUser {
		return false
	}
	want, err := clientdigest.Digest(twilioChallenge, clientdigest.Options{
		Method: "INVITE", URI: cred.URI, Username: twilioUser, Password: twilioPass, Cnonce: cred.Cnonce, Count: cred.Nc,
	})
	return err == nil && want.Response == cred.Response
}

// twilioEdge makes p behave like a Twilio edge answering INVITEs: 407
// first, then according to script, with an echoing media endpoint.
type twilioEdge struct {
	*peer
	media  *rtpPeer
	script atomic.Value // string: answer, busy, ring, silent
	tag    string
	// answered carries the server-side dialog of each answered call.
	answered chan *sip.Request
	acks     atomic.Int32
	cancels  atomic.Int32
}

func newTwilioEdge(e *env, host int, script string) *twilioEdge {
	p := newPeer(e, "twilio", host)
	tw := &twilioEdge{peer: p, media: newRTP(e, host, true), tag: "tw" + sip.GenerateTagN(8), answered: make(chan *sip.Request, 10)}
	tw.script.Store(script)
	p.on(sip.INVITE, tw.invite)
	p.on(sip.ACK, func(*sip.Request, sip.ServerTransaction) { tw.acks.Add(1) })
	return tw
}

func (tw *twilioEdge) invite(req *sip.Request, tx sip.ServerTransaction) {
	if tagOf(req.To().Params) != "" {
		// re-INVITE: accept, mirroring hold.
		_, dir := mediaOf(tw.t, req.Body())
		answerDir := "sendrecv"
		switch dir {
		case sdp.SendOnly:
			answerDir = "recvonly"
		case sdp.Inactive:
			answerDir = "inactive"
		}
		tx.Respond(tw.response(req, 200, "OK", offer(tw.media.addr, answerDir)))
		return
	}
	if !twilioAuthorized(req) {
		res := sip.NewResponseFromRequest(req, 407, "Proxy Authentication Required", nil)
		res.AppendHeader(sip.NewHeader("Proxy-Authenticate", twilioChallenge.String()))
		tx.Respond(res)
		return
	}
	switch tw.script.Load().(string) {
	case "silent":
		<-tx.Done()
	case "busy":
		tx.Respond(tw.response(req, 486, "Busy Here", nil))
	case "ring":
		cancelled := make(chan struct{})
		tx.OnCancel(func(*sip.Request) {
			tw.cancels.Add(1)
			close(cancelled)
		})
		tx.Respond(tw.response(req, 180, "Ringing", nil))
		select {
		case <-cancelled:
		case <-tx.Done():
		}
	default:
		tx.Respond(tw.response(req, 183, "Session Progress", offer(tw.media.addr, "sendrecv")))
		tx.Respond(tw.response(req, 200, "OK", offer(tw.media.addr, "sendrecv")))
		select {
		case tw.answered <- req:
		default: // nobody looks at this one
		}
	}
}

func (tw *twilioEdge) response(req *sip.Request, code int, reason string, body []byte) *sip.Response {
	res := sip.NewResponseFromRequest(req, code, reason, body)
	if code > 100 {
		res.To().Params.Add("tag", tw.tag)
	}
	if body != nil {
		res.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
	}
	if code < 300 {
		res.AppendHeader(&sip.ContactHeader{Address: sip.Uri{Scheme: "sip", Host: tw.addr.Addr().String(), Port: int(tw.addr.Port())}})
	}
	return res
}

// dialOut places a call from phone p (user alice) to dialled through e,
// authenticating as alice; it returns the dialog once answered.
func (e *env) dialOut(ctx context.Context, p *peer, dialled string, body []byte, onResponse func(*sip.Response) error) (*sipgo.DialogClientSession, error) {
	ruri := sip.Uri{Scheme: "sip", User: dialled, Host: e.ip.String(), Port: int(e.udp().Port())}
	req := p.newInvite(ruri, "alice", e.udp(), body)
	sess, err := p.dialogUA("alice").WriteInvite(ctx, req)
	if err != nil {
		return nil, err
	}
	err = sess.WaitAnswer(ctx, sipgo.AnswerOptions{Username: "alice", Password: alicePass, OnResponse: onResponse})
	if err != nil {
		return sess, err
	}
	return sess, sess.Ack(ctx)
}

// statusCode extracts the final status of a failed dialog setup.
func statusCode(err error) int {
	var de *sipgo.ErrDialogResponse
	if errors.As(err, &de) {
		return de.Res.StatusCode
	}
	var dv sipgo.ErrDialogResponse
	if errors.As(err, &dv) {
		return dv.Res.StatusCode
	}
	return 0
}

func (e *env) onlyCall() CallStatus {
	e.t.Helper()
	calls := e.b.Calls()
	if len(calls) != 1 {
		e.t.Fatalf("calls = %d, want 1", len(calls))
	}
	return calls[0]
}

func hasLine(body []byte, line string) bool {
	for _, l := range strings.Split(string(body), "\n") {
		if strings.TrimSpace(l) == line {
			return true
		}
	}
	return false
}

func sipgoAnswer(user, pass string) sipgo.AnswerOptions {
	return sipgo.AnswerOptions{Username: user, Password: pass}
}

func (e *fakeEdges) setPlan(ts ...edge.Target) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.plan = ts
}

// fakeLockout records the failures the B2BUA reports.
type fakeLockout struct {
	mu       sync.Mutex
	failures []string // "source user"
}

func (f *fakeLockout) Failed(source netip.Addr, user string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failures = append(f.failures, source.String()+" "+user)
	return false
}

func (f *fakeLockout) Check(netip.Addr, string) (lockout.Refusal, time.Duration) {
	return lockout.Allowed, 0
}

func (f *fakeLockout) Succeeded(netip.Addr, string) {}

func (f *fakeLockout) reported() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.failures)
}
