package token

import (
	"strconv"
	"testing"
	"time"
)

func TestLimiter(t *testing.T) {
	l := newLimiter()
	l.set(3, time.Minute) // 3 at once, one more every 20 s
	now := time.Unix(1000, 0)
	for i := range 3 {
		if ok, _ := l.allow("k", now); !ok {
			t.Fatalf("request %d refused", i)
		}
	}
	ok, wait := l.allow("k", now)
	if ok || wait != 20*time.Second {
		t.Fatalf("4th: ok=%v wait=%s, want refused for 20s", ok, wait)
	}
	if ok, _ := l.allow("other", now); !ok {
		t.Fatal("other key refused")
	}
	now = now.Add(10 * time.Second)
	if ok, wait := l.allow("k", now); ok || wait != 10*time.Second {
		t.Fatalf("after 10s: ok=%v wait=%s", ok, wait)
	}
	now = now.Add(10 * time.Second)
	if ok, _ := l.allow("k", now); !ok {
		t.Fatal("refused after refill")
	}
	if got := retryAfterSeconds(1500 * time.Millisecond); got != 2 {
		t.Errorf("retryAfterSeconds(1.5s) = %d", got)
	}
	if got := retryAfterSeconds(0); got != 1 {
		t.Errorf("retryAfterSeconds(0) = %d", got)
	}
}

func TestLimiterDisabledAndChanged(t *testing.T) {
	l := newLimiter()
	now := time.Unix(1000, 0)
	for range 1000 {
		if ok, _ := l.allow("k", now); !ok {
			t.Fatal("unset limiter refused")
		}
	}
	if l.size() != 0 {
		t.Errorf("unset limiter keeps %d buckets", l.size())
	}
	l.set(5, time.Minute)
	for range 5 {
		l.allow("k", now)
	}
	// Raising the limit does not refill a spent bucket.
	l.set(10, time.Minute)
	if ok, _ := l.allow("k", now); ok {
		t.Error("raising the limit refilled a spent bucket")
	}
	l.set(0, 0)
	if ok, _ := l.allow("k", now); !ok || l.size() != 0 {
		t.Error("disabling did not clear")
	}
}

func TestLimiterMemoryBounded(t *testing.T) {
	l := newLimiter()
	l.max = 100
	l.set(2, time.Minute)
	now := time.Unix(1000, 0)
	for i := range 1000 {
		l.allow("addr"+strconv.Itoa(i), now)
		if l.size() > l.max {
			t.Fatalf("size %d > max %d", l.size(), l.max)
		}
	}
	// Entries expire: once every bucket has refilled, a sweep drops them.
	now = now.Add(time.Minute)
	l.allow("late", now)
	if l.size() != 1 {
		t.Errorf("after a window, %d buckets remain, want 1", l.size())
	}
}
