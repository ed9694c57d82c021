package location

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Settings tune a Table.
type Settings struct {
	// Fsync makes every commit fdatasync the file, which protects
	// acknowledged registrations against power loss as well as against
	// process crashes. Off by default; see store for the trade-off.
	Fsync bool
	// SweepInterval is how often Run removes expired bindings. Zero means 1 s.
	SweepInterval time.Duration
	// Now replaces time.Now, for tests.
	Now func() time.Time
}

const numShards = 256

// Table holds the bindings of every user. Reads and writes of different users
// proceed in parallel (the map is sharded by user; there is no global lock),
// and every write is persisted before Update returns.
type Table struct {
	log    *slog.Logger
	seed   maphash.Seed
	shards [numShards]shard
	store  *store // the bbolt journal; nil for a memory-only or shared table
	shared Backend
	now    func() time.Time
	sweep  time.Duration
	count  atomic.Int64 // bindings held, expired-but-not-swept included
	users  atomic.Int64 // users held
	closed atomic.Bool
	notify *notifier
}

type shard struct {
	mu    sync.RWMutex
	users map[string]*userEntry
	// nextExpiry (Unix ns, 0 = none) is a lower bound on the earliest expiry
	// in the shard, so Sweep skips shards with nothing to expire instead of
	// walking every binding every second.
	nextExpiry int64
	_          [24]byte // spread shards over cache lines
}

// noteExpiries lowers the shard's nextExpiry to cover bs. Hold sh.mu.
func (sh *shard) noteExpiries(bs []Binding) {
	for i := range bs {
		if e := bs[i].Expires.UnixNano(); sh.nextExpiry == 0 || e < sh.nextExpiry {
			sh.nextExpiry = e
		}
	}
}

type userEntry struct {
	// bindings is replaced, never modified in place: the store's writer and
	// readers may hold the old slice.
	bindings []Binding
	// live is the count last reported to subscribers.
	live int
}

// Open opens (creating if needed) the bbolt file at path, loads the bindings
// that have not expired, deletes the expired ones, and starts the writer.
func Open(path string, logger *slog.Logger, s Settings) (*Table, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{
		// Another process holding the file is an error, not a hang.
		Timeout: 2 * time.Second,
		NoSync:  !s.Fsync,
		// The freelist is rebuilt on open instead of being written on every
		// commit; crash safety is unchanged.
		NoFreelistSync: true,
		FreelistType:   bolt.FreelistMapType,
	})
	if err != nil {
		return nil, fmt.Errorf("location: open %s: %w", path, err)
	}
	t, err := open(db, true, logger, s)
	if err != nil {
		db.Close()
		return nil, err
	}
	return t, nil
}

// OpenDB is Open on a bbolt database the caller owns and shares with other
// state (the table uses its own bucket). Close does not close db. The caller
// chooses db.NoSync.
func OpenDB(db *bolt.DB, logger *slog.Logger, s Settings) (*Table, error) {
	return open(db, false, logger, s)
}

// Backend is a store the nodes of a cluster share, in place of the bbolt
// file: every change a node makes is saved there, and changes other nodes
// made reach the table through Apply.
type Backend interface {
	// Save persists user's new complete set of bindings, next, which
	// replaces prev (both may be empty); done is called exactly once, when
	// the change is committed or has failed. Calls for one user come in
	// order.
	Save(user string, prev, next []Binding, done func(error))
}

// NewShared returns a table whose changes are saved to b, starting from
// state (the bindings b holds now; expired ones are dropped).
func NewShared(logger *slog.Logger, s Settings, b Backend, state map[string][]Binding) *Table {
	t := newTable(logger, s)
	t.shared = b
	now := t.now()
	n := 0
	for user, bs := range state {
		live := slices.DeleteFunc(slices.Clone(bs), func(b Binding) bool { return !b.Live(now) })
		if len(live) == 0 {
			continue
		}
		for i := range live {
			live[i].User = user
		}
		sh := t.shard(user)
		sh.users[user] = &userEntry{bindings: live, live: len(live)}
		sh.noteExpiries(live)
		n += len(live)
		t.users.Add(1)
	}
	t.count.Store(int64(n))
	t.notify.start()
	return t
}

// NewMemory returns a table that persists nothing, for tests and tools.
func NewMemory(logger *slog.Logger, s Settings) *Table {
	t := newTable(logger, s)
	t.notify.start()
	return t
}

func newTable(logger *slog.Logger, s Settings) *Table {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	t := &Table{
		log:    logger,
		seed:   maphash.MakeSeed(),
		now:    s.Now,
		sweep:  s.SweepInterval,
		notify: newNotifier(),
	}
	if t.now == nil {
		t.now = time.Now
	}
	if t.sweep <= 0 {
		t.sweep = time.Second
	}
	for i := range t.shards {
		t.shards[i].users = make(map[string]*userEntry)
	}
	return t
}

