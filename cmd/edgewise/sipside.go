package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus"
	bolt "go.etcd.io/bbolt"
	"golang.org/x/sync/errgroup"

	"github.com/edgewise-sip/edgewise/cmd/edgewise/admin"
	"github.com/edgewise-sip/edgewise/configs"
	"github.com/edgewise-sip/edgewise/media"
	"github.com/edgewise-sip/edgewise/media/webrtc"
	"github.com/edgewise-sip/edgewise/registrar"
	"github.com/edgewise-sip/edgewise/registrar/calls"
	"github.com/edgewise-sip/edgewise/registrar/directory"
	"github.com/edgewise-sip/edgewise/registrar/location"
	"github.com/edgewise-sip/edgewise/registrar/lockout"
	"github.com/edgewise-sip/edgewise/registrar/sip/digest"
	"github.com/edgewise-sip/edgewise/registrar/sip/frontend"
	"github.com/edgewise-sip/edgewise/registrar/twilio/edge"
	"github.com/edgewise-sip/edgewise/registrar/twilio/upstream"
)

// The upstream manager is what the calls ask about inbound Contacts.
var _ calls.Contacts = (*upstream.Manager)(nil)

// sipSide is the SIP stack: listeners, the local registrar, the edge
// monitor and the upstream registrations that follow it.
type sipSide struct {
	logger   *slog.Logger
	server   *frontend.Server
	reg      *registrar.Registrar
	edges    *edge.Monitor
	upstream *upstream.Manager
	tls      *edge.TLSClients
	relay    *media.Relay
	calls    *calls.B2BUA
	// retryAfter is non-zero once a graceful stop began: REGISTERs then get
	// 503 with this many seconds in Retry-After.
	retryAfter atomic.Int64
	journal    *journal
	browsers   *webrtc.Hub // nil without media.webrtc.listen
}

