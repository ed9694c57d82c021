package upstream

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"runtime/pprof"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus/testutil"
	bolt "go.etcd.io/bbolt"

	"github.com/edgewise-sip/edgewise/registrar/directory"
	"github.com/edgewise-sip/edgewise/registrar/location"
	"github.com/edgewise-sip/edgewise/registrar/twilio/edge"
	"github.com/edgewise-sip/edgewise/test/edgesim"
	"github.com/edgewise-sip/edgewise/test/kit"
)

// Test timings, scaled down from production (4 s timeout, 10 s keepalive,
// 60 s failback hold) so failovers happen in well under a second.
const (
	testTimeout   = 300 * time.Millisecond
	testKeepalive = 500 * time.Millisecond
	testHold      = time.Second
	testDomain    = "example"
	publicAddr    = "127.0.0.1:5099"
)

func TestMain(m *testing.M) {
	// sipgo logs through a package default; keep test output to ours.
	sip.SetDefaultLogger(slog.New(slog.DiscardHandler))
	os.Exit(m.Run())
}

// logBuffer collects log output across goroutines; on failure the test
// prints it.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// testLogger logs into a buffer dumped when the test fails, or to stderr
// with EDGEWISE_TEST_LOG=debug|info.
func testLogger(t *testing.T) (*slog.Logger, *logBuffer) {
	buf := &logBuffer{}
	var w io.Writer = buf
	level := slog.LevelDebug
	if lvl := os.Getenv("EDGEWISE_TEST_LOG"); lvl != "" {
		_ = level.UnmarshalText([]byte(lvl))
		w = io.MultiWriter(buf, os.Stderr)
	}
	t.Cleanup(func() {
		if t.Failed() && os.Getenv("EDGEWISE_TEST_LOG") == "" {
			t.Logf("log:\n%s", buf.String())
		}
	})
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level})), buf
}

// envConfig varies the environment per test.
type envConfig struct {
	net        kit.Net // the test's loopback /24; newEnv reserves one when zero
	users      int
	expires    time.Duration // upstream register_expires; default 60 s
	keepalive  string        // keepalive method; default options
	hold       time.Duration
	dnsTTL     int // seconds; default 600
	minExpires int // edgesim's; default 1
	db         *bolt.DB
	table      *location.Table // a persistent table; default memory
	passwords  map[string]string
	public     string
	sim        *edgesim.Sim // reuse (restart tests); default a new one
	noBind     bool         // do not bind the users locally (they come from a persisted table)
	moveRate   int
	moveConc   int
	edges      []string // the monitor's order; default ashburn, umatilla
	wrap       func(Sender) Sender
	rate       int  // edgesim's per-AOR REGISTER rate; default Twilio's 5
	maxRegs    int  // edgesim's registrations per AOR; default Twilio's 10
	limited    bool // the test provokes the rate limit on purpose
}

// env is an embedded edgesim with ashburn (127.201.N.1-3) and umatilla
// (127.201.N.11-13), a real edge.Monitor probing it, a location table and
// the Manager under test.
type env struct {
	t      *testing.T
	cfg    envConfig
	sim    *edgesim.Sim
	port   int
	client *sipgo.Client
	mon    *edge.Monitor
	table  *location.Table
	mgr    *Manager
	dir    directory.TwilioMap
	logs   *logBuffer
	log    *slog.Logger
	users  []string
	stop   func() // stops the Manager and waits for Run
}

func userName(i int) string { return fmt.Sprintf("u%03d", i) }

// twilioUser differs from the local user so the tests see that the AOR is
// the Twilio user and the Contact the local one.
func twilioUser(user string) string { return "tw_" + user }

func twilioPassword(user string) string { return "Pass" + user + "Word9" }

