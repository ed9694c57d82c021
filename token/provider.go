package token

import (
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// DefaultDrainTimeout bounds how long Serve waits for in-flight requests.
const DefaultDrainTimeout = 10 * time.Second

// Provider issues tokens. It is safe for concurrent use; Apply swaps its
// settings atomically, so the request after Apply returns sees them.
type Provider struct {
	log     *slog.Logger
	state   atomic.Pointer[state]
	perID   *limiter
	perAddr *limiter
	metrics *metrics
	drain   time.Duration
	// draining counts Serve calls shutting down; readiness drops while > 0
	// so load balancers stop sending new work.
	draining atomic.Int32
	now      func() time.Time
	extra    []Authenticator
	guard    Guard // nil: no lockout
	// callEvents hears of calls status callbacks report as not connected.
	callEvents func(CallEvent)
	twimlLogs  logLimiter
}

// state is one applied configuration, never modified after the swap.
type state struct {
	settings Settings
	signer   Key // zero when no key is usable
	ready    bool
	ttl      time.Duration
	edges    []string
	origins  map[string]bool
	auth     []Authenticator
	dir      Directory   // nil when Basic is off
	twiml    *twimlState // nil when the TwiML app is off
}

// Option configures a Provider.
type Option func(*Provider)

// WithDrainTimeout sets how long Serve waits for in-flight requests after its
// context is cancelled before closing connections.
func WithDrainTimeout(d time.Duration) Option {
	return func(p *Provider) { p.drain = d }
}

// WithAuthenticator adds an authenticator asked before the built-in ones.
func WithAuthenticator(a Authenticator) Option {
	return func(p *Provider) { p.extra = append(p.extra, a) }
}

// WithGuard makes failed logins count toward guard's lockout, and refuses
// (429) clients and users it has locked out or guarded.
func WithGuard(g Guard) Option {
	return func(p *Provider) { p.guard = g }
}

// New returns a Provider that is not ready until Apply succeeds.
func New(logger *slog.Logger, opts ...Option) *Provider {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	p := &Provider{
		log:     logger.With("component", "token"),
		perID:   newLimiter(),
		perAddr: newLimiter(),
		metrics: newMetrics(),
		drain:   DefaultDrainTimeout,
		now:     time.Now,
	}
	p.twimlLogs.every = time.Minute
	for _, o := range opts {
		o(p)
	}
	return p
}

// Apply validates s and makes it the live configuration; on error the
// previous one stays. dir checks Basic credentials; nil disables Basic.
// Rate-limit budgets carry over, so a reload does not reset them.
func (p *Provider) Apply(s Settings, dir Directory) error {
	commit, err := p.Prepare(s, dir)
	if err != nil {
		return err
	}
	commit()
	return nil
}

// Prepare checks s and returns commit, which applies it as Apply does and
// cannot fail.
func (p *Provider) Prepare(s Settings, dir Directory) (commit func(), err error) {
	if err := s.Validate(); err != nil {
		return nil, fmt.Errorf("token settings: %w", err)
	}
	return func() { p.apply(s, dir) }, nil
}

// apply is Apply's work on checked settings.
func (p *Provider) apply(s Settings, dir Directory) {
	// Copy the slices: the caller may reuse its config structs.
	s.Keys = append([]Key(nil), s.Keys...)
	s.Edges = append([]string(nil), s.Edges...)
	s.CORSOrigins = append([]string(nil), s.CORSOrigins...)
	s.TrustedProxies = append(s.TrustedProxies[:0:0], s.TrustedProxies...)
	s.TwiML = s.TwiML.clone()

	st := &state{
		settings: s,
		ttl:      s.ttl(),
		edges:    s.answerEdges(),
		origins:  map[string]bool{},
	}
	for i, k := range s.Keys {
		if k.usable() {
			st.signer, st.ready = k, true
			if i > 0 {
				p.log.Warn("first API key has no secret; signing with a later key", "key_sid", k.SID)
			}
			break
		}
	}
	if !st.ready {
		p.log.Warn("no API key has a secret; token requests get 503 until one does")
	}
	for _, o := range s.CORSOrigins {
		st.origins[o] = true
	}
	st.auth = append(st.auth, p.extra...)
	if s.IdentityHeader != "" {
		st.auth = append(st.auth, headerAuth{header: s.IdentityHeader, proxies: s.TrustedProxies})
	}
	st.auth = append(st.auth, basicAuth{dir: dir})
	st.dir = dir
	if s.TwiML != nil {
		st.twiml = newTwiMLState(s.TwiML, s.Edges)
	}

	p.perID.set(s.RateLimit.PerIdentity, s.RateLimit.Window)
	p.perAddr.set(s.RateLimit.PerAddress, s.RateLimit.Window)
	p.state.Store(st)
	p.updateReady()
	p.log.Info("token settings applied", "edges", st.edges, "ttl", st.ttl,
		"key_sid", st.signer.SID, "keys", len(s.Keys), "ready", st.ready, "twiml", st.twiml != nil)
}

// Ready reports whether the provider can issue tokens, and why not.
func (p *Provider) Ready() (bool, string) {
	st := p.state.Load()
	switch {
	case st == nil:
		return false, "not configured"
	case !st.ready:
		return false, "no usable API key"
	case p.draining.Load() > 0:
		return false, "draining"
	}
	return true, ""
}

func (p *Provider) updateReady() {
	if ok, _ := p.Ready(); ok {
		p.metrics.ready.Set(1)
	} else {
		p.metrics.ready.Set(0)
	}
}

// Collector returns the provider's Prometheus metrics (namespace edgewise,
// subsystem token) for the caller to register.
func (p *Provider) Collector() prometheus.Collector { return p.metrics }
