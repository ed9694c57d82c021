package upstream

import (
	"container/heap"
	"math/rand/v2"
	"net/netip"
	"time"

	"github.com/edgewise-sip/edgewise/registrar/directory"
	"github.com/edgewise-sip/edgewise/registrar/sip/digest"
)

// Per-AOR REGISTER rate: Twilio allows 5 per second (warning 32008). The
// window is a little longer than a second so that network jitter can never
// squeeze six into one second on Twilio's side.
const (
	rateBurst  = 5
	rateWindow = 1100 * time.Millisecond
)

// cseqBlock is how far ahead of use the CSeq ceiling is persisted.
const cseqBlock = 64

// Retry backoff: failures edges can explain (silence, transport, 5xx) retry
// quickly, a user's own problem (403/404) slowly; both are capped and never
// give up.
const (
	retryMin     = time.Second
	retryMax     = time.Minute
	userRetryMin = 30 * time.Second
	userRetryMax = 10 * time.Minute
)

// States shown in Status.
const (
	StateRegistering   = "registering"
	StateRegistered    = "registered"
	StateMoving        = "moving"
	StateFailing       = "failing"
	StateUnregistering = "unregistering"
	StateUnregistered  = "unregistered"
	StateNotConfigured = "not_configured"
)

// reg is one user's upstream registration. Fields are guarded by
// Manager.mu, except those marked as the worker's: only the one worker
// running for the user (busy) touches them, and mu orders workers.
type reg struct {
	user string

	// What is wanted.
	live       int // live local bindings
	creds      directory.TwilioUser
	configured bool

	// What is registered; persisted.
	rec     record
	cseq    uint32 // last CSeq used; rec.CSeq is the persisted ceiling
	regPass string // password of the current registration (memory only)
	// passwords of leftovers by contact (memory only; after a restart the
	// configured password is used when the AOR still matches).
	leftPass map[string]string

	// Status.
	lastErr      string
	failingSince time.Time
	failures     int
	userFault    bool // the last failure was the user's: edge changes do not retry it
	retryAt      time.Time
	leftFails    int
	leftRetryAt  time.Time
	minExpires   int // seconds, learned from a 423

	// Requests to register at the active edge.
	move  bool // from an edge change: only if not already there
	force bool // unconditionally (retry, keepalive probe, same-edge reload)
	// probe is the IP a register-method keepalive wants this REGISTER to
	// try first (zero: the usual order).
	probe netip.Addr
	batch *moveBatch

	// Scheduling.
	due      time.Time
	index    int // in Manager.queue; -1 when not queued
	busy     bool
	activity string // what the busy worker does, for Status

	// The worker's.
	auth    map[string]*digest.Answerer // edge → its last challenge
	sent    [rateBurst]time.Time        // send times, ring
	sentIdx int
}

func newReg(user string) *reg {
	return &reg{user: user, index: -1, auth: map[string]*digest.Answerer{}, leftPass: map[string]string{}}
}

func (r *reg) want() bool { return r.live > 0 && r.configured }

func (r *reg) registered() bool { return r.rec.Contact != "" }

func (r *reg) state(now time.Time) string {
	switch {
	case r.busy && r.activity != "":
		return r.activity
	case r.live > 0 && !r.configured:
		if len(r.rec.Leftovers) > 0 || r.registered() {
			return StateUnregistering
		}
		return StateNotConfigured
	case !r.want():
		if len(r.rec.Leftovers) > 0 || r.registered() {
			return StateUnregistering
		}
		return StateUnregistered
	case r.failures > 0 || r.registered() && !now.Before(r.rec.ExpiresAt):
		return StateFailing
	case !r.registered():
		return StateRegistering
	case r.move:
		return StateMoving
	default:
		return StateRegistered
	}
}

// moveBatch follows one edge change's moves, for the metric of how long a
// whole batch took.
type moveBatch struct {
	kind    string
	to      string
	start   time.Time
	pending int
	total   int // pending when the batch started
}

// regHeap orders users by when they are next due.
type regHeap []*reg

func (h regHeap) Len() int           { return len(h) }
func (h regHeap) Less(i, j int) bool { return h[i].due.Before(h[j].due) }
func (h regHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index = i
	h[j].index = j
}
func (h *regHeap) Push(x any) {
	r := x.(*reg)
	r.index = len(*h)
	*h = append(*h, r)
}
func (h *regHeap) Pop() any {
	old := *h
	n := len(old)
	r := old[n-1]
	old[n-1] = nil
	r.index = -1
	*h = old[:n-1]
	return r
}

// schedule makes r due at t (earlier only, if it is already queued sooner).
// A busy user is looked at again when its worker finishes. Called with mu held.
func (m *Manager) schedule(r *reg, t time.Time) {
	if r.busy {
		return
	}
	if r.index >= 0 {
		if !t.Before(r.due) {
			return
		}
		r.due = t
		heap.Fix(&m.queue, r.index)
		return
	}
	r.due = t
	heap.Push(&m.queue, r)
}

// reschedule sets r's due time to exactly t. Called with mu held.
func (m *Manager) reschedule(r *reg, t time.Time) {
	if r.busy {
		return
	}
	r.due = t
	if r.index >= 0 {
		heap.Fix(&m.queue, r.index)
	} else {
		heap.Push(&m.queue, r)
	}
}

// unqueue removes r from the queue. Called with mu held.
func (m *Manager) unqueue(r *reg) {
	if r.index >= 0 {
		heap.Remove(&m.queue, r.index)
	}
}

// poke makes r be looked at now. Called with mu held.
func (m *Manager) poke(r *reg) { m.schedule(r, m.now()) }

// pacer spaces the start of REGISTER exchanges to rate per second with a
// small burst (GCRA): a failover of 1,000 users at 500/s takes 2 s and never
// sends them in one go.
type pacer struct {
	interval time.Duration
	tol      time.Duration // burst tolerance
	tat      time.Time     // theoretical arrival time of the next start
}

func (p *pacer) set(rate int) {
	p.interval = time.Second / time.Duration(max(rate, 1))
	// A burst of 1/20 s worth (at least 1) absorbs timer granularity.
	p.tol = time.Duration(max(rate/20-1, 0)) * p.interval
}

// next is when the next start is allowed.
func (p *pacer) next() time.Time { return p.tat.Add(-p.tol) }

func (p *pacer) ready(now time.Time) bool { return !now.Before(p.next()) }

func (p *pacer) take(now time.Time) {
	if p.tat.Before(now) {
		p.tat = now
	}
	p.tat = p.tat.Add(p.interval)
}

// jitter returns a random duration in [0, d).
func jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return rand.N(d)
}

// backoff is the wait before retry n (1-based): doubling from the minimum to
// the cap, ±25 % so users that failed together do not retry together.
func backoff(n int, userFault bool) time.Duration {
	lo, hi := retryMin, retryMax
	if userFault {
		lo, hi = userRetryMin, userRetryMax
	}
	d := hi
	if n < 20 {
		d = min(lo<<max(n-1, 0), hi)
	}
	return d - d/4 + jitter(d/2)
}

// refreshDelay is when to refresh a registration granted for g: about half
// of it, minus up to a tenth, so users registered together drift apart.
func refreshDelay(g time.Duration) time.Duration {
	return max(g/2-jitter(g/10), 500*time.Millisecond)
}
