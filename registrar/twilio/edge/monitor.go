package edge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// maxPending bounds the queue of changes not yet delivered (only reached
// when Run is not running); the oldest are dropped, the latest state wins.
const maxPending = 64

// Monitor owns the one active-edge decision that registrations, keepalives
// and new calls share, so they never disagree: DNS answers per edge with TTL and
// serve-stale, per-IP and per-edge health fed by its own probes and by
// Report, failback hold, and reload. All methods are safe for concurrent use.
type Monitor struct {
	prober  Prober
	log     *slog.Logger
	now     func() time.Time // replaced in tests
	metrics *metrics
	onState atomic.Pointer[func(edge string, down bool, reason string, at time.Time)]

	mu       sync.Mutex
	s        Settings
	res      resolver
	edges    []*edgeHealth // configured order
	byName   map[string]*edgeHealth
	active   string
	activeOK bool
	subs     []*subscriber
	pending  []Change
	// states are edge transitions (down, back up) waiting for delivery
	// to OnEdgeState's function, outside the lock, like pending.
	states  []stateEvent
	ready   chan struct{} // closed once every initial edge's first lookup finished
	isReady bool

	wake    chan struct{} // cap 1: Run should reschedule
	notify  chan struct{} // cap 1: pending changes to deliver
	running atomic.Bool
}

type subscriber struct{ fn func(Change) }

// New returns a Monitor for s. Nothing is resolved or probed until Run; until
// then the most-preferred edge is active (unknown is not failed).
func New(s Settings, prober Prober, logger *slog.Logger) (*Monitor, error) {
	s = s.withDefaults()
	if err := s.validate(); err != nil {
		return nil, err
	}
	if prober == nil {
		return nil, errors.New("edge: nil prober")
	}
	if logger == nil {
		logger = slog.Default()
	}
	m := &Monitor{
		prober:  prober,
		log:     logger,
		now:     time.Now,
		metrics: newMetrics().withSeries(),
		s:       s,
		res:     newResolver(s.DNSServer),
		ready:   make(chan struct{}),
		wake:    make(chan struct{}, 1),
		notify:  make(chan struct{}, 1),
	}
	now := m.now()
	m.byName = make(map[string]*edgeHealth, len(s.Edges))
	for _, name := range s.Edges {
		e := newEdgeHealth(s, name, now)
		m.edges = append(m.edges, e)
		m.byName[name] = e
	}
	m.active, m.activeOK = s.Edges[0], true
	return m, nil
}

// Settings returns the settings in force, defaults filled in.
func (m *Monitor) Settings() Settings {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.s
	s.Edges = slices.Clone(s.Edges)
	return s
}

// Apply installs new settings (reload). A changed edge order takes effect at
// once: the active edge is chosen afresh as the first healthy edge in the new
// order, and subscribers get a ChangeReload. Edges whose FQDN, port or
// transport changed start over with unknown health; the others keep theirs.
// If the active edge keeps its name but changes address, subscribers get a
// ChangeReload with From == To so registrations move all the same.
func (m *Monitor) Apply(s Settings) error {
	commit, err := m.Prepare(s)
	if err != nil {
		return err
	}
	commit()
	return nil
}

// Prepare checks s and returns commit, which applies it as Apply does and
// cannot fail.
func (m *Monitor) Prepare(s Settings) (commit func(), err error) {
	s = s.withDefaults()
	if err := s.validate(); err != nil {
		return nil, err
	}
	return func() { m.apply(s) }, nil
}

