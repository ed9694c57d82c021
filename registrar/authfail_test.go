package registrar

import (
	"net/netip"
	"testing"
	"time"
)

// TestAuthFailedLocksOut: failures reported from outside REGISTER (the
// B2BUA's INVITEs) count toward the same lockout, and its start is heard
// once by OnLockout.
func TestAuthFailedLocksOut(t *testing.T) {
	e := newEnv(t, nil)
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
	e.eventsMu.Lock()
	defer e.eventsMu.Unlock()
	if len(e.events) != 1 || e.events[0].Source.String() != "192.0.2.9/32" || e.events[0].LastUser != "alice" ||
		e.events[0].Until.Sub(e.clock.Now()) != 5*time.Minute {
		t.Errorf("OnLockout heard %+v", e.events)
	}
	if got := e.reg.Lockout().Counters().SourceLockouts.Load(); got != 1 {
		t.Errorf("lockouts counted %d, want 1", got)
	}
}
