// Package lockout slows password guessing against the registrar, the B2BUA and
// the token endpoint, which share one Table so a failure anywhere counts
// everywhere.
//
// Two rules, both with a window and a duration:
//
//   - Per source. Failures from one source (an IPv4 address, or an IPv6 /64,
//     the smallest block a host is usually given, so rotating addresses
//     within it does not help) lock that source out. A locked-out source gets
//     nothing from SIP (the front end drops or refuses its requests) and 429
//     from the token endpoint.
//   - Per user. Failures for one user, from any number of sources, put the
//     user under guard: attempts for that user from sources that have never
//     logged in as that user are refused without looking at the password,
//     while sources that have (the phone on the user's desk) go on working.
//     This is what stops a botnet guessing one account from many addresses
//     without handing the botnet a way to lock the real user out.
//
// Sources in Settings.Exempt are never counted or locked: Twilio's signalling
// ranges, whose INVITEs and responses must always arrive (over UDP an
// attacker can forge their address, so counting them would let a stranger
// lock Twilio out), and the operator's own proxies, which speak for many
// clients.
//
// Memory is bounded: at most Settings.MaxSources sources and MaxUsers users
// are tracked; when full, the entry least recently failed is forgotten
// (unlocked entries first) rather than new sources being ignored, so an
// attacker cannot stop being counted by first filling the table. Nothing is
// persisted: a restart forgets lockouts and known sources.
//
// It imports nothing of edgewise.
package lockout

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Settings configure a Table. The zero value disables both rules.
type Settings struct {
	// Failures locks a source out after this many failures within Window,
	// for Duration. 0 disables the per-source rule.
	Failures int
	// UserFailures guards a user after this many failures for that user
	// within Window, for Duration. 0 disables the per-user rule.
	UserFailures int
	Window       time.Duration
	Duration     time.Duration
	// Exempt sources are never counted or locked out.
	Exempt []netip.Prefix
	// MaxSources and MaxUsers bound the tables; zero means
	// DefaultMaxSources and DefaultMaxUsers.
	MaxSources int
	MaxUsers   int
}

// Defaults for the table bounds. A source entry costs about 150 bytes, a
// user entry about 400.
const (
	DefaultMaxSources = 100_000
	DefaultMaxUsers   = 20_000
)

// KnownFor is how long a source that logged in as a user stays known for
// that user: it may go on trying while the user is under guard.
const KnownFor = 30 * 24 * time.Hour

// knownPerUser bounds the sources remembered per user (phones, softphones,
// a browser at home); the least recently used is forgotten first.
const knownPerUser = 8

// Validate checks s.
func (s Settings) Validate() error {
	var errs []error
	if s.Failures < 0 || s.UserFailures < 0 {
		errs = append(errs, errors.New("lockout failures must not be negative"))
	}
	if (s.Failures > 0 || s.UserFailures > 0) && (s.Window <= 0 || s.Duration <= 0) {
		errs = append(errs, errors.New("lockout window and duration must be positive when lockout is enabled"))
	}
	if s.MaxSources < 0 || s.MaxUsers < 0 {
		errs = append(errs, errors.New("lockout table bounds must not be negative"))
	}
	return errors.Join(errs...)
}

// Event is a lockout starting, told to Options.OnLockout.
type Event struct {
	// Source is set for a source lockout, User for a user guard.
	Source netip.Prefix
	User   string
	// LastUser is the user the last failure of a source lockout tried.
	LastUser string
	Until    time.Time
}

// Options are fixed for the life of a Table.
type Options struct {
	Logger *slog.Logger
	// OnLockout hears every lockout and guard as it starts; it must not block.
	OnLockout func(Event)
	// Now replaces time.Now, for tests.
	Now func() time.Time
}

// Table counts failures and answers whether a source or a user may try.
// It is safe for concurrent use.
type Table struct {
	log       *slog.Logger
	onLockout func(Event)
	now       func() time.Time
	settings  atomic.Pointer[Settings]

	shards [numShards]sourceShard
	users  [numShards]userTable
	seed   maphash.Seed

	locked  atomic.Int64 // sources locked now; Blocked is free when zero
	guarded atomic.Int64 // users under guard now
	stats   Stats
}

// Stats are counters for metrics.
type Stats struct {
	SourceLockouts atomic.Uint64 // lockouts started
	UserGuards     atomic.Uint64 // guards started
	Evicted        atomic.Uint64 // entries forgotten because a table was full
	Exempted       atomic.Uint64 // failures from exempt sources, not counted
}

const numShards = 16

type sourceShard struct {
	mu sync.Mutex
	m  map[netip.Prefix]*sourceEntry
	// lru holds unlocked entries, least recently failed first; lockedLRU
	// holds locked ones, oldest lockout first. Eviction takes from lru, and
	// from lockedLRU only when lru is empty.
	lru, lockedLRU list.List
}