// startSim runs an edgesim until the test ends.
func startSim(t *testing.T, cfg envConfig, log *slog.Logger, extraUsers ...string) *edgesim.Sim {
	t.Helper()
	n := cfg.net
	if n == (kit.Net{}) {
		t.Fatal("startSim: envConfig.net not set")
	}
	sc := edgesim.Config{
		Domain: testDomain,
		Edges: []edgesim.EdgeConfig{
			{Name: "ashburn", IPs: []string{n.Addr(1), n.Addr(2), n.Addr(3)}},
			{Name: "umatilla", IPs: []string{n.Addr(11), n.Addr(12), n.Addr(13)}},
		},
		Transports: []string{"udp"},
		DNS:        edgesim.DNSConfig{Listen: "127.0.0.1:0", TTL: cfg.dnsTTL},
		Rules:      edgesim.Rules{MinExpires: cfg.minExpires, RegisterRate: cfg.rate, MaxRegistrations: cfg.maxRegs},
		SlowDelay:  time.Second,
	}
	users := extraUsers
	for i := range cfg.users {
		users = append(users, userName(i))
	}
	for _, u := range users {
		sc.Credentials = append(sc.Credentials, edgesim.Credential{User: twilioUser(u), Password: twilioPassword(u)})
	}
	sim, err := edgesim.New(sc, log.With("component", "edgesim"))
	if err != nil {
		t.Fatalf("edgesim: %v", err)
	}
	stop, err := sim.Start(context.Background())
	if err != nil {
		t.Fatalf("edgesim: %v", err)
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("edgesim: %v", err)
		}
	})
	return sim
}

func (c envConfig) withDefaults() envConfig {
	if c.expires == 0 {
		c.expires = 60 * time.Second
	}
	if c.keepalive == "" {
		c.keepalive = edge.KeepaliveOptions
	}
	if c.hold == 0 {
		c.hold = testHold
	}
	if c.dnsTTL == 0 {
		c.dnsTTL = 600
	}
	if c.minExpires == 0 {
		c.minExpires = 1
	}
	if c.public == "" {
		c.public = publicAddr
	}
	if c.moveRate == 0 {
		c.moveRate = 500
	}
	if c.moveConc == 0 {
		c.moveConc = 50
	}
	return c
}

// newEnv starts edgesim, the monitor, the table and the Manager, binds
// every user locally, and stops and checks everything when the test ends.
func newEnv(t *testing.T, cfg envConfig) *env {
	t.Helper()
	cfg = cfg.withDefaults()
	if cfg.net == (kit.Net{}) {
		cfg.net = kit.NewNet(t)
	}
	log, logs := testLogger(t)
	e := &env{t: t, cfg: cfg, logs: logs, log: log, dir: directory.TwilioMap{}}
	e.sim = cfg.sim
	if e.sim == nil {
		e.sim = startSim(t, cfg, log, "carol", "dave")
	}
	e.port = e.sim.Edges()[0].IPs[0].Port

	ua, err := sipgo.NewUA(sipgo.WithUserAgent("edgewise-test"))
	if err != nil {
		t.Fatal(err)
	}
	e.client, err = sipgo.NewClient(ua, sipgo.WithClientHostname("127.0.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	order := cfg.edges
	if len(order) == 0 {
		order = []string{"ashburn", "umatilla"}
	}
	e.mon, err = edge.New(e.edgeSettings(order...), edge.NewSIPProber(e.client), log.With("component", "edge"))
	if err != nil {
		t.Fatal(err)
	}
	e.table = cfg.table
	if e.table == nil {
		e.table = location.NewMemory(log, location.Settings{SweepInterval: 50 * time.Millisecond})
	}
	for i := range cfg.users {
		u := userName(i)
		e.users = append(e.users, u)
		e.dir[u] = directory.TwilioUser{User: twilioUser(u), Password: twilioPassword(u)}
	}
	for u, pw := range cfg.passwords {
		c := e.dir[u]
		c.Password = pw
		e.dir[u] = c
	}
	var sender Sender = ClientSender{Client: e.client}
	if cfg.wrap != nil {
		sender = cfg.wrap(sender)
	}
	e.mgr, err = New(e.settings(), e.dir, Options{
		Edges: e.mon, Bindings: e.table, Sender: sender, DB: cfg.db, Logger: log.With("component", "upstream"),
	})
	if err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	mgrDone := make(chan error, 1)
	wg.Go(func() { _ = e.mon.Run(ctx) })
	wg.Go(func() { _ = e.table.Run(ctx) })
	go func() { mgrDone <- e.mgr.Run(ctx) }()
	var once sync.Once
	e.stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-mgrDone:
				if err != nil {
					t.Errorf("Manager.Run: %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Error("Manager.Run did not return within 10s of cancel")
			}
			wg.Wait()
			_ = ua.Close()
			checkNoManagerGoroutines(t, e.mgr)
			// Twilio's 5 REGISTERs per second per AOR must never be hit.
			for _, k := range []string{kindRegister, kindRefresh, kindMove, kindCleanup} {
				if n := testutil.ToFloat64(e.mgr.metrics.requests.WithLabelValues(k, resLimited)); n != 0 && !cfg.limited {
					t.Errorf("%v %s REGISTERs hit the per-AOR rate limit", n, k)
				}
			}
			if cfg.table == nil {
				_ = e.table.Close()
			}
		})
	}
	t.Cleanup(e.stop)
	if !cfg.noBind {
		for _, u := range e.users {
			e.bind(u, time.Hour)
		}
	}
	return e
}

