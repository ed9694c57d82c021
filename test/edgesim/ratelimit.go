package edgesim

import (
	"sync"
	"time"
)

// rateLimiter counts REGISTER attempts per AOR in a sliding one-second
// window. Every attempt counts, including the unauthenticated one that gets
// the 401 and the ones it refuses: Twilio's limit is on REGISTERs received
// (warning 32008), and a client that keeps hammering should stay limited.
type rateLimiter struct {
	mu     sync.Mutex
	window time.Duration
	seen   map[string][]time.Time // AOR → attempt times within window, oldest first
}

func newRateLimiter() *rateLimiter {
	return &rateLimiter{window: time.Second, seen: map[string][]time.Time{}}
}

// allow records an attempt by aor at now and reports whether it is within
// limit attempts per window.
func (r *rateLimiter) allow(aor string, now time.Time, limit int) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	ts := r.prune(r.seen[aor], now)
	ts = append(ts, now)
	// Whether more than limit attempts fall in the window depends only on
	// the newest limit+1, so a flood cannot grow the slice.
	if len(ts) > limit+1 {
		ts = append(ts[:0], ts[len(ts)-limit-1:]...)
	}
	r.seen[aor] = ts
	return len(ts) <= limit
}

func (r *rateLimiter) prune(ts []time.Time, now time.Time) []time.Time {
	cut := 0
	for cut < len(ts) && !ts[cut].After(now.Add(-r.window)) {
		cut++
	}
	return ts[cut:]
}

// sweep forgets AORs with no attempt inside the window, so the map does not
// grow with every user ever seen.
func (r *rateLimiter) sweep(now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for aor, ts := range r.seen {
		if ts = r.prune(ts, now); len(ts) == 0 {
			delete(r.seen, aor)
		} else {
			r.seen[aor] = ts
		}
	}
}

func (r *rateLimiter) clear() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seen = map[string][]time.Time{}
}
