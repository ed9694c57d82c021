package upstream

import (
	"fmt"
	"testing"
	"time"
)

func TestHeldContacts(t *testing.T) {
	t0 := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	h := newHeldContacts()
	h.note("alice", "ashburn", t0.Add(10*time.Minute), t0)
	h.note("alice", "ashburn", t0.Add(5*time.Minute), t0) // an earlier expiry never shortens it
	h.note("alice", "umatilla", t0.Add(time.Minute), t0)  // the edge she moved from
	for _, tt := range []struct {
		user, edge string
		at         time.Duration
		want       bool
	}{
		{"alice", "ashburn", 9 * time.Minute, true},
		{"alice", "ashburn", 10 * time.Minute, false},
		{"alice", "umatilla", 30 * time.Second, true}, // within the old registration's period
		{"alice", "umatilla", 2 * time.Minute, false}, // after it
		{"alice", "dublin", 0, false},                 // never registered there
		{"bob", "ashburn", 0, false},
		{"alice~ashburn", "", 0, false},
	} {
		if got := h.holds(tt.user, tt.edge, t0.Add(tt.at)); got != tt.want {
			t.Errorf("%s at %s, +%s: %v, want %v", tt.user, tt.edge, tt.at, got, tt.want)
		}
	}
	// Expired entries are pruned as the table grows.
	for i := range 5000 {
		h.note(fmt.Sprintf("u%d", i), "ashburn", t0.Add(time.Second), t0)
	}
	h.note("late", "ashburn", t0.Add(time.Hour), t0.Add(time.Minute))
	for i := range 5000 {
		h.note(fmt.Sprintf("v%d", i), "ashburn", t0.Add(time.Hour), t0.Add(time.Minute))
	}
	h.mu.RLock()
	n := len(h.m)
	h.mu.RUnlock()
	if n > 5100 {
		t.Errorf("%d entries held after the u* expired, want them pruned", n)
	}
}
