// Package frontend owns edgewise's SIP sockets and the sipgo user agent that
// runs on them. It listens on every configured address, answers requests of
// idempotent methods (REGISTER, OPTIONS) without a server transaction, hands
// everything else to sipgo's transaction layer, and gives other components the
// sipgo Client for outbound requests, sent from the same sockets.
//
// Why not sipgo's ListenAndServe alone: sipgo keeps every completed non-INVITE
// server transaction alive for Timer J (32 s on UDP). At registrar rates that
// is hundreds of thousands of live transactions, gigabytes of memory, then a
// collapse (measured with sipgo 1.7.3 under a sustained SIPp load). REGISTER is idempotent,
// so answering it statelessly, as Kamailio's registrar does with sl_send_reply,
// is safe: a retransmission is simply answered again. The server therefore
// reads the sockets itself, parses each message once, dispatches stateless
// methods directly, and passes the rest to sipgo through a net.PacketConn and
// a net.Listener it wraps. Malformed messages never reach sipgo.
//
// The tls and wss listeners present one certificate (Settings.TLSCertFile,
// TLSKeyFile) through tls.Config.GetCertificate: it is read again when its
// files change and on PrepareTLS (a config reload), so a renewal reaches new
// handshakes without a restart and without touching open connections; a
// pair that does not load leaves the current one in service (certs.go).
//
// It imports registrar/sip/digest (the SIP token grammar) and nothing
// else of edgewise.
package frontend

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

// Listen is one address to listen on.
type Listen struct {
	Transport string // udp, tcp, tls, ws or wss
	Host      string // IP address; empty means all interfaces
	Port      int    // 0 picks a free port (tests)
}

func (l Listen) String() string {
	return l.Transport + ":" + net.JoinHostPort(l.Host, strconv.Itoa(l.Port))
}

// Settings configure a Server.
type Settings struct {
	Listen []Listen
	// PublicAddress is host[:port] put in Via of outbound requests; empty
	// means the first listen address.
	PublicAddress string
	// UserAgent is sent as Server in responses and User-Agent in requests.
	UserAgent string
	// UDPReadBuffer is the socket receive buffer, set explicitly because the
	// default (~200 KB) overflows from about 12,000 requests/s. Zero means
	// 4 MiB; the kernel caps it at net.core.rmem_max.
	UDPReadBuffer int
	// ForceRport answers UDP requests at their source port even when the Via
	// has no rport parameter (RFC 3581 behaviour for every client), which
	// helps old phones behind NAT. Off: RFC 3261 §18.2.2, the Via port.
	ForceRport bool
	// TLSCertFile and TLSKeyFile are the PEM certificate chain and key
	// that tls and wss listeners present; required when there is one.
	TLSCertFile string
	TLSKeyFile  string
	// Connections bounds TCP, TLS and WebSocket connections.
	Connections Connections
}

// Handler answers one request. For methods registered with HandleStateless tx
// is a stateless stand-in: Respond writes the response straight to the socket,
// and there is no retransmission absorption, so the handler must be idempotent.
// A stateless handler runs on the goroutine that read the message and must not
// block: one that waits for slow work returns and calls Respond later (the
// stand-in allows it, see its Detached method).
type Handler func(req *sip.Request, tx sip.ServerTransaction)

// Screen looks at a request of a method routed through sipgo's transaction
// layer (Handle) before that layer sees it, and may answer or drop it
// without a transaction: tx is a stateless stand-in, so a response is
// written once and nothing is kept. It returns true when it dealt with the
// request. Requests nobody has authenticated yet (an INVITE without
// credentials) and requests for dialogs that do not exist are answered
// here, so that a stranger's junk costs no transaction, no timer and no
// retransmitted answer (RFC 3261 §8.2.6 allows a UAS to answer statelessly;
// §17.2 transactions only matter to requests worth completing). Like a
// stateless Handler it runs on the reading goroutine and must not block.
// UDP and TCP only: WebSocket requests always reach sipgo.
type Screen func(req *sip.Request, tx sip.ServerTransaction) bool