func (e *env) edgeSettings(edges ...string) edge.Settings {
	return edge.Settings{
		Domain:            testDomain,
		Edges:             edges,
		DNSServer:         e.sim.DNSAddr(),
		Port:              e.port,
		Timeout:           testTimeout,
		KeepaliveInterval: testKeepalive,
		FailbackHold:      e.cfg.hold,
		KeepaliveMethod:   e.cfg.keepalive,
	}
}

func (e *env) settings() Settings {
	return Settings{
		Domain:          testDomain,
		RegisterExpires: e.cfg.expires,
		MoveRate:        e.cfg.moveRate,
		MoveConcurrency: e.cfg.moveConc,
		PublicAddress:   e.cfg.public,
		UserAgent:       "edgewise-test",
	}
}

// bind gives user one local binding for ttl.
func (e *env) bind(user string, ttl time.Duration) {
	e.t.Helper()
	_, err := e.table.Update(user, func(cur []location.Binding) ([]location.Binding, error) {
		now := time.Now()
		return append(cur, location.Binding{
			Contact:   "sip:" + user + "@127.0.0.1:5999",
			Source:    netip.MustParseAddrPort("127.0.0.1:5999"),
			Transport: "udp",
			CallID:    "local-" + user,
			CSeq:      1,
			Expires:   now.Add(ttl),
			Updated:   now,
		}), nil
	})
	if err != nil {
		e.t.Fatalf("bind %s: %v", user, err)
	}
}

// unbind removes every local binding of user.
func (e *env) unbind(user string) {
	e.t.Helper()
	if _, err := e.table.Update(user, func([]location.Binding) ([]location.Binding, error) { return nil, nil }); err != nil {
		e.t.Fatalf("unbind %s: %v", user, err)
	}
}

// upstream returns the live bindings edgesim holds for user's AOR.
func (e *env) upstream(user string) []edgesim.Binding {
	return e.sim.Bindings(twilioUser(user))
}

// onEdge reports whether user has a live upstream binding through edgeName
// with the Contact for that edge.
func (e *env) onEdge(user, edgeName string) bool {
	want := "sip:" + directory.ContactUser(user, edgeName) + "@" + e.cfg.public
	for _, b := range e.upstream(user) {
		if b.Edge == edgeName && b.Contact == want {
			return true
		}
	}
	return false
}

// allOn reports whether every user is registered through edgeName, per
// edgesim and per the Manager's status.
func (e *env) allOn(edgeName string) bool {
	for _, u := range e.users {
		st, ok := e.mgr.Status(u)
		if !ok || st.State != StateRegistered || st.Edge != edgeName || !e.onEdge(u, edgeName) {
			return false
		}
	}
	return true
}

