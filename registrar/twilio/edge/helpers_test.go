package edge

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	"go.uber.org/goleak"
)

// fakeClock is a manually advanced clock for the state-machine tests.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// fakeProber is a hand-written Prober whose behaviour each test sets.
type fakeProber struct {
	probe func(ctx context.Context, t Target) (Result, error)
}

func (f *fakeProber) Probe(ctx context.Context, t Target) (Result, error) { return f.probe(ctx, t) }

// logBuffer collects log output safely across goroutines.
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

func testSettings(edges ...string) Settings {
	if len(edges) == 0 {
		edges = []string{"ashburn", "umatilla"}
	}
	return Settings{Domain: "example", Edges: edges, Timeout: 4 * time.Second, FailbackHold: time.Minute}
}

// newClocked builds a Monitor driven by hand: a fake clock, no Run, DNS
// answers injected with resolve, outcomes with Report.
func newClocked(t *testing.T, s Settings) (*Monitor, *fakeClock, *logBuffer) {
	t.Helper()
	logs := &logBuffer{}
	p := &fakeProber{probe: func(context.Context, Target) (Result, error) {
		return Result{}, errors.New("no probes in clocked tests")
	}}
	m, err := New(s, p, slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	clk := &fakeClock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	m.now = clk.Now
	return m, clk, logs
}

// resolve injects a DNS answer for edge as if Run had looked it up.
func resolve(t *testing.T, m *Monitor, edge string, ips ...string) {
	t.Helper()
	m.mu.Lock()
	e := m.byName[edge]
	e.dnsBusy = true
	m.mu.Unlock()
	addrs := make([]netip.Addr, len(ips))
	for i, ip := range ips {
		addrs[i] = netip.MustParseAddr(ip)
	}
	m.lookupDone(e, sortAddrs(addrs), 10*time.Minute, nil)
}

func target(t *testing.T, m *Monitor, edge, ip string) Target {
	t.Helper()
	for _, tg := range m.Targets(edge) {
		if tg.IP.String() == ip {
			return tg
		}
	}
	t.Fatalf("edge %s has no target %s", edge, ip)
	return Target{}
}

// drain takes the queued changes (what Run would deliver).
func drain(m *Monitor) []Change {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := m.pending
	m.pending = nil
	return out
}

func ips(ts []Target) []string {
	out := make([]string, len(ts))
	for i, t := range ts {
		out[i] = t.IP.String()
	}
	return out
}

func edgeStatus(t *testing.T, m *Monitor, name string) EdgeStatus {
	t.Helper()
	for _, e := range m.Status() {
		if e.Name == name {
			return e
		}
	}
	t.Fatalf("no status for edge %s", name)
	return EdgeStatus{}
}

// runMonitor runs m until the test ends, then checks that Run returned and
// left no goroutine behind. release runs between the two, for resources
// whose goroutines are not the Monitor's (a sipgo UA's connections).
func runMonitor(t *testing.T, m *Monitor, release ...func()) {
	t.Helper()
	leaks := goleak.IgnoreCurrent()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run returned %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Run did not return after cancel")
		}
		for _, f := range release {
			f()
		}
		goleak.VerifyNone(t, leaks)
	})
}

// testDNS is a tiny authoritative server on 127.0.0.1:0 whose answers the
// test changes while it runs.
type testDNS struct {
	addr string

	mu      sync.Mutex
	records map[string][]string // fqdn (no trailing dot) → A records
	ttl     uint32
	fail    bool
	queries int
}

func startDNS(t *testing.T) *testDNS {
	t.Helper()
	d := &testDNS{records: map[string][]string{}, ttl: 600}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	d.addr = pc.LocalAddr().String()
	started := make(chan struct{})
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(d.serve), NotifyStartedFunc: func() { close(started) }}
	served := make(chan error, 1)
	go func() { served <- srv.ActivateAndServe() }()
	select {
	case <-started:
	case err := <-served:
		t.Fatalf("dns server: %v", err)
	}
	t.Cleanup(func() {
		if err := srv.Shutdown(); err != nil {
			t.Errorf("dns shutdown: %v", err)
		}
		<-served
	})
	return d
}

func (d *testDNS) set(fqdn string, ttl uint32, ips ...string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.records[fqdn] = ips
	d.ttl = ttl
}

func (d *testDNS) setFail(fail bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.fail = fail
}

func (d *testDNS) serve(w dns.ResponseWriter, q *dns.Msg) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.queries++
	r := new(dns.Msg)
	r.SetReply(q)
	name := strings.TrimSuffix(q.Question[0].Name, ".")
	ips, ok := d.records[name]
	switch {
	case d.fail:
		r.Rcode = dns.RcodeServerFailure
	case !ok:
		r.Rcode = dns.RcodeNameError
	default:
		for _, ip := range ips {
			r.Answer = append(r.Answer, &dns.A{
				Hdr: dns.RR_Header{Name: q.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: d.ttl},
				A:   net.ParseIP(ip),
			})
		}
	}
	_ = w.WriteMsg(r)
}
