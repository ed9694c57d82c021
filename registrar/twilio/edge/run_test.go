package edge

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgewise-sip/edgewise/test/kit"
)

// edgeSim is a fake Prober standing in for the edges: per-edge behaviour
// the test flips while Run is probing, and a record of every probe.
type edgeSim struct {
	mu     sync.Mutex
	broken map[string]bool // edge → silent
	probes []probeRecord
}

type probeRecord struct {
	at time.Time
	t  Target
}

func (s *edgeSim) setBroken(edge string, b bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.broken[edge] = b
}

func (s *edgeSim) probe(ctx context.Context, t Target) (Result, error) {
	s.mu.Lock()
	s.probes = append(s.probes, probeRecord{at: time.Now(), t: t})
	broken := s.broken[t.Edge]
	s.mu.Unlock()
	if broken {
		<-ctx.Done() // silent: the Monitor's per-probe timeout must end it
		return Result{}, ctx.Err()
	}
	return Result{StatusCode: 200, RTT: time.Millisecond}, nil
}

func (s *edgeSim) count(edge string, after time.Time) (n int, first time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range s.probes {
		if p.t.Edge == edge && !p.at.Before(after) {
			if n == 0 {
				first = p.at
			}
			n++
		}
	}
	return n, first
}

func simDNS(t *testing.T) *testDNS {
	d := startDNS(t)
	d.set("example.sip.ashburn.twilio.com", 600, "127.0.1.3", "127.0.1.1", "127.0.1.2")
	d.set("example.sip.umatilla.twilio.com", 600, "127.0.2.1", "127.0.2.2")
	return d
}

