package registrar

import (
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// lockoutTable counts authentication failures per source IP and locks out a
// source that reaches the limit within the window. It logs once when a lockout
// starts and once when it ends (from sweep), never per packet.
//
// Counting is per IP, not per IP and port: phones behind one NAT share the
// fate of the noisiest of them. Over UDP a source address can be forged, so an
// attacker who knows a phone's address can get it locked out; TCP sources
// cannot be forged. Both are the usual trade-offs of fail2ban-style lockout.
type lockoutTable struct {
	log     *slog.Logger
	shards  [16]lockShard
	locked  atomic.Int64 // sources locked now; Blocked is free when zero
	tracked atomic.Int64 // entries in all shards
}

type lockShard struct {
	mu sync.Mutex
	m  map[netip.Addr]*lockEntry
}

type lockEntry struct {
	failures    int
	windowStart time.Time
	until       time.Time // zero when not locked
}

// maxTrackedSources bounds the table: forged UDP sources must not grow it
// without limit. Beyond it new sources are not counted until sweep frees room.
const maxTrackedSources = 100_000

func newLockoutTable(log *slog.Logger) *lockoutTable {
	t := &lockoutTable{log: log}
	for i := range t.shards {
		t.shards[i].m = make(map[netip.Addr]*lockEntry)
	}
	return t
}

func (t *lockoutTable) shard(ip netip.Addr) *lockShard {
	b := ip.As16()
	return &t.shards[(b[15]^b[14])%16]
}

func (t *lockoutTable) blocked(ip netip.Addr, now time.Time) bool {
	if t.locked.Load() == 0 {
		return false
	}
	sh := t.shard(ip)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e := sh.m[ip]
	return e != nil && e.until.After(now)
}

// fail records a failed authentication from ip and reports whether that
// started a lockout.
func (t *lockoutTable) fail(ip netip.Addr, now time.Time, cfg Lockout, user string) bool {
	if cfg.Failures <= 0 || !ip.IsValid() {
		return false
	}
	sh := t.shard(ip)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e := sh.m[ip]
	if e == nil {
		if t.tracked.Load() >= maxTrackedSources {
			return false
		}
		e = &lockEntry{windowStart: now}
		sh.m[ip] = e
		t.tracked.Add(1)
	}
	if e.until.After(now) {
		return false // already locked; its requests should not get here
	}
	if now.Sub(e.windowStart) > cfg.Window {
		e.failures, e.windowStart = 0, now
	}
	e.failures++
	if e.failures < cfg.Failures {
		return false
	}
	if e.until.IsZero() {
		t.locked.Add(1)
	}
	e.until = now.Add(cfg.Duration)
	e.failures = 0
	t.log.Warn("source locked out after failed authentications",
		"source", ip.String(), "failures", cfg.Failures, "window", cfg.Window, "duration", cfg.Duration, "last_user", user)
	return true
}

// sweep ends expired lockouts (logging each once) and forgets sources whose
// failure window has passed.
func (t *lockoutTable) sweep(now time.Time, window time.Duration) {
	for i := range t.shards {
		sh := &t.shards[i]
		sh.mu.Lock()
		for ip, e := range sh.m {
			switch {
			case !e.until.IsZero() && !e.until.After(now):
				t.locked.Add(-1)
				t.log.Info("source lockout ended", "source", ip.String())
				delete(sh.m, ip)
				t.tracked.Add(-1)
			case e.until.IsZero() && now.Sub(e.windowStart) > window:
				delete(sh.m, ip)
				t.tracked.Add(-1)
			}
		}
		sh.mu.Unlock()
	}
}

// lockedSources returns how many sources are locked out now.
func (t *lockoutTable) lockedSources() int { return int(t.locked.Load()) }