// owned is what upstream registers: the table's users, or in a cluster the
// users this node owns; claims (a cluster's, else nil) collapses Twilio's
// forks of a call across nodes.
func newSIPSide(cfg *configs.Config, table *location.Table, owned upstream.Bindings, claims calls.CallClaims, peers calls.Peers, db *bolt.DB, logger *slog.Logger, metrics prometheus.Registerer, events *journal) (*sipSide, error) {
	srv, err := frontend.New(sipServerSettings(cfg), logger.With("component", "sip"))
	if err != nil {
		return nil, err
	}
	reg, err := registrar.New(table, registrarSettings(cfg), phoneCredentials(cfg), registrar.Options{
		Logger:    logger.With("component", "registrar"),
		Pinger:    srv,
		OnLockout: func(ev lockout.Event) { events.add(lockoutEvent(ev)) },
	})
	if err != nil {
		return nil, err
	}
	side := &sipSide{logger: logger, server: srv, reg: reg, journal: events}
	srv.HandleStateless(sip.REGISTER, side.refuseWhileDraining(reg.ServeRegister))
	srv.SetGuard(reg.Blocked)
	// A browser is only reachable over its WebSocket: when that closes,
	// its bindings go (and with them, maybe, the upstream registration).
	srv.OnConnClosed(reg.ConnClosed)
	srv.OnTLSCertificate(func(ev frontend.CertEvent) {
		sev := "info"
		if !ev.Applied {
			sev = "warn"
		}
		events.add(admin.Event{Kind: "tls_certificate", Severity: sev, Text: ev.Text})
	})

	// TLS to Twilio needs one client per edge FQDN so SNI and certificate
	// checks name the FQDN while packets go to one explicit IP.
	host, port := cfg.SIP.Advertise()
	roots, err := twilioRoots(cfg)
	if err != nil {
		return nil, err
	}
	tlsClients := edge.NewTLSClients(&tls.Config{RootCAs: roots},
		[]sipgo.UserAgentOption{sipgo.WithUserAgent("edgewise/" + version)},
		sipgo.WithClientHostname(host), sipgo.WithClientPort(port))
	client, err := upstreamClient(cfg, srv)
	if err != nil {
		return nil, err
	}
	proberOpts := []edge.SIPProberOption{edge.WithTLSClients(tlsClients.Client)}
	if cfg.Twilio.Keepalive.Method == edge.KeepaliveRegister {
		// Down edges are then probed with an unauthenticated REGISTER: any
		// answer (Twilio's 401) proves the edge alive.
		proberOpts = append(proberOpts, edge.WithRegisterProbe("keepalive"))
	}
	mon, err := edge.New(edgeSettings(cfg), edge.NewSIPProber(client, proberOpts...), logger.With("component", "edge"))
	if err != nil {
		return nil, err
	}
	mon.Subscribe(events.edgeChange) // for the life of the process
	mon.OnEdgeState(events.edgeState)
	up, err := upstream.New(upstreamSettings(cfg), upstreamDirectory(cfg), upstream.Options{
		Edges:    mon,
		Bindings: owned,
		Sender:   upstream.ClientSender{Client: client, TLS: tlsClients.Client},
		DB:       db,
		Logger:   logger.With("component", "upstream"),
		OnMoved: func(kind, to string, moved int, took time.Duration) {
			events.add(admin.Event{Kind: "moved", Severity: "info",
				Text: fmt.Sprintf("%s: %d registrations now on %s (took %s)", kind, moved, to, took.Round(time.Millisecond))})
		},
	})
	if err != nil {
		return nil, err
	}
	relay, err := media.NewRelay(mediaSettings(cfg), logger.With("component", "media"))
	if err != nil {
		return nil, err
	}
	opts := calls.Options{
		SIP: srv, Bindings: table, Edges: mon, Relay: relay,
		TLS:      tlsClients.Client, // only used when twilio.transport is tls
		Lockout:  reg.Lockout(),     // wrong INVITE passwords lock out like wrong REGISTER ones
		Contacts: up,                // calls from Twilio only to Contacts registered there
		Claims:   claims,
		Peers:    peers,
		Logger:   logger.With("component", "b2bua"),
	}
	if ws, ok := webrtcSettings(cfg); ok {
		hub, err := webrtc.NewHub(ws, logger.With("component", "webrtc"))
		if err != nil {
			return nil, err
		}
		side.browsers, opts.Browsers = hub, hub
	}
	b2b, err := calls.New(b2buaSettings(cfg), phoneCredentials(cfg), upstreamDirectory(cfg), opts)
	if err != nil {
		return nil, err
	}
	b2b.Register(srv)
	mon.Subscribe(b2b.EdgeChanged) // survival mode starts and ends with the edges
	metrics.MustRegister(srv.Collector(), reg.Collector(), mon, up, relay, b2b)
	side.edges, side.upstream, side.tls, side.relay, side.calls = mon, up, tlsClients, relay, b2b
	return side, nil
}

// twilioRoots is what SIP over TLS toward Twilio trusts: the system roots,
// plus twilio.ca_file when set; nil means the system roots alone.
func twilioRoots(cfg *configs.Config) (*x509.CertPool, error) {
	if cfg.Twilio.CAFile == "" {
		return nil, nil
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool() // no system bundle on this host: the file alone
	}
	if err := configs.AppendCAFile(pool, cfg.Twilio.CAFile); err != nil {
		return nil, fmt.Errorf("twilio.ca_file: %w", err)
	}
	return pool, nil
}

// webrtcSettings places browsers' WebRTC media; ok is false when it is off.
func webrtcSettings(cfg *configs.Config) (webrtc.Settings, bool) {
	w := cfg.Media.WebRTC
	if w.Listen == "" {
		return webrtc.Settings{}, false
	}
	listen, _ := netip.ParseAddrPort(w.Listen) // validated by configs
	s := webrtc.Settings{Listen: listen, Advertise: w.Advertise, ConnectTimeout: w.ConnectTimeout}
	if len(s.Advertise) == 0 && listen.Addr().IsUnspecified() {
		public, _ := cfg.SIP.Advertise()
		if ip, err := netip.ParseAddr(public); err == nil {
			s.Advertise = []netip.Addr{ip}
		}
	}
	return s, true
}

