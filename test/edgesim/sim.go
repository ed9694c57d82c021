package edgesim

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
)

// Errors the mode-changing methods return; the control API maps them to
// 404 and 400.
var (
	ErrUnknownEdge = errors.New("unknown edge")
	ErrUnknownIP   = errors.New("unknown edge IP")
	ErrInvalidMode = errors.New("invalid mode")
)

// sweepInterval is how often expired bindings, nonces and rate-limit state
// are dropped. Listing already hides expired bindings, so this only bounds
// memory and makes the table match what Twilio would show.
const sweepInterval = time.Second

// Sim is a running set of simulated edges, their DNS and the control API.
type Sim struct {
	cfg   Config
	log   *slog.Logger
	clock func() time.Time

	// restStore holds the SIP Domain and its credential lists: what the
	// REST API shows and changes, and what REGISTER and INVITE
	// authenticate against. rest serves it (nil without a rest section).
	restStore *restStore
	rest      *restServer
	// ca signs the edges' SIP TLS certificates and the REST API's.
	ca *testCA

	edges  []*edge
	byName map[string]*edge
	byIP   map[netip.Addr]*edgeIP

	loc     *location
	limiter *rateLimiter
	dns     *dnsServer
	calls   *callManager

	// modeMu guards edge.setting and edgeIP.override. Requests read them on
	// every message, so it is a RWMutex separate from changeMu.
	modeMu sync.RWMutex
	// changeMu serialises mode changes (which open and close sockets) with
	// each other and with Run starting and stopping.
	changeMu sync.Mutex
	serving  bool // guarded by changeMu: sockets follow the modes only while Run serves

	started     atomic.Bool
	ready       chan struct{}
	controlAddr string // written before ready is closed
}

// New checks cfg (after filling defaults) and prepares a simulator. Nothing
// is bound until [Sim.Run].
func New(cfg Config, logger *slog.Logger) (*Sim, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("edgesim config: %w", err)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	s := &Sim{
		cfg:     cfg,
		log:     logger,
		clock:   time.Now,
		byName:  map[string]*edge{},
		byIP:    map[netip.Addr]*edgeIP{},
		loc:     newLocation(),
		limiter: newRateLimiter(),
		ready:   make(chan struct{}),
	}
	s.restStore = newRESTStore(cfg, func() time.Time { return s.clock() })
	ca, err := newTestCA()
	if err != nil {
		return nil, fmt.Errorf("edgesim test CA: %w", err)
	}
	s.ca = ca
	for _, ec := range cfg.Edges {
		e := newEdge(s, ec)
		if s.tlsOn() {
			names := e.fqdns
			if e.name == "ashburn" {
				// DNS answers <domain>.sip.twilio.com with Ashburn's IPs.
				names = append(slices.Clone(names), cfg.Domain+".sip.twilio.com")
			}
			if e.certs, err = newEdgeCerts(ca, names); err != nil {
				return nil, fmt.Errorf("edge %s certificates: %w", e.name, err)
			}
		}
		s.edges = append(s.edges, e)
		s.byName[e.name] = e
		for _, ip := range e.ips {
			s.byIP[ip.addr] = ip
		}
	}
	if cfg.REST != nil {
		rs, err := newRESTServer(s)
		if err != nil {
			return nil, err
		}
		s.rest = rs
	}
	s.dns = newDNSServer(s)
	s.calls = newCallManager(s)
	return s, nil
}

// Ready is closed once every socket is bound and the addresses accessors
// return are final.
func (s *Sim) Ready() <-chan struct{} { return s.ready }

// DNSAddr is the bound DNS address (UDP and TCP share it), or "" when DNS is
// disabled. Valid after Ready.
func (s *Sim) DNSAddr() string { return s.dns.addr }

// ControlAddr is the bound control API address, or "" when it is disabled.
// Valid after Ready.
func (s *Sim) ControlAddr() string { return s.controlAddr }

// Domain is the configured SIP Domain name.
func (s *Sim) Domain() string { return s.cfg.Domain }

// Config returns the defaulted configuration the simulator runs with.
func (s *Sim) Config() Config { return s.cfg }