type sourceEntry struct {
	key         netip.Prefix
	failures    int
	windowStart time.Time
	until       time.Time // zero when not locked
	elem        *list.Element
}

// New returns a table with s in force.
func New(s Settings, opts Options) (*Table, error) {
	t := &Table{log: opts.Logger, onLockout: opts.OnLockout, now: opts.Now}
	if t.log == nil {
		t.log = slog.New(slog.DiscardHandler)
	}
	if t.onLockout == nil {
		t.onLockout = func(Event) {}
	}
	if t.now == nil {
		t.now = time.Now
	}
	for i := range t.shards {
		t.shards[i].m = make(map[netip.Prefix]*sourceEntry)
	}
	for i := range t.users {
		t.users[i].m = make(map[string]*userEntry)
		t.users[i].guarded, t.users[i].evicted = &t.guarded, &t.stats.Evicted
	}
	t.seed = maphash.MakeSeed()
	if err := t.Apply(s); err != nil {
		return nil, err
	}
	return t, nil
}

// Apply puts s in force. Counts and lockouts in progress are kept.
func (t *Table) Apply(s Settings) error {
	if err := s.Validate(); err != nil {
		return err
	}
	if s.MaxSources == 0 {
		s.MaxSources = DefaultMaxSources
	}
	if s.MaxUsers == 0 {
		s.MaxUsers = DefaultMaxUsers
	}
	exempt := make([]netip.Prefix, len(s.Exempt))
	for i, p := range s.Exempt {
		exempt[i] = p.Masked()
	}
	s.Exempt = exempt
	t.settings.Store(&s)
	return nil
}

// Settings returns the settings in force.
func (t *Table) Settings() Settings { return *t.settings.Load() }

// Key is the unit a source is counted by: the address itself for IPv4, its
// /64 for IPv6.
func Key(a netip.Addr) netip.Prefix {
	a = a.Unmap()
	bits := 32
	if a.Is6() {
		bits = 64
	}
	p, _ := a.Prefix(bits)
	return p
}

