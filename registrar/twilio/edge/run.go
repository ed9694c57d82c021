package edge

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"time"
)

// DNS retry after a failed lookup: 1 s, doubling to 30 s, while the stale
// answer is served. Short at first so a blip heals quickly.
const (
	dnsRetryMin = time.Second
	dnsRetryMax = 30 * time.Second
	// dnsTimeoutMin bounds one lookup (all servers) from below when
	// Settings.Timeout is set very short.
	dnsTimeoutMin = 2 * time.Second
)

// Run resolves every edge (again when its TTL expires), probes the active
// edge every KeepaliveInterval (keepalive method options), the standby
// edges every StandbyInterval (methods options and register), down edges
// and down IPs in every method so they can come back, ends failback holds,
// and delivers Changes to subscribers. It returns nil when ctx is done, after
// every goroutine it started has stopped.
func (m *Monitor) Run(ctx context.Context) error {
	if !m.running.CompareAndSwap(false, true) {
		return errors.New("edge: monitor is already running")
	}
	defer m.running.Store(false)

	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	wg.Go(func() { m.deliver(ctx) })

	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		now := m.now()
		next := m.tick(ctx, &wg, now)
		timer.Reset(max(next.Sub(now), 0))
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
		case <-m.wake:
		}
	}
}

// tick starts the lookups and probes that are due and returns when the next
// one is.
func (m *Monitor) tick(ctx context.Context, wg *sync.WaitGroup, now time.Time) time.Time {
	m.mu.Lock()
	defer m.mu.Unlock()
	next := now.Add(time.Hour)
	for _, e := range m.edges {
		if !e.dnsBusy && !now.Before(e.dnsDue) {
			m.startLookup(ctx, wg, e)
		}
		if !e.dnsBusy {
			next = minTime(next, e.dnsDue)
		}
		if e.recovering {
			if hold := e.since.Add(m.s.FailbackHold); now.Before(hold) {
				next = minTime(next, hold)
			} else {
				e.recovering = false
			}
		}
		if !now.Before(e.probeDue) {
			e.probeDue = now.Add(m.probeInterval(e))
			for _, ip := range m.probeSet(e, now) {
				m.startProbe(ctx, wg, e, ip)
			}
		}
		next = minTime(next, e.probeDue)
	}
	m.reselect(now, "")
	return next
}

// standby reports whether e is a standby edge: neither active nor down nor
// serving a failback hold, probed every StandbyInterval unless the keepalive
// method is none. Called with mu held.
func (m *Monitor) standby(e *edgeHealth) bool {
	return m.s.KeepaliveMethod != KeepaliveNone &&
		e.name != m.active && e.state != StateDown && !e.recovering
}

// probeInterval is how long until e is probed again. Called with mu held.
func (m *Monitor) probeInterval(e *edgeHealth) time.Duration {
	if m.standby(e) {
		return m.s.StandbyInterval
	}
	return m.s.KeepaliveInterval
}

// probeSet is what to probe of e now: every IP of the active edge when the
// keepalive method is options; every IP of a standby edge; every IP of an
// edge that is down or serving its failback hold (it must stay up
// throughout); otherwise only IPs that are down, so they can come back. IPs
// inside Retry-After are skipped.
func (m *Monitor) probeSet(e *edgeHealth, now time.Time) []*ipHealth {
	all := e.state == StateDown || e.recovering || m.standby(e) ||
		e.name == m.active && m.s.KeepaliveMethod == KeepaliveOptions
	var out []*ipHealth
	for _, ip := range e.ips {
		if ip.busy || now.Before(ip.retryAfter) {
			continue
		}
		if all || ip.state == StateDown {
			out = append(out, ip)
		}
	}
	return out
}