// Server is a SIP endpoint on one or more sockets. Register handlers, then Run.
type Server struct {
	log      *slog.Logger
	settings Settings

	ua     *sipgo.UserAgent
	srv    *sipgo.Server
	client *sipgo.Client
	parser *sip.Parser

	mu            sync.Mutex
	stateless     map[sip.RequestMethod]Handler
	transactional map[sip.RequestMethod]Handler
	screens       map[sip.RequestMethod]Screen
	allow         string // Allow header value, fixed when Run starts
	running       bool

	guard atomic.Pointer[func(netip.Addr) bool]
	conns connTable

	tlsConf  *tls.Config // for wss and tls listeners
	certs    *certHolder // their certificate; nil without such listeners
	onClosed func(transport string, remote netip.AddrPort)
	closedMu sync.Mutex
	closedQ  []closedConn
	closedCh chan struct{} // signals closedQ has entries

	ready     chan struct{}
	listeners []*listener // set before ready closes

	stats Stats
}

// Stats counts what the server did with traffic it did not hand to a handler.
type Stats struct {
	Malformed  atomic.Uint64 // unparsable messages (answered 400 when possible)
	Garbage    atomic.Uint64 // datagrams that are not SIP at all, dropped
	Blocked    atomic.Uint64 // messages from guarded sources dropped or refused
	Overloaded atomic.Uint64 // messages for sipgo dropped because its queue was full
	// Screened counts requests a Screen answered or dropped without a
	// transaction (challenges, unknown dialogs).
	Screened atomic.Uint64
	// Retransmissions counts retransmitted UDP requests answered again with
	// the response already sent, without handling them twice.
	Retransmissions atomic.Uint64
	// ConnRefused counts connections closed at accept for a limit;
	// SetupTimeouts those closed for no handshake or first message in
	// time; IdleClosed those closed after Connections.IdleTimeout of
	// silence.
	ConnRefused   atomic.Uint64
	SetupTimeouts atomic.Uint64
	IdleClosed    atomic.Uint64
	// WSRefused counts WebSocket connections refused at the handshake:
	// no "sip" subprotocol, not an upgrade, failed TLS, too many pending.
	WSRefused atomic.Uint64
	// WSOversized counts WebSocket connections closed for a frame or
	// message over the size limit, or a malformed frame header.
	WSOversized atomic.Uint64
}

// New prepares a server; nothing listens until Run.
func New(s Settings, logger *slog.Logger) (*Server, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if len(s.Listen) == 0 {
		return nil, errors.New("frontend: no listen address")
	}
	s.Connections = s.Connections.withDefaults()
	var tlsConf *tls.Config
	var certs *certHolder
	for _, l := range s.Listen {
		switch l.Transport {
		case "udp", "tcp", "ws":
		case "wss", "tls":
			if tlsConf != nil {
				break
			}
			if s.TLSCertFile == "" || s.TLSKeyFile == "" {
				return nil, fmt.Errorf("frontend: listen %s: a certificate and key file are required", l)
			}
			var err error
			certs, err = newCertHolder(s.TLSCertFile, s.TLSKeyFile, logger.With("component", "tls"))
			if err != nil {
				return nil, fmt.Errorf("frontend: listen %s: %w", l, err)
			}
			// Read at every handshake, so a renewed certificate serves
			// new connections while open ones keep theirs.
			tlsConf = &tls.Config{GetCertificate: certs.getCertificate, MinVersion: tls.VersionTLS12}
		default:
			return nil, fmt.Errorf("frontend: listen %s: unsupported transport %q", l, l.Transport)
		}
		if l.Host != "" {
			if _, err := netip.ParseAddr(l.Host); err != nil {
				return nil, fmt.Errorf("frontend: listen %s: host must be an IP address: %w", l, err)
			}
		}
	}
	if s.UserAgent == "" {
		s.UserAgent = "edgewise"
	}
	if s.UDPReadBuffer == 0 {
		s.UDPReadBuffer = 4 << 20
	}
	parser := sip.NewParser()
	sipLog := logger.With("component", "sipgo")
	ua, err := sipgo.NewUA(
		sipgo.WithUserAgent(s.UserAgent),
		sipgo.WithUserAgentParser(parser),
		sipgo.WithUserAgentTransportLayerOptions(sip.WithTransportLayerLogger(sipLog)),
		sipgo.WithUserAgentTransactionLayerOptions(sip.WithTransactionLayerLogger(sipLog)),
	)
	if err != nil {
		return nil, fmt.Errorf("frontend: user agent: %w", err)
	}
	srv, err := sipgo.NewServer(ua, sipgo.WithServerLogger(sipLog))
	if err != nil {
		ua.Close()
		return nil, fmt.Errorf("frontend: server: %w", err)
	}
	host, port := publicHostPort(s)
	client, err := sipgo.NewClient(ua, sipgo.WithClientLogger(sipLog), sipgo.WithClientHostname(host), sipgo.WithClientPort(port))
	if err != nil {
		ua.Close()
		return nil, fmt.Errorf("frontend: client: %w", err)
	}
	return &Server{
		log:           logger,
		settings:      s,
		ua:            ua,
		srv:           srv,
		client:        client,
		parser:        parser,
		stateless:     make(map[sip.RequestMethod]Handler),
		transactional: make(map[sip.RequestMethod]Handler),
		screens:       make(map[sip.RequestMethod]Screen),
		ready:         make(chan struct{}),
		tlsConf:       tlsConf,
		certs:         certs,
		closedCh:      make(chan struct{}, 1),
	}, nil
}

