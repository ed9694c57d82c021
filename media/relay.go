package media

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgewise-sip/edgewise/media/mmsg"
)

// Relay owns the port pool, the packet workers and every Session.
type Relay struct {
	set Settings
	// tuned holds the settings a reload may change (Prepare): the timeout
	// and AllowB. set's copies are the ones it started with.
	tuned atomic.Pointer[tuning]
	log   *slog.Logger
	pool  *PortPool
	epoch time.Time

	workers []*worker
	next    atomic.Uint32

	mu       sync.Mutex
	state    workerState
	sessions map[string]*Session

	created, timeouts atomic.Uint64
	lost              atomic.Uint64 // RTP lost (sequence gaps) on sessions that ended
	failures          [numSetupFailures]atomic.Uint64

	// afterCheck, when set (tests), runs after each timeout sweep.
	afterCheck func(now int64)
}

type tuning struct {
	timeout time.Duration
	allowB  []netip.Prefix
}

// Prepare checks new settings and returns commit, which puts the ones a
// running relay can change in force: Timeout (for the next sweep) and
// AllowB (for sessions made afterwards; a call keeps the ranges it started
// with). The ports, addresses and worker count are fixed at NewRelay: they
// apply after a restart (the reload result says so) and are ignored here.
func (r *Relay) Prepare(s Settings) (commit func(), err error) {
	s, err = s.withDefaults()
	if err != nil {
		return nil, err
	}
	t := &tuning{timeout: s.Timeout, allowB: slices.Clone(s.AllowB)}
	return func() { r.tuned.Store(t) }, nil
}

// NewRelay validates s and prepares the pool; no socket is bound until
// NewSession. Call Run to relay.
func NewRelay(s Settings, log *slog.Logger) (*Relay, error) {
	s, err := s.withDefaults()
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	pool, err := NewPortPool(s.Ports, s.BindIP, mmsg.SocketOptions{Buffer: s.SocketBuffer, TOS: tosEF})
	if err != nil {
		return nil, err
	}
	r := &Relay{
		set:      s,
		log:      log,
		pool:     pool,
		epoch:    time.Now(),
		sessions: make(map[string]*Session),
	}
	r.tuned.Store(&tuning{timeout: s.Timeout, allowB: s.AllowB})
	for range s.Workers {
		r.workers = append(r.workers, newWorker(r))
	}
	return r, nil
}

// Settings returns the settings in force, defaults filled in.
func (r *Relay) Settings() Settings { return r.set }

// now is monotonic nanoseconds since the relay was made.
func (r *Relay) now() int64 { return int64(time.Since(r.epoch)) }

// Run relays until ctx is done, then closes every session (their ports
// return to the pool) and returns nil. It fails only if the epoll set cannot
// be made or a worker's epoll_wait fails.
func (r *Relay) Run(ctx context.Context) error {
	r.mu.Lock()
	if r.state != stateIdle {
		r.mu.Unlock()
		return errors.New("media: relay already ran")
	}
	r.state = stateRunning
	r.mu.Unlock()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, len(r.workers))
	for _, w := range r.workers {
		if err := w.start(); err != nil {
			cancel()
			errs <- err
			break
		}
		wg.Go(func() {
			if err := w.loop(); err != nil {
				errs <- err
				cancel()
			}
		})
	}
	wg.Go(func() { r.sweep(ctx) })
	<-ctx.Done()

	r.mu.Lock()
	r.state = stateStopped
	r.mu.Unlock()
	for _, w := range r.workers {
		w.mu.Lock()
		running := w.state == stateRunning
		if !running {
			w.state = stateStopped
		}
		pending := w.pending
		w.pending = nil
		w.mu.Unlock()
		if running {
			w.requestStop()
		}
		for _, s := range pending {
			s.free()
		}
	}
	wg.Wait()
	r.mu.Lock()
	for id, s := range r.sessions {
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		s.free()
		delete(r.sessions, id)
	}
	r.mu.Unlock()
	select {
	case err := <-errs:
		return err
	default:
		return nil
	}
}

// setupFailure counts why NewSession failed; the set is closed.
type setupFailure uint8

const (
	failNoPorts setupFailure = iota
	failDuplicate
	failStopped
	numSetupFailures
)

var setupFailureNames = [numSetupFailures]string{"no_ports", "duplicate", "stopped"}