// startProbe runs one probe bounded by Settings.Timeout. Called with mu held.
func (m *Monitor) startProbe(ctx context.Context, wg *sync.WaitGroup, e *edgeHealth, ip *ipHealth) {
	ip.busy = true
	t := e.target(ip)
	timeout := m.s.Timeout
	wg.Go(func() {
		pctx, cancel := context.WithTimeout(ctx, timeout)
		res, err := m.prober.Probe(pctx, t)
		cancel()
		if ctx.Err() != nil {
			// Shutting down: the probe was cut short by us, not by the edge.
			m.mu.Lock()
			ip.busy = false
			m.mu.Unlock()
			return
		}
		m.observe(t, e, ip, res, err, "probe")
	})
}

// startLookup resolves e in the background. Called with mu held.
func (m *Monitor) startLookup(ctx context.Context, wg *sync.WaitGroup, e *edgeHealth) {
	e.dnsBusy = true
	res, fqdn := m.res, e.fqdn
	timeout := max(m.s.Timeout, dnsTimeoutMin)
	wg.Go(func() {
		lctx, cancel := context.WithTimeout(ctx, timeout)
		addrs, ttl, err := res.lookupA(lctx, fqdn)
		cancel()
		if ctx.Err() != nil {
			m.mu.Lock()
			e.dnsBusy = false
			m.mu.Unlock()
			return
		}
		m.lookupDone(e, addrs, ttl, err)
	})
}

// lookupDone applies a DNS answer, or keeps serving the last good one.
func (m *Monitor) lookupDone(e *edgeHealth, addrs []netip.Addr, ttl time.Duration, err error) {
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	defer m.poke()
	e.dnsBusy = false
	first := !isClosed(e.firstDNS)
	if first {
		close(e.firstDNS)
		defer m.checkReady()
	}
	if m.byName[e.name] != e {
		return // replaced by a reload meanwhile
	}
	if err != nil {
		m.metrics.dnsFailure(e.name)
		e.dnsFails++
		e.dnsDue = now.Add(min(dnsRetryMin<<min(e.dnsFails-1, 10), dnsRetryMax))
		if e.answered && e.dnsErr == "" {
			// Log the start of a failure streak, not every retry.
			m.log.Warn(fmt.Sprintf("edge %s dns lookup failed; serving the last answer (%s)", e.name, e.addrStrings()),
				"edge", e.name, "error", err)
		}
		e.dnsErr = err.Error()
		if !e.answered {
			m.setEdgeState(e, StateDown, "dns lookup failed and there is no earlier answer: "+err.Error(), classDNS, now)
			m.reselect(now, "")
		}
		return
	}
	if e.dnsErr != "" && e.answered {
		m.log.Info(fmt.Sprintf("edge %s dns lookup works again", e.name), "edge", e.name)
	}
	e.answered, e.resolvedAt, e.expiresAt = true, now, now.Add(ttl)
	e.dnsErr, e.dnsFails, e.dnsDue = "", 0, now.Add(ttl)
	if e.setAddrs(addrs, now) {
		m.log.Info(fmt.Sprintf("edge %s resolves to %s", e.name, e.addrStrings()), "edge", e.name, "ttl", ttl)
		e.probeDue = now
		m.updateDown(e, now)
	}
	m.reselect(now, "")
}

// checkReady closes ready once every configured edge has been looked up
// once. Called with mu held.
func (m *Monitor) checkReady() {
	if m.isReady {
		return
	}
	for _, e := range m.edges {
		if !isClosed(e.firstDNS) {
			return
		}
	}
	m.isReady = true
	close(m.ready)
}

// deliver hands queued Changes to subscribers, in order, one at a time.
func (m *Monitor) deliver(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-m.notify:
		}
		m.mu.Lock()
		batch, states := m.pending, m.states
		m.pending, m.states = nil, nil
		subs := slices.Clone(m.subs)
		m.mu.Unlock()
		if fn := m.onState.Load(); fn != nil {
			for _, e := range states {
				(*fn)(e.edge, e.down, e.reason, e.at)
			}
		}
		for _, ch := range batch {
			for _, s := range subs {
				s.fn(ch)
			}
		}
	}
}

func isClosed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}