// onlyOn reports whether every user has exactly one upstream binding, through edgeName.
func (e *env) onlyOn(edgeName string) bool {
	if !e.allOn(edgeName) {
		return false
	}
	for _, u := range e.users {
		if len(e.upstream(u)) != 1 {
			return false
		}
	}
	return true
}

func (e *env) edgeStatus(name string) edge.EdgeStatus {
	for _, s := range e.mon.Status() {
		if s.Name == name {
			return s
		}
	}
	e.t.Fatalf("no edge %s", name)
	return edge.EdgeStatus{}
}

func (e *env) setEdge(name string, mode edgesim.Mode) {
	e.t.Helper()
	if err := e.sim.SetEdgeMode(name, edgesim.ModeSetting{Mode: mode}); err != nil {
		e.t.Fatal(err)
	}
}

// never polls for the whole of d and fails if cond ever holds: for
// asserting that something does not happen within a window.
func never(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if cond() {
			t.Fatalf("%s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// watcher checks edgesim's binding table continuously: at every poll every
// user must have at least one live upstream binding (make-before-break:
// never registered nowhere).
type watcher struct {
	stop  chan struct{}
	done  chan struct{}
	mu    sync.Mutex
	polls int
	gaps  []string
}

func (e *env) watch() *watcher {
	w := &watcher{stop: make(chan struct{}), done: make(chan struct{})}
	poll := func() {
		have := map[string]bool{}
		for _, b := range e.sim.Bindings("") {
			have[b.User] = true
		}
		w.mu.Lock()
		defer w.mu.Unlock()
		w.polls++
		for _, u := range e.users {
			if !have[twilioUser(u)] && len(w.gaps) < 20 {
				w.gaps = append(w.gaps, fmt.Sprintf("%s registered nowhere at %s", u, time.Now().Format("15:04:05.000")))
			}
		}
	}
	// The first poll happens before watch returns, so the window watched
	// covers whatever the test does next.
	poll()
	go func() {
		defer close(w.done)
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-w.stop:
				poll()
				return
			case <-tick.C:
				poll()
			}
		}
	}()
	return w
}

// check stops the watcher and fails the test if a user was ever unbound.
func (w *watcher) check(t *testing.T) {
	t.Helper()
	close(w.stop)
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.gaps) > 0 {
		t.Errorf("after %d polls, users were registered nowhere:\n%s", w.polls, strings.Join(w.gaps, "\n"))
	}
}

// checkNoManagerGoroutines fails if any goroutine Run started (they carry
// its pprof labels) still runs this package's code after Run returned. It
// looks at labels and stacks, not counts, so it holds while other tests
// run in parallel.
func checkNoManagerGoroutines(t *testing.T, m *Manager) {
	t.Helper()
	label := `"manager":"` + m.id() + `"`
	// Frames of this package's code, named by its import path so a move of
	// the package cannot silently make the check match nothing.
	pkg := reflect.TypeFor[Manager]().PkgPath() + "."
	deadline := time.Now().Add(3 * time.Second)
	for {
		var buf bytes.Buffer
		if err := pprof.Lookup("goroutine").WriteTo(&buf, 1); err != nil {
			t.Fatal(err)
		}
		var leaked []string
		for _, g := range strings.Split(buf.String(), "\n\n") {
			if strings.Contains(g, label) && strings.Contains(g, pkg) {
				leaked = append(leaked, g)
			}
		}
		if len(leaked) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("goroutine leak: %d goroutines still in the Manager after Run returned:\n%s", len(leaked), strings.Join(leaked, "\n\n"))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// openDB opens a bbolt file in dir as cmd/edgewise does.
func openDB(t *testing.T, dir string) *bolt.DB {
	t.Helper()
	db, err := bolt.Open(filepath.Join(dir, "edgewise.db"), 0o600, &bolt.Options{Timeout: 2 * time.Second, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	return db
}