// apply is Apply's work on checked settings.
func (m *Monitor) apply(s Settings) {
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	old := m.s
	if s.DNSServer != old.DNSServer {
		m.res = newResolver(s.DNSServer)
		// A different server may give a different answer: ask it now.
		for _, e := range m.edges {
			e.dnsDue = now
		}
	}
	edges := make([]*edgeHealth, 0, len(s.Edges))
	byName := make(map[string]*edgeHealth, len(s.Edges))
	replaced := false
	for _, name := range s.Edges {
		e := m.byName[name]
		if e == nil || e.fqdn != s.FQDN(name) || e.port != s.Port || e.transport != s.Transport {
			e = newEdgeHealth(s, name, now)
			replaced = true
		}
		edges = append(edges, e)
		byName[name] = e
	}
	for name := range m.byName {
		if byName[name] == nil {
			m.metrics.forget(name)
		}
	}
	prev := m.active
	activeReplaced := m.byName[prev] != nil && byName[prev] != nil && m.byName[prev] != byName[prev]
	m.s, m.edges, m.byName = s, edges, byName
	if replaced || !slices.Equal(old.Edges, s.Edges) {
		m.reselect(now, "reload: edge order now "+strings.Join(s.Edges, ", "))
	} else {
		m.reselect(now, "")
	}
	if activeReplaced && m.active == prev && m.activeOK {
		// Same edge name, new address: registrations there must move too.
		e := byName[prev]
		m.emit(Change{From: prev, To: prev, Kind: ChangeReload, At: now,
			Reason: fmt.Sprintf("reload: edge %s is now %s over %s port %d", prev, e.fqdn, e.transport, e.port)}, "")
	}
	m.poke()
}

// Active returns the edge new requests should go to: the first edge in
// configured order that is up (or not yet known to have failed), except that
// a recovered more-preferred edge waits out the failback hold. When every
// edge is down it returns the edge last chosen and ok=false; callers may
// still try it (their outcome, reported, is a probe too).
func (m *Monitor) Active() (edge string, ok bool) {
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	// Re-evaluate so an expired hold takes effect even between Run's wake-ups.
	m.reselect(now, "")
	return m.active, m.activeOK
}

// Targets returns where to send a request for edge, in the order to try
// them: IPs that are up, then unknown, then down, then those whose
// Retry-After has not passed. It is empty only if edge is not configured or
// DNS has never answered for it (stale answers are served).
func (m *Monitor) Targets(edge string) []Target {
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	e := m.byName[edge]
	if e == nil {
		return nil
	}
	rank := func(ip *ipHealth) int {
		switch {
		case now.Before(ip.retryAfter):
			return 3
		case ip.state == StateUp:
			return 0
		case ip.state == StateUnknown:
			return 1
		default:
			return 2
		}
	}
	ips := slices.Clone(e.ips)
	// Stable: within a rank the sorted address order is kept, so "the next
	// IP" is deterministic.
	slices.SortStableFunc(ips, func(a, b *ipHealth) int { return rank(a) - rank(b) })
	out := make([]Target, len(ips))
	for i, ip := range ips {
		out[i] = e.target(ip)
	}
	return out
}

// Plan is every place to try for one new request, in order: the targets of
// the active edge, then those of the other edges in configured order,
// skipping edges that are down (all of them are kept when every edge is
// down). A caller walks it, reporting each outcome, until an IP answers with
// anything but 408/5xx — "every IP of an edge, then the next edge".
func (m *Monitor) Plan() []Target {
	edge, ok := m.Active()
	out := m.Targets(edge)
	m.mu.Lock()
	var rest []string
	for _, e := range m.edges {
		if e.name != edge && (!ok || e.state != StateDown) {
			rest = append(rest, e.name)
		}
	}
	m.mu.Unlock()
	for _, name := range rest {
		out = append(out, m.Targets(name)...)
	}
	return out
}