// Start runs the simulator in the background until ctx is done or stop is
// called, and returns once it is Ready. stop cancels it, waits for Run to
// return and gives Run's error. When Run fails before Ready (a socket that
// cannot be bound), Start returns that error and nothing is left running.
func (s *Sim) Start(ctx context.Context) (stop func() error, err error) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	select {
	case <-s.Ready():
	case err := <-done:
		cancel()
		if err == nil {
			err = ctx.Err()
		}
		return nil, err
	}
	var once sync.Once
	var runErr error
	return func() error {
		once.Do(func() {
			cancel()
			runErr = <-done
		})
		return runErr
	}, nil
}

// Run binds every socket, serves until ctx is done, then closes everything
// and waits for its goroutines. It returns nil after a clean stop and an
// error when a socket cannot be bound or a server fails. It may be called
// once.
func (s *Sim) Run(ctx context.Context) error {
	if !s.started.CompareAndSwap(false, true) {
		return errors.New("edgesim: Run called more than once")
	}
	if f := s.cfg.CAFile; f != "" {
		if err := os.WriteFile(f, s.ca.pem, 0o644); err != nil {
			return fmt.Errorf("ca_file: %w", err)
		}
	}
	if err := s.openEdges(); err != nil {
		return err
	}
	defer s.closeEdges()
	if s.rest != nil {
		if err := s.rest.open(); err != nil {
			return err
		}
		defer s.rest.close()
	}

	if err := s.dns.bind(); err != nil {
		return err
	}
	defer s.dns.closeSockets()
	ctrl, err := s.bindControl()
	if err != nil {
		return err
	}
	if ctrl != nil {
		defer ctrl.close()
	}
	s.logListening()
	s.calls.start()
	close(s.ready)

	g, gctx := errgroup.WithContext(ctx)
	s.dns.serve(g)
	if ctrl != nil {
		g.Go(ctrl.serve)
	}
	g.Go(func() error { s.sweepLoop(gctx); return nil })
	g.Go(func() error {
		<-gctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		var errs []error
		if ctrl != nil {
			errs = append(errs, ctrl.shutdown(sctx))
		}
		errs = append(errs, s.dns.shutdown(sctx))
		return errors.Join(errs...)
	})
	err = g.Wait()
	// Calls hang up while the edges can still send their BYEs and
	// CANCELs; then the edges close.
	s.calls.stop()
	s.closeEdges()
	s.log.Info("edgesim stopped")
	return err
}

// openEdges binds every IP that is not in refuse mode. IPs configured with
// port 0 all share one free port, the port the first of them got, so a
// client that knows one port reaches every edge as it would at Twilio
// (5060 everywhere); on a collision it starts over with a new port.
func (s *Sim) openEdges() error {
	s.changeMu.Lock()
	defer s.changeMu.Unlock()
	const attempts = 20
	var err error
	for range attempts {
		if err = s.openEdgesOnce(); err == nil {
			s.serving = true
			return nil
		}
		s.closeEdgesLocked()
		if !errors.Is(err, errSharedPortTaken) {
			return err
		}
	}
	return err
}

var errSharedPortTaken = errors.New("shared port taken")

func (s *Sim) openEdgesOnce() error {
	shared, sharedTLS := 0, 0
	for _, e := range s.edges {
		for _, ip := range e.ips {
			if ip.cfgPort == 0 {
				ip.setPort(shared)
			}
			if ip.cfgTLSPort == 0 {
				ip.setTLSPort(sharedTLS)
			}
			if s.effective(ip).Mode == ModeRefuse {
				continue
			}
			if err := ip.open(); err != nil {
				if (ip.cfgPort == 0 && shared != 0) || (s.tlsOn() && ip.cfgTLSPort == 0 && sharedTLS != 0) {
					return fmt.Errorf("%w: %w", errSharedPortTaken, err)
				}
				return err
			}
			if ip.cfgPort == 0 && shared == 0 {
				shared = ip.boundPort()
			}
			if ip.cfgTLSPort == 0 && sharedTLS == 0 {
				sharedTLS = ip.boundTLSPort()
			}
		}
	}
	return nil
}