func publicHostPort(s Settings) (string, int) {
	if s.PublicAddress != "" {
		if h, p, err := net.SplitHostPort(s.PublicAddress); err == nil {
			n, _ := strconv.Atoi(p)
			return h, n
		}
		return s.PublicAddress, 0
	}
	l := s.Listen[0]
	return l.Host, l.Port
}

// Handle routes method to h through sipgo's transaction layer (INVITE, BYE,
// anything that must not be processed twice). Call before Run.
func (s *Server) Handle(method sip.RequestMethod, h Handler) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.running {
		panic("frontend: Handle after Run")
	}
	delete(s.stateless, method)
	s.transactional[method] = h
	s.srv.OnRequest(method, sipgo.RequestHandler(h))
}

// Screen installs f in front of the transaction layer for method (see
// Screen). Call before Run.
func (s *Server) Screen(method sip.RequestMethod, f Screen) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.running {
		panic("frontend: Screen after Run")
	}
	s.screens[method] = f
}

// HandleStateless routes method to h without a server transaction: REGISTER
// and OPTIONS, whose handlers are idempotent. h runs on the reading goroutine
// (no handoff, no goroutine per request) and must not block. Call before Run.
func (s *Server) HandleStateless(method sip.RequestMethod, h Handler) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.running {
		panic("frontend: HandleStateless after Run")
	}
	delete(s.transactional, method)
	s.stateless[method] = h
	// UDP and TCP never hand these methods to sipgo; WebSocket always does.
	s.srv.OnRequest(method, s.viaSipgo(h))
}

// SetGuard installs a check of source addresses, e.g. the registrar's lockout:
// requests over UDP from a guarded address are dropped before they are
// parsed, requests over TCP get 403. Responses are never guarded (see
// handleMessage). It may be called at any time.
func (s *Server) SetGuard(blocked func(netip.Addr) bool) {
	if blocked == nil {
		s.guard.Store(nil)
		return
	}
	s.guard.Store(&blocked)
}

func (s *Server) blocked(a netip.Addr) bool {
	g := s.guard.Load()
	return g != nil && (*g)(a)
}

// Client is the sipgo client for outbound requests. UDP requests leave from a
// listening socket when their Laddr names it (see Server.Addr).
func (s *Server) Client() *sipgo.Client { return s.client }