func newRunning(t *testing.T, s Settings, p Prober, release ...func()) (*Monitor, <-chan Change) {
	t.Helper()
	m, err := New(s, p, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	changes := make(chan Change, 16)
	m.Subscribe(func(c Change) { changes <- c })
	runMonitor(t, m, release...)
	select {
	case <-m.Ready():
	case <-time.After(5 * time.Second):
		t.Fatal("monitor not ready")
	}
	return m, changes
}

func nextChange(t *testing.T, changes <-chan Change, within time.Duration) Change {
	t.Helper()
	select {
	case c := <-changes:
		return c
	case <-time.After(within):
		t.Fatalf("no active-edge change within %s", within)
		return Change{}
	}
}

// End to end with Run: keepalives find a silent edge, the monitor fails over,
// and fails back only after the hold.
func TestRunFailoverAndFailback(t *testing.T) {
	d := simDNS(t)
	sim := &edgeSim{broken: map[string]bool{}}
	s := Settings{
		Domain: "example", Edges: []string{"ashburn", "umatilla"}, DNSServer: d.addr,
		Timeout: 100 * time.Millisecond, KeepaliveInterval: 50 * time.Millisecond, FailbackHold: 300 * time.Millisecond,
		StandbyInterval: time.Hour,
	}
	m, changes := newRunning(t, s, &fakeProber{probe: sim.probe})

	kit.WaitFor(t, 5*time.Second, "ashburn up from keepalives", func() bool {
		return edgeStatus(t, m, "ashburn").State == StateUp
	})
	// The standby gets one round (each IP once) at start, then waits for
	// its hour while the active edge's keepalives go on.
	// Up comes with the first IP's answer; the round is over once both of
	// umatilla's IPs were probed.
	kit.WaitFor(t, 5*time.Second, "umatilla up from its standby round", func() bool {
		n, _ := sim.count("umatilla", time.Time{})
		return edgeStatus(t, m, "umatilla").State == StateUp && n >= 2
	})
	keepalives, _ := sim.count("ashburn", time.Time{})
	standby, _ := sim.count("umatilla", time.Time{})
	kit.WaitFor(t, 5*time.Second, "three more ashburn keepalives", func() bool {
		n, _ := sim.count("ashburn", time.Time{})
		return n >= keepalives+3*3
	})
	if n, _ := sim.count("umatilla", time.Time{}); n != standby || edgeStatus(t, m, "umatilla").State != StateUp {
		t.Fatalf("standby umatilla probed %d more times while the active edge had three keepalive rounds; want none within its standby interval", n-standby)
	}

	sim.setBroken("ashburn", true)
	c := nextChange(t, changes, 5*time.Second)
	if c.From != "ashburn" || c.To != "umatilla" || c.Kind != ChangeFailover ||
		c.Reason != "edge ashburn down: 3/3 IPs timed out after 100ms" {
		t.Fatalf("change = %+v", c)
	}
	if edge, _ := m.Active(); edge != "umatilla" {
		t.Fatalf("active = %s", edge)
	}
	// The new active edge gets keepalives; the down one keeps being probed.
	movedAt := time.Now()
	kit.WaitFor(t, 5*time.Second, "umatilla keepalives and ashburn probes", func() bool {
		u, _ := sim.count("umatilla", movedAt)
		a, _ := sim.count("ashburn", movedAt)
		return u > 0 && a > 0
	})

	sim.setBroken("ashburn", false)
	c = nextChange(t, changes, 5*time.Second)
	if c.From != "umatilla" || c.To != "ashburn" || c.Kind != ChangeFailback {
		t.Fatalf("change = %+v", c)
	}
	upSince := edgeStatus(t, m, "ashburn").Since
	if held := c.At.Sub(upSince); held < s.FailbackHold {
		t.Fatalf("failed back %s after ashburn came up, before the %s hold", held, s.FailbackHold)
	}
}

// A standby edge that stopped answering is found by its standby probes
// before it is needed: when the active edge fails, the monitor moves
// straight to the third edge instead of to the dead standby, where the
// registrations would only time out. With method none, which probes no edge
// that is up, the same failover lands on the dead standby: the contrast is
// what standby probing buys.
func TestRunFailoverSkipsDeadStandby(t *testing.T) {
	for _, tc := range []struct {
		method string
		want   string // where the failover from ashburn lands
	}{
		{KeepaliveOptions, "dublin"},
		{KeepaliveRegister, "dublin"},
		{KeepaliveNone, "umatilla"},
	} {
		t.Run(tc.method, func(t *testing.T) {
			d := simDNS(t)
			d.set("example.sip.dublin.twilio.com", 600, "127.0.3.1")
			sim := &edgeSim{broken: map[string]bool{"umatilla": true}}
			s := Settings{
				Domain: "example", Edges: []string{"ashburn", "umatilla", "dublin"}, DNSServer: d.addr,
				KeepaliveMethod: tc.method, Timeout: 100 * time.Millisecond, KeepaliveInterval: 50 * time.Millisecond,
				StandbyInterval: 100 * time.Millisecond, FailbackHold: time.Hour,
			}
			m, changes := newRunning(t, s, &fakeProber{probe: sim.probe})
			if tc.method != KeepaliveNone {
				kit.WaitFor(t, 5*time.Second, "standby umatilla known down", func() bool {
					st := edgeStatus(t, m, "umatilla")
					return st.State == StateDown && st.Reason == "edge umatilla down: 2/2 IPs timed out after 100ms"
				})
			}
			// The active edge fails, as the upstream manager reports it.
			sim.setBroken("ashburn", true)
			for _, tg := range m.Targets("ashburn") {
				m.Report(tg, Result{}, ErrNoResponse)
			}
			c := nextChange(t, changes, 5*time.Second)
			if c.From != "ashburn" || c.To != tc.want || c.Kind != ChangeFailover {
				t.Fatalf("change = %+v, want a failover from ashburn to %s", c, tc.want)
			}
		})
	}
}

// With keepalive.method register the active edge is not probed: REGISTER
// outcomes reported by the upstream manager are its signal. Down edges are
// still probed so they can come back.
func TestRunKeepaliveRegister(t *testing.T) {
	d := simDNS(t)
	sim := &edgeSim{broken: map[string]bool{"ashburn": true}}
	s := Settings{
		Domain: "example", Edges: []string{"ashburn", "umatilla"}, DNSServer: d.addr, KeepaliveMethod: KeepaliveRegister,
		Timeout: 100 * time.Millisecond, KeepaliveInterval: 20 * time.Millisecond, FailbackHold: time.Hour,
	}
	m, changes := newRunning(t, s, &fakeProber{probe: sim.probe})
	// umatilla is a standby edge at first: its first round of probes
	// (the next is StandbyInterval away) must be over before it becomes
	// active, or a late one would count as probing the active edge.
	kit.WaitFor(t, 5*time.Second, "the standby edge's first probes", func() bool {
		n, _ := sim.count("umatilla", time.Time{})
		return n > 0 && n >= len(m.Targets("umatilla"))
	})

	reportedAt := time.Now()
	for _, tg := range m.Targets("ashburn") {
		m.Report(tg, Result{}, ErrNoResponse) // three REGISTER timeouts
	}
	c := nextChange(t, changes, 5*time.Second)
	if c.To != "umatilla" || c.Kind != ChangeFailover {
		t.Fatalf("change = %+v", c)
	}
	kit.WaitFor(t, 5*time.Second, "probes of the down edge", func() bool {
		n, _ := sim.count("ashburn", time.Time{})
		return n >= 3
	})
	if _, first := sim.count("ashburn", time.Time{}); first.Before(reportedAt) {
		t.Fatalf("ashburn probed at %s, before it was reported down (%s)", first, reportedAt)
	}
	if n, _ := sim.count("umatilla", c.At); n != 0 {
		t.Fatalf("active edge probed %d times with keepalive method register", n)
	}
}

// DNS failure: the last good answer keeps being served; once DNS answers
// again, a changed answer is picked up when the TTL runs out.
func TestRunDNSServeStaleAndTTL(t *testing.T) {
	d := startDNS(t)
	const fqdn = "example.sip.ashburn.twilio.com"
	d.set(fqdn, 1, "127.0.1.2", "127.0.1.1")
	var probes atomic.Int64
	p := ProberFunc(func(context.Context, Target) (Result, error) {
		probes.Add(1)
		return Result{StatusCode: 200}, nil
	})
	s := Settings{Domain: "example", Edges: []string{"ashburn"}, DNSServer: d.addr,
		Timeout: 100 * time.Millisecond, KeepaliveInterval: 50 * time.Millisecond}
	m, _ := newRunning(t, s, p)

	want := []string{"127.0.1.1", "127.0.1.2"}
	// Order depends on which probe answered first (up IPs lead); compare sets.
	sorted := func(s []string) []string { slices.Sort(s); return s }
	if got := sorted(ips(m.Targets("ashburn"))); !slices.Equal(got, want) {
		t.Fatalf("targets = %v, want %v", got, want)
	}
	st := edgeStatus(t, m, "ashburn")
	if ttl := st.DNS.ExpiresAt.Sub(st.DNS.ResolvedAt); ttl != time.Second {
		t.Fatalf("answer valid for %s, want the 1s TTL", ttl)
	}

	d.setFail(true)
	kit.WaitFor(t, 5*time.Second, "a failed refresh", func() bool {
		return edgeStatus(t, m, "ashburn").DNS.Stale
	})
	st = edgeStatus(t, m, "ashburn")
	if !strings.Contains(st.DNS.LastError, "SERVFAIL") || st.State != StateUp {
		t.Fatalf("status = %+v, want up with a SERVFAIL error", st)
	}
	if got := sorted(ips(m.Targets("ashburn"))); !slices.Equal(got, want) {
		t.Fatalf("targets while DNS fails = %v, want the stale %v", got, want)
	}
	if edge, ok := m.Active(); edge != "ashburn" || !ok {
		t.Fatalf("active = %s %v", edge, ok)
	}

	d.set(fqdn, 1, "127.0.1.3")
	d.setFail(false)
	kit.WaitFor(t, 10*time.Second, "the new answer", func() bool {
		return slices.Equal(ips(m.Targets("ashburn")), []string{"127.0.1.3"})
	})
	if st := edgeStatus(t, m, "ashburn"); st.DNS.Stale || st.DNS.LastError != "" {
		t.Fatalf("dns status = %+v after recovery", st.DNS)
	}
}

// Resolve waits for the first lookup of an edge a reload just added.
func TestRunResolveAfterReload(t *testing.T) {
	d := simDNS(t)
	d.set("example.sip.dublin.twilio.com", 600, "127.0.3.1")
	p := ProberFunc(func(context.Context, Target) (Result, error) { return Result{StatusCode: 200}, nil })
	s := Settings{Domain: "example", Edges: []string{"ashburn"}, DNSServer: d.addr,
		Timeout: 100 * time.Millisecond, KeepaliveInterval: 50 * time.Millisecond}
	m, changes := newRunning(t, s, p)

	s.Edges = []string{"dublin", "ashburn"}
	if err := m.Apply(s); err != nil {
		t.Fatal(err)
	}
	c := nextChange(t, changes, 5*time.Second)
	if c.From != "ashburn" || c.To != "dublin" || c.Kind != ChangeReload {
		t.Fatalf("change = %+v", c)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ts, err := m.Resolve(ctx, "dublin")
	if err != nil || len(ts) != 1 || ts[0].IP.String() != "127.0.3.1" || ts[0].FQDN != "example.sip.dublin.twilio.com" || ts[0].Port != 5060 {
		t.Fatalf("Resolve = %v, %v", ts, err)
	}
	if _, err := m.Resolve(ctx, "tokyo"); err == nil {
		t.Fatal("Resolve of an unconfigured edge succeeded")
	}
}

func TestRunTwice(t *testing.T) {
	d := simDNS(t)
	p := ProberFunc(func(context.Context, Target) (Result, error) { return Result{StatusCode: 200}, nil })
	m, _ := newRunning(t, Settings{Domain: "example", Edges: []string{"ashburn"}, DNSServer: d.addr}, p)
	if err := m.Run(context.Background()); err == nil {
		t.Fatal("second Run did not fail")
	}
}