func (s *Sim) closeEdges() {
	s.changeMu.Lock()
	defer s.changeMu.Unlock()
	s.serving = false
	s.closeEdgesLocked()
}

func (s *Sim) closeEdgesLocked() {
	for _, e := range s.edges {
		for _, ip := range e.ips {
			ip.close()
		}
	}
}

func (s *Sim) logListening() {
	for _, e := range s.edges {
		for _, ip := range e.ips {
			s.log.Info("edge listening", "edge", e.name, "addr", ip.hostPort(), "transports", s.cfg.Transports, "fqdns", e.fqdns,
				"tls_port", ip.boundTLSPort())
		}
	}
	if s.dns.addr != "" {
		s.log.Info("dns listening", "addr", s.dns.addr, "ttl", s.cfg.DNS.TTL)
	}
	if s.controlAddr != "" {
		s.log.Info("control API listening", "url", "http://"+s.controlAddr+"/v1/edges")
	}
}

func (s *Sim) sweepLoop(ctx context.Context) {
	t := time.NewTicker(sweepInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.sweep()
		}
	}
}

// sweep drops expired state; tests call it directly with a fake clock.
func (s *Sim) sweep() {
	now := s.clock()
	if n := s.loc.sweep(now); n > 0 {
		s.log.Debug("expired bindings removed", "count", n)
	}
	s.limiter.sweep(now)
	for _, e := range s.edges {
		e.nonces.sweep(now)
	}
}

// effective is the mode an IP runs in: its own mode if it has one, else its
// edge's, with the slow delay resolved.
func (s *Sim) effective(ip *edgeIP) ModeSetting {
	s.modeMu.RLock()
	m := ip.edge.setting
	if ip.override != nil {
		m = *ip.override
	}
	s.modeMu.RUnlock()
	if m.Mode == ModeSlow && m.Delay == 0 {
		m.Delay = s.cfg.SlowDelay
	}
	return m
}

// SetEdgeMode switches a whole edge. IPs with their own mode keep it.
func (s *Sim) SetEdgeMode(edge string, m ModeSetting) error {
	e, ok := s.byName[edge]
	if !ok {
		return fmt.Errorf("%w %q", ErrUnknownEdge, edge)
	}
	if err := m.check(false); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidMode, err)
	}
	return s.change(func() {
		e.setting = m
		s.log.Info("edge mode changed", "edge", edge, "mode", m.Mode, s.delayAttr(m))
	})
}

// SetIPMode gives one edge IP its own mode, which overrides its edge's;
// ModeInherit removes it.
func (s *Sim) SetIPMode(ip string, m ModeSetting) error {
	eip, err := s.lookupIP(ip)
	if err != nil {
		return err
	}
	if err := m.check(true); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidMode, err)
	}
	return s.change(func() {
		if m.Mode == ModeInherit {
			eip.override = nil
		} else {
			eip.override = &m
		}
		s.log.Info("ip mode changed", "edge", eip.edge.name, "ip", ip, "mode", m.Mode, s.delayAttr(m))
	})
}

// delayAttr logs the delay of a slow mode and nothing for other modes.
func (s *Sim) delayAttr(m ModeSetting) slog.Attr {
	if m.Mode != ModeSlow {
		return slog.Attr{}
	}
	return slog.Duration("delay", s.delayOf(m))
}

func (s *Sim) delayOf(m ModeSetting) time.Duration {
	if m.Mode != ModeSlow {
		return 0
	}
	if m.Delay == 0 {
		return s.cfg.SlowDelay
	}
	return m.Delay
}

func (s *Sim) lookupIP(ip string) (*edgeIP, error) {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return nil, fmt.Errorf("%w %q", ErrUnknownIP, ip)
	}
	eip, ok := s.byIP[a.Unmap()]
	if !ok {
		return nil, fmt.Errorf("%w %q", ErrUnknownIP, ip)
	}
	return eip, nil
}

