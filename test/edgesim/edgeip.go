package edgesim

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

// edgeIP is one address of an edge. Each has its own sockets and its own
// sipgo stack, so closing one (refuse mode) touches nothing else and a
// response always leaves from the address the request reached.
type edgeIP struct {
	sim      *Sim
	edge     *edge
	addr     netip.Addr
	override *ModeSetting // guarded by sim.modeMu; nil follows the edge

	cfgPort    int // as configured; 0 = a free port shared with other such IPs
	cfgTLSPort int // likewise for TLS

	mu      sync.Mutex
	port    int   // the port to bind: cfgPort, then the bound one once known
	tlsPort int   // likewise for TLS; used only when transports has tls
	live    *live // nil while the sockets are closed

	countMu  sync.Mutex
	requests map[string]uint64 // method → requests received
	// authorized counts requests that carried credentials (Authorization
	// or Proxy-Authorization): what a man in the middle would collect.
	authorized uint64
	tlsStats   TLSStats
}

// live is one period during which an edge IP's sockets are open. Re-opening
// after refuse builds a new one, so nothing of the old stack lingers.
type live struct {
	ip *edgeIP
	ua *sipgo.UserAgent
	// client sends edgesim's own requests (calls it places, BYE, CANCEL,
	// ACK) from this IP; see edgeIP.request.
	client *sipgo.Client
	udp    net.PacketConn
	tcp    *connTracker
	tls    *connTracker  // the TLS port's TCP listener
	done   chan struct{} // closed when this period ends

	serving sync.WaitGroup // sipgo Serve loops

	mu       sync.Mutex
	closing  bool
	handlers sync.WaitGroup // requests being served
}

func (ip *edgeIP) hostPort() string {
	return netip.AddrPortFrom(ip.addr, uint16(ip.boundPort())).String()
}

func (ip *edgeIP) boundPort() int {
	ip.mu.Lock()
	defer ip.mu.Unlock()
	return ip.port
}

// boundTLSPort is the TLS port, 0 when TLS is off.
func (ip *edgeIP) boundTLSPort() int {
	if !ip.sim.tlsOn() {
		return 0
	}
	ip.mu.Lock()
	defer ip.mu.Unlock()
	return ip.tlsPort
}

// portFor is the port requests over transport reach.
func (ip *edgeIP) portFor(transport string) int {
	if strings.EqualFold(transport, "TLS") {
		return ip.boundTLSPort()
	}
	return ip.boundPort()
}

func (ip *edgeIP) setTLSPort(p int) {
	ip.mu.Lock()
	defer ip.mu.Unlock()
	ip.tlsPort = p
}

func (ip *edgeIP) setPort(p int) {
	ip.mu.Lock()
	defer ip.mu.Unlock()
	ip.port = p
}

func (ip *edgeIP) isOpen() bool {
	ip.mu.Lock()
	defer ip.mu.Unlock()
	return ip.live != nil
}

