// Package kit is what the tests of every package share: waiting on a
// condition with a deadline, a logger, and loopback networks of their own.
// It is imported by tests only.
//
// It imports nothing of edgewise.
package kit

import (
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// WaitFor looks again after 5 ms, then less and less often, down to every
// 25 ms: quick for what happens at once, light on what it polls (an HTTP
// status endpoint under load) for what takes seconds.
const (
	firstPoll = 5 * time.Millisecond
	maxPoll   = 25 * time.Millisecond
)

// WaitFor polls cond until it holds, and fails t if it still does not after
// within. It is the tests' one way to wait for something that has no event
// to wait on (a counter, a status field); never a sleep.
func WaitFor(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	poll := firstPoll
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(poll)
		poll = min(2*poll, maxPoll)
	}
}

// LogEnv names the environment variable that turns test logs on:
// EDGEWISE_TEST_LOG=1 go test -v ./registrar/calls.
const LogEnv = "EDGEWISE_TEST_LOG"

// Logger is the logger a test gives the code under test: silent, unless
// EDGEWISE_TEST_LOG is set, then debug-level text on stderr tagged with the
// test's name.
func Logger(t testing.TB) *slog.Logger {
	if os.Getenv(LogEnv) == "" {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("test", t.Name())
}

// Net is a loopback /24, 127.A.B.0/24, that belongs to one test while it
// runs: no other test, of this package or of another package running at
// the same time, is given it. Tests bind fixed ports (5060) on its
// addresses without colliding.
type Net struct{ a, b byte }

// IP is host's address in n (1-254).
func (n Net) IP(host int) netip.Addr {
	return netip.AddrFrom4([4]byte{127, n.a, n.b, byte(host)})
}

// Addr is IP(host) as text, for configs.
func (n Net) Addr(host int) string { return n.IP(host).String() }

// Prefix is the whole /24.
func (n Net) Prefix() netip.Prefix { return netip.PrefixFrom(n.IP(0), 24) }

func (n Net) String() string { return n.Prefix().String() }

// The nets handed out are 127.180.0.0/24 to 127.249.255.0/24, away from
// 127.0.0.0/16 where daemons and tools listen on 127.0.0.1 by default.
const (
	firstA = 180
	numA   = 70
)

var next atomic.Uint32

// NewNet reserves a /24 for t until t ends. Reservations are advisory
// locks on files in the temporary directory, one per /24, so separate test
// processes (go test runs packages in parallel) see each other's; the
// kernel drops a lock when its process dies, so nothing stale is left.
func NewNet(t testing.TB) Net {
	t.Helper()
	dir := filepath.Join(os.TempDir(), "edgewise-test-nets")
	if err := os.MkdirAll(dir, 0o777); err != nil {
		t.Fatalf("kit: %v", err)
	}
	// Start each process at its own place so they rarely contend.
	start := uint32(os.Getpid()) * 97
	for range numA * 256 {
		i := (start + next.Add(1)) % (numA * 256)
		n := Net{a: byte(firstA + i/256), b: byte(i % 256)}
		f, err := os.OpenFile(filepath.Join(dir, fmt.Sprintf("127.%d.%d", n.a, n.b)), os.O_CREATE|os.O_RDWR, 0o666)
		if err != nil {
			t.Fatalf("kit: %v", err)
		}
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			f.Close()
			continue
		}
		t.Cleanup(func() { f.Close() }) // closing releases the lock
		return n
	}
	t.Fatal("kit: every loopback /24 is taken")
	return Net{}
}