// mediaSettings places the relay: phones reach it on the SIP listener's
// address, Twilio on the public one. Both must be IP addresses.
func mediaSettings(cfg *configs.Config) media.Settings {
	public, _ := cfg.SIP.Advertise()
	pub, _ := netip.ParseAddr(public)
	listen, err := netip.ParseAddr(cfg.SIP.Listen[0].Host)
	local := listen
	if err != nil || local.IsUnspecified() {
		local = pub
	}
	// The relay binds the media address, not every interface: a host with
	// several addresses does not answer RTP on the ones it was not meant to.
	// Without media.bind that is the SIP listener's address (every
	// interface when SIP listens on 0.0.0.0, as behind a 1:1 NAT).
	bind := cfg.Media.Bind
	if !bind.IsValid() && err == nil {
		bind = listen
	}
	return media.Settings{
		Ports:    media.PortRange{Min: cfg.Media.RTPPorts.Min, Max: cfg.Media.RTPPorts.Max},
		Timeout:  cfg.Media.Timeout,
		LocalIP:  local,
		PublicIP: pub,
		BindIP:   bind,
		// Twilio's side only takes media from Twilio's media range until
		// it latches onto the far end.
		AllowB:  cfg.Twilio.MediaCIDRs,
		Workers: cfg.Media.Workers,
	}
}

// callLimit is calls.max_concurrent, or by default what the port pool holds:
// beyond that every new call would fail for want of ports anyway.
func callLimit(cfg *configs.Config) int {
	if cfg.Calls.MaxConcurrent > 0 {
		return cfg.Calls.MaxConcurrent
	}
	return cfg.Media.PoolCalls()
}

func b2buaSettings(cfg *configs.Config) calls.Settings {
	host, port := cfg.SIP.AdvertiseFor(contactTransport(cfg))
	return calls.Settings{
		Domain:          cfg.Twilio.Domain,
		PublicAddress:   net.JoinHostPort(host, strconv.Itoa(port)),
		Timeout:         cfg.Twilio.Timeout,
		SignallingCIDRs: cfg.Twilio.SignallingCIDRs,
		Realm:           cfg.SIP.Realm,
		NonceTTL:        cfg.SIP.NonceTTL,
		Algorithms:      digestAlgorithms(cfg.SIP.DigestAlgorithms),
		UserAgent:       "edgewise/" + version,
		Targets:         callTargets(cfg),
		MaxCalls:        callLimit(cfg),
		MaxCallsPerUser: cfg.Calls.MaxPerUser,
		TwilioOverTLS:   contactTransport(cfg) == "tls",
		TwilioSRTP:      cfg.Twilio.MediaEncryption == "srtp",
		// Survival mode: calls between local phones and to the fallback
		// targets while no Twilio edge is usable.
		Local:            calls.LocalMode(cfg.Calls.Local),
		Extensions:       callExtensions(cfg),
		FallbackTargets:  fallbackTargets(cfg),
		EmergencyNumbers: cfg.Calls.EmergencyNumbers,
	}
}

// callExtensions maps each phone's extension to its user.
func callExtensions(cfg *configs.Config) map[string]string {
	out := make(map[string]string)
	for _, p := range cfg.Phones {
		if p.Extension != "" {
			out[p.Extension] = p.User
		}
	}
	return out
}

// fallbackTargets gives the B2BUA calls.fallback_targets.
func fallbackTargets(cfg *configs.Config) []calls.Target {
	out := make([]calls.Target, 0, len(cfg.Calls.FallbackTargets))
	for _, t := range cfg.Calls.FallbackTargets {
		out = append(out, calls.Target{URI: t.URI, Priority: t.Priority, Weight: t.Weight})
	}
	return out
}

// callTargets gives the B2BUA each user's fixed targets.
func callTargets(cfg *configs.Config) map[string][]calls.Target {
	out := make(map[string][]calls.Target)
	for _, p := range cfg.Phones {
		for _, t := range p.Targets {
			out[p.User] = append(out[p.User], calls.Target{URI: t.URI, Priority: t.Priority, Weight: t.Weight})
		}
	}
	return out
}