// Reset puts every edge and IP back up, zeroes the counters, brings DNS up,
// forgets rate-limit state and finished calls and, unless keepBindings,
// empties the location table. Calls in progress go on.
func (s *Sim) Reset(keepBindings bool) error {
	err := s.change(func() {
		for _, e := range s.edges {
			e.setting = ModeSetting{Mode: ModeUp}
			for _, ip := range e.ips {
				ip.override = nil
			}
		}
		s.log.Info("reset", "keep_bindings", keepBindings)
	})
	for _, e := range s.edges {
		for _, ip := range e.ips {
			ip.resetCounters()
		}
	}
	s.dns.setDown(false)
	s.dns.queries.Store(0)
	s.limiter.clear()
	s.calls.forgetFinished()
	if !keepBindings {
		s.loc.clear()
	}
	return err
}

// change applies update under the mode lock, then opens or closes sockets
// of every IP whose effective mode now needs it. An IP that cannot be
// re-opened stays closed (its status says open=false) and the error is
// returned; a later change retries.
func (s *Sim) change(update func()) error {
	s.changeMu.Lock()
	defer s.changeMu.Unlock()
	before := map[*edgeIP]Mode{}
	for _, ip := range s.byIP {
		before[ip] = s.effective(ip).Mode
	}
	s.modeMu.Lock()
	update()
	s.modeMu.Unlock()
	if !s.serving {
		return nil
	}
	var errs []error
	for _, e := range s.edges {
		for _, ip := range e.ips {
			now := s.effective(ip).Mode
			if was := before[ip]; was != now && (isCertMode(was) || isCertMode(now)) {
				// Open TLS sessions were made with the old certificate;
				// without this a client would never see the new one.
				if n := ip.dropTLSConns(); n > 0 {
					s.log.Info("tls connections closed for the new certificate", "edge", e.name, "ip", ip.addr.String(), "connections", n)
				}
			}
			refuse := now == ModeRefuse
			switch {
			case refuse && ip.isOpen():
				ip.close()
				s.log.Info("ip sockets closed", "edge", e.name, "addr", ip.hostPort())
			case !refuse && !ip.isOpen():
				if err := ip.open(); err != nil {
					errs = append(errs, err)
					s.log.Error("ip sockets could not be re-opened", "edge", e.name, "addr", ip.hostPort(), "error", err)
					continue
				}
				s.log.Info("ip sockets re-opened", "edge", e.name, "addr", ip.hostPort())
			}
		}
	}
	return errors.Join(errs...)
}

// Bindings lists live bindings of user, or of everyone when user is "".
func (s *Sim) Bindings(user string) []Binding {
	return s.loc.list(user, s.clock())
}

// EdgeStatus is an edge as the control API shows it.
type EdgeStatus struct {
	Name string `json:"name"`
	Mode Mode   `json:"mode"`
	// Delay is the slow-mode delay, set only in slow mode.
	Delay string     `json:"delay,omitempty"`
	FQDNs []string   `json:"fqdns"`
	IPs   []IPStatus `json:"ips"`
}

// IPStatus is one edge IP as the control API shows it.
type IPStatus struct {
	IP   string `json:"ip"`
	Port int    `json:"port"`
	// TLSPort is the SIP over TLS port, when transports lists tls.
	TLSPort int `json:"tls_port,omitempty"`
	// Mode is the effective mode: Override if set, else the edge's.
	Mode  Mode   `json:"mode"`
	Delay string `json:"delay,omitempty"`
	// Override is the IP's own mode, empty when it follows its edge.
	Override Mode `json:"override,omitempty"`
	// Open says whether the IP's sockets are bound (false in refuse mode,
	// or while Run is not serving).
	Open bool `json:"open"`
	// Requests counts requests received per method since the last reset.
	// In drop mode every received message counts, retransmissions included;
	// otherwise retransmissions absorbed by the transaction layer do not.
	Requests map[string]uint64 `json:"requests"`
	// Authorized counts requests that carried credentials (Authorization
	// or Proxy-Authorization), every transport, since the last reset.
	Authorized uint64 `json:"authorized"`
	// TLS counts handshakes on the TLS port, when transports lists tls.
	TLS *TLSStats `json:"tls,omitempty"`
}

// Edges reports every edge with its IPs, modes and counters.
func (s *Sim) Edges() []EdgeStatus {
	out := make([]EdgeStatus, 0, len(s.edges))
	for _, e := range s.edges {
		out = append(out, s.edgeStatus(e))
	}
	return out
}