// PinnedClient returns a client on the server's user agent whose UDP
// requests leave from the listening socket bound to local (host:port of a
// udp listener), so a peer sees the same address in the source, the Via and
// the Contact, and answers and calls back through the same NAT binding. Its
// Via names the public address. Use it for UDP only: sipgo would try to bind
// local for TCP too. Valid after Ready.
func (s *Server) PinnedClient(local string) (*sipgo.Client, error) {
	host, port := publicHostPort(s.settings)
	return sipgo.NewClient(s.ua, sipgo.WithClientHostname(host), sipgo.WithClientPort(port),
		sipgo.WithClientConnectionAddr(local))
}

// PrepareTLS loads the certificate and key of the tls and wss listeners
// from certFile and keyFile (a config reload; the paths may be new); commit
// puts them in service for the next handshake, and from then on changes to
// those files are watched. A pair that does not load is an error and the
// current certificate stays. Without such listeners it does nothing.
func (s *Server) PrepareTLS(certFile, keyFile string) (commit func(), err error) {
	if s.certs == nil {
		return func() {}, nil
	}
	commit, err = s.certs.prepare(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("tls certificate %s, key %s: %w", certFile, keyFile, err)
	}
	return commit, nil
}

// OnTLSCertificate sets fn to hear every replacement of the tls and wss
// listeners' certificate, and every refused one (the operator's events).
// Call before Run; fn runs on the goroutine that loaded the files.
func (s *Server) OnTLSCertificate(fn func(CertEvent)) {
	if s.certs == nil {
		return
	}
	s.certs.mu.Lock()
	s.certs.onEvent = fn
	s.certs.mu.Unlock()
}

// UserAgent is the configured agent name.
func (s *Server) UserAgent() string { return s.settings.UserAgent }

// Stats returns the server's drop counters.
func (s *Server) Stats() *Stats { return &s.stats }

// Ready is closed once every address is listening.
func (s *Server) Ready() <-chan struct{} { return s.ready }

// Addr returns the bound address of the first listener of transport (udp,
// tcp, ws or wss), valid after Ready.
func (s *Server) Addr(transport string) netip.AddrPort {
	for _, l := range s.listeners {
		if l.transport == transport {
			return l.addr
		}
	}
	return netip.AddrPort{}
}

type listener struct {
	transport string
	addr      netip.AddrPort
	udp       *udpListener
	tcp       *tcpListener
	ws        *wsListener
}