// upstreamClient is the client for requests to Twilio. Over UDP they leave
// from the first UDP listener, so Twilio's answers and its INVITEs to our
// Contact come back through the socket (and NAT binding) the Via names.
func upstreamClient(cfg *configs.Config, srv *frontend.Server) (*sipgo.Client, error) {
	if cfg.Twilio.Transport == "udp" {
		for _, l := range cfg.SIP.Listen {
			if l.Transport == "udp" {
				return srv.PinnedClient(l.Addr())
			}
		}
	}
	return srv.Client(), nil
}

func edgeSettings(cfg *configs.Config) edge.Settings {
	t := cfg.Twilio
	return edge.Settings{
		Domain:            t.Domain,
		Edges:             t.Edges,
		DNSServer:         t.DNSServer,
		Transport:         t.Transport,
		Timeout:           t.Timeout,
		KeepaliveInterval: t.Keepalive.Interval,
		FailbackHold:      t.FailbackHold,
		KeepaliveMethod:   t.Keepalive.Method,
		StandbyInterval:   t.Keepalive.StandbyInterval,
	}
}

func upstreamSettings(cfg *configs.Config) upstream.Settings {
	host, port := cfg.SIP.AdvertiseFor(contactTransport(cfg))
	return upstream.Settings{
		Domain:           cfg.Twilio.Domain,
		RegisterExpires:  cfg.Twilio.RegisterExpires,
		MoveRate:         cfg.Twilio.Move.Rate,
		MoveConcurrency:  cfg.Twilio.Move.Concurrency,
		PublicAddress:    net.JoinHostPort(host, strconv.Itoa(port)),
		ContactTransport: contactTransport(cfg),
		UserAgent:        "edgewise/" + version,
	}
}

// contactTransport is the transport Twilio should use for INVITEs to us:
// the configured upstream transport when edgewise listens on it, else the
// first listener's.
func contactTransport(cfg *configs.Config) string {
	for _, l := range cfg.SIP.Listen {
		if l.Transport == cfg.Twilio.Transport {
			return l.Transport
		}
	}
	return cfg.SIP.Listen[0].Transport
}

func upstreamDirectory(cfg *configs.Config) directory.TwilioMap {
	dir := make(directory.TwilioMap, len(cfg.Phones))
	for _, p := range cfg.Phones {
		dir[p.User] = directory.TwilioUser{User: p.TwilioUser, Password: p.TwilioPassword.Value()}
	}
	return dir
}

func sipServerSettings(cfg *configs.Config) frontend.Settings {
	c := cfg.SIP.Connections
	s := frontend.Settings{
		UserAgent:   "edgewise/" + version,
		TLSCertFile: cfg.SIP.TLS.CertFile, // for wss: listeners
		TLSKeyFile:  cfg.SIP.TLS.KeyFile,
		Connections: frontend.Connections{Max: c.Max, MaxPerSource: c.MaxPerSource, SetupTimeout: c.SetupTimeout, IdleTimeout: c.IdleTimeout},
	}
	for _, l := range cfg.SIP.Listen {
		s.Listen = append(s.Listen, frontend.Listen{Transport: l.Transport, Host: l.Host, Port: l.Port})
	}
	if host, port := cfg.SIP.Advertise(); host != "" {
		s.PublicAddress = fmt.Sprintf("%s:%d", host, port)
	}
	return s
}

func registrarSettings(cfg *configs.Config) registrar.Settings {
	s := cfg.SIP
	return registrar.Settings{
		Realm:           s.Realm,
		MinExpires:      s.MinExpires,
		MaxExpires:      s.MaxExpires,
		DefaultExpires:  s.DefaultExpires,
		ExpiresSpread:   s.ExpiresSpread,
		MaxContacts:     s.MaxContacts,
		NonceTTL:        s.NonceTTL,
		Algorithms:      digestAlgorithms(s.DigestAlgorithms),
		QualifyInterval: s.QualifyInterval,
		Lockout:         lockoutSettings(cfg),
	}
}

