package upstream

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"runtime/pprof"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/edgewise-sip/edgewise/registrar/directory"
	"github.com/edgewise-sip/edgewise/registrar/location"
	"github.com/edgewise-sip/edgewise/registrar/twilio/edge"
)

// EdgeMonitor is what the Manager needs from the edge monitor; *edge.Monitor
// implements it. Declared here, by its consumer.
type EdgeMonitor interface {
	Active() (edge string, ok bool)
	Targets(edge string) []edge.Target
	Resolve(ctx context.Context, edge string) ([]edge.Target, error)
	Report(t edge.Target, res edge.Result, err error)
	Subscribe(fn func(edge.Change)) (cancel func())
	Settings() edge.Settings
	Status() []edge.EdgeStatus
	IPHealth(edge string) map[netip.Addr]edge.IPHealth
}

var _ EdgeMonitor = (*edge.Monitor)(nil)

// Bindings is what the Manager needs from the local bindings table;
// *location.Table implements it.
type Bindings interface {
	Subscribe(fn func(user string, live int))
	Lookup(user string) []location.Binding
	Users() []string
}

var _ Bindings = (*location.Table)(nil)

// Options are the Manager's collaborators.
type Options struct {
	// Edges decides the active edge and its IPs, and takes every outcome.
	Edges EdgeMonitor
	// Bindings tells which users have live local bindings.
	Bindings Bindings
	// Sender sends the REGISTERs (ClientSender in production).
	Sender Sender
	// DB, when set, persists the upstream state in its own bucket of this
	// bbolt file (the one the location table uses). nil keeps it in memory.
	DB *bolt.DB
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// OnMoved, when set, hears each completed move batch: every
	// registration an active-edge change moved is registered at the new
	// edge (for the status page's recent events). It must not block.
	OnMoved func(kind, to string, moved int, took time.Duration)
}

// Manager keeps one upstream registration per local user that has at least
// one live binding: AOR sip:<twilio_user>@<domain>.sip.twilio.com, sent to
// the active edge's IPs one at a time, with a Contact per edge. It follows
// the edge monitor's decisions (failover, failback, reload) with paced,
// make-before-break moves, retries for ever with capped backoff, and
// persists its state so a restart resumes without a storm. All methods are
// safe for concurrent use.
type Manager struct {
	onMoved func(kind, to string, moved int, took time.Duration)
	mon     EdgeMonitor
	table   Bindings
	sender  Sender
	store   *store // nil: memory only
	log     *slog.Logger
	metrics *metrics
	now     func() time.Time
	held    *heldContacts

	mu       sync.Mutex
	s        Settings
	dir      directory.Twilio
	users    map[string]*reg
	queue    regHeap
	pace     pacer
	inflight int
	batch    *moveBatch
	lastSent map[netip.Addr]time.Time // edge IP → last REGISTER sent there
	inFlight map[string]map[uint64]context.CancelCauseFunc
	seq      uint64

	// Inputs from other goroutines, drained by Run; their own locks so the
	// location notifier and the monitor's delivery never wait for mu.
	inMu    sync.Mutex
	live    map[string]int
	changes []edge.Change

	probeAt time.Time // next register-method probe look; Run's goroutine only

	wake    chan struct{} // cap 1
	started atomic.Bool
}

