package token

import (
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// fakeGuard is a lockout that locks a source after 3 failures and remembers
// which sources logged in as whom.
type fakeGuard struct {
	mu       sync.Mutex
	failures map[netip.Addr]int
	failed   []string // "client user"
	known    map[string]bool
}

func newFakeGuard() *fakeGuard {
	return &fakeGuard{failures: map[netip.Addr]int{}, known: map[string]bool{}}
}

func (g *fakeGuard) Allow(client netip.Addr, _ string) (bool, time.Duration, string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.failures[client] >= 3 {
		return false, time.Minute, "this address is locked out"
	}
	return true, 0, ""
}

func (g *fakeGuard) Known(client netip.Addr, user string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.known[client.String()+" "+user]
}

func (g *fakeGuard) Failed(client netip.Addr, user string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.failures[client]++
	g.failed = append(g.failed, client.String()+" "+user)
}

func (g *fakeGuard) Succeeded(client netip.Addr, user string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.known[client.String()+" "+user] = true
}

// TestGuardCountsFailures: wrong passwords at the token endpoint count
// toward the shared lockout, against the client's address (behind a trusted
// proxy, the forwarded one) and the user only when it exists; a locked-out
// address gets 429 with Retry-After even with the right password.
func TestGuardCountsFailures(t *testing.T) {
	g := newFakeGuard()
	p := newTestProvider(t, handlerSettings(), WithGuard(g))
	h := p.Handler()
	guess := func(user, remote string, headers map[string]string) int {
		return call{user: user, pass: "guess", remote: remote, headers: headers}.do(h).Code
	}
	if code := guess("alice", "192.0.2.7:1", nil); code != 401 {
		t.Fatalf("wrong password: %d", code)
	}
	if code := guess("mallory", "192.0.2.7:2", nil); code != 401 {
		t.Fatalf("unknown user: %d", code)
	}
	if code := guess("bob", "10.9.0.1:3", map[string]string{"X-Forwarded-For": "198.51.100.4"}); code != 401 {
		t.Fatalf("via proxy: %d", code)
	}
	want := []string{"192.0.2.7 alice", "192.0.2.7 ", "198.51.100.4 bob"}
	if !slices.Equal(g.failed, want) {
		t.Fatalf("failures reported %q, want %q", g.failed, want)
	}
	guess("alice", "192.0.2.7:4", nil)
	rec := call{user: "alice", pass: "alice-pw", remote: "192.0.2.7:5"}.do(h)
	if rec.Code != 429 || rec.Header().Get("Retry-After") != "60" {
		t.Fatalf("locked-out address with the right password: %d %v", rec.Code, rec.Header())
	}
	if got := testutil.ToFloat64(p.metrics.refused.WithLabelValues(reasonLockedOut)); got != 1 {
		t.Errorf("refused_total{locked_out} = %v", got)
	}
	if rec := (call{user: "alice", pass: "alice-pw", remote: "192.0.2.8:1"}).do(h); rec.Code != 200 {
		t.Fatalf("alice from another address: %d", rec.Code)
	}
}

// TestGuardKnownClientKeepsItsBudget: strangers sharing the real user's
// address (an office NAT) spend the per-address budget, yet the user, who
// logged in from that address before, still gets tokens.
func TestGuardKnownClientKeepsItsBudget(t *testing.T) {
	g := newFakeGuard()
	s := handlerSettings()
	s.RateLimit = RateLimit{PerIdentity: 10, PerAddress: 2, Window: time.Minute}
	p := newTestProvider(t, s, WithGuard(g))
	h := p.Handler()
	alice := call{user: "alice", pass: "alice-pw", remote: "192.0.2.20:1"}
	if rec := alice.do(h); rec.Code != 200 {
		t.Fatalf("alice: %d", rec.Code)
	}
	for i := range 5 {
		if code := (call{remote: "192.0.2.20:2"}).do(h).Code; i >= 1 && code != 429 {
			t.Fatalf("stranger request %d: %d, want 429 once the address budget is spent", i, code)
		}
	}
	if rec := alice.do(h); rec.Code != 200 {
		t.Fatalf("alice after strangers spent her address's budget: %d %s", rec.Code, rec.Body)
	}
	if rec := (call{user: "bob", pass: "bob-pw", remote: "192.0.2.20:3"}).do(h); rec.Code != 429 {
		t.Fatalf("bob, never seen at this address: %d, want 429", rec.Code)
	}
}