// lockoutSettings configures the lockout table the registrar, the B2BUA
// and the token endpoint share. Twilio's signalling ranges are never locked
// out: over UDP anyone can forge their address, and locking Twilio out
// would refuse its calls and let a stranger make edges look dead. Trusted
// proxies (SIP and HTTP) speak for many clients and are never locked out
// either.
func lockoutSettings(cfg *configs.Config) lockout.Settings {
	l := cfg.SIP.Lockout
	exempt := slices.Concat(cfg.Twilio.SignallingCIDRs, cfg.SIP.TrustedProxies)
	if cfg.Token != nil {
		exempt = append(exempt, cfg.Token.TrustedProxies...)
	}
	return lockout.Settings{
		Failures:     l.Failures,
		UserFailures: l.UserFailures,
		Window:       l.Window,
		Duration:     l.Duration,
		MaxSources:   l.MaxSources,
		// Room for every phone's known sources and as many usernames
		// again being guessed: a full table evicts, and evicting on every
		// login of a big site costs more than the entries' memory.
		MaxUsers: max(lockout.DefaultMaxUsers, 2*len(cfg.Phones)),
		Exempt:   exempt,
	}
}

// phoneCredentials gives the registrar each phone's secret: the password when
// the config has one (so SHA-256 digest works), else the stored MD5 HA1.
func phoneCredentials(cfg *configs.Config) directory.PhoneMap {
	dir := make(directory.PhoneMap, len(cfg.Phones))
	for _, p := range cfg.Phones {
		c := directory.Credential{User: p.User, Password: p.Password.Value()}
		if c.Password == "" {
			c.HA1 = p.HA1.Value()
		}
		dir[p.User] = c
	}
	return dir
}

// prepare is the SIP side's half of a reload (configs.Prepare): every
// component builds and checks its new state, and only if all of them accept
// does the returned commit put them in force, in an order that matters. The
// relay is reached here too: media.timeout and twilio.media_cidrs apply to
// the running relay. Listener changes need a restart (the reload result
// says so).
func (s *sipSide) prepare(_, cfg *configs.Config) (func(), error) {
	type step struct {
		name    string
		prepare func() (func(), error)
	}
	steps := []step{
		{"registrar", func() (func(), error) { return s.reg.Prepare(registrarSettings(cfg), phoneCredentials(cfg)) }},
		// The monitor before upstream: a new edge order is its decision,
		// and the upstream manager follows its change event with paced,
		// make-before-break moves.
		// sip.tls: the listeners' next handshake uses the files' pair.
		{"sip tls certificate", func() (func(), error) { return s.server.PrepareTLS(cfg.SIP.TLS.CertFile, cfg.SIP.TLS.KeyFile) }},
		// twilio.ca_file: the next TLS handshake with an edge uses it.
		{"twilio tls", func() (func(), error) {
			roots, err := twilioRoots(cfg)
			return func() { s.tls.SetRoots(roots) }, err
		}},
		{"edge monitor", func() (func(), error) { return s.edges.Prepare(edgeSettings(cfg)) }},
		{"upstream registration", func() (func(), error) { return s.upstream.Prepare(upstreamSettings(cfg), upstreamDirectory(cfg)) }},
		{"media relay", func() (func(), error) { return s.relay.Prepare(mediaSettings(cfg)) }},
		// Calls in progress keep the snapshot they started with.
		{"calls", func() (func(), error) {
			return s.calls.Prepare(b2buaSettings(cfg), phoneCredentials(cfg), upstreamDirectory(cfg))
		}},
	}
	commits := make([]func(), 0, len(steps))
	for _, st := range steps {
		commit, err := st.prepare()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", st.name, err)
		}
		commits = append(commits, commit)
	}
	return func() {
		for _, c := range commits {
			c()
		}
	}, nil
}