// Resolve is Targets that waits, up to ctx, for the edge's first DNS lookup
// when there has been none yet (at start, or after a reload added the edge).
func (m *Monitor) Resolve(ctx context.Context, edge string) ([]Target, error) {
	m.mu.Lock()
	e := m.byName[edge]
	m.mu.Unlock()
	if e == nil {
		return nil, fmt.Errorf("edge %q is not configured", edge)
	}
	select {
	case <-e.firstDNS:
	case <-ctx.Done():
		return nil, fmt.Errorf("resolve edge %s: %w", edge, ctx.Err())
	}
	if ts := m.Targets(edge); len(ts) > 0 {
		return ts, nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return nil, fmt.Errorf("resolve edge %s: %s", edge, e.dnsErr)
}

// Ready is closed when the first DNS lookup of every configured edge has
// finished, successfully or not; from then on Targets of the active edge is
// non-empty unless its DNS has never answered (and then it is down).
func (m *Monitor) Ready() <-chan struct{} { return m.ready }

// Report feeds the outcome of a real request (an upstream REGISTER, an
// INVITE) into the shared health state, exactly like a probe result: pass
// the Target it went to, the first response's status code and RTT (any
// response, even 100 Trying or 4xx, proves the IP alive), or err for a
// timeout (ErrNoResponse or context.DeadlineExceeded) or transport failure.
// Reports for targets of edges no longer configured, or of addresses DNS no
// longer returns, are ignored.
func (m *Monitor) Report(t Target, res Result, err error) {
	m.observe(t, nil, nil, res, err, "report")
}

// Subscribe calls fn for every change of the active edge, in order, from the
// Monitor's Run goroutine (never concurrently; keep fn short). It returns a
// function that unsubscribes.
func (m *Monitor) Subscribe(fn func(Change)) (cancel func()) {
	sub := &subscriber{fn: fn}
	m.mu.Lock()
	m.subs = append(m.subs, sub)
	m.mu.Unlock()
	return func() {
		m.mu.Lock()
		defer m.mu.Unlock()
		m.subs = slices.DeleteFunc(m.subs, func(s *subscriber) bool { return s == sub })
	}
}

// Status returns every configured edge in order, JSON-ready for /v1/status.
func (m *Monitor) Status() []EdgeStatus {
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]EdgeStatus, 0, len(m.edges))
	for _, e := range m.edges {
		st := EdgeStatus{
			Name:   e.name,
			FQDN:   e.fqdn,
			State:  e.state,
			Active: e.name == m.active && m.activeOK,
			Since:  e.since,
			Reason: e.reason,
			DNS: DNSStatus{
				ResolvedAt: e.resolvedAt,
				ExpiresAt:  e.expiresAt,
				Stale:      e.answered && e.dnsErr != "",
				LastError:  e.dnsErr,
			},
			IPs: make([]IPStatus, 0, len(e.ips)),
		}
		for _, ip := range e.ips {
			is := IPStatus{
				IP:         ip.addr.String(),
				State:      ip.state,
				LastRTTMs:  float64(ip.rtt.Microseconds()) / 1000,
				LastStatus: ip.status,
				LastError:  ip.lastErr,
				Since:      ip.since,
			}
			if now.Before(ip.retryAfter) {
				ra := ip.retryAfter
				is.RetryAfter = &ra
			}
			st.IPs = append(st.IPs, is)
		}
		out = append(out, st)
	}
	return out
}

// IPHealth is one IP's state as data, for code that picks among an edge's
// IPs (Status is for people: it renders addresses and times as text).
type IPHealth struct {
	State State
	// InRetryAfter is set while the IP asked to be left alone (a
	// Retry-After it sent is not over).
	InRetryAfter bool
}

// IPHealth returns the state of each IP of edge.
func (m *Monitor) IPHealth(edge string) map[netip.Addr]IPHealth {
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	e := m.byName[edge]
	if e == nil {
		return nil
	}
	out := make(map[netip.Addr]IPHealth, len(e.ips))
	for _, ip := range e.ips {
		out[ip.addr] = IPHealth{State: ip.state, InRetryAfter: now.Before(ip.retryAfter)}
	}
	return out
}

