// Package upstreambench measures how fast the upstream registration manager
// fails over, against an embedded edgesim on loopback: N users registered
// at ashburn, ashburn set to drop, and three figures (README, "Benchmarks"):
//
//	(a) time until the edge monitor declares ashburn down;
//	(b) time until every user is registered at umatilla;
//	(c) the longest window in which any single user had no live binding
//	    through a healthy edge.
//
// It is a separate package so the daemon never links edgesim; the benchmark
// harness (test/bench, suite "failover") calls Failover.
package upstreambench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/emiago/sipgo"

	"github.com/edgewise-sip/edgewise/registrar/directory"
	"github.com/edgewise-sip/edgewise/registrar/location"
	"github.com/edgewise-sip/edgewise/registrar/twilio/edge"
	"github.com/edgewise-sip/edgewise/registrar/twilio/upstream"
	"github.com/edgewise-sip/edgewise/test/edgesim"
)

// Config is one failover measurement. Zero fields take production defaults.
type Config struct {
	Users             int           // default 1000
	Timeout           time.Duration // per-IP timeout; default 4s
	KeepaliveInterval time.Duration // default 10s
	KeepaliveMethod   string        // options (default), register or none
	RegisterExpires   time.Duration // default 600s
	MoveRate          int           // default 500
	MoveConcurrency   int           // default 50
	// Net picks the loopback addresses: ashburn on 127.<Net>.1.1-3,
	// umatilla on 127.<Net>.2.1-3. Default 203.
	Net int
	// Poll is how often edgesim's binding table is sampled for (b) and
	// (c); default 10ms (the figures' resolution).
	Poll time.Duration
	// WorstPhase drops the edge just after a keepalive round has found it
	// alive (options: OPTIONS, register: REGISTER), so detection takes the
	// longest: a full interval plus the timeout. Otherwise the drop lands
	// wherever the probe cycle happens to be.
	WorstPhase bool
	// Limit bounds the whole measurement; default 15 minutes.
	Limit  time.Duration
	Logger *slog.Logger // default: discard
}