// open binds the IP's sockets (on the same port as before, once one was
// bound) and starts serving them.
func (ip *edgeIP) open() error {
	ip.mu.Lock()
	defer ip.mu.Unlock()
	if ip.live != nil {
		return nil
	}
	s := ip.sim
	wantUDP := slices.Contains(s.cfg.Transports, "udp")
	wantTCP := slices.Contains(s.cfg.Transports, "tcp")
	pc, ln, err := bindPair(ip.addr, ip.port, wantUDP, wantTCP)
	if err != nil {
		return fmt.Errorf("edge %s: listen on %s port %d: %w", ip.edge.name, ip.addr, ip.port, err)
	}
	if pc != nil {
		ip.port = pc.LocalAddr().(*net.UDPAddr).Port
	} else if ln != nil {
		ip.port = ln.Addr().(*net.TCPAddr).Port
	}
	var tlsLn *net.TCPListener
	if s.tlsOn() {
		tlsLn, err = net.ListenTCP("tcp", net.TCPAddrFromAddrPort(netip.AddrPortFrom(ip.addr, uint16(ip.tlsPort))))
		if err != nil {
			closeAll(pc, ln)
			return fmt.Errorf("edge %s: listen on %s tls port %d: %w", ip.edge.name, ip.addr, ip.tlsPort, err)
		}
		ip.tlsPort = tlsLn.Addr().(*net.TCPAddr).Port
		if pc == nil && ln == nil {
			ip.port = ip.tlsPort
		}
	}
	closeSockets := func() {
		closeAll(pc, ln)
		if tlsLn != nil {
			_ = tlsLn.Close()
		}
	}

	logger := s.sipgoLogger(ip)
	ua, err := sipgo.NewUA(
		sipgo.WithUserAgent("edgesim"),
		sipgo.WithUserAgentHostname(ip.addr.String()),
		// Calls edgesim places over TLS (to a Contact with transport=tls)
		// do not check the gateway's certificate: the gateway's name is
		// not known (its Contact holds an address) and what Twilio checks
		// there is not documented.
		sipgo.WithUserAgenTLSConfig(&tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}), //nolint:gosec // see above
		sipgo.WithUserAgentTransportLayerOptions(
			sip.WithTransportLayerLogger(logger),
			sip.WithTransportLayerReadFilter(ip.readFilter),
		),
		sipgo.WithUserAgentTransactionLayerOptions(
			sip.WithTransactionLayerLogger(logger),
			// Late 2xx retransmissions and responses to transactions
			// already given up are normal in calls; keep them out of the
			// info log.
			sip.WithTransactionLayerUnhandledResponseHandler(func(res *sip.Response) {
				s.log.Debug("sip response outside any transaction", "edge", ip.edge.name, "ip", ip.addr.String(),
					"response", res.StartLine(), "call_id", res.CallID())
			}),
		),
	)
	if err != nil {
		closeSockets()
		return fmt.Errorf("edge %s: sip stack for %s: %w", ip.edge.name, ip.addr, err)
	}
	srv, err := sipgo.NewServer(ua, sipgo.WithServerLogger(logger))
	if err != nil {
		_ = ua.Close()
		closeSockets()
		return fmt.Errorf("edge %s: sip server for %s: %w", ip.edge.name, ip.addr, err)
	}
	client, err := sipgo.NewClient(ua, sipgo.WithClientHostname(ip.addr.String()), sipgo.WithClientLogger(logger))
	if err != nil {
		_ = ua.Close()
		closeSockets()
		return fmt.Errorf("edge %s: sip client for %s: %w", ip.edge.name, ip.addr, err)
	}
	l := &live{ip: ip, ua: ua, client: client, udp: pc, done: make(chan struct{})}
	// Every method reaches one entry point: the mode gate comes before any
	// per-method handling.
	srv.OnNoRoute(l.handle)
	if pc != nil {
		l.serving.Go(func() {
			if err := srv.ServeUDP(pc); err != nil && !l.isClosing() {
				s.log.Error("udp serve stopped", "edge", ip.edge.name, "ip", ip.addr.String(), "error", err)
			}
		})
	}
	if pc != nil {
		waitUDPPooled(ua)
	}
	if ln != nil {
		l.tcp = newConnTracker(ln)
		l.serving.Go(func() {
			if err := srv.ServeTCP(l.tcp); err != nil && !l.isClosing() {
				s.log.Error("tcp serve stopped", "edge", ip.edge.name, "ip", ip.addr.String(), "error", err)
			}
		})
	}
	if tlsLn != nil {
		l.tls = newConnTracker(tlsLn)
		tln := &sipTLSListener{Listener: l.tls, ip: ip}
		l.serving.Go(func() {
			if err := srv.ServeTLS(tln); err != nil && !l.isClosing() {
				s.log.Error("tls serve stopped", "edge", ip.edge.name, "ip", ip.addr.String(), "error", err)
			}
		})
	}
	ip.live = l
	return nil
}

// waitUDPPooled waits until sipgo's UDP serve loop has put the socket in
// its connection pool: only then do requests edgesim sends from the IP
// leave from it (otherwise sipgo tries to bind the same address again). It
// takes microseconds; the bound only guards against a serve loop that
// failed at once, which its goroutine logs.
func waitUDPPooled(ua *sipgo.UserAgent) {
	pool := ua.TransportLayer().Pool("udp")
	for deadline := time.Now().Add(2 * time.Second); pool.Size() == 0 && time.Now().Before(deadline); {
		time.Sleep(50 * time.Microsecond)
	}
}

// close closes the IP's sockets, so senders get ICMP port unreachable or a
// refused connection, and waits for its requests to finish.
func (ip *edgeIP) close() {
	ip.mu.Lock()
	l := ip.live
	ip.live = nil
	ip.mu.Unlock()
	if l != nil {
		l.stop()
	}
}

func (l *live) isClosing() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.closing
}

func (l *live) stop() {
	l.mu.Lock()
	l.closing = true
	l.mu.Unlock()
	close(l.done)
	if l.udp != nil {
		_ = l.udp.Close()
	}
	if l.tcp != nil {
		_ = l.tcp.Close()
	}
	if l.tls != nil {
		_ = l.tls.Close()
	}
	_ = l.ua.Close()
	l.serving.Wait()
	l.handlers.Wait()
}