// run serves SIP and runs the registrar's background work until ctx is done.
//
// Shutdown runs in two steps: when ctx is done the B2BUA hangs up the calls
// in progress first (its BYEs go out through the server and the relay), and
// only then are the server, the relay and the rest stopped.
func (s *sipSide) run(ctx context.Context) error {
	defer s.tls.Close()
	infra, stopInfra := context.WithCancel(context.WithoutCancel(ctx))
	defer stopInfra()
	g, gctx := errgroup.WithContext(infra)
	g.Go(func() error { return s.server.Run(gctx) })
	g.Go(func() error { return s.reg.Run(gctx) })
	g.Go(func() error { return s.relay.Run(gctx) })
	// Probes, upstream REGISTERs and calls use the SIP listeners.
	afterReady := func(ctx context.Context, run func(context.Context) error) func() error {
		return func() error {
			select {
			case <-s.server.Ready():
			case <-ctx.Done():
				return nil
			}
			return run(ctx)
		}
	}
	g.Go(afterReady(gctx, s.edges.Run))
	g.Go(afterReady(gctx, s.upstream.Run))

	calls, stopCalls := context.WithCancel(ctx)
	defer stopCalls()
	stop := context.AfterFunc(gctx, stopCalls) // a failed component ends the calls too
	defer stop()
	g.Go(func() error {
		err := afterReady(calls, s.calls.Run)()
		if s.browsers != nil {
			s.browsers.Close() // after the calls: their bridges are closed already
		}
		stopInfra() // calls are over: stop everything else
		return err
	})
	return g.Wait()
}

// drain starts a graceful stop: REGISTERs and new calls get 503 with
// Retry-After while calls in progress go on. The channel is closed once no
// call is left. Upstream registrations stay: a restarted edgewise resumes
// them, and phones' bindings are persisted.
func (s *sipSide) drain(retryAfter time.Duration) <-chan struct{} {
	s.retryAfter.Store(int64(max(1, retryAfter/time.Second)))
	s.journal.add(admin.Event{Kind: "drain", Severity: "warn", Text: fmt.Sprintf("graceful stop: refusing new calls and registrations (Retry-After %s), %d calls in progress", retryAfter, len(s.calls.Calls()))})
	return s.calls.Drain(retryAfter)
}

// draining reports whether a graceful stop began.
func (s *sipSide) draining() bool { return s.retryAfter.Load() != 0 }

// refuseWhileDraining answers REGISTERs with 503 and Retry-After during a
// graceful stop (RFC 3261 §21.5.4), so phones retry after the restart or
// use their backup registrar rather than count a failure.
func (s *sipSide) refuseWhileDraining(h frontend.Handler) frontend.Handler {
	return func(req *sip.Request, tx sip.ServerTransaction) {
		secs := s.retryAfter.Load()
		if secs == 0 {
			h(req, tx)
			return
		}
		res := sip.NewResponseFromRequest(req, sip.StatusServiceUnavailable, "Service Unavailable - Shutting Down", nil)
		res.AppendHeader(sip.NewHeader("Retry-After", strconv.FormatInt(secs, 10)))
		if err := tx.Respond(res); err != nil {
			s.logger.Debug("503 to a REGISTER not sent", "error", err)
		}
	}
}

// digestAlgorithms maps the configured names onto the registrar's algorithms;
// configs has validated them.
func digestAlgorithms(names []string) []digest.Algorithm {
	algs := make([]digest.Algorithm, 0, len(names))
	for _, n := range names {
		if a, err := digest.ParseAlgorithm(n); err == nil {
			algs = append(algs, a)
		}
	}
	return algs
}

// decorate adds edge health and each user's upstream registration to the
// status document.
func (s *sipSide) decorate(doc *admin.Status) {
	doc.Events = s.journal.recent(doc.Config.Reloads)
	doc.Edges = s.edges.Status()
	doc.Calls = s.calls.Calls()
	sv := s.calls.Survival()
	doc.Survival = &sv
	for i := range doc.Users {
		if st, ok := s.upstream.Status(doc.Users[i].User); ok {
			doc.Users[i].Upstream = &st
		}
	}
}
