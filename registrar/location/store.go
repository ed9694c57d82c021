package location

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
)

// ErrClosed is returned by writes after Close.
var ErrClosed = errors.New("location: table closed")

// The file layout is an append-only journal: bucket "location.journal.<gen>"
// maps an 8-byte big-endian sequence number to a record (user + that user's
// complete bindings; no bindings means the user was removed). Replaying the
// buckets in generation order and the keys in order rebuilds the table; the
// last record of a user wins.
//
// A journal instead of one key per user because of what bbolt costs: updating
// random keys dirties one 4 KB leaf page per user per commit, so a batch of 30
// REGISTERs wrote 30+ pages; appending sequential keys fills the rightmost leaf
// and a batch writes two or three. Compaction keeps the file bounded: when the
// journal holds compactFactor times as many records as there are users, the
// writer starts a new generation, copies the in-memory state into it a few
// shards per commit (interleaved with normal batches, so no REGISTER waits for
// a whole rewrite), then deletes the old generation in the commit that copies
// the last shard. A crash mid-compaction leaves both generations; replaying
// both in order is still correct, and Open compacts again.
const (
	journalPrefix = "location.journal."
	compactFactor = 4
	compactMin    = 50_000
	// compactChunk is about how many users one compaction step copies; it
	// bounds the extra latency a step adds to the commit it rides on.
	compactChunk = 1024
)

// store writes user records to bbolt with group commit: callers hand over the
// user's new bindings and wait; one writer goroutine takes everything pending,
// appends it in a single bbolt transaction and wakes all waiters of that batch.
// Under load batches grow by themselves (whatever arrives while one commit runs
// goes into the next), so a commit's cost is shared by many REGISTERs, while
// an idle table commits each change at once. Pending changes for the same user
// coalesce: only the latest state is written.
//
// Durability: by default bbolt runs with NoSync. A commit returns once its
// pages were written with pwrite, i.e. they are in the kernel's page cache.
// That survives kill -9 and any crash of this process, which is what the
// registrar promises (its 200 OK is sent only after the commit), but not a
// power loss or kernel crash. Settings.Fsync makes every commit fdatasync;
// batching keeps that affordable, at the price of latency per REGISTER.
type store struct {
	db    *bolt.DB
	ownDB bool
	log   *slog.Logger

	// snapshot appends the current bindings of the users in shard i; users
	// counts users. Both read the table under its shard locks.
	snapshot func(i int, out []record) []record
	users    func() int

	mu      sync.Mutex
	pending map[string][]Binding
	spare   map[string][]Binding
	batch   *batch
	closed  bool

	// compactMin is the journal size below which compaction never starts.
	compactMin int

	// Owned by the writer goroutine (and by open before it starts).
	gen     uint64 // generation appended to
	seq     uint64 // last sequence number used
	records int    // records in the journal, all generations
	compact *compaction

	kick chan struct{}
	quit chan struct{}
	done chan struct{}

	stats storeStats
}

type record struct {
	user     string
	bindings []Binding
}

type compaction struct {
	nextShard int
	copied    int // records written into the new generation so far
}

type batch struct {
	done chan struct{}
	err  error
	// callbacks of UpdateAsync callers, run after the commit on a goroutine
	// of their own so the writer can start the next commit at once.
	callbacks []func(error)
}

type storeStats struct {
	mu          sync.Mutex
	commits     uint64
	records     uint64
	failures    uint64
	compactions uint64
	busy        time.Duration
}

func newBatch() *batch { return &batch{done: make(chan struct{})} }

func (b *batch) wait() error {
	<-b.done
	return b.err
}

func journalName(gen uint64) []byte {
	return strconv.AppendUint([]byte(journalPrefix), gen, 10)
}

func newStore(db *bolt.DB, own bool, log *slog.Logger) *store {
	return &store{
		db:         db,
		ownDB:      own,
		log:        log,
		pending:    make(map[string][]Binding),
		spare:      make(map[string][]Binding),
		batch:      newBatch(),
		compactMin: compactMin,
		kick:       make(chan struct{}, 1),
		quit:       make(chan struct{}),
		done:       make(chan struct{}),
	}
}