// handle is the sipgo entry point for every request of this period.
func (l *live) handle(req *sip.Request, tx sip.ServerTransaction) {
	l.mu.Lock()
	if l.closing {
		l.mu.Unlock()
		return
	}
	l.handlers.Add(1)
	l.mu.Unlock()
	defer l.handlers.Done()

	l.ip.count(string(req.Method))
	if req.GetHeader("Authorization") != nil || req.GetHeader("Proxy-Authorization") != nil {
		l.ip.countCredentials()
	}
	in := &inbound{req: req, tx: tx, ip: l.ip}
	in.serve(doneContext(l.done))
}

// errIPClosed: the edge IP's sockets are closed (refuse mode, or Run is
// not serving), so it cannot send.
var errIPClosed = errors.New("edge IP sockets are closed")

// request sends req from this edge IP as a new client transaction. Over
// UDP it leaves from the IP's SIP socket (source port = the edge's SIP
// port, as a proxy's requests do); over TCP a new connection is made from
// the IP. Missing Via, Content-Length and the like are filled in.
func (ip *edgeIP) request(ctx context.Context, req *sip.Request) (sip.ClientTransaction, error) {
	l, err := ip.sender(req)
	if err != nil {
		return nil, err
	}
	return l.client.TransactionRequest(ctx, req, sipgo.ClientRequestBuild)
}

// write sends req without a transaction: an ACK to a 2xx.
func (ip *edgeIP) write(req *sip.Request) error {
	l, err := ip.sender(req)
	if err != nil {
		return err
	}
	return l.client.WriteRequest(req, sipgo.ClientRequestBuild)
}

// do sends req and waits for its final response.
func (ip *edgeIP) do(ctx context.Context, req *sip.Request) (*sip.Response, error) {
	tx, err := ip.request(ctx, req)
	if err != nil {
		return nil, err
	}
	defer tx.Terminate()
	for {
		select {
		case res := <-tx.Responses():
			if res.IsProvisional() {
				continue
			}
			return res, nil
		case <-tx.Done():
			if err := tx.Err(); err != nil {
				return nil, err
			}
			return nil, errors.New("transaction ended without a final response")
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// sender returns the IP's open sockets and pins req's local address to
// them.
func (ip *edgeIP) sender(req *sip.Request) (*live, error) {
	ip.mu.Lock()
	l, port := ip.live, ip.port
	ip.mu.Unlock()
	if l == nil {
		return nil, fmt.Errorf("%w: %s", errIPClosed, ip.addr)
	}
	if !strings.EqualFold(req.Transport(), "UDP") {
		// A TCP client socket cannot bind the listening port.
		port = 0
	}
	req.Laddr = sip.Addr{IP: net.IP(ip.addr.AsSlice()), Port: port, Hostname: ip.addr.String()}
	return l, nil
}

// contact is edgesim's Contact on this IP for transport.
func (ip *edgeIP) contact(transport string) *sip.ContactHeader {
	u := sip.Uri{Scheme: "sip", User: "edgesim", Host: ip.addr.String(), Port: ip.portFor(transport)}
	if !strings.EqualFold(transport, "UDP") {
		u.UriParams = sip.HeaderParams{{K: "transport", V: strings.ToLower(transport)}}
	}
	return &sip.ContactHeader{Address: u}
}

// readFilter sees raw messages before sipgo parses them. Drop mode acts here,
// so nothing is answered at all, not even the stateless 400 sipgo sends for
// a malformed request.
func (ip *edgeIP) readFilter(props sip.TransportReadProps, data []byte) ([]byte, error) {
	if ip.sim.effective(ip).Mode != ModeDrop {
		return data, nil
	}
	if m := requestMethod(data); m != "" {
		ip.count(m)
		if carriesCredentials(data) {
			ip.countCredentials()
		}
		ip.sim.log.Debug("sip request dropped", "edge", ip.edge.name, "ip", ip.addr.String(),
			"transport", props.Transport, "method", m, "source", props.RemoteAddr.String())
	}
	return nil, nil
}

// requestMethod returns the method of a request's start line, or "" for a
// response, a keepalive or garbage. A TCP read may hold several messages;
// only the first is seen, which is enough to count in drop mode.
func requestMethod(data []byte) string {
	line, _, _ := bytes.Cut(data, []byte("\n"))
	line = bytes.TrimRight(line, "\r")
	method, rest, ok := bytes.Cut(line, []byte(" "))
	if !ok || len(method) == 0 || !bytes.HasSuffix(rest, []byte(" SIP/2.0")) {
		return ""
	}
	for _, c := range method {
		if c < 'A' || c > 'Z' {
			return ""
		}
	}
	return string(method)
}

func (ip *edgeIP) count(method string) {
	ip.countMu.Lock()
	ip.requests[method]++
	ip.countMu.Unlock()
}

// countCredentials counts a request that carried credentials.
func (ip *edgeIP) countCredentials() {
	ip.countMu.Lock()
	ip.authorized++
	ip.countMu.Unlock()
}

func (ip *edgeIP) countHandshake(err error) {
	ip.countMu.Lock()
	defer ip.countMu.Unlock()
	if err != nil {
		ip.tlsStats.Failed++
		ip.tlsStats.LastError = err.Error()
		return
	}
	ip.tlsStats.Handshakes++
}

func (ip *edgeIP) counters() (map[string]uint64, uint64, TLSStats) {
	ip.countMu.Lock()
	defer ip.countMu.Unlock()
	return maps.Clone(ip.requests), ip.authorized, ip.tlsStats
}

func (ip *edgeIP) resetCounters() {
	ip.countMu.Lock()
	ip.requests = map[string]uint64{}
	ip.authorized = 0
	ip.tlsStats = TLSStats{}
	ip.countMu.Unlock()
}

// bindPair binds UDP and/or TCP on addr:port. With port 0 both must land on
// the same free port, so it retries when the TCP port is taken.
func bindPair(addr netip.Addr, port int, wantUDP, wantTCP bool) (net.PacketConn, net.Listener, error) {
	attempts := 1
	if port == 0 && wantUDP && wantTCP {
		attempts = 20
	}
	var err error
	for range attempts {
		var pc net.PacketConn
		var ln net.Listener
		p := port
		if wantUDP {
			pc, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(addr, uint16(p))))
			if err != nil {
				return nil, nil, err
			}
			p = pc.LocalAddr().(*net.UDPAddr).Port
		}
		if wantTCP {
			ln, err = net.ListenTCP("tcp", net.TCPAddrFromAddrPort(netip.AddrPortFrom(addr, uint16(p))))
			if err != nil {
				closeAll(pc, nil)
				continue
			}
		}
		return pc, ln, nil
	}
	return nil, nil, err
}

func closeAll(pc net.PacketConn, ln net.Listener) {
	if pc != nil {
		_ = pc.Close()
	}
	if ln != nil {
		_ = ln.Close()
	}
}

// connTracker is a listener that remembers the connections it accepted, so
// closing it closes them too: an edge whose port is closed also drops the
// TCP connections senders already had.
type connTracker struct {
	net.Listener
	mu     sync.Mutex
	conns  map[*trackedConn]struct{}
	closed bool
}

func newConnTracker(ln net.Listener) *connTracker {
	return &connTracker{Listener: ln, conns: map[*trackedConn]struct{}{}}
}

func (t *connTracker) Accept() (net.Conn, error) {
	c, err := t.Listener.Accept()
	if err != nil {
		return nil, err
	}
	tc := &trackedConn{Conn: c, t: t}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		_ = c.Close()
		return nil, net.ErrClosed
	}
	t.conns[tc] = struct{}{}
	return tc, nil
}

