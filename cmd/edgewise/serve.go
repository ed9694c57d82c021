package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	bolt "go.etcd.io/bbolt"
	"golang.org/x/sync/errgroup"

	"github.com/edgewise-sip/edgewise/cmd/edgewise/admin"
	"github.com/edgewise-sip/edgewise/configs"
	"github.com/edgewise-sip/edgewise/registrar/calls"
	"github.com/edgewise-sip/edgewise/registrar/cluster"
	"github.com/edgewise-sip/edgewise/registrar/location"
	"github.com/edgewise-sip/edgewise/registrar/twilio/upstream"
	"github.com/edgewise-sip/edgewise/token"
)

// cmdServe runs the daemon until SIGINT or SIGTERM; SIGTERM drains first.
func cmdServe(args []string, stderr io.Writer) int {
	cfg, code := loadFromFlags("serve", args, stderr)
	if cfg == nil {
		return code
	}
	tuneGC(os.Getenv)
	return runUntilSignal(cfg, stderr, "edgewise", true, serve)
}

// runUntilSignal runs fn with the configured logger until a signal stops it
// and turns its outcome into an exit code. SIGINT stops at once (ctx is
// cancelled). With graceful, the first SIGTERM closes drain instead and fn
// decides how to wind down; a second SIGTERM, or SIGINT, then stops at once.
// Without it SIGTERM stops at once too.
func runUntilSignal(cfg *configs.Config, stderr io.Writer, what string, graceful bool,
	fn func(ctx context.Context, cfg *configs.Config, logger *slog.Logger, drain <-chan struct{}) error) int {
	logger := newLogger(cfg.Log, stderr)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	drain := make(chan struct{})
	watcher := make(chan struct{})
	go func() { // stops with ctx, which the deferred cancel ends
		defer close(watcher)
		draining := false
		for {
			select {
			case <-ctx.Done():
				return
			case sig := <-sigs:
				if sig == syscall.SIGTERM && graceful && !draining {
					draining = true
					logger.Info("SIGTERM: draining; SIGINT or another SIGTERM stops at once")
					close(drain)
					continue
				}
				logger.Info("stopping now", "signal", sig.String())
				cancel()
				return
			}
		}
	}()
	err := fn(ctx, cfg, logger, drain)
	cancel()
	<-watcher
	if err != nil {
		logger.Error(what+" stopped", "error", err)
		return 1
	}
	logger.Info(what + " stopped")
	return 0
}

// newLogger builds the process logger from the log section.
func newLogger(l configs.Log, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: l.Level}
	if l.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// openStore opens the one bbolt file every persisted component shares.
// bbolt's NoSync is safe against kill -9 (written pages are in the OS page
// cache before a request is answered); only power loss can lose them.
func openStore(path string) (*bolt.DB, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout:        2 * time.Second, // another edgewise holding the file is an error, not a hang
		NoSync:         true,
		NoFreelistSync: true,
		FreelistType:   bolt.FreelistMapType,
	})
	if err != nil {
		return nil, fmt.Errorf("store %s: %w", path, err)
	}
	return db, nil
}

