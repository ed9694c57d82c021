package token

import (
	"math"
	"sync"
	"time"
)

// maxBuckets bounds a limiter's memory; an attacker with many addresses can
// at worst make the limiter forget some clients early.
const maxBuckets = 1 << 16

// limiter is a per-key token bucket: up to n requests at once, refilled at n
// per window. It is local to one replica; replicas do not share budgets,
// which keeps them independent.
type limiter struct {
	mu        sync.Mutex
	n         float64 // bucket size; 0 = unlimited
	perSec    float64 // refill rate
	buckets   map[string]*bucket
	lastSweep time.Time
	max       int
}

type bucket struct {
	tokens float64
	last   time.Time
}

func newLimiter() *limiter {
	return &limiter{buckets: map[string]*bucket{}, max: maxBuckets}
}

// set changes the limit; existing buckets keep their level, clipped to n.
func (l *limiter) set(n int, window time.Duration) {
	if window <= 0 {
		window = DefaultRateWindow
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.n = float64(n)
	l.perSec = float64(n) / window.Seconds()
	if n == 0 {
		clear(l.buckets)
	}
}

// allow takes one token for key. When none is left it returns how long until
// one will be.
func (l *limiter) allow(key string, now time.Time) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.n == 0 {
		return true, 0
	}
	b, ok := l.buckets[key]
	if !ok {
		l.makeRoom(now)
		b = &bucket{tokens: l.n, last: now}
		l.buckets[key] = b
	}
	l.refill(b, now)
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	wait := time.Duration((1 - b.tokens) / l.perSec * float64(time.Second))
	return false, wait
}

func (l *limiter) refill(b *bucket, now time.Time) {
	if dt := now.Sub(b.last).Seconds(); dt > 0 {
		b.tokens = math.Min(l.n, b.tokens+dt*l.perSec)
		b.last = now
	}
	b.tokens = math.Min(l.n, b.tokens)
}

// makeRoom drops buckets that have refilled completely (they behave exactly
// like a new bucket), at most once per refill period unless the table is full,
// and then drops arbitrary entries if it is still full.
func (l *limiter) makeRoom(now time.Time) {
	full := len(l.buckets) >= l.max
	if !full && now.Sub(l.lastSweep).Seconds() < l.n/l.perSec {
		return
	}
	l.lastSweep = now
	for k, b := range l.buckets {
		if b.tokens+now.Sub(b.last).Seconds()*l.perSec >= l.n {
			delete(l.buckets, k)
		}
	}
	for k := range l.buckets {
		if len(l.buckets) < l.max {
			break
		}
		delete(l.buckets, k)
	}
}

// size is for tests.
func (l *limiter) size() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.buckets)
}

// retryAfterSeconds rounds a wait up to whole seconds, at least 1, as the
// Retry-After header wants.
func retryAfterSeconds(d time.Duration) int {
	s := int(math.Ceil(d.Seconds()))
	if s < 1 {
		s = 1
	}
	return s
}
