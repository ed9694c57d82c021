package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strconv"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus"
	bolt "go.etcd.io/bbolt"
	"golang.org/x/sync/errgroup"

	"github.com/edgewise-sip/edgewise/configs"
	"github.com/edgewise-sip/edgewise/registrar"
	"github.com/edgewise-sip/edgewise/registrar/digest"
	"github.com/edgewise-sip/edgewise/registrar/edge"
	"github.com/edgewise-sip/edgewise/registrar/location"
	"github.com/edgewise-sip/edgewise/registrar/sipserver"
	"github.com/edgewise-sip/edgewise/registrar/upstream"
)

// sipSide is the SIP stack: listeners, the local registrar, the edge
// monitor and the upstream registrations that follow it.
type sipSide struct {
	logger   *slog.Logger
	server   *sipserver.Server
	reg      *registrar.Registrar
	edges    *edge.Monitor
	upstream *upstream.Manager
	tls      *edge.TLSClients
}

func newSIPSide(cfg *configs.Config, table *location.Table, db *bolt.DB, logger *slog.Logger, metrics prometheus.Registerer) (*sipSide, error) {
	srv, err := sipserver.New(sipServerSettings(cfg), logger.With("component", "sip"))
	if err != nil {
		return nil, err
	}
	reg, err := registrar.New(table, registrarSettings(cfg), phoneCredentials(cfg), registrar.Options{
		Logger: logger.With("component", "registrar"),
		Pinger: srv,
	})
	if err != nil {
		return nil, err
	}
	srv.HandleStateless(sip.REGISTER, reg.ServeRegister)
	srv.SetGuard(reg.Blocked)

	// TLS to Twilio needs one client per edge FQDN so SNI and certificate
	// checks name the FQDN while packets go to one explicit IP.
	host, port := cfg.SIP.Advertise()
	tlsClients := edge.NewTLSClients(nil,
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
	up, err := upstream.New(upstreamSettings(cfg), upstreamDirectory(cfg), upstream.Options{
		Edges:    mon,
		Bindings: table,
		Sender:   upstream.ClientSender{Client: client, TLS: tlsClients.Client},
		DB:       db,
		Logger:   logger.With("component", "upstream"),
	})
	if err != nil {
		return nil, err
	}
	metrics.MustRegister(reg.Collector(), mon, up)
	return &sipSide{logger: logger, server: srv, reg: reg, edges: mon, upstream: up, tls: tlsClients}, nil
}

// upstreamClient is the client for requests to Twilio. Over UDP they leave
// from the first UDP listener, so Twilio's answers and its INVITEs to our
// Contact come back through the socket (and NAT binding) the Via names.
func upstreamClient(cfg *configs.Config, srv *sipserver.Server) (*sipgo.Client, error) {
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
	}
}

func upstreamSettings(cfg *configs.Config) upstream.Settings {
	host, port := cfg.SIP.Advertise()
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

func upstreamDirectory(cfg *configs.Config) upstream.StaticDirectory {
	dir := make(upstream.StaticDirectory, len(cfg.Phones))
	for _, p := range cfg.Phones {
		dir[p.User] = upstream.Credentials{User: p.TwilioUser, Password: p.TwilioPassword.Value()}
	}
	return dir
}

func sipServerSettings(cfg *configs.Config) sipserver.Settings {
	s := sipserver.Settings{UserAgent: "edgewise/" + version}
	for _, l := range cfg.SIP.Listen {
		s.Listen = append(s.Listen, sipserver.Listen{Transport: l.Transport, Host: l.Host, Port: l.Port})
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
		Lockout: registrar.Lockout{
			Failures: s.Lockout.Failures,
			Window:   s.Lockout.Window,
			Duration: s.Lockout.Duration,
		},
	}
}

// phoneCredentials gives the registrar each phone's secret: the password when
// the config has one (so SHA-256 digest works), else the stored MD5 HA1.
func phoneCredentials(cfg *configs.Config) registrar.MapDirectory {
	dir := make(registrar.MapDirectory, len(cfg.Phones))
	for _, p := range cfg.Phones {
		c := registrar.Credential{User: p.User, Password: p.Password.Value()}
		if c.Password == "" {
			c.HA1 = p.HA1.Value()
		}
		dir[p.User] = c
	}
	return dir
}

// apply takes a reloaded config. Listener changes need a restart (the reload
// result says so); everything else applies at once.
func (s *sipSide) apply(cfg *configs.Config) {
	// configs validated the file; a refusal below is a disagreement between
	// two validations and must be visible.
	if err := s.reg.Apply(registrarSettings(cfg), phoneCredentials(cfg)); err != nil {
		s.logger.Error("registrar refused the reloaded settings; keeping the old ones", "error", err)
	}
	// The monitor first: a new edge order is its decision, and the upstream
	// manager follows its change event with paced, make-before-break moves.
	if err := s.edges.Apply(edgeSettings(cfg)); err != nil {
		s.logger.Error("edge monitor refused the reloaded settings; keeping the old ones", "error", err)
	}
	if err := s.upstream.Apply(upstreamSettings(cfg), upstreamDirectory(cfg)); err != nil {
		s.logger.Error("upstream registration refused the reloaded settings; keeping the old ones", "error", err)
	}
}

// run serves SIP and runs the registrar's background work until ctx is done.
func (s *sipSide) run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer s.tls.Close()
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return s.server.Run(gctx) })
	g.Go(func() error { return s.reg.Run(gctx) })
	// Probes and upstream REGISTERs leave through the SIP listeners.
	afterReady := func(run func(context.Context) error) func() error {
		return func() error {
			select {
			case <-s.server.Ready():
			case <-gctx.Done():
				return nil
			}
			return run(gctx)
		}
	}
	g.Go(afterReady(s.edges.Run))
	g.Go(afterReady(s.upstream.Run))
	return g.Wait()
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
func (s *sipSide) decorate(doc *statusDoc) {
	doc.Edges = s.edges.Status()
	for i := range doc.Users {
		if st, ok := s.upstream.Status(doc.Users[i].User); ok {
			doc.Users[i].Upstream = &st
		}
	}
}