// Exempt reports whether a is never locked out.
func (t *Table) Exempt(a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range t.settings.Load().Exempt {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func (t *Table) userShard(user string) *userTable {
	return &t.users[maphash.String(t.seed, user)%numShards]
}

func (t *Table) shard(k netip.Prefix) *sourceShard {
	b := k.Addr().As16()
	return &t.shards[(b[15]^b[14]^b[7]^b[6])%numShards]
}

// Blocked reports whether source a is locked out. The SIP front end calls it
// for every message, so it costs one atomic load while nothing is locked.
func (t *Table) Blocked(a netip.Addr) bool {
	if t.locked.Load() == 0 || !a.IsValid() {
		return false
	}
	k := Key(a)
	sh := t.shard(k)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e := sh.m[k]
	return e != nil && e.until.After(t.now())
}

// Refusal says why an attempt is refused before its credentials are looked at.
type Refusal uint8

const (
	// Allowed: go on and check the credentials.
	Allowed Refusal = iota
	// SourceLocked: the source is locked out.
	SourceLocked
	// UserGuarded: the user is under guard and this source has never
	// logged in as them.
	UserGuarded
)

func (r Refusal) String() string {
	switch r {
	case Allowed:
		return "allowed"
	case SourceLocked:
		return "source locked out"
	case UserGuarded:
		return "user under guard, unknown source"
	}
	return fmt.Sprintf("Refusal(%d)", uint8(r))
}

// Check tells whether source a may try to log in as user, and if not, how
// long until it may try again. user may be empty when the attempt names
// nobody yet.
func (t *Table) Check(a netip.Addr, user string) (Refusal, time.Duration) {
	now := t.now()
	if t.locked.Load() != 0 && a.IsValid() {
		k := Key(a)
		sh := t.shard(k)
		sh.mu.Lock()
		e := sh.m[k]
		var left time.Duration
		if e != nil && e.until.After(now) {
			left = e.until.Sub(now)
		}
		sh.mu.Unlock()
		if left > 0 {
			return SourceLocked, left
		}
	}
	if user != "" && t.guarded.Load() != 0 {
		if left := t.userShard(user).guardLeft(user, Key(a), now); left > 0 {
			return UserGuarded, left
		}
	}
	return Allowed, 0
}

// Failed records a failed authentication from source a. user is the user it
// tried, or empty when that user does not exist (unknown users are not
// tracked per user: there would be no bound on them). It reports whether this
// failure locked the source out.
func (t *Table) Failed(a netip.Addr, user string) bool {
	if !a.IsValid() {
		return false
	}
	s := t.settings.Load()
	if t.Exempt(a) {
		t.stats.Exempted.Add(1)
		return false
	}
	now := t.now()
	if user != "" && s.UserFailures > 0 {
		if until, started := t.userShard(user).fail(user, now, s); started {
			t.guarded.Add(1)
			t.stats.UserGuards.Add(1)
			t.log.Warn("user under guard after failed authentications from many sources: only sources that logged in as this user before may try",
				"user", user, "failures", s.UserFailures, "window", s.Window, "duration", s.Duration)
			t.onLockout(Event{User: user, Until: until})
		}
	}
	if s.Failures <= 0 {
		return false
	}
	k := Key(a)
	sh := t.shard(k)
	sh.mu.Lock()
	e := sh.m[k]
	if e == nil {
		t.makeRoom(sh, s)
		e = &sourceEntry{key: k, windowStart: now}
		e.elem = sh.lru.PushBack(e)
		sh.m[k] = e
	}
	if e.until.After(now) {
		sh.mu.Unlock()
		return false // already locked; its requests should not get here
	}
	if now.Sub(e.windowStart) > s.Window {
		e.failures, e.windowStart = 0, now
	}
	e.failures++
	if e.failures < s.Failures {
		sh.lru.MoveToBack(e.elem)
		sh.mu.Unlock()
		return false
	}
	if e.until.IsZero() {
		t.locked.Add(1)
		sh.lru.Remove(e.elem)
		e.elem = sh.lockedLRU.PushBack(e)
	}
	e.until = now.Add(s.Duration)
	e.failures = 0
	sh.mu.Unlock()
	t.stats.SourceLockouts.Add(1)
	t.log.Warn("source locked out after failed authentications",
		"source", k.String(), "failures", s.Failures, "window", s.Window, "duration", s.Duration, "last_user", user)
	t.onLockout(Event{Source: k, LastUser: user, Until: e.until})
	return true
}

// makeRoom evicts one entry of sh when it is at its share of MaxSources.
// Hold sh.mu.
func (t *Table) makeRoom(sh *sourceShard, s *Settings) {
	limit := max(1, s.MaxSources/numShards)
	if len(sh.m) < limit {
		return
	}
	el := sh.lru.Front()
	from := &sh.lru
	if el == nil {
		el, from = sh.lockedLRU.Front(), &sh.lockedLRU
	}
	e := from.Remove(el).(*sourceEntry)
	delete(sh.m, e.key)
	if !e.until.IsZero() {
		t.locked.Add(-1)
	}
	t.stats.Evicted.Add(1)
}

// Succeeded records that source a logged in as user: a as user's known
// source, which may go on trying while user is under guard.
func (t *Table) Succeeded(a netip.Addr, user string) {
	if !a.IsValid() || user == "" {
		return
	}
	t.userShard(user).succeeded(user, Key(a), t.now(), t.settings.Load())
}

// Known reports whether source a has logged in as user within KnownFor.
func (t *Table) Known(a netip.Addr, user string) bool {
	if !a.IsValid() || user == "" {
		return false
	}
	return t.userShard(user).known(user, Key(a), t.now())
}

// Sweep ends expired lockouts and guards (logging each once) and forgets
// entries with nothing left to remember. Run it every second or so.
func (t *Table) Sweep() {
	now := t.now()
	s := t.settings.Load()
	for i := range t.shards {
		sh := &t.shards[i]
		sh.mu.Lock()
		for k, e := range sh.m {
			switch {
			case !e.until.IsZero() && !e.until.After(now):
				t.locked.Add(-1)
				t.log.Info("source lockout ended", "source", k.String())
				sh.lockedLRU.Remove(e.elem)
				delete(sh.m, k)
			case e.until.IsZero() && now.Sub(e.windowStart) > s.Window:
				sh.lru.Remove(e.elem)
				delete(sh.m, k)
			}
		}
		sh.mu.Unlock()
	}
	for i := range t.users {
		for _, user := range t.users[i].sweep(now, s) {
			t.guarded.Add(-1)
			t.log.Info("user guard ended", "user", user)
		}
	}
}

// Run sweeps the table every second until ctx is done, for a table nobody
// else sweeps (the registrar sweeps its own).
func (t *Table) Run(ctx context.Context) error {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			t.Sweep()
		}
	}
}

// LockedSources returns how many sources are locked out now.
func (t *Table) LockedSources() int { return int(t.locked.Load()) }

// GuardedUsers returns how many users are under guard now.
func (t *Table) GuardedUsers() int { return int(t.guarded.Load()) }

// TrackedSources returns how many sources the table remembers.
func (t *Table) TrackedSources() int {
	n := 0
	for i := range t.shards {
		sh := &t.shards[i]
		sh.mu.Lock()
		n += len(sh.m)
		sh.mu.Unlock()
	}
	return n
}

// Counters returns the table's counters.
func (t *Table) Counters() *Stats { return &t.stats }