func (s *store) start() { go s.writer() }

// enqueue schedules user's bindings (empty: delete the user) for the next
// commit and returns the batch to wait on; cb, if not nil, is called with the
// commit's outcome instead. Calls for one user must be ordered by the caller
// (the table holds the user's shard lock), and the table must already show
// the new state, which compaction relies on.
func (s *store) enqueue(user string, bs []Binding, cb func(error)) *batch {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		b := newBatch()
		b.err = ErrClosed
		close(b.done)
		if cb != nil {
			go cb(ErrClosed)
		}
		return b
	}
	s.pending[user] = bs
	b := s.batch
	if cb != nil {
		b.callbacks = append(b.callbacks, cb)
	}
	s.mu.Unlock()
	select {
	case s.kick <- struct{}{}:
	default:
	}
	return b
}

func (s *store) writer() {
	defer close(s.done)
	var buf []byte
	for {
		if s.compact == nil {
			select {
			case <-s.kick:
			case <-s.quit:
				// close has set closed; commit what is left and stop.
				s.cycle(&buf)
				return
			}
		} else {
			select {
			case <-s.quit:
				s.cycle(&buf)
				return
			default:
			}
		}
		// Let the goroutines woken by the previous commit run first: they
		// are queued behind this one on its P, and each is about to add a
		// change to the next batch. Without this the writer commits batches
		// of one or two while the rest wait in line.
		runtime.Gosched()
		s.cycle(&buf)
	}
}

// cycle commits what is pending plus, while compacting, the next chunk of
// the snapshot, in one transaction.
func (s *store) cycle(buf *[]byte) {
	s.mu.Lock()
	var p map[string][]Binding
	b := s.batch
	if len(s.pending) > 0 {
		p = s.pending
		s.pending, s.batch = s.spare, newBatch()
	}
	s.mu.Unlock()

	if s.compact == nil && s.records >= max(s.compactMin, compactFactor*s.users()) {
		s.compact = &compaction{}
		s.gen++
		s.log.Debug("journal compaction started", "records", s.records, "users", s.users(), "generation", s.gen)
	}
	// The chunk is read after the pending set was taken: every state in it
	// is at least as new as the pending records written before it, and
	// anything enqueued after the read lands in a later batch.
	var chunk []record
	var chunkEnd int
	if c := s.compact; c != nil {
		perShard := max(1, s.users()/numShards)
		chunkEnd = min(numShards, c.nextShard+max(1, compactChunk/perShard))
		for i := c.nextShard; i < chunkEnd; i++ {
			chunk = s.snapshot(i, chunk)
		}
	}
	if len(p) == 0 && chunk == nil && s.compact == nil {
		return
	}

	start := time.Now()
	seq := s.seq
	finish := s.compact != nil && chunkEnd == numShards
	err := s.db.Update(func(tx *bolt.Tx) error {
		bk, err := tx.CreateBucketIfNotExists(journalName(s.gen))
		if err != nil {
			return err
		}
		// Keys only ever grow: pack leaves full instead of half.
		bk.FillPercent = 1.0
		put := func(user string, bs []Binding) error {
			seq++
			var key [8]byte
			binary.BigEndian.PutUint64(key[:], seq)
			*buf = appendRecord((*buf)[:0], user, bs)
			// bbolt keeps the value until commit, so it gets its own copy.
			return bk.Put(key[:], bytes.Clone(*buf))
		}
		for user, bs := range p {
			if err := put(user, bs); err != nil {
				return err
			}
		}
		for _, r := range chunk {
			if err := put(r.user, r.bindings); err != nil {
				return err
			}
		}
		if finish {
			return deleteGenerations(tx, s.gen)
		}
		return nil
	})
	written := int(seq - s.seq)
	if err != nil {
		err = fmt.Errorf("location: commit %d records: %w", len(p), err)
		s.log.Error("persisting bindings failed", "error", err)
		if s.compact != nil {
			// Start over later; the old generations are intact.
			s.compact = nil
		}
	} else {
		s.seq = seq
		s.records += written
		if c := s.compact; c != nil {
			c.copied += written
			c.nextShard = chunkEnd
			if finish {
				s.records = c.copied
				s.compact = nil
				s.log.Debug("journal compaction finished", "records", s.records, "generation", s.gen)
			}
		}
	}

	s.stats.mu.Lock()
	s.stats.commits++
	s.stats.records += uint64(len(p))
	s.stats.busy += time.Since(start)
	if err != nil {
		s.stats.failures++
	}
	if finish && err == nil {
		s.stats.compactions++
	}
	s.stats.mu.Unlock()

	if len(p) > 0 {
		b.err = err
		close(b.done)
		if cbs := b.callbacks; len(cbs) > 0 {
			go func() {
				for _, cb := range cbs {
					cb(err)
				}
			}()
		}
		clear(p)
		s.mu.Lock()
		s.spare = p
		s.mu.Unlock()
	}
}