func open(db *bolt.DB, own bool, logger *slog.Logger, s Settings) (*Table, error) {
	t := newTable(logger, s)
	st := newStore(db, own, t.log)
	state, err := st.load()
	if err != nil {
		return nil, err
	}
	now := t.now()
	n, dropped := 0, 0
	connBound := 0
	for user, bs := range state {
		live := slices.DeleteFunc(bs, func(b Binding) bool { return !b.Live(now) })
		dropped += len(bs) - len(live)
		// A WebSocket binding is only reachable over the connection it was
		// registered on, which did not survive the restart.
		before := len(live)
		live = slices.DeleteFunc(live, func(b Binding) bool { return b.ConnectionBound() })
		connBound += before - len(live)
		if len(live) == 0 {
			delete(state, user)
			continue
		}
		state[user] = live
		sh := t.shard(user)
		sh.users[user] = &userEntry{bindings: live, live: len(live)}
		sh.noteExpiries(live)
		n += len(live)
	}
	// Start from a compact journal holding only live bindings, so that expired
	// ones are gone from the file too and obsolete records do not pile up
	// across restarts.
	if dropped > 0 || connBound > 0 || st.records != len(state) {
		if err := st.rewrite(state); err != nil {
			return nil, err
		}
	}
	t.count.Store(int64(n))
	t.users.Store(int64(len(state)))
	st.snapshot = t.snapshotShard
	st.users = func() int { return int(t.users.Load()) }
	st.start()
	t.store = st
	t.notify.start()
	t.log.Info("bindings loaded", "path", db.Path(), "users", len(state), "bindings", n, "expired_dropped", dropped, "websocket_dropped", connBound)
	return t, nil
}

// snapshotShard appends the bindings of every user in shard i to out, for
// journal compaction. The slices are shared: they are never modified in place.
func (t *Table) snapshotShard(i int, out []record) []record {
	sh := &t.shards[i]
	sh.mu.RLock()
	for user, e := range sh.users {
		out = append(out, record{user: user, bindings: e.bindings})
	}
	sh.mu.RUnlock()
	return out
}

// Close stops the writer after committing what is pending, stops
// notifications and closes the file if Open opened it. Updates after Close
// fail with ErrClosed.
func (t *Table) Close() error {
	if t.closed.Swap(true) {
		return nil
	}
	t.notify.stop()
	if t.store != nil {
		return t.store.close()
	}
	return nil
}

func (t *Table) shard(user string) *shard {
	return &t.shards[maphash.String(t.seed, user)%numShards]
}

// Update changes one user's bindings atomically. fn receives a copy of the
// user's live bindings and returns the complete new set (empty removes the
// user); if fn returns an error nothing changes and the error is returned.
// Update returns once the new set is persisted, so a caller may acknowledge
// it; the returned slice is the caller's to keep. Concurrent updates of the
// same user are serialised; fn must be quick, must not call the Table and
// must not keep the slice it returns.
//
// The new set is visible to Lookup as soon as fn returns, a few milliseconds
// before it is durable. If persisting fails the memory keeps the new set and
// the error is returned, so the caller can refuse the request.
func (t *Table) Update(user string, fn func(cur []Binding) ([]Binding, error)) ([]Binding, error) {
	res, wait, err := t.update(user, fn, nil)
	if err != nil {
		return nil, err
	}
	if wait != nil {
		if err := wait.wait(); err != nil {
			return res, err
		}
	}
	return res, nil
}

// UpdateAsync is Update for callers that must not block while the change is
// written: committed is called exactly once with the new set and the outcome,
// after the commit, from a goroutine the table starts for each batch (or, if
// fn fails or the table is closed, before UpdateAsync returns, with a nil set).
// committed should not block for long: it delays the other callbacks of its
// batch.
func (t *Table) UpdateAsync(user string, fn func(cur []Binding) ([]Binding, error), committed func([]Binding, error)) {
	res, _, err := t.update(user, fn, committed)
	if err != nil {
		committed(nil, err)
		return
	}
	if t.store == nil && t.shared == nil {
		committed(res, nil)
	}
}

// Apply changes one user's bindings in memory only: the change is another
// node's, already in the shared store. fn gets a copy of the user's current
// set (expired ones included) and returns the new one; subscribers are told
// when the number of live bindings changes.
func (t *Table) Apply(user string, fn func(cur []Binding) []Binding) {
	if t.closed.Load() {
		return
	}
	sh := t.shard(user)
	now := t.now()
	sh.mu.Lock()
	e := sh.users[user]
	var cur []Binding
	if e != nil {
		cur = cloneBindings(e.bindings)
	}
	out := fn(cur)
	for i := range out {
		out[i].User = user
	}
	old := len(cur)
	t.replace(sh, user, e, out, countLive(out, now))
	sh.mu.Unlock()
	t.count.Add(int64(len(out) - old))
}

