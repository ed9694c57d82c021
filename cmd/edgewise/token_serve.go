package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sync/errgroup"

	"github.com/edgewise-sip/edgewise/cmd/edgewise/admin"
	"github.com/edgewise-sip/edgewise/configs"
	"github.com/edgewise-sip/edgewise/registrar/lockout"
	"github.com/edgewise-sip/edgewise/token"
)

// cmdToken runs "edgewise token serve": a token provider replica with no SIP,
// so replicas can run in other regions from the same config file.
func cmdToken(args []string, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "serve" {
		fmt.Fprint(stderr, "usage: edgewise token serve -c FILE\n")
		return 2
	}
	cfg, code := loadFromFlags("token serve", args[1:], stderr)
	if cfg == nil {
		return code
	}
	if cfg.Token == nil {
		fmt.Fprintf(stderr, "%s: no token section: the token provider is not configured\n", cfg.Path)
		return 1
	}
	return runUntilSignal(cfg, stderr, "token provider", false, serveTokens)
}

// serveTokens serves until ctx ends; a replica has nothing to drain (its
// HTTP server finishes requests in flight when it stops).
func serveTokens(ctx context.Context, cfg *configs.Config, logger *slog.Logger, _ <-chan struct{}) error {
	started := time.Now()
	live := configs.NewLive(cfg, logger.With("component", "config"))
	// A replica has no SIP side to share a lockout with: its own table
	// counts its failed logins, under the same settings.
	locks, err := lockout.New(lockoutSettings(cfg), lockout.Options{Logger: logger.With("component", "lockout")})
	if err != nil {
		return err
	}
	events := &journal{} // the calls the TwiML app hears of
	tokens := token.New(logger, token.WithGuard(tokenGuard{locks}), callEventJournal(events))
	if err := tokens.Apply(tokenSettings(cfg), phoneDirectory{cfg}); err != nil {
		return fmt.Errorf("token: %w", err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), tokens.Collector(), buildInfo(), live)

	adm := admin.New(admin.Options{
		Status: func() admin.Status {
			c := live.Current()
			ready, reason := tokens.Ready()
			return admin.Status{
				Version: version, StartedAt: started, Ready: &ready, Reason: reason,
				Config: admin.ConfigStatus{Path: c.Path, Version: c.Version, Hash: c.Hash, Edges: c.Twilio.Edges,
					LastReload: live.Last(), Reloads: live.History()},
				Events: events.recent(live.History()),
			}
		},
		Reload: func(trigger string) (any, bool) {
			res := live.Reload(trigger)
			return res, res.OK
		},
		Ready:        func() bool { ok, _ := tokens.Ready(); return ok && ctx.Err() == nil },
		Gatherer:     reg,
		AllowedHosts: adminHosts(cfg),
	}, logger.With("component", "admin"))
	adm.SetToken(cfg.Admin.Token.Value())
	reg.MustRegister(adm.Collector())

	live.OnReload("token provider", func(_, cur *configs.Config) (func(), error) {
		if cur.Token == nil {
			return nil, errors.New("the config has no token section: a replica needs one")
		}
		commit, err := tokens.Prepare(tokenSettings(cur), phoneDirectory{cur})
		if err != nil {
			return nil, err
		}
		ls := lockoutSettings(cur)
		if err := ls.Validate(); err != nil {
			return nil, fmt.Errorf("lockout: %w", err)
		}
		return func() {
			commit()
			_ = locks.Apply(ls) // validated above
			adm.SetToken(cur.Admin.Token.Value())
			adm.SetAllowedHosts(adminHosts(cur))
		}, nil
	})

	tokenLn, err := net.Listen("tcp", cfg.Token.Listen)
	if err != nil {
		return fmt.Errorf("token listen %s: %w", cfg.Token.Listen, err)
	}
	adminLn, err := net.Listen("tcp", cfg.Admin.Listen)
	if err != nil {
		tokenLn.Close()
		return fmt.Errorf("admin listen %s: %w", cfg.Admin.Listen, err)
	}
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return tokens.Serve(ctx, tokenLn) })
	g.Go(func() error { return locks.Run(ctx) })
	g.Go(func() error { return adm.Serve(ctx, adminLn) })
	g.Go(func() error { return live.Watch(ctx) })
	g.Go(func() error { return reloadOnSIGHUP(ctx, live) })
	logger.Info("token provider running", "listen", cfg.Token.Listen, "admin", cfg.Admin.Listen, "edges", cfg.Twilio.Edges)
	err = g.Wait()
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	return err
}
