package upstream

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
)

// bucketName is the Manager's bucket in the bbolt file it shares with the
// location table (one file, one store).
var bucketName = []byte("upstream.v1")

// record is one user's persisted upstream state: enough to resume after a
// restart (kill -9 included) with the same Call-ID, a higher CSeq, the same
// edge and expiry, and to clean up contacts that may still be bound.
type record struct {
	AOR    string `json:"aor"`    // Twilio user registered as
	Domain string `json:"domain"` // SIP Domain of the AOR
	CallID string `json:"call_id"`
	// CSeq is a ceiling: no REGISTER with a higher CSeq has been sent. It is
	// persisted ahead of use (cseqBlock at a time) so a restart continues
	// above anything sent, without a write per REGISTER.
	CSeq      uint32     `json:"cseq"`
	Edge      string     `json:"edge,omitempty"`
	IP        string     `json:"ip,omitempty"`
	Contact   string     `json:"contact,omitempty"`
	ExpiresAt time.Time  `json:"expires_at,omitzero"`
	RefreshAt time.Time  `json:"refresh_at,omitzero"`
	Leftovers []leftover `json:"leftovers,omitempty"`
}

// leftover is a Contact that may still be bound at Twilio and is not the
// current registration: the old edge's after a move, one a REGISTER was sent
// for but whose answer was not seen (a crash mid-move), or one from an
// earlier public address. Each gets an Expires: 0 until it is gone or would
// have expired anyway.
type leftover struct {
	Edge      string    `json:"edge"`
	Contact   string    `json:"contact"`
	AOR       string    `json:"aor"`
	Domain    string    `json:"domain"`
	ExpiresAt time.Time `json:"expires_at"`
}

// key identifies a leftover: the same Contact URI under another AOR (after
// a twilio_user change) is another binding.
func (lo leftover) key() string { return lo.AOR + " " + lo.Contact }

// store writes records to bbolt with group commit: save hands over the
// user's latest record (nil deletes it); one writer goroutine commits
// everything pending in a single transaction. Saves for one user coalesce.
type store struct {
	db  *bolt.DB
	log *slog.Logger

	mu      sync.Mutex
	pending map[string]*record
	deleted map[string]bool
	batch   *commit
	closed  bool

	kick chan struct{}
	quit chan struct{}
	done chan struct{}
}

// commit is one batch; done closes when it is durable (or failed).
type commit struct {
	done chan struct{}
	err  error
}

func newCommit() *commit { return &commit{done: make(chan struct{})} }

func newStore(db *bolt.DB, log *slog.Logger) *store {
	return &store{
		db:      db,
		log:     log,
		pending: map[string]*record{},
		deleted: map[string]bool{},
		batch:   newCommit(),
		kick:    make(chan struct{}, 1),
		quit:    make(chan struct{}),
		done:    make(chan struct{}),
	}
}

// load reads every record, creating the bucket if needed. A record that does
// not decode is skipped with a warning: losing one user's resume state is
// better than refusing to start.
func (s *store) load() (map[string]*record, error) {
	out := map[string]*record{}
	err := s.db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucketName)
		if err != nil {
			return err
		}
		return b.ForEach(func(k, v []byte) error {
			var r record
			if err := json.Unmarshal(v, &r); err != nil || r.CallID == "" {
				s.log.Warn("skipping unreadable upstream record", "user", string(k), "error", err)
				return nil
			}
			out[string(k)] = &r
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("upstream: load state: %w", err)
	}
	return out, nil
}

// save schedules user's record (nil: delete it) for the next commit and
// returns a function that waits until it is durable.
func (s *store) save(user string, r *record) func() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return func() error { return errors.New("upstream: state store closed") }
	}
	if r == nil {
		delete(s.pending, user)
		s.deleted[user] = true
	} else {
		delete(s.deleted, user)
		s.pending[user] = r
	}
	c := s.batch
	s.mu.Unlock()
	select {
	case s.kick <- struct{}{}:
	default:
	}
	return func() error {
		<-c.done
		return c.err
	}
}

// run commits batches until stop; it commits what is pending before
// returning.
func (s *store) run() {
	defer close(s.done)
	for {
		select {
		case <-s.kick:
			s.commitPending()
		case <-s.quit:
			s.commitPending()
			return
		}
	}
}

// stop ends run after a last commit; later saves fail.
func (s *store) stop() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	s.mu.Unlock()
	close(s.quit)
	<-s.done
}

func (s *store) commitPending() {
	s.mu.Lock()
	pending, deleted, c := s.pending, s.deleted, s.batch
	s.pending, s.deleted, s.batch = map[string]*record{}, map[string]bool{}, newCommit()
	s.mu.Unlock()
	if len(pending) == 0 && len(deleted) == 0 {
		close(c.done)
		return
	}
	c.err = s.db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucketName)
		if err != nil {
			return err
		}
		for user := range deleted {
			if err := b.Delete([]byte(user)); err != nil {
				return err
			}
		}
		for user, r := range pending {
			v, err := json.Marshal(r)
			if err != nil {
				return err
			}
			if err := b.Put([]byte(user), v); err != nil {
				return err
			}
		}
		return nil
	})
	if c.err != nil {
		c.err = fmt.Errorf("upstream: save state: %w", c.err)
		s.log.Error("upstream state not saved", "users", len(pending)+len(deleted), "error", c.err)
	}
	close(c.done)
}