// update applies fn under the user's shard lock and queues the write. With
// committed set (and a store), committed is called after the commit.
func (t *Table) update(user string, fn func(cur []Binding) ([]Binding, error), committed func([]Binding, error)) ([]Binding, *batch, error) {
	if t.closed.Load() {
		return nil, nil, ErrClosed
	}
	sh := t.shard(user)
	now := t.now()

	sh.mu.Lock()
	e := sh.users[user]
	var cur []Binding
	if e != nil {
		cur = liveCopy(e.bindings, now)
	}
	out, err := fn(cur)
	if err != nil {
		sh.mu.Unlock()
		return nil, nil, err
	}
	for i := range out {
		out[i].User = user
	}
	// The caller's copy is made before the commit can start, so a callback
	// never races with this goroutine over it.
	res := cloneBindings(out)
	old := 0
	if e != nil {
		old = len(e.bindings)
	}
	live := countLive(out, now)
	var wait *batch
	switch {
	case t.store != nil:
		var cb func(error)
		if committed != nil {
			cb = func(err error) { committed(res, err) }
		}
		wait = t.store.enqueue(user, out, cb)
	case t.shared != nil:
		wait = newBatch()
		var prev []Binding
		if e != nil {
			prev = e.bindings
		}
		t.shared.Save(user, prev, out, func(err error) {
			wait.err = err
			close(wait.done)
			if committed != nil {
				committed(res, err)
			}
		})
	}
	t.replace(sh, user, e, out, live)
	sh.mu.Unlock()
	t.count.Add(int64(len(out) - old))
	return res, wait, nil
}

// replace makes out user's bindings (none removes the user), e being the
// user's entry or nil, and tells subscribers when the live count changed.
// Hold sh.mu.
func (t *Table) replace(sh *shard, user string, e *userEntry, out []Binding, live int) {
	switch {
	case len(out) == 0:
		if e != nil {
			delete(sh.users, user)
			t.users.Add(-1)
		}
	case e == nil:
		e = &userEntry{}
		sh.users[user] = e
		t.users.Add(1)
		fallthrough
	default:
		e.bindings = out
	}
	sh.noteExpiries(out)
	prevLive := 0
	if e != nil {
		prevLive = e.live
		e.live = live
	}
	if live != prevLive {
		t.notify.post(user, live)
	}
}

// RemoveSource removes every binding registered over transport from src —
// one WebSocket connection, whose bindings are unreachable once it closes —
// persists the removal and notifies subscribers. It returns how many it
// removed. It walks every user, which is fine at the rate browsers
// disconnect; an index would cost every REGISTER.
func (t *Table) RemoveSource(transport string, src netip.AddrPort) (int, error) {
	match := func(b *Binding) bool { return b.Source == src && b.Transport == transport }
	var users []string
	for i := range t.shards {
		sh := &t.shards[i]
		sh.mu.RLock()
		for user, e := range sh.users {
			for j := range e.bindings {
				if match(&e.bindings[j]) {
					users = append(users, user)
					break
				}
			}
		}
		sh.mu.RUnlock()
	}
	removed := 0
	var errs []error
	for _, user := range users {
		_, err := t.Update(user, func(cur []Binding) ([]Binding, error) {
			n := len(cur)
			cur = slices.DeleteFunc(cur, func(b Binding) bool { return match(&b) })
			removed += n - len(cur)
			return cur, nil
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("location: remove %s bindings of %s from %s: %w", transport, user, src, err))
		}
	}
	return removed, errors.Join(errs...)
}

// Lookup returns a copy of the user's live bindings, qualify state ignored.
func (t *Table) Lookup(user string) []Binding {
	sh := t.shard(user)
	now := t.now()
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	e := sh.users[user]
	if e == nil {
		return nil
	}
	return liveCopy(e.bindings, now)
}

// Routable returns the user's live bindings that are not known to be
// unreachable, best first: highest q, then most recently registered.
func (t *Table) Routable(user string) []Binding {
	bs := t.Lookup(user)
	bs = slices.DeleteFunc(bs, func(b Binding) bool { return b.Reachable == Unreachable })
	slices.SortStableFunc(bs, func(a, b Binding) int {
		if c := cmp.Compare(b.Q(), a.Q()); c != 0 {
			return c
		}
		return b.Updated.Compare(a.Updated)
	})
	return bs
}