// serve wires every component and runs them under one errgroup: the first to
// fail stops the others, and serve returns when all have returned.
//
// drain closing starts a graceful stop (see drainThenStop).
func serve(ctx context.Context, cfg *configs.Config, logger *slog.Logger, drain <-chan struct{}) error {
	started := time.Now()
	live := configs.NewLive(cfg, logger.With("component", "config"))

	db, err := openStore(cfg.Store.Path)
	if err != nil {
		return err
	}
	defer db.Close()
	// One node keeps its bindings in the bbolt file; a cluster shares them
	// in etcd (the file then keeps the node's own upstream state).
	var table *location.Table
	var shared *cluster.Store
	var runShared func(context.Context) error
	if cfg.Store.Backend == "etcd" {
		table, shared, runShared, err = sharedTable(ctx, cfg, logger)
		if err != nil {
			return err
		}
		defer shared.Close()
	} else if table, err = location.OpenDB(db, logger.With("component", "location"), location.Settings{}); err != nil {
		return err
	}
	defer table.Close()

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), buildInfo(), live)

	var owned upstream.Bindings = table
	var owners *cluster.Owners
	var claims calls.CallClaims // nil with one node
	var peers calls.Peers
	if shared != nil {
		claims = shared
		owners = cluster.NewOwners(shared, table, cluster.OwnerSettings{LeaseTTL: cfg.Cluster.LeaseTTL, ClaimRate: float64(cfg.Twilio.Move.Rate)})
		owned = owners
		peers = owners
		reg.MustRegister(cluster.Collector(shared, owners))
	}
	sip, err := newSIPSide(cfg, table, owned, claims, peers, db, logger, reg, &journal{})
	if err != nil {
		return err
	}

	var tokens *token.Provider
	if cfg.Token != nil {
		// Wrong token passwords count toward the SIP lockout and vice versa.
		tokens = token.New(logger, token.WithGuard(tokenGuard{sip.reg.Lockout()}), callEventJournal(sip.journal))
		if err := tokens.Apply(tokenSettings(cfg), phoneDirectory{cfg}); err != nil {
			return fmt.Errorf("token: %w", err)
		}
		reg.MustRegister(tokens.Collector())
	}

	adm := admin.New(admin.Options{
		Status: func() admin.Status {
			doc := buildStatus(started, live, table, time.Now())
			if shared != nil {
				doc.Store.Backend, doc.Store.Node = "etcd", cfg.Cluster.NodeName
				doc.Store.Nodes, doc.Store.Owned = owners.Nodes(), owners.Owned()
				if deg, since := shared.Degraded(); deg {
					doc.Store.DegradedSince = &since
				}
			}
			sip.decorate(&doc)
			return doc
		},
		Reload: func(trigger string) (any, bool) {
			res := live.Reload(trigger)
			return res, res.OK
		},
		// Draining is not ready: load balancers and monitors stop sending.
		Ready: func() bool { return ctx.Err() == nil && !sip.draining() },
		Degraded: func() string {
			if shared == nil {
				return ""
			}
			if deg, since := shared.Degraded(); deg {
				return "etcd unreachable since " + since.UTC().Format(time.RFC3339) + ": serving from memory, changes queued"
			}
			return ""
		},
		Gatherer:     reg,
		AllowedHosts: adminHosts(cfg),
	}, logger.With("component", "admin"))
	adm.SetToken(cfg.Admin.Token.Value())
	reg.MustRegister(adm.Collector())

	// A reload is all or nothing: each component prepares its new state,
	// and only if every one accepts is the config swapped and applied.
	live.OnReload("sip", sip.prepare)
	if tokens != nil {
		live.OnReload("token provider", func(_, cur *configs.Config) (func(), error) {
			if cur.Token == nil {
				return func() {}, nil // removing the section needs a restart (reported as such)
			}
			return tokens.Prepare(tokenSettings(cur), phoneDirectory{cur})
		})
	}
	live.OnReload("admin", func(_, cur *configs.Config) (func(), error) {
		return func() {
			adm.SetToken(cur.Admin.Token.Value())
			adm.SetAllowedHosts(adminHosts(cur))
			if res := live.Last(); len(res.NeedsRestart) > 0 {
				logger.Warn("some changes need a restart to take effect", "fields", res.NeedsRestart)
			}
		}, nil
	})

	adminLn, err := net.Listen("tcp", cfg.Admin.Listen)
	if err != nil {
		return fmt.Errorf("admin listen %s: %w", cfg.Admin.Listen, err)
	}
	var tokenLn net.Listener
	if tokens != nil {
		if tokenLn, err = net.Listen("tcp", cfg.Token.Listen); err != nil {
			adminLn.Close()
			return fmt.Errorf("token listen %s: %w", cfg.Token.Listen, err)
		}
	}

	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return table.Run(ctx) })
	if runShared != nil {
		g.Go(func() error { return runShared(ctx) })
		g.Go(func() error { return owners.Run(ctx) })
	}
	g.Go(func() error { return sip.run(ctx) })
	g.Go(func() error {
		// /healthz answers only once SIP is listening, so "healthy" means
		// phones can register.
		select {
		case <-sip.server.Ready():
		case <-ctx.Done():
			adminLn.Close()
			return nil
		}
		return adm.Serve(ctx, adminLn)
	})
	if tokens != nil {
		g.Go(func() error { return tokens.Serve(ctx, tokenLn) })
	}
	g.Go(func() error { return live.Watch(ctx) })
	g.Go(func() error { return reloadOnSIGHUP(ctx, live) })
	g.Go(func() error { return drainThenStop(ctx, drain, live, sip, logger) })

	logger.Info("edgewise running", "version", version, "config", cfg.String())
	err = g.Wait()
	if errors.Is(err, context.Canceled) || errors.Is(err, errDrained) {
		err = nil
	}
	return err
}

// buildInfo is edgewise_build_info{version,goversion} 1, so dashboards can
// tell which build answered.
func buildInfo() prometheus.Collector {
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "edgewise_build_info",
		Help:        "Always 1, labelled with the edgewise version and the Go version it was built with.",
		ConstLabels: prometheus.Labels{"version": version, "goversion": runtime.Version()},
	})
	g.Set(1)
	return g
}

// errDrained ends the errgroup once a graceful stop has drained: the
// ordinary shutdown then hangs up whatever is left.
var errDrained = errors.New("drained")

// drainThenStop waits for drain, refuses new registrations and calls (503
// with Retry-After), lets the calls in progress end by themselves for up to
// shutdown.drain_timeout, and then stops everything; the shutdown that
// follows sends BYE on both legs of any call still up. Bindings and upstream
// state are in the store, so nothing is lost.
func drainThenStop(ctx context.Context, drain <-chan struct{}, live *configs.Live, sip *sipSide, logger *slog.Logger) error {
	select {
	case <-ctx.Done():
		return nil
	case <-drain:
	}
	sd := live.Current().Shutdown
	started := time.Now()
	idle := sip.drain(sd.RetryAfter)
	deadline := time.NewTimer(sd.DrainTimeout)
	defer deadline.Stop()
	select {
	case <-ctx.Done():
		return nil
	case <-idle:
		logger.Info("drained: every call ended by itself", "took", time.Since(started).Round(time.Millisecond))
	case <-deadline.C:
		logger.Warn("drain deadline passed: hanging up the calls left", "calls", len(sip.calls.Calls()), "drain_timeout", sd.DrainTimeout)
	}
	return errDrained
}

// reloadOnSIGHUP reloads the config on every SIGHUP until ctx is done.
func reloadOnSIGHUP(ctx context.Context, live *configs.Live) error {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-hup:
			live.Reload("sighup")
		}
	}
}
