package lockout

import (
	"container/list"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// userTable is one shard of the per-user rule's state. Every successful
// login touches it (to remember the source), so the users are spread over
// numShards of these by a hash of the name.
type userTable struct {
	mu  sync.Mutex
	m   map[string]*userEntry
	lru list.List // least recently touched first
	// guarded and evicted are the Table's counters.
	guarded *atomic.Int64
	evicted *atomic.Uint64
}

type userEntry struct {
	user        string
	failures    int
	windowStart time.Time
	until       time.Time // guard end; zero when not guarded
	known       [knownPerUser]knownSource
	elem        *list.Element
}

type knownSource struct {
	key  netip.Prefix
	seen time.Time
}

func (u *userTable) entry(user string, now time.Time, s *Settings, create bool) *userEntry {
	e := u.m[user]
	if e == nil {
		if !create {
			return nil
		}
		if len(u.m) >= max(1, s.MaxUsers/numShards) {
			u.evict()
		}
		e = &userEntry{user: user, windowStart: now}
		e.elem = u.lru.PushBack(e)
		u.m[user] = e
		return e
	}
	u.lru.MoveToBack(e.elem)
	return e
}

// evict forgets the least recently touched user that is not under guard, or
// the oldest guard if every entry is one.
func (u *userTable) evict() {
	for el := u.lru.Front(); el != nil; el = el.Next() {
		if e := el.Value.(*userEntry); e.until.IsZero() {
			u.evictOne(e)
			return
		}
	}
	if el := u.lru.Front(); el != nil {
		u.evictOne(el.Value.(*userEntry))
	}
}

func (u *userTable) remove(e *userEntry) {
	u.lru.Remove(e.elem)
	delete(u.m, e.user)
}

// evictOne is remove for an entry forgotten to make room.
func (u *userTable) evictOne(e *userEntry) {
	if !e.until.IsZero() {
		u.guarded.Add(-1)
	}
	u.evicted.Add(1)
	u.remove(e)
}

// fail counts a failure for user and reports when a guard starts.
func (u *userTable) fail(user string, now time.Time, s *Settings) (time.Time, bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	e := u.entry(user, now, s, true)
	if e.until.After(now) {
		return time.Time{}, false
	}
	if now.Sub(e.windowStart) > s.Window {
		e.failures, e.windowStart = 0, now
	}
	e.failures++
	if e.failures < s.UserFailures {
		return time.Time{}, false
	}
	started := e.until.IsZero()
	e.until = now.Add(s.Duration)
	e.failures = 0
	return e.until, started
}

// succeeded remembers k as a known source of user.
func (u *userTable) succeeded(user string, k netip.Prefix, now time.Time, s *Settings) {
	u.mu.Lock()
	defer u.mu.Unlock()
	e := u.entry(user, now, s, true)
	oldest := 0
	for i := range e.known {
		if e.known[i].key == k {
			e.known[i].seen = now
			return
		}
		if e.known[i].seen.Before(e.known[oldest].seen) {
			oldest = i
		}
	}
	e.known[oldest] = knownSource{key: k, seen: now}
}

// known reports whether k logged in as user within KnownFor.
func (u *userTable) known(user string, k netip.Prefix, now time.Time) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	e := u.m[user]
	return e != nil && e.isKnown(k, now)
}

func (e *userEntry) isKnown(k netip.Prefix, now time.Time) bool {
	for i := range e.known {
		if e.known[i].key == k && now.Sub(e.known[i].seen) < KnownFor {
			return true
		}
	}
	return false
}

// guardLeft returns how long user stays guarded against k: zero when the
// user is not under guard or k is one of its known sources.
func (u *userTable) guardLeft(user string, k netip.Prefix, now time.Time) time.Duration {
	u.mu.Lock()
	defer u.mu.Unlock()
	e := u.m[user]
	if e == nil || !e.until.After(now) || e.isKnown(k, now) {
		return 0
	}
	return e.until.Sub(now)
}

// sweep ends expired guards, returning their users, and forgets users with
// nothing left to remember.
func (u *userTable) sweep(now time.Time, s *Settings) []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	var ended []string
	for user, e := range u.m {
		if !e.until.IsZero() && !e.until.After(now) {
			e.until = time.Time{}
			ended = append(ended, user)
		}
		if !e.until.IsZero() || now.Sub(e.windowStart) <= s.Window {
			continue
		}
		e.failures = 0
		anyKnown := false
		for i := range e.known {
			if e.known[i].key.IsValid() && now.Sub(e.known[i].seen) < KnownFor {
				anyKnown = true
			} else {
				e.known[i] = knownSource{}
			}
		}
		if !anyKnown {
			u.remove(e)
		}
	}
	return ended
}