func (s *store) close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	close(s.quit)
	<-s.done
	if s.ownDB {
		return s.db.Close()
	}
	return nil
}

// load replays the journal and returns every user's bindings, expired ones
// included (the caller filters). It sets gen, seq and records.
func (s *store) load() (map[string][]Binding, error) {
	out := make(map[string][]Binding)
	err := s.db.View(func(tx *bolt.Tx) error {
		var gens []uint64
		err := tx.ForEach(func(name []byte, _ *bolt.Bucket) error {
			if g, ok := bytes.CutPrefix(name, []byte(journalPrefix)); ok {
				n, err := strconv.ParseUint(string(g), 10, 64)
				if err != nil {
					return fmt.Errorf("bucket %q: %w", name, err)
				}
				gens = append(gens, n)
			}
			return nil
		})
		if err != nil {
			return err
		}
		slices.Sort(gens)
		for _, g := range gens {
			s.gen = g
			err := tx.Bucket(journalName(g)).ForEach(func(k, v []byte) error {
				s.records++
				if len(k) == 8 {
					s.seq = max(s.seq, binary.BigEndian.Uint64(k))
				}
				user, bs, err := decodeRecord(v)
				if err != nil {
					// One bad record loses one user's state at that
					// point; refusing to start would lose everyone's.
					s.log.Warn("skipping unreadable journal record", "key", fmt.Sprintf("%x", k), "error", err)
					return nil
				}
				if len(bs) == 0 {
					delete(out, user)
				} else {
					out[user] = bs
				}
				return nil
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("location: load: %w", err)
	}
	return out, nil
}

// rewrite replaces the whole journal with state in one transaction: used by
// Open to drop expired bindings and obsolete records before serving.
func (s *store) rewrite(state map[string][]Binding) error {
	users := make([]string, 0, len(state))
	for u := range state {
		users = append(users, u)
	}
	slices.Sort(users)
	gen, seq := s.gen+1, s.seq
	err := s.db.Update(func(tx *bolt.Tx) error {
		if err := deleteGenerations(tx, gen); err != nil {
			return err
		}
		bk, err := tx.CreateBucket(journalName(gen))
		if err != nil {
			return err
		}
		bk.FillPercent = 1.0
		for _, u := range users {
			seq++
			var key [8]byte
			binary.BigEndian.PutUint64(key[:], seq)
			if err := bk.Put(key[:], appendRecord(nil, u, state[u])); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("location: rewrite journal: %w", err)
	}
	s.gen, s.seq, s.records = gen, seq, len(users)
	return nil
}

// deleteGenerations deletes every journal bucket older than gen.
func deleteGenerations(tx *bolt.Tx, gen uint64) error {
	var old [][]byte
	err := tx.ForEach(func(name []byte, _ *bolt.Bucket) error {
		if g, ok := bytes.CutPrefix(name, []byte(journalPrefix)); ok {
			if n, err := strconv.ParseUint(string(g), 10, 64); err == nil && n < gen {
				old = append(old, bytes.Clone(name))
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, name := range old {
		if err := tx.DeleteBucket(name); err != nil {
			return err
		}
	}
	return nil
}