// NewSession allocates both legs' port pairs and starts relaying between
// them. id is the caller's key (a Call-ID, say) for Session and status. It
// may be called before Run; packets wait in the sockets until Run starts.
func (r *Relay) NewSession(id string) (*Session, error) {
	r.mu.Lock()
	state, dup := r.state, r.sessions[id] != nil
	r.mu.Unlock()
	switch {
	case state == stateStopped:
		r.failures[failStopped].Add(1)
		return nil, ErrClosed
	case dup:
		r.failures[failDuplicate].Add(1)
		return nil, fmt.Errorf("%w: %q", ErrDuplicate, id)
	}
	pa, err := r.pool.allocate()
	if err != nil {
		r.failures[failNoPorts].Add(1)
		return nil, err
	}
	pb, err := r.pool.allocate()
	if err != nil {
		r.pool.release(pa)
		r.failures[failNoPorts].Add(1)
		return nil, err
	}
	s := &Session{id: id, r: r, created: time.Now(), entries: [4]int32{-1, -1, -1, -1}}
	v6 := r.set.BindIP.Is6() && !r.set.BindIP.Is4In6()
	s.legs[A] = Leg{s: s, side: A, pair: pa, advertise: r.set.LocalIP, v6: v6}
	s.legs[B] = Leg{s: s, side: B, pair: pb, advertise: r.set.PublicIP, v6: v6, allow: r.tuned.Load().allowB}
	for i := range s.legs {
		s.legs[i].rtp.fd, s.legs[i].rtcp.fd = s.legs[i].pair.rtp, s.legs[i].pair.rti
	}

	r.mu.Lock()
	if r.state == stateStopped || r.sessions[id] != nil {
		stopped := r.state == stateStopped
		r.mu.Unlock()
		s.free()
		if stopped {
			r.failures[failStopped].Add(1)
			return nil, ErrClosed
		}
		r.failures[failDuplicate].Add(1)
		return nil, fmt.Errorf("%w: %q", ErrDuplicate, id)
	}
	r.sessions[id] = s
	r.mu.Unlock()
	r.created.Add(1)

	s.w = r.workers[r.next.Add(1)%uint32(len(r.workers))]
	s.w.submit(command{s: s, add: true})
	return s, nil
}

// forget drops s from the session table.
func (r *Relay) forget(s *Session) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.sessions[s.id] == s {
		delete(r.sessions, s.id)
	}
}

// Session returns the open session with this id, or nil.
func (r *Relay) Session(id string) *Session {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.sessions[id]
}

// Sessions returns the stats of every open session, oldest first, for the
// status API.
func (r *Relay) Sessions() []SessionStats {
	r.mu.Lock()
	list := make([]*Session, 0, len(r.sessions))
	for _, s := range r.sessions {
		list = append(list, s)
	}
	r.mu.Unlock()
	slices.SortFunc(list, func(a, b *Session) int { return a.created.Compare(b.created) })
	out := make([]SessionStats, 0, len(list))
	for _, s := range list {
		out = append(out, s.Stats())
	}
	return out
}

// Pool returns the port pool's counts.
func (r *Relay) Pool() PoolStats { return r.pool.Stats() }

// sweep looks for silent legs a few times per Timeout.
func (r *Relay) sweep(ctx context.Context) {
	// A quarter of the shortest timeout ever configured, so a reload that
	// shortens it is honoured in time.
	every := func() time.Duration { return min(max(r.tuned.Load().timeout/4, 10*time.Millisecond), time.Second) }
	period := every()
	t := time.NewTicker(period)
	defer t.Stop()
	var list []*Session
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if p := every(); p != period {
			period = p
			t.Reset(p)
		}
		timeout := int64(r.tuned.Load().timeout)
		now := r.now()
		r.mu.Lock()
		list = list[:0]
		for _, s := range r.sessions {
			list = append(list, s)
		}
		r.mu.Unlock()
		for _, s := range list {
			side, fn, fired := s.silentLeg(now, timeout)
			if !fired {
				continue
			}
			r.timeouts.Add(1)
			r.log.Info("media: leg silent, call timed out", "session", s.id, "side", side, "timeout", time.Duration(timeout))
			if fn != nil {
				fn(side)
			}
		}
		clear(list)
		if r.afterCheck != nil {
			r.afterCheck(now)
		}
	}
}
