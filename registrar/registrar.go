// Package registrar is edgewise's local SIP registrar (RFC 3261 §10.3): it
// authenticates phones with digest (MD5 and SHA-256), keeps their bindings in a
// location.Table, locks out sources that keep failing, and optionally
// qualifies contacts with OPTIONS.
//
// It takes plain Settings and a directory.Phones of credentials, built by the caller
// from the configuration, and never reads the configuration itself. Wiring:
//
//	table, _ := location.Open(path, log, location.Settings{})
//	srv, _ := frontend.New(frontend.Settings{...}, log)
//	reg, _ := registrar.New(table, settings, dir, registrar.Options{Logger: log, Pinger: srv})
//	srv.HandleStateless(sip.REGISTER, reg.ServeRegister)
//	srv.SetGuard(reg.Blocked)
//	srv.OnConnClosed(reg.ConnClosed) // WebSocket bindings go with their connection
//	// run srv.Run, reg.Run and table.Run under one errgroup; on reload:
//	reg.Apply(newSettings, newDir)
package registrar

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgewise-sip/edgewise/registrar/directory"
	"github.com/edgewise-sip/edgewise/registrar/location"
	"github.com/edgewise-sip/edgewise/registrar/lockout"
	"github.com/edgewise-sip/edgewise/registrar/sip/digest"
)

// Settings are the registrar's tunables, from the sip section of the config.
type Settings struct {
	// Realm is the digest realm phones authenticate in.
	Realm string
	// MinExpires: a requested expiry below this (other than 0) gets 423.
	MinExpires time.Duration
	// MaxExpires caps granted expiries.
	MaxExpires time.Duration
	// DefaultExpires applies when a REGISTER gives no expiry.
	DefaultExpires time.Duration
	// ExpiresSpread, in percent (0..50), shortens each granted expiry by a
	// random amount up to that share, so phones that booted together do not
	// re-register in lockstep (Kamailio's expires_range).
	ExpiresSpread int
	// MaxContacts bounds bindings per user; a REGISTER that would exceed it
	// gets 403.
	MaxContacts int
	// NonceTTL is how long a digest nonce is accepted.
	NonceTTL time.Duration
	// QualifyInterval, when positive, sends OPTIONS to every contact that
	// often and marks contacts that do not answer unreachable.
	QualifyInterval time.Duration
	// Lockout slows password guessing: sources that fail too often are
	// locked out, users that many sources fail for are guarded (see
	// package lockout). The same table serves the B2BUA and the token
	// endpoint through Lockout().
	Lockout lockout.Settings
	// Algorithms are the digest algorithms offered, in order; empty means
	// SHA-256 then MD5 (RFC 8760). Users whose Credential has only an MD5 HA1
	// can only answer MD5: list MD5 alone (or first) if phones pick SHA-256.
	Algorithms []digest.Algorithm
}

// Pinger sends an OPTIONS request to a contact, from the local address that
// received its REGISTER, to dst, and reports whether anything answered.
// frontend.Server implements it.
type Pinger interface {
	Ping(ctx context.Context, transport string, local, dst netip.AddrPort, uri string) error
}

// Options are fixed for the life of a Registrar.
type Options struct {
	Logger *slog.Logger
	// Pinger enables qualify; nil disables it whatever the settings say.
	Pinger Pinger
	// Now replaces time.Now, for tests.
	Now func() time.Time
	// MaxTrackedNonces bounds the digest nonce-count cache (see digest.Options).
	MaxTrackedNonces int
	// OnLockout, when set, hears every source lockout and user guard as it
	// starts (for the status page's recent events); it must not block.
	OnLockout func(lockout.Event)
}

// Registrar handles REGISTER requests.
type Registrar struct {
	log    *slog.Logger
	table  *location.Table
	auth   *digest.Authenticator
	pinger Pinger
	now    func() time.Time

	state   atomic.Pointer[state]
	applyMu sync.Mutex

	lockout *lockout.Table
	metrics *metrics
	date    dateCache
}

type state struct {
	s   Settings
	dir directory.Phones
}