// SetReachable records the qualify result for one contact of user. It is kept
// in memory only. It reports whether the binding was found.
func (t *Table) SetReachable(user, contact string, r Reachability) bool {
	sh := t.shard(user)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e := sh.users[user]
	if e == nil {
		return false
	}
	for i := range e.bindings {
		if e.bindings[i].Contact != contact {
			continue
		}
		if e.bindings[i].Reachable == r {
			return true
		}
		// Copy on write: the old slice may be in the store's hands.
		bs := slices.Clone(e.bindings)
		bs[i].Reachable = r
		e.bindings = bs
		return true
	}
	return false
}

// Users returns the users with at least one live binding, sorted.
func (t *Table) Users() []string {
	now := t.now()
	var out []string
	for i := range t.shards {
		sh := &t.shards[i]
		sh.mu.RLock()
		for user, e := range sh.users {
			if countLive(e.bindings, now) > 0 {
				out = append(out, user)
			}
		}
		sh.mu.RUnlock()
	}
	slices.Sort(out)
	return out
}

// Snapshot returns every live binding, sorted by user then contact, for
// status pages.
func (t *Table) Snapshot() []Binding {
	now := t.now()
	var out []Binding
	for i := range t.shards {
		sh := &t.shards[i]
		sh.mu.RLock()
		for _, e := range sh.users {
			out = append(out, liveCopy(e.bindings, now)...)
		}
		sh.mu.RUnlock()
	}
	slices.SortFunc(out, func(a, b Binding) int {
		return cmp.Or(cmp.Compare(a.User, b.User), cmp.Compare(a.Contact, b.Contact))
	})
	return out
}

// Len returns the number of bindings held, including ones that expired less
// than a sweep interval ago.
func (t *Table) Len() int { return int(t.count.Load()) }

// Subscribe registers fn to be told when a user's number of live bindings
// changes, expiry included. Calls come from one goroutine, in order per user;
// bursts for one user coalesce into the latest count. fn may call the Table.
func (t *Table) Subscribe(fn func(user string, live int)) {
	t.notify.subscribe(fn)
}

// Run removes expired bindings every sweep interval, persists the removal and
// notifies subscribers, until ctx is done.
func (t *Table) Run(ctx context.Context) error {
	tick := time.NewTicker(t.sweep)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			if err := t.Sweep(); err != nil {
				t.log.Error("expiry sweep failed", "error", err)
			}
		}
	}
}

// Sweep removes expired bindings once; Run calls it periodically.
func (t *Table) Sweep() error {
	if t.closed.Load() {
		return nil
	}
	now := t.now()
	var last *batch
	removed := 0
	for i := range t.shards {
		sh := &t.shards[i]
		sh.mu.Lock()
		if sh.nextExpiry == 0 || now.UnixNano() < sh.nextExpiry {
			sh.mu.Unlock()
			continue
		}
		sh.nextExpiry = 0
		for user, e := range sh.users {
			live := countLive(e.bindings, now)
			if live == len(e.bindings) {
				sh.noteExpiries(e.bindings)
				continue
			}
			keep := liveCopy(e.bindings, now)
			removed += len(e.bindings) - len(keep)
			switch {
			case t.store != nil:
				last = t.store.enqueue(user, keep, nil)
			case t.shared != nil:
				// Expiry is the shared store's business too (its keys
				// lapse on their own); it may skip the write.
				t.shared.Save(user, e.bindings, keep, func(error) {})
			}
			if len(keep) == 0 {
				delete(sh.users, user)
				t.users.Add(-1)
			} else {
				e.bindings = keep
				sh.noteExpiries(keep)
			}
			if live != e.live {
				e.live = live
				t.notify.post(user, live)
			}
		}
		sh.mu.Unlock()
	}
	if removed == 0 {
		return nil
	}
	t.count.Add(-int64(removed))
	t.log.Debug("expired bindings removed", "count", removed)
	if last != nil {
		// Batches commit in order, so waiting for the last covers all.
		return last.wait()
	}
	return nil
}

// StoreStats describes the persistence work so far.
type StoreStats struct {
	Commits     uint64        // bbolt transactions
	Records     uint64        // user records written or deleted
	Failures    uint64        // failed commits
	Busy        time.Duration // time spent committing
	Compactions uint64        // journal compactions finished
}

// Stats returns persistence counters; zero for a memory-only table.
func (t *Table) Stats() StoreStats {
	if t.store == nil {
		return StoreStats{}
	}
	s := &t.store.stats
	s.mu.Lock()
	defer s.mu.Unlock()
	return StoreStats{Commits: s.commits, Records: s.records, Failures: s.failures, Busy: s.busy, Compactions: s.compactions}
}

func liveCopy(bs []Binding, now time.Time) []Binding {
	n := countLive(bs, now)
	if n == 0 {
		return nil
	}
	out := make([]Binding, 0, n)
	for i := range bs {
		if bs[i].Live(now) {
			out = append(out, bs[i].Clone())
		}
	}
	return out
}