// Edge reports one edge.
func (s *Sim) Edge(name string) (EdgeStatus, error) {
	e, ok := s.byName[name]
	if !ok {
		return EdgeStatus{}, fmt.Errorf("%w %q", ErrUnknownEdge, name)
	}
	return s.edgeStatus(e), nil
}

// IP reports one edge IP.
func (s *Sim) IP(ip string) (IPStatus, error) {
	eip, err := s.lookupIP(ip)
	if err != nil {
		return IPStatus{}, err
	}
	return s.ipStatus(eip), nil
}

func (s *Sim) edgeStatus(e *edge) EdgeStatus {
	s.modeMu.RLock()
	m := e.setting
	s.modeMu.RUnlock()
	st := EdgeStatus{Name: e.name, Mode: m.Mode, Delay: durString(s.delayOf(m)), FQDNs: slices.Clone(e.fqdns)}
	for _, ip := range e.ips {
		st.IPs = append(st.IPs, s.ipStatus(ip))
	}
	return st
}

func (s *Sim) ipStatus(ip *edgeIP) IPStatus {
	eff := s.effective(ip)
	s.modeMu.RLock()
	var override Mode
	if ip.override != nil {
		override = ip.override.Mode
	}
	s.modeMu.RUnlock()
	reqs, authorized, tlsStats := ip.counters()
	st := IPStatus{
		IP:         ip.addr.String(),
		Port:       ip.boundPort(),
		TLSPort:    ip.boundTLSPort(),
		Mode:       eff.Mode,
		Delay:      durString(s.delayOf(eff)),
		Override:   override,
		Open:       ip.isOpen(),
		Requests:   reqs,
		Authorized: authorized,
	}
	if s.tlsOn() {
		st.TLS = &tlsStats
	}
	return st
}

func durString(d time.Duration) string {
	if d == 0 {
		return ""
	}
	return d.String()
}

// SIPAddr returns the host:port an edge IP serves SIP on (after Ready; with
// port 0 in the config the port is only known then).
func (s *Sim) SIPAddr(ip string) (string, error) {
	eip, err := s.lookupIP(ip)
	if err != nil {
		return "", err
	}
	return eip.hostPort(), nil
}

// TLSAddr returns the host:port an edge IP serves SIP over TLS on (after
// Ready), or an error when transports does not list tls.
func (s *Sim) TLSAddr(ip string) (string, error) {
	eip, err := s.lookupIP(ip)
	if err != nil {
		return "", err
	}
	if !s.tlsOn() {
		return "", fmt.Errorf("edge IP %s: tls is not in transports", ip)
	}
	return netip.AddrPortFrom(eip.addr, uint16(eip.boundTLSPort())).String(), nil
}

// CAPEM is the PEM of edgesim's test CA, which signs every edge's SIP TLS
// certificate and the REST API's.
func (s *Sim) CAPEM() []byte { return slices.Clone(s.ca.pem) }

// password looks a user up in the credential lists mapped to the SIP
// Domain for registration; the match is exact, case included, as Twilio's is.
func (s *Sim) password(user string) (string, bool) {
	return s.restStore.password(user)
}

// minLevelHandler raises the level below which records are dropped, so
// sipgo's per-transaction debug chatter stays out of edgesim's debug log.
type minLevelHandler struct {
	min slog.Level
	slog.Handler
}

func (h minLevelHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.min && h.Handler.Enabled(ctx, l)
}

func (h minLevelHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return minLevelHandler{h.min, h.Handler.WithAttrs(as)}
}

func (h minLevelHandler) WithGroup(name string) slog.Handler {
	return minLevelHandler{h.min, h.Handler.WithGroup(name)}
}

// sipgoLogger is the logger handed to sipgo for one edge IP.
func (s *Sim) sipgoLogger(ip *edgeIP) *slog.Logger {
	return slog.New(minLevelHandler{slog.LevelInfo, s.log.Handler()}).With("component", "sipgo", "edge", ip.edge.name, "ip", ip.addr.String())
}