// New returns a registrar storing bindings in table.
func New(table *location.Table, s Settings, dir directory.Phones, opts Options) (*Registrar, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if err := s.Validate(); err != nil {
		return nil, err
	}
	auth, err := digest.NewAuthenticator(digestConfig(s), digest.Options{MaxTrackedNonces: opts.MaxTrackedNonces})
	if err != nil {
		return nil, fmt.Errorf("registrar: %w", err)
	}
	locks, err := lockout.New(s.Lockout, lockout.Options{Logger: opts.Logger, Now: opts.Now, OnLockout: opts.OnLockout})
	if err != nil {
		return nil, fmt.Errorf("registrar: %w", err)
	}
	r := &Registrar{
		log:     opts.Logger,
		table:   table,
		auth:    auth,
		pinger:  opts.Pinger,
		now:     opts.Now,
		lockout: locks,
	}
	r.metrics = newMetrics(r)
	if dir == nil {
		dir = directory.PhoneMap(nil)
	}
	r.state.Store(&state{s: s, dir: dir})
	return r, nil
}

func digestConfig(s Settings) digest.Config {
	return digest.Config{Realm: s.Realm, NonceTTL: s.NonceTTL, Algorithms: s.Algorithms}
}

// Validate reports the first problem with s.
func (s Settings) Validate() error {
	var errs []error
	if s.Realm == "" {
		errs = append(errs, errors.New("realm is empty"))
	}
	if s.MinExpires <= 0 || s.MinExpires%time.Second != 0 {
		errs = append(errs, fmt.Errorf("min_expires %s must be a positive whole number of seconds", s.MinExpires))
	}
	if s.MaxExpires < s.MinExpires {
		errs = append(errs, fmt.Errorf("max_expires %s is below min_expires %s", s.MaxExpires, s.MinExpires))
	}
	if s.DefaultExpires < s.MinExpires || s.DefaultExpires > s.MaxExpires {
		errs = append(errs, fmt.Errorf("default_expires %s is outside min_expires..max_expires", s.DefaultExpires))
	}
	if s.ExpiresSpread < 0 || s.ExpiresSpread > 50 {
		errs = append(errs, fmt.Errorf("expires_spread %d is outside 0..50", s.ExpiresSpread))
	}
	if s.MaxContacts < 1 {
		errs = append(errs, fmt.Errorf("max_contacts %d must be at least 1", s.MaxContacts))
	}
	if s.NonceTTL < 0 {
		errs = append(errs, fmt.Errorf("nonce_ttl %s is negative", s.NonceTTL))
	}
	if s.QualifyInterval < 0 {
		errs = append(errs, fmt.Errorf("qualify_interval %s is negative", s.QualifyInterval))
	}
	if err := s.Lockout.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("registrar: %w", err)
	}
	return nil
}

// Prepare checks new settings and a new directory and returns commit, which
// swaps them in and cannot fail; on error nothing changes. Requests in
// progress finish with what they started with; nonces already issued stay
// valid.
func (r *Registrar) Prepare(s Settings, dir directory.Phones) (commit func(), err error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	if err := digestConfig(s).Validate(); err != nil {
		return nil, fmt.Errorf("registrar: %w", err)
	}
	if dir == nil {
		dir = directory.PhoneMap(nil)
	}
	return func() {
		r.applyMu.Lock()
		defer r.applyMu.Unlock()
		// Both were validated above.
		_ = r.auth.SetConfig(digestConfig(s))
		_ = r.lockout.Apply(s.Lockout)
		r.state.Store(&state{s: s, dir: dir})
	}, nil
}

// Apply is Prepare and its commit.
func (r *Registrar) Apply(s Settings, dir directory.Phones) error {
	commit, err := r.Prepare(s, dir)
	if err != nil {
		return err
	}
	commit()
	return nil
}

// Settings returns the settings in force.
func (r *Registrar) Settings() Settings { return r.state.Load().s }

// Blocked reports whether ip is locked out. the front end calls it for every
// request (SetGuard), so it is cheap when nothing is locked out.
func (r *Registrar) Blocked(ip netip.Addr) bool {
	return r.lockout.Blocked(ip)
}

// Lockout returns the lockout table, for the other places that check
// passwords (the B2BUA's INVITEs, the token endpoint): a failure anywhere
// counts everywhere.
func (r *Registrar) Lockout() *lockout.Table { return r.lockout }

// Run sweeps the lockout table and, when enabled, qualifies contacts, until
// ctx is done.
func (r *Registrar) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	wg.Go(func() { r.qualifyLoop(ctx) })
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			wg.Wait()
			return nil
		case <-tick.C:
			r.lockout.Sweep()
		}
	}
}