// dropConns closes every accepted connection and keeps listening: a TLS
// port whose certificate changed, as after a restart with the new one.
func (t *connTracker) dropConns() int {
	t.mu.Lock()
	conns := slices.Collect(maps.Keys(t.conns))
	t.conns = map[*trackedConn]struct{}{}
	t.mu.Unlock()
	for _, c := range conns {
		_ = c.Conn.Close()
	}
	return len(conns)
}

// dropTLSConns closes the IP's open TLS connections, if any.
func (ip *edgeIP) dropTLSConns() int {
	ip.mu.Lock()
	l := ip.live
	ip.mu.Unlock()
	if l == nil || l.tls == nil {
		return 0
	}
	return l.tls.dropConns()
}

// Close closes the listener and resets every accepted connection: linger 0
// sends RST, as a host whose SIP process died would.
func (t *connTracker) Close() error {
	t.mu.Lock()
	t.closed = true
	conns := slices.Collect(maps.Keys(t.conns))
	t.conns = map[*trackedConn]struct{}{}
	t.mu.Unlock()
	err := t.Listener.Close()
	for _, c := range conns {
		if tcp, ok := c.Conn.(*net.TCPConn); ok {
			_ = tcp.SetLinger(0)
		}
		_ = c.Conn.Close()
	}
	return err
}

type trackedConn struct {
	net.Conn
	t *connTracker
}

func (c *trackedConn) Close() error {
	c.t.mu.Lock()
	delete(c.t.conns, c)
	c.t.mu.Unlock()
	return c.Conn.Close()
}

// doneContext is a context that ends when its channel closes; it lets a
// request handler wait on the period it arrived in without storing a
// context in a struct.
type doneContext <-chan struct{}

func (d doneContext) Deadline() (time.Time, bool) { return time.Time{}, false }
func (d doneContext) Done() <-chan struct{}       { return d }
func (d doneContext) Value(any) any               { return nil }
func (d doneContext) Err() error {
	select {
	case <-d:
		return context.Canceled
	default:
		return nil
	}
}

var _ context.Context = doneContext(nil)