func (c Config) withDefaults() Config {
	if c.Users == 0 {
		c.Users = 1000
	}
	if c.Timeout == 0 {
		c.Timeout = edge.DefaultTimeout
	}
	if c.KeepaliveInterval == 0 {
		c.KeepaliveInterval = edge.DefaultKeepaliveInterval
	}
	if c.KeepaliveMethod == "" {
		c.KeepaliveMethod = edge.KeepaliveOptions
	}
	if c.RegisterExpires == 0 {
		c.RegisterExpires = upstream.DefaultRegisterExpires
	}
	if c.MoveRate == 0 {
		c.MoveRate = upstream.DefaultMoveRate
	}
	if c.MoveConcurrency == 0 {
		c.MoveConcurrency = upstream.DefaultMoveConcurrency
	}
	if c.Net == 0 {
		c.Net = 203
	}
	if c.Poll == 0 {
		c.Poll = 10 * time.Millisecond
	}
	if c.Limit == 0 {
		c.Limit = 15 * time.Minute
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Figures are the results of one measurement.
type Figures struct {
	Config Config
	// Registered is how long the initial registration of every user took.
	Registered time.Duration
	// DetectDown is (a): from the drop to the monitor's failover.
	DetectDown time.Duration
	// AllOnSecondary is (b): from the drop until every user has a live
	// binding through umatilla.
	AllOnSecondary time.Duration
	// MaxGap is (c): the longest time any user had no live binding through
	// an edge that answers (a binding through the dropped edge does not
	// count).
	MaxGap time.Duration
	// MaxGapAny is the longest time any user had no live binding at all in
	// Twilio's (edgesim's) shared table; make-before-break keeps it at 0.
	MaxGapAny time.Duration
	// Target is the promised bound for (c): timeout + keepalive + 2 s.
	Target time.Duration
}

// Failover runs one measurement and tears everything down before it
// returns. Set sipgo's default logger (sip.SetDefaultLogger) beforehand to
// keep its chatter out of the output.
func Failover(ctx context.Context, cfg Config) (Figures, error) {
	cfg = cfg.withDefaults()
	fig := Figures{Config: cfg, Target: cfg.Timeout + cfg.KeepaliveInterval + 2*time.Second}
	ctx, cancel := context.WithTimeout(ctx, cfg.Limit)
	defer cancel()
	log := cfg.Logger

	users := make([]string, cfg.Users)
	twilio := make(map[string]string, cfg.Users) // twilio user → local user
	dir := directory.TwilioMap{}
	sc := edgesim.Config{
		Domain: "bench",
		Edges: []edgesim.EdgeConfig{
			{Name: "ashburn", IPs: addrs(cfg.Net, 1)},
			{Name: "umatilla", IPs: addrs(cfg.Net, 2)},
		},
		Transports: []string{"udp"},
		DNS:        edgesim.DNSConfig{Listen: "127.0.0.1:0"},
		Rules:      edgesim.Rules{MinExpires: 1},
	}
	for i := range users {
		u := fmt.Sprintf("user%05d", i)
		users[i] = u
		tu, pw := "tw"+u, fmt.Sprintf("Bench%05dPassword", i)
		twilio[tu] = u
		dir[u] = directory.TwilioUser{User: tu, Password: pw}
		sc.Credentials = append(sc.Credentials, edgesim.Credential{User: tu, Password: pw})
	}
	sim, err := edgesim.New(sc, log.With("component", "edgesim"))
	if err != nil {
		return fig, err
	}

	var wg sync.WaitGroup
	defer wg.Wait()
	runCtx, stop := context.WithCancel(ctx)
	stopSim, err := sim.Start(runCtx)
	if err != nil {
		stop()
		return fig, fmt.Errorf("edgesim: %w", err)
	}
	defer stopSim() // after stop: the sim outlives the registrations talking to it
	defer stop()

	ua, err := sipgo.NewUA(sipgo.WithUserAgent("edgewise-bench"))
	if err != nil {
		return fig, err
	}
	defer ua.Close()
	client, err := sipgo.NewClient(ua, sipgo.WithClientHostname("127.0.0.1"))
	if err != nil {
		return fig, err
	}
	mon, err := edge.New(edge.Settings{
		Domain: "bench", Edges: []string{"ashburn", "umatilla"}, DNSServer: sim.DNSAddr(),
		Port: sim.Edges()[0].IPs[0].Port, Timeout: cfg.Timeout, KeepaliveInterval: cfg.KeepaliveInterval,
		KeepaliveMethod: cfg.KeepaliveMethod,
	}, edge.NewSIPProber(client), log.With("component", "edge"))
	if err != nil {
		return fig, err
	}
	table := location.NewMemory(log, location.Settings{})
	defer table.Close()
	mgr, err := upstream.New(upstream.Settings{
		Domain: "bench", RegisterExpires: cfg.RegisterExpires, MoveRate: cfg.MoveRate,
		MoveConcurrency: cfg.MoveConcurrency, PublicAddress: "127.0.0.1:5060",
	}, dir, upstream.Options{Edges: mon, Bindings: table, Sender: upstream.ClientSender{Client: client},
		Logger: log.With("component", "upstream")})
	if err != nil {
		return fig, err
	}
	var downMu sync.Mutex
	var downAt time.Time
	cancelSub := mon.Subscribe(func(ch edge.Change) {
		downMu.Lock()
		defer downMu.Unlock()
		if ch.From == "ashburn" && ch.Kind == edge.ChangeFailover && downAt.IsZero() {
			downAt = ch.At
		}
	})
	defer cancelSub()
	wg.Go(func() { _ = mon.Run(runCtx) })
	wg.Go(func() { _ = table.Run(runCtx) })
	wg.Go(func() { _ = mgr.Run(runCtx) })

	start := time.Now()
	for _, u := range users {
		if _, err := table.Update(u, func([]location.Binding) ([]location.Binding, error) {
			return []location.Binding{{
				Contact: "sip:" + u + "@127.0.0.1:5999", Source: netip.MustParseAddrPort("127.0.0.1:5999"),
				Transport: "udp", CallID: "bench-" + u, CSeq: 1, Expires: time.Now().Add(time.Hour), Updated: time.Now(),
			}}, nil
		}); err != nil {
			return fig, err
		}
	}
	onEdge := func(name string) (map[string]bool, map[string]bool) {
		at, any := map[string]bool{}, map[string]bool{}
		for _, b := range sim.Bindings("") {
			u := twilio[b.User]
			any[u] = true
			if b.Edge == name && strings.Contains(b.Contact, "~"+name+"@") {
				at[u] = true
			}
		}
		return at, any
	}
	if err := poll(ctx, cfg.Poll, func() bool {
		at, _ := onEdge("ashburn")
		return len(at) == len(users)
	}); err != nil {
		return fig, fmt.Errorf("initial registration: %w", err)
	}
	fig.Registered = time.Since(start)

	if cfg.WorstPhase && cfg.KeepaliveMethod != edge.KeepaliveNone {
		method := "OPTIONS"
		if cfg.KeepaliveMethod == edge.KeepaliveRegister {
			method = "REGISTER"
		}
		count := func() map[string]uint64 {
			st, _ := sim.Edge("ashburn")
			n := map[string]uint64{}
			for _, ip := range st.IPs {
				n[ip.IP] = ip.Requests[method]
			}
			return n
		}
		// Drop as soon as every IP has had its probe of a new round.
		base := count()
		if err := poll(ctx, time.Millisecond, func() bool {
			for ip, n := range count() {
				if n <= base[ip] {
					return false
				}
			}
			return true
		}); err != nil {
			return fig, fmt.Errorf("waiting for a keepalive round: %w", err)
		}
	}

	// Break the primary and watch every user.
	if err := sim.SetEdgeMode("ashburn", edgesim.ModeSetting{Mode: edgesim.ModeDrop}); err != nil {
		return fig, err
	}
	dropped := time.Now()
	lastOK := make(map[string]time.Time, len(users))
	lastAny := make(map[string]time.Time, len(users))
	for _, u := range users {
		lastOK[u], lastAny[u] = dropped, dropped
	}
	err = poll(ctx, cfg.Poll, func() bool {
		now := time.Now()
		at, any := onEdge("umatilla")
		for _, u := range users {
			if at[u] {
				lastOK[u] = now
			} else {
				fig.MaxGap = max(fig.MaxGap, now.Sub(lastOK[u]))
			}
			if any[u] {
				lastAny[u] = now
			} else {
				fig.MaxGapAny = max(fig.MaxGapAny, now.Sub(lastAny[u]))
			}
		}
		if len(at) == len(users) {
			fig.AllOnSecondary = now.Sub(dropped)
			return true
		}
		return false
	})
	if err != nil {
		return fig, fmt.Errorf("failover: %w", err)
	}
	downMu.Lock()
	if !downAt.IsZero() {
		fig.DetectDown = downAt.Sub(dropped)
	}
	downMu.Unlock()
	if fig.DetectDown == 0 {
		return fig, errors.New("the monitor never declared ashburn down")
	}
	return fig, nil
}

func addrs(n, edge int) []string {
	out := make([]string, 3)
	for i := range out {
		out[i] = fmt.Sprintf("127.%d.%d.%d", n, edge, i+1)
	}
	return out
}

// poll calls cond every d until it holds or ctx ends.
func poll(ctx context.Context, d time.Duration, cond func() bool) error {
	t := time.NewTicker(d)
	defer t.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	return nil
}

// Table formats figures as a plain-text table for the benchmark notes.
func Table(figs []Figures) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%-9s %-6s %6s %8s %9s %8s | %10s %12s %10s %10s %10s\n",
		"keepalive", "phase", "users", "timeout", "interval", "expires",
		"(a) down", "(b) all 2nd", "(c) gap", "gap (any)", "target c")
	for _, f := range figs {
		c := f.Config
		interval, phase := c.KeepaliveInterval.String(), "any"
		if c.WorstPhase {
			phase = "worst"
		}
		if c.KeepaliveMethod == edge.KeepaliveNone {
			interval, phase = "-", "-"
		}
		fmt.Fprintf(&b, "%-9s %-6s %6d %8s %9s %8s | %10s %12s %10s %10s %10s\n",
			c.KeepaliveMethod, phase, c.Users, c.Timeout, interval, c.RegisterExpires,
			round(f.DetectDown), round(f.AllOnSecondary), round(f.MaxGap), round(f.MaxGapAny), f.Target)
	}
	return b.String()
}

func round(d time.Duration) string { return d.Round(10 * time.Millisecond).String() }