// New returns a Manager for s and dir. With opts.DB it loads the state the
// previous run persisted; Run resumes it. It subscribes to the bindings
// table at once, so no change between New and Run is lost.
func New(s Settings, dir directory.Twilio, opts Options) (*Manager, error) {
	s = s.withDefaults()
	if err := s.validate(); err != nil {
		return nil, err
	}
	switch {
	case opts.Edges == nil:
		return nil, errors.New("upstream: no edge monitor")
	case opts.Bindings == nil:
		return nil, errors.New("upstream: no bindings table")
	case opts.Sender == nil:
		return nil, errors.New("upstream: no sender")
	case dir == nil:
		return nil, errors.New("upstream: no directory")
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	m := &Manager{
		mon:      opts.Edges,
		table:    opts.Bindings,
		sender:   opts.Sender,
		log:      log,
		metrics:  newMetrics().withSeries(),
		now:      time.Now,
		s:        s,
		dir:      dir,
		users:    map[string]*reg{},
		lastSent: map[netip.Addr]time.Time{},
		inFlight: map[string]map[uint64]context.CancelCauseFunc{},
		live:     map[string]int{},
		wake:     make(chan struct{}, 1),
		onMoved:  opts.OnMoved,
		held:     newHeldContacts(),
	}
	m.pace.set(s.MoveRate)
	if opts.DB != nil {
		m.store = newStore(opts.DB, log)
		recs, err := m.store.load()
		if err != nil {
			return nil, err
		}
		now := m.now()
		for user, rec := range recs {
			m.users[user] = m.restore(user, rec, now)
		}
		if len(recs) > 0 {
			log.Info("upstream state loaded", "users", len(recs))
		}
	}
	m.table.Subscribe(m.onLive)
	return m, nil
}

// restore rebuilds a user from its persisted record. A registration whose
// refresh fell due while edgewise was down is refreshed soon, spread over a
// window inside its remaining lifetime rather than all at once.
func (m *Manager) restore(user string, rec *record, now time.Time) *reg {
	r := newReg(user)
	r.rec = *rec
	r.cseq = rec.CSeq // the ceiling: everything above it is unused
	if c, ok := m.dir.Upstream(user); ok {
		r.creds, r.configured = c, true
		if c.User == rec.AOR {
			// Passwords are never persisted; assume the registration was
			// made with the configured one (a changed one is found out at
			// the next refresh, by a 403).
			r.regPass = c.Password
		}
	}
	// The previous process may have sent REGISTERs for this AOR a moment
	// ago (a crash loop restarts fast): count the per-AOR budget as spent.
	for i := range r.sent {
		r.sent[i] = now
	}
	r.live = len(m.table.Lookup(user))
	if r.rec.Contact != "" {
		m.held.note(user, r.rec.Edge, r.rec.ExpiresAt, now)
	}
	for _, lo := range r.rec.Leftovers {
		m.held.note(user, lo.Edge, lo.ExpiresAt, now)
	}
	if r.rec.Contact != "" && now.Before(r.rec.ExpiresAt) && !now.Before(r.rec.RefreshAt) {
		left := r.rec.ExpiresAt.Sub(now)
		r.rec.RefreshAt = now.Add(jitter(min(left/2, time.Minute)))
	}
	return r
}

// Apply installs new settings and a new directory (a reload). A user whose
// Twilio credentials changed registers again (a new AOR gets a new Call-ID
// and the old AOR's contact an Expires: 0); a user no longer in dir is
// unregistered upstream; a changed public address re-registers with the new
// Contact and removes the old one. Local bindings are never touched. The
// edge order is the edge monitor's business (edge.Monitor.Apply): its
// Change moves the registrations.
func (m *Manager) Apply(s Settings, dir directory.Twilio) error {
	commit, err := m.Prepare(s, dir)
	if err != nil {
		return err
	}
	commit()
	return nil
}

// Prepare checks s and dir and returns commit, which applies them as Apply
// does and cannot fail.
func (m *Manager) Prepare(s Settings, dir directory.Twilio) (commit func(), err error) {
	s = s.withDefaults()
	if err := s.validate(); err != nil {
		return nil, err
	}
	if dir == nil {
		return nil, errors.New("upstream: no directory")
	}
	return func() { m.apply(s, dir) }, nil
}

// apply is Apply's work on checked settings.
func (m *Manager) apply(s Settings, dir directory.Twilio) {
	m.mu.Lock()
	m.s, m.dir = s, dir
	m.pace.set(s.MoveRate)
	for _, r := range m.users {
		if m.lookupCreds(r) {
			// New credentials are what fixes a 403: try them now rather
			// than at the end of the user's backoff.
			r.retryAt, r.userFault = time.Time{}, false
		}
		m.poke(r)
	}
	m.mu.Unlock()
	m.kick()
}

// onLive is the bindings table's subscriber. It only records the count:
// the table's notifier must not wait for us.
func (m *Manager) onLive(user string, live int) {
	m.inMu.Lock()
	m.live[user] = live
	m.inMu.Unlock()
	m.kick()
}

// onChange is the edge monitor's subscriber. Like onLive it hands the change
// to Run and returns: the monitor delivers changes one at a time.
func (m *Manager) onChange(ch edge.Change) {
	m.inMu.Lock()
	m.changes = append(m.changes, ch)
	m.inMu.Unlock()
	m.kick()
}

func (m *Manager) kick() {
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// lookupCreds refreshes r's credentials from the directory and reports
// whether they changed. Called with mu held.
func (m *Manager) lookupCreds(r *reg) bool {
	c, ok := m.dir.Upstream(r.user)
	changed := c != r.creds || ok != r.configured
	r.creds, r.configured = c, ok
	return changed
}

// userLocked returns r for user, creating it. Called with mu held.
func (m *Manager) userLocked(user string) *reg {
	r := m.users[user]
	if r == nil {
		r = newReg(user)
		m.lookupCreds(r)
		m.users[user] = r
	}
	return r
}

// Status is one user's upstream registration, JSON-ready for /v1/status
// ("upstream": {...} per user).
type Status struct {
	User string `json:"user"`
	// AOR is the Twilio user registered as.
	AOR  string `json:"aor,omitempty"`
	Edge string `json:"edge"` // "" while not registered
	IP   string `json:"ip"`
	// State is registering, registered, moving, failing, unregistering,
	// unregistered or not_configured.
	State     string    `json:"state"`
	ExpiresAt time.Time `json:"expires_at,omitzero"`
	LastError string    `json:"last_error"` // "" after a success
	// FailingSince is when the current run of failures began; zero while
	// the last attempt succeeded.
	FailingSince time.Time `json:"failing_since,omitzero"`
}

// Status returns user's upstream state; ok is false for a user the Manager
// does not track (no live binding and nothing registered).
func (m *Manager) Status(user string) (Status, bool) {
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	r := m.users[user]
	if r == nil {
		return Status{}, false
	}
	return m.statusLocked(r, now), true
}

// Statuses returns every tracked user, sorted by user.
func (m *Manager) Statuses() []Status {
	now := m.now()
	m.mu.Lock()
	out := make([]Status, 0, len(m.users))
	for _, r := range m.users {
		out = append(out, m.statusLocked(r, now))
	}
	m.mu.Unlock()
	slices.SortFunc(out, func(a, b Status) int { return cmp.Compare(a.User, b.User) })
	return out
}

func (m *Manager) statusLocked(r *reg, now time.Time) Status {
	st := Status{
		User:         r.user,
		AOR:          r.rec.AOR,
		Edge:         r.rec.Edge,
		IP:           r.rec.IP,
		ExpiresAt:    r.rec.ExpiresAt,
		LastError:    r.lastErr,
		FailingSince: r.failingSince,
		State:        r.state(now),
	}
	if r.rec.Contact == "" {
		st.AOR = r.creds.User
		st.ExpiresAt = time.Time{}
	}
	return st
}

// Run registers, refreshes, moves and unregisters until ctx is done. It
// owns every goroutine it starts and returns nil after they have all
// stopped and the state is saved. Registrations are left in place at
// Twilio: the next process resumes them. Run may be called once.
func (m *Manager) Run(ctx context.Context) error {
	if !m.started.CompareAndSwap(false, true) {
		return errors.New("upstream: Run called more than once")
	}
	var err error
	// Labels mark every goroutine Run starts (they inherit them), so
	// profiles attribute their cost and tests can prove none outlives Run.
	pprof.Do(ctx, pprof.Labels("component", "upstream", "manager", m.id()), func(ctx context.Context) {
		err = m.run(ctx)
	})
	return err
}

func (m *Manager) run(ctx context.Context) error {
	if m.store != nil {
		go m.store.run()
		// Runs last: every worker has finished, so nothing saves after it.
		defer m.store.stop()
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	unsubscribe := m.mon.Subscribe(m.onChange)
	defer unsubscribe()
	m.bootstrap()
	return m.loop(ctx, &wg)
}

// id names this Manager in goroutine labels.
func (m *Manager) id() string { return fmt.Sprintf("%p", m) }

// bootstrap takes the bindings table's current view: users with live
// bindings and users the previous run registered.
func (m *Manager) bootstrap() {
	users := m.table.Users()
	m.mu.Lock()
	for user := range m.users {
		users = append(users, user)
	}
	m.mu.Unlock()
	slices.Sort(users)
	users = slices.Compact(users)
	counts := make(map[string]int, len(users))
	for _, u := range users {
		counts[u] = len(m.table.Lookup(u))
	}
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	for u, n := range counts {
		r := m.userLocked(u)
		r.live = n
		// Spread the first look at each user over a second, so a large
		// restored table does not decide all at once.
		m.schedule(r, now.Add(jitter(time.Second)))
	}
}

// newCallID returns a Call-ID for a new AOR registration.
func newCallID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go ≥ 1.24)
	return hex.EncodeToString(b) + "@edgewise"
}