// observe applies one request outcome. want, when set, is the edgeHealth the
// request was started for (probes): a reload that replaced it voids the result.
func (m *Monitor) observe(t Target, want *edgeHealth, probed *ipHealth, res Result, err error, source string) {
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	if probed != nil {
		probed.busy = false
	}
	e := m.byName[t.Edge]
	if e == nil || (want != nil && e != want) || !e.sameTarget(t) {
		return
	}
	ip := e.ip(t.IP)
	if ip == nil {
		return
	}
	timeout := m.s.Timeout
	out := classify(res, err, timeout)
	// IP transitions log at debug: the edge line (one per edge transition)
	// and the ip_state metric are what operators watch.
	m.metrics.result(e.name, source, out)
	if out.ok {
		m.metrics.rtt(e.name, res.RTT)
		ip.rtt, ip.status, ip.lastErr = res.RTT, res.StatusCode, ""
		if ip.state != StateUp {
			m.log.Debug(fmt.Sprintf("edge %s ip %s up: answered %d in %s", e.name, ip.addr, res.StatusCode, res.RTT.Round(time.Millisecond)),
				"edge", e.name, "ip", ip.addr, "source", source)
			ip.state, ip.since = StateUp, now
		}
		ip.retryAfter = time.Time{}
		if e.state != StateUp {
			m.setEdgeState(e, StateUp, fmt.Sprintf("%s answered %d in %s", ip.addr, res.StatusCode, res.RTT.Round(time.Millisecond)), "", now)
		}
	} else {
		if out.class == classTLS && (ip.state != StateDown || ip.lastErr != out.detail) {
			// A bad certificate is worth a line of its own (once per
			// IP and reason, not per probe): it is a misconfiguration or
			// an attack, not an outage, and nothing else says which.
			m.log.Warn(fmt.Sprintf("edge %s ip %s refused: %s", e.name, ip.addr, out.detail),
				"edge", e.name, "ip", ip.addr, "source", source, "class", classTLS)
		}
		ip.status, ip.lastErr, ip.class, ip.phrase = res.StatusCode, out.detail, out.class, out.phrase
		if res.RetryAfter > 0 {
			ip.retryAfter = now.Add(res.RetryAfter)
		}
		if ip.state != StateDown {
			m.log.Debug(fmt.Sprintf("edge %s ip %s down: %s", e.name, ip.addr, out.detail),
				"edge", e.name, "ip", ip.addr, "source", source)
			ip.state, ip.since = StateDown, now
		}
		m.updateDown(e, now)
	}
	m.reselect(now, "")
	m.poke()
}

// updateDown marks e down once every one of its IPs has failed.
func (m *Monitor) updateDown(e *edgeHealth, now time.Time) {
	if e.state == StateDown || len(e.ips) == 0 {
		return
	}
	for _, ip := range e.ips {
		if ip.state != StateDown {
			return
		}
	}
	reason, class := downSummary(e)
	m.setEdgeState(e, StateDown, reason, class, now)
}

// setEdgeState records an edge transition and logs the one line per
// transition, e.g. "edge ashburn down: 3/3 IPs timed out after 4s".
func (m *Monitor) setEdgeState(e *edgeHealth, st State, why, class string, now time.Time) {
	if e.state == st {
		return
	}
	from := e.state
	e.state, e.since, e.class = st, now, class
	e.reason = fmt.Sprintf("edge %s %s: %s", e.name, st, why)
	switch st {
	case StateDown:
		e.recovering = false
		m.log.Warn(e.reason, "edge", e.name, "state", st, "from", from, "class", class)
	case StateUp:
		e.recovering = from == StateDown
		m.log.Info(e.reason, "edge", e.name, "state", st, "from", from)
	}
	if st == StateDown || from == StateDown {
		if len(m.states) >= maxPending {
			m.states = m.states[1:]
		}
		m.states = append(m.states, stateEvent{edge: e.name, down: st == StateDown, reason: e.reason, at: now})
		select {
		case m.notify <- struct{}{}:
		default:
		}
	}
}

// stateEvent is one edge going down or coming back up.
type stateEvent struct {
	edge   string
	down   bool
	reason string
	at     time.Time
}

