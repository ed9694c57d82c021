package edgesim

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"

	"github.com/edgewise-sip/edgewise/test/kit"
)

// Every test runs its own simulator on its own loopback /24 (kit.NewNet)
// with port 0, so tests run in parallel with each other and with other
// packages' tests.

const (
	testDomain   = "demo"
	alicePass    = "AliceTwilio123"
	bobPass      = "BobTwilio1234"
	testSlow     = 300 * time.Millisecond // slow_delay in test configs
	silenceAfter = 400 * time.Millisecond // how long a test waits to call an edge silent
)

// testConfig has ashburn on 127.0.n.1-3 and umatilla on 127.0.n.11-13. The
// rate limit is high so tests that register often are not limited; the rate
// limit test sets it back.
func testConfig(n kit.Net) Config {
	ips := func(last ...int) []string {
		var out []string
		for _, l := range last {
			out = append(out, n.Addr(l))
		}
		return out
	}
	return Config{
		Domain: testDomain,
		Edges: []EdgeConfig{
			{Name: "ashburn", IPs: ips(1, 2, 3)},
			{Name: "umatilla", IPs: ips(11, 12, 13)},
		},
		DNS:     DNSConfig{Listen: "127.0.0.1:0"},
		Control: ControlConfig{Listen: "127.0.0.1:0"},
		Credentials: []Credential{
			{User: "alice", Password: alicePass},
			{User: "bob", Password: bobPass},
		},
		Rules:     Rules{RegisterRate: 1000},
		SlowDelay: testSlow,
	}
}

func TestMain(m *testing.M) {
	// sipgo logs client-side chatter through its default logger; keep test
	// output for failures unless asked.
	sip.SetDefaultLogger(testLogger())
	os.Exit(m.Run())
}

func testLogger() *slog.Logger {
	if lvl := os.Getenv(kit.LogEnv); lvl != "" {
		var l slog.Level
		_ = l.UnmarshalText([]byte(lvl))
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l}))
	}
	return slog.New(slog.DiscardHandler)
}

// startSim runs a simulator until the test ends. prepare, when given, runs
// before Run (tests use it to install a fake clock).
func startSim(t *testing.T, cfg Config, prepare ...func(*Sim)) *Sim {
	t.Helper()
	sim, err := New(cfg, testLogger())
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	for _, p := range prepare {
		p(sim)
	}
	stop, err := sim.Start(context.Background()) // not t.Context(): later cleanups may still talk to it
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("Run returned %v", err)
		}
	})
	return sim
}

// fakeClock is a settable clock for expiry and rate-limit tests.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func withClock(c *fakeClock) func(*Sim) { return func(s *Sim) { s.clock = c.Now } }

// sipClient is a sipgo UA that sends from 127.0.0.1.
type sipClient struct {
	*sipgo.Client
}

func newSIPClient(t *testing.T) *sipClient {
	t.Helper()
	ua, err := sipgo.NewUA(sipgo.WithUserAgent("edgesim-test"), sipgo.WithUserAgentHostname("127.0.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ua.Close() })
	c, err := sipgo.NewClient(ua,
		sipgo.WithClientHostname("127.0.0.1"),
		sipgo.WithClientConnectionAddr("127.0.0.1:0"),
		sipgo.WithClientNAT(),
	)
	if err != nil {
		t.Fatal(err)
	}
	return &sipClient{c}
}

// newRequest builds a request for the SIP Domain on edge, sent to addr.
func newRequest(method sip.RequestMethod, edge, addr, transport string) *sip.Request {
	req := sip.NewRequest(method, sip.Uri{Scheme: "sip", Host: testDomain + ".sip." + edge + ".twilio.com"})
	req.SetDestination(addr)
	req.SetTransport(strings.ToUpper(transport))
	return req
}

// do sends req and waits at most timeout for a final response.
func (c *sipClient) do(req *sip.Request, timeout time.Duration) (*sip.Response, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return c.Do(ctx, req)
}

func (c *sipClient) options(addr, transport string, timeout time.Duration) (*sip.Response, error) {
	return c.do(newRequest(sip.OPTIONS, "ashburn", addr, transport), timeout)
}

// reg describes one REGISTER.
type reg struct {
	edge, addr, transport string
	user, authUser, pass  string // authUser defaults to user
	contact               string
	expires               int // -1: no Expires header
}

func (r reg) request() *sip.Request {
	req := newRequest(sip.REGISTER, r.edge, r.addr, r.transport)
	aor := sip.Uri{Scheme: "sip", User: r.user, Host: testDomain + ".sip." + r.edge + ".twilio.com"}
	to := &sip.ToHeader{Address: aor}
	from := &sip.FromHeader{Address: aor}
	from.Params.Add("tag", sip.GenerateTagN(8))
	req.AppendHeader(to)
	req.AppendHeader(from)
	if r.contact != "" {
		req.AppendHeader(sip.NewHeader("Contact", "<"+r.contact+">"))
	}
	if r.expires >= 0 {
		req.AppendHeader(sip.NewHeader("Expires", fmt.Sprint(r.expires)))
	}
	return req
}

// register sends a REGISTER, answers the 401 challenge with digest and
// returns the final response.
func (c *sipClient) register(t *testing.T, r reg) *sip.Response {
	t.Helper()
	if r.transport == "" {
		r.transport = "udp"
	}
	if r.authUser == "" {
		r.authUser = r.user
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req := r.request()
	res, err := c.Do(ctx, req)
	if err != nil {
		t.Fatalf("REGISTER %s via %s: %v", r.user, r.addr, err)
	}
	if res.StatusCode != sip.StatusUnauthorized {
		return res
	}
	res, err = c.DoDigestAuth(ctx, req, res, sipgo.DigestAuth{Username: r.authUser, Password: r.pass})
	if err != nil {
		t.Fatalf("REGISTER %s via %s with auth: %v", r.user, r.addr, err)
	}
	return res
}

func expectStatus(t *testing.T, res *sip.Response, code int) {
	t.Helper()
	if res.StatusCode != code {
		t.Fatalf("got %d %s, want %d", res.StatusCode, res.Reason, code)
	}
}

// api calls the control API and decodes the JSON answer into out (if not
// nil); it returns the HTTP status.
func api(t *testing.T, sim *Sim, method, path, body string, out any) int {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+sim.ControlAddr()+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	data, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			t.Fatalf("%s %s: decode %q: %v", method, path, data, err)
		}
	}
	return res.StatusCode
}

func digestAuth(user, pass string) sipgo.DigestAuth {
	return sipgo.DigestAuth{Username: user, Password: pass}
}
