package registrar

import (
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestAuthFailedLocksOut: failures reported from outside REGISTER (the
// B2BUA's INVITEs) count toward the same lockout, and its start is heard
// once by OnLockout.
func TestAuthFailedLocksOut(t *testing.T) {
	e := newEnv(t, nil)
	var mu sync.Mutex
	var heard []string
	e.reg.onLockout = func(source netip.Addr, user string, until time.Time) {
		mu.Lock()
		defer mu.Unlock()
		heard = append(heard, source.String()+" "+user+" "+until.Sub(e.clock.Now()).String())
	}
	src := netip.MustParseAddr("::ffff:192.0.2.9") // mapped: stored unmapped
	for i := range 10 {
		started := e.reg.AuthFailed(src, "alice")
		if want := i == 9; started != want {
			t.Fatalf("failure %d: lockout started = %v, want %v", i+1, started, want)
		}
	}
	if !e.reg.Blocked(src.Unmap()) {
		t.Fatal("source not locked out after 10 failed INVITEs")
	}
	if e.reg.AuthFailed(src, "alice") {
		t.Error("a failure during the lockout started another")
	}
	mu.Lock()
	defer mu.Unlock()
	if len(heard) != 1 || heard[0] != "192.0.2.9 alice 5m0s" {
		t.Errorf("OnLockout heard %q", heard)
	}
	if got := testutil.ToFloat64(e.reg.metrics.lockouts); got != 1 {
		t.Errorf("lockouts_total = %v", got)
	}
}