// Run listens on every address and serves until ctx is done, then closes the
// sockets, waits for its readers (and so for the stateless handlers they run)
// and stops sipgo. A listen error stops everything and is returned. Responses
// a detached handler sends after that fail with a closed-socket error.
func (s *Server) Run(ctx context.Context) error {
	s.mu.Lock()
	if s.running {
		s.mu.Unlock()
		return errors.New("frontend: Run called twice")
	}
	s.running = true
	s.allow = s.allowHeader()
	s.mu.Unlock()
	s.srv.OnNoRoute(s.noRoute)

	for _, l := range s.settings.Listen {
		ln, err := s.listen(l)
		if err != nil {
			s.closeListeners()
			s.ua.Close()
			return err
		}
		s.listeners = append(s.listeners, ln)
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errc := make(chan error, 2*len(s.listeners))
	for _, ln := range s.listeners {
		switch {
		case ln.udp != nil:
			u := ln.udp
			readers := min(max(2, runtime.GOMAXPROCS(0)), maxUDPReaders)
			for range readers {
				wg.Go(func() { u.readLoop(s) })
			}
			wg.Go(func() {
				if err := s.srv.ServeUDP(u.sipgoConn()); err != nil && ctx.Err() == nil {
					errc <- fmt.Errorf("frontend: serve %s: %w", u.addr, err)
				}
			})
		case ln.tcp != nil:
			t := ln.tcp
			serve := s.srv.ServeTCP
			if t.tls != nil {
				serve = s.srv.ServeTLS
			}
			wg.Go(func() {
				if err := serve(t); err != nil && ctx.Err() == nil && !errors.Is(err, net.ErrClosed) {
					errc <- fmt.Errorf("frontend: serve %s: %w", t.Addr(), err)
				}
			})
		case ln.ws != nil:
			w := ln.ws
			wg.Go(w.acceptLoop)
			serve := s.srv.ServeWS
			if w.tls != nil {
				serve = s.srv.ServeWSS
			}
			wg.Go(func() {
				if err := serve(w); err != nil && ctx.Err() == nil && !errors.Is(err, net.ErrClosed) {
					errc <- fmt.Errorf("frontend: serve %s:%s: %w", w.transport, w.addr, err)
				}
			})
		}
		s.log.Info("listening", "transport", ln.transport, "addr", ln.addr.String())
	}
	wg.Go(func() { s.closedLoop(ctx) })
	if s.certs != nil {
		wg.Go(func() {
			if err := s.certs.watch(ctx); err != nil {
				// The certificate still reloads with the config.
				s.log.Warn("tls certificate files are not watched", "error", err)
			}
		})
	}
	var err error
	for _, ln := range s.listeners {
		if ln.udp == nil || err != nil {
			continue
		}
		select {
		case <-ln.udp.sipgoReady:
		case err = <-errc:
		case <-ctx.Done():
		}
	}
	if err == nil && ctx.Err() == nil {
		close(s.ready)
		select {
		case <-ctx.Done():
		case err = <-errc:
		}
	}
	if err != nil {
		s.log.Error("listener failed", "error", err)
	}
	s.closeListeners()
	wg.Wait()
	s.ua.Close()
	return err
}

func (s *Server) listen(l Listen) (*listener, error) {
	host := l.Host
	if host == "" {
		host = "0.0.0.0"
	}
	ap, err := netip.ParseAddrPort(net.JoinHostPort(host, strconv.Itoa(l.Port)))
	if err != nil {
		return nil, fmt.Errorf("frontend: listen %s: %w", l, err)
	}
	switch l.Transport {
	case "udp":
		u, err := listenUDP(ap, s.settings.UDPReadBuffer, s.log)
		if err != nil {
			return nil, fmt.Errorf("frontend: listen %s: %w", l, err)
		}
		return &listener{transport: "udp", addr: u.addr, udp: u}, nil
	case "ws", "wss":
		var conf *tls.Config
		if l.Transport == "wss" {
			conf = s.tlsConf
		}
		w, err := listenWS(ap, l.Transport, conf, s)
		if err != nil {
			return nil, fmt.Errorf("frontend: listen %s: %w", l, err)
		}
		return &listener{transport: l.Transport, addr: w.addr, ws: w}, nil
	default: // tcp, tls
		var conf *tls.Config
		if l.Transport == "tls" {
			conf = s.tlsConf
		}
		t, err := listenTCP(ap, s, conf)
		if err != nil {
			return nil, fmt.Errorf("frontend: listen %s: %w", l, err)
		}
		return &listener{transport: t.transport, addr: t.addr, tcp: t}, nil
	}
}

func (s *Server) closeListeners() {
	for _, ln := range s.listeners {
		if ln.udp != nil {
			ln.udp.close()
		}
		if ln.tcp != nil {
			ln.tcp.closeAll()
		}
		if ln.ws != nil {
			ln.ws.closeAll()
		}
	}
}

// knownMethods are the methods of RFC 3261 and its common extensions; others
// get 501 Not Implemented rather than 405 (RFC 3261 §21.5.2).
var knownMethods = []sip.RequestMethod{
	sip.INVITE, sip.ACK, sip.BYE, sip.CANCEL, sip.OPTIONS, sip.REGISTER, sip.PRACK,
	sip.SUBSCRIBE, sip.NOTIFY, sip.PUBLISH, sip.INFO, sip.REFER, sip.MESSAGE, sip.UPDATE,
}

func (s *Server) allowHeader() string {
	var ms []string
	for m := range s.stateless {
		ms = append(ms, string(m))
	}
	for m := range s.transactional {
		ms = append(ms, string(m))
	}
	if !slices.Contains(ms, string(sip.OPTIONS)) {
		ms = append(ms, string(sip.OPTIONS))
	}
	if _, ok := s.transactional[sip.INVITE]; ok {
		ms = append(ms, string(sip.ACK), string(sip.CANCEL))
	}
	slices.Sort(ms)
	return strings.Join(slices.Compact(ms), ", ")
}