// OnEdgeState sets fn to hear each edge going down and coming back up
// (any edge, active or not: the status page's recent events). Run's
// delivery goroutine calls it outside the monitor's lock, in order, each
// transition before the active-edge change it caused.
func (m *Monitor) OnEdgeState(fn func(edge string, down bool, reason string, at time.Time)) {
	m.onState.Store(&fn)
}

// eligible reports whether e may be preferred over the edge in use: it is not
// down and, if it recovered from down, has been up for the failback hold.
func (m *Monitor) eligible(e *edgeHealth, now time.Time) bool {
	if e.state == StateDown {
		return false
	}
	return !e.recovering || !now.Before(e.since.Add(m.s.FailbackHold))
}

// reselect recomputes the active edge. reload != "" (Apply with a new order)
// chooses from scratch; otherwise the current edge is kept while it is not
// down, unless a more-preferred edge is eligible (failback).
func (m *Monitor) reselect(now time.Time, reload string) {
	prev, prevOK := m.active, m.activeOK
	cur := m.byName[prev]
	var pick *edgeHealth
	var kind ChangeKind
	var reason string
	switch {
	case reload == "" && cur != nil && cur.state != StateDown:
		pick = cur
		for _, e := range m.edges {
			if e == cur {
				break
			}
			if m.eligible(e, now) {
				pick, kind = e, ChangeFailback
				reason = fmt.Sprintf("edge %s up for %s (failback hold %s)", e.name, now.Sub(e.since).Round(time.Millisecond), m.s.FailbackHold)
				break
			}
		}
	default:
		pick = m.firstCandidate(now)
		switch {
		case reload != "":
			kind, reason = ChangeReload, reload
		case cur == nil:
			kind, reason = ChangeFailover, fmt.Sprintf("edge %s is no longer configured", prev)
		default:
			kind, reason = ChangeFailover, cur.reason
		}
	}
	if pick == nil {
		if cur == nil {
			m.active = m.edges[0].name
		}
		m.activeOK = false
		if prevOK {
			why := "every edge is down"
			if cur != nil && cur.state == StateDown {
				why += "; " + cur.reason
			}
			m.emit(Change{From: prev, To: m.active, Kind: ChangeUnavailable, Reason: why, At: now}, "")
		}
		return
	}
	m.active, m.activeOK = pick.name, true
	if !prevOK && kind != ChangeReload {
		kind, reason = ChangeAvailable, pick.reason
	}
	if pick.name == prev && prevOK {
		return
	}
	pick.probeDue = now
	class := ""
	if kind == ChangeFailover && cur != nil {
		class = cur.class
	}
	m.emit(Change{From: prev, To: pick.name, Kind: kind, Reason: reason, At: now}, class)
}

// firstCandidate is the first eligible edge in order, or failing that the
// first that is not down (a recovering edge beats none).
func (m *Monitor) firstCandidate(now time.Time) *edgeHealth {
	var fallback *edgeHealth
	for _, e := range m.edges {
		if m.eligible(e, now) {
			return e
		}
		if fallback == nil && e.state != StateDown {
			fallback = e
		}
	}
	return fallback
}

// emit queues ch for the subscribers and logs it. Called with mu held.
func (m *Monitor) emit(ch Change, class string) {
	m.metrics.change(ch.Kind, class)
	m.log.Info(fmt.Sprintf("active edge %s → %s (%s): %s", orNone(ch.From), ch.To, ch.Kind, ch.Reason),
		"from", ch.From, "to", ch.To, "kind", ch.Kind)
	if len(m.pending) >= maxPending {
		m.pending = m.pending[1:]
	}
	m.pending = append(m.pending, ch)
	select {
	case m.notify <- struct{}{}:
	default:
	}
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

// poke wakes Run to reschedule; it never blocks.
func (m *Monitor) poke() {
	select {
	case m.wake <- struct{}{}:
	default:
	}
}
