package main

import (
	"context"
	"fmt"
	"log/slog"
	"sync"

	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgewise-sip/edgewise/configs"
	"github.com/edgewise-sip/edgewise/registrar"
	"github.com/edgewise-sip/edgewise/registrar/digest"
	"github.com/edgewise-sip/edgewise/registrar/location"
	"github.com/edgewise-sip/edgewise/registrar/sipserver"
)

// sipSide is the phone-facing SIP stack: listeners and the local registrar.
type sipSide struct {
	logger *slog.Logger
	server *sipserver.Server
	reg    *registrar.Registrar
}

func newSIPSide(cfg *configs.Config, table *location.Table, logger *slog.Logger, metrics prometheus.Registerer) (*sipSide, error) {
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
	metrics.MustRegister(reg.Collector())
	return &sipSide{logger: logger, server: srv, reg: reg}, nil
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
	if err := s.reg.Apply(registrarSettings(cfg), phoneCredentials(cfg)); err != nil {
		// configs validated the file; this is a disagreement between the two
		// validations and must be visible.
		s.logger.Error("registrar refused the reloaded settings; keeping the old ones", "error", err)
	}
}

// run serves SIP and runs the registrar's background work until ctx is done.
func (s *sipSide) run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	var regErr error
	wg.Go(func() { regErr = s.reg.Run(ctx) })
	err := s.server.Run(ctx)
	cancel() // a listener that failed stops the registrar's loops too
	wg.Wait()
	if err != nil {
		return err
	}
	return regErr
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
