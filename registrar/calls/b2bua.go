package calls

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"

	"github.com/edgewise-sip/edgewise/media"
	"github.com/edgewise-sip/edgewise/registrar/directory"
	"github.com/edgewise-sip/edgewise/registrar/location"
	"github.com/edgewise-sip/edgewise/registrar/lockout"
	"github.com/edgewise-sip/edgewise/registrar/sip/digest"
	"github.com/edgewise-sip/edgewise/registrar/sip/frontend"
	"github.com/edgewise-sip/edgewise/registrar/twilio/edge"
)

// SIP is what the B2BUA sends through: frontend.Server.
type SIP interface {
	// Client sends requests from the listening sockets.
	Client() *sipgo.Client
	// Addr is the bound address of the first listener of transport ("udp",
	// "tcp"); requests leave from it.
	Addr(transport string) netip.AddrPort
	// Connected reports whether a WebSocket connection from remote is open
	// on a listener of transport (ws, wss): a browser is only reachable
	// over the connection it registered on.
	Connected(transport string, remote netip.AddrPort) bool
}

// Router installs request handlers: frontend.Server.
type Router interface {
	Handle(method sip.RequestMethod, h frontend.Handler)
	HandleStateless(method sip.RequestMethod, h frontend.Handler)
	Screen(method sip.RequestMethod, f frontend.Screen)
}

// Bindings finds where a user's phones are: location.Table.
type Bindings interface {
	Routable(user string) []location.Binding
}

// Edges is the edge monitor as a new outbound call sees it: edge.Monitor.
type Edges interface {
	Plan() []edge.Target
	Report(t edge.Target, res edge.Result, err error)
	// Active's ok is false while no edge is usable: survival mode.
	Active() (edge string, ok bool)
}

// Relay allocates the media of a call: media.Relay.
type Relay interface {
	NewSession(id string) (*media.Session, error)
}

// Contacts knows which Contacts edgewise holds at Twilio: upstream.Manager
// (cmd/edgewise checks that it fits; calls does not import upstream).
type Contacts interface {
	// HasContact reports whether user's Contact at edge (user~edge) is, or
	// was within the last registration period, registered at Twilio.
	HasContact(user, edge string) bool
}

// CallClaims collapses Twilio's forks of one call across the nodes of a
// cluster (cluster.Store): only the node whose claim of the CallSid
// succeeds rings the phones.
type CallClaims interface {
	ClaimCall(ctx context.Context, callSid string) bool
}

// Peers are the other nodes of a cluster (cluster.Owners). A phone
// registered through another node is rung through that node, whose socket
// its NAT pinhole is open toward: the fork goes to the node, signed, and
// the node rings its phones as if the call came from Twilio.
type Peers interface {
	Self() string
	PeerAddr(node string) (netip.AddrPort, bool)
	// Sign and Verify make and check PeerHeader over the request's
	// identity (Call-ID, CSeq, Request-URI user), from the node's own
	// address, within a minute.
	Sign(fields ...string) string
	Verify(value string, src netip.Addr, fields ...string) (node string, err error)
}

// PeerHeader carries a node's signature on a fork it sends another node.
const PeerHeader = "X-Edgewise-Peer"

// Lockout is the registrar's lockout table (lockout.Table), shared so that
// wrong INVITE passwords count with wrong REGISTER and token passwords.
type Lockout interface {
	// Check says whether source may try to authenticate as user at all.
	Check(source netip.Addr, user string) (lockout.Refusal, time.Duration)
	// Failed counts a failure; user is empty when no such user exists.
	Failed(source netip.Addr, user string) bool
	// Succeeded makes source a known source of user.
	Succeeded(source netip.Addr, user string)
}

var (
	_ Lockout  = (*lockout.Table)(nil)
	_ SIP      = (*frontend.Server)(nil)
	_ Router   = (*frontend.Server)(nil)
	_ Bindings = (*location.Table)(nil)
	_ Edges    = (*edge.Monitor)(nil)
	_ Relay    = (*media.Relay)(nil)
)

// Options are fixed for the life of a B2BUA.
type Options struct {
	SIP      SIP
	Bindings Bindings
	Edges    Edges
	Relay    Relay
	// TLS returns the client for an edge FQDN when twilio.transport is tls
	// (edge.TLSClients.Client): SNI and the verified name must be the FQDN.
	TLS func(fqdn string) (*sipgo.Client, error)
	// Lockout, when set, hears every failed INVITE authentication, so a
	// source guessing passwords through calls is locked out like one
	// guessing them through REGISTER (registrar.Registrar.AuthFailed).
	Lockout Lockout
	// Contacts, when set, is asked whether a call from Twilio is addressed
	// to a Contact edgewise registered there; others are refused (404).
	// Without it any user~edge Contact is accepted (tests).
	Contacts Contacts
	// Claims, when set (a cluster), is asked before a call from Twilio
	// rings: a CallSid another node claimed is refused like a duplicate.
	Claims CallClaims
	// Peers, when set (a cluster), rings phones registered through other
	// nodes through them, and takes their forks.
	Peers Peers
	// Browsers, when set, terminates browsers' WebRTC media (webrtc.Hub);
	// without it a WebRTC offer gets 488.
	Browsers Browsers
	Logger   *slog.Logger
	// Now replaces time.Now (digest nonces), for tests.
	Now func() time.Time
}

// B2BUA bridges every call through edgewise as two SIP dialogs, phone side
// and Twilio side, with the media relayed by a media.Session.
type B2BUA struct {
	log      *slog.Logger
	sip      SIP
	tls      func(fqdn string) (*sipgo.Client, error)
	bindings Bindings
	edges    Edges
	relay    Relay
	lockout  Lockout
	contacts Contacts
	claims   CallClaims
	peers    Peers
	browsers Browsers
	now      func() time.Time
	auth     *digest.Authenticator
	metrics  *metrics
	// refusedLog keeps refusals of forged calls to a line per source.
	refusedLog sourceLog
	survival   survival
	// life is the parent of every call's contexts (setup, forks, requests,
	// browser bridges): Run cancels it once the calls are hung up at
	// shutdown, which ends whatever of them is still waiting.
	life    context.Context
	endLife context.CancelFunc

	state   atomic.Pointer[state]
	applyMu sync.Mutex

	mu       sync.Mutex
	calls    map[string]*call
	dialogs  map[dialogKey]*leg
	merged   map[string]*call    // Call-ID, From tag, CSeq of an INVITE received
	sids     map[string]*call    // X-Twilio-CallSid
	perUser  map[string]int      // calls in progress by user, for MaxCallsPerUser
	options  map[string]struct{} // in-dialog OPTIONS being relayed (Call-ID, branch)
	stopping bool                // Run's ctx is done: new calls get 503
	ending   int                 // calls removed from calls whose end (BYEs) is still running
	drain    *drainState         // set by Drain
	closing  bool                // no more goroutines may start
	wg       sync.WaitGroup      // goroutines the B2BUA started
	ran      bool
}

// dialogKey finds a dialog from a request inside it: its Call-ID and our tag
// (the To tag of a request we receive).
type dialogKey struct {
	callID string
	tag    string
}

// New returns a B2BUA. Register its handlers on the server, run it, and call
// Apply on every reload.
func New(s Settings, phones directory.Phones, twilio directory.Twilio, opts Options) (*B2BUA, error) {
	if opts.SIP == nil || opts.Bindings == nil || opts.Edges == nil || opts.Relay == nil {
		return nil, errors.New("calls: SIP, Bindings, Edges and Relay are required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	st, err := newState(s, phones, twilio)
	if err != nil {
		return nil, err
	}
	auth, err := digest.NewAuthenticator(st.digestConfig(), digest.Options{})
	if err != nil {
		return nil, fmt.Errorf("calls: %w", err)
	}
	b := &B2BUA{
		log:      opts.Logger,
		sip:      opts.SIP,
		tls:      opts.TLS,
		bindings: opts.Bindings,
		edges:    opts.Edges,
		relay:    opts.Relay,
		lockout:  opts.Lockout,
		contacts: opts.Contacts,
		claims:   opts.Claims,
		peers:    opts.Peers,
		browsers: opts.Browsers,
		now:      opts.Now,
		auth:     auth,
		metrics:  newMetrics(),
		calls:    make(map[string]*call),
		dialogs:  make(map[dialogKey]*leg),
		merged:   make(map[string]*call),
		sids:     make(map[string]*call),
		perUser:  make(map[string]int),
		options:  make(map[string]struct{}),
	}
	b.life, b.endLife = context.WithCancel(context.Background())
	b.state.Store(st)
	return b, nil
}

// Apply swaps in new settings and directories. Calls in progress keep the
// snapshot they started with; nonces already issued stay valid. On error
// nothing changes.
func (b *B2BUA) Apply(s Settings, phones directory.Phones, twilio directory.Twilio) error {
	commit, err := b.Prepare(s, phones, twilio)
	if err != nil {
		return err
	}
	commit()
	return nil
}

// Prepare checks new settings and directories and returns commit, which
// swaps them in and cannot fail (see Apply).
func (b *B2BUA) Prepare(s Settings, phones directory.Phones, twilio directory.Twilio) (commit func(), err error) {
	st, err := newState(s, phones, twilio)
	if err != nil {
		return nil, err
	}
	if err := st.digestConfig().Validate(); err != nil {
		return nil, fmt.Errorf("calls: %w", err)
	}
	return func() {
		b.applyMu.Lock()
		defer b.applyMu.Unlock()
		_ = b.auth.SetConfig(st.digestConfig()) // validated above
		b.state.Store(st)
	}, nil
}

// Settings returns the settings in force, defaults filled in.
func (b *B2BUA) Settings() Settings { return b.state.Load().s }

// Register installs the B2BUA's handlers: INVITE (new calls and
// re-INVITEs), ACK, CANCEL, BYE, UPDATE and INFO through sipgo's transaction
// layer, and OPTIONS statelessly (out of dialog it is a keepalive answered
// at once; in a dialog it is relayed from a goroutine of the B2BUA, and
// relaying it twice is harmless). Call before the server runs.
func (b *B2BUA) Register(r Router) {
	r.Handle(sip.INVITE, b.serveInvite)
	r.Handle(sip.ACK, b.serveAck)
	r.Handle(sip.CANCEL, b.serveCancel)
	r.Handle(sip.BYE, b.serveBye)
	r.Handle(sip.UPDATE, b.serveInDialog)
	r.Handle(sip.INFO, b.serveInDialog)
	r.HandleStateless(sip.OPTIONS, b.serveOptions)
	// What deserves no transaction is answered before the transaction
	// layer (screen.go).
	r.Screen(sip.INVITE, b.screenInvite)
	r.Screen(sip.ACK, screenAck)
	for _, m := range []sip.RequestMethod{sip.BYE, sip.UPDATE, sip.INFO} {
		r.Screen(m, b.screenInDialog)
	}
}

// Run waits for ctx, then refuses new calls, hangs up every call in
// progress (BYE on both legs, best effort), releases their media and waits
// for every goroutine the B2BUA started.
func (b *B2BUA) Run(ctx context.Context) error {
	b.mu.Lock()
	if b.ran {
		b.mu.Unlock()
		return errors.New("calls: Run called twice")
	}
	b.ran = true
	b.mu.Unlock()
	<-ctx.Done()

	b.mu.Lock()
	b.stopping = true
	calls := make([]*call, 0, len(b.calls))
	for _, c := range b.calls {
		calls = append(calls, c)
	}
	b.mu.Unlock()
	if len(calls) > 0 {
		b.log.Info("hanging up calls at shutdown", "calls", len(calls))
	}
	var wg sync.WaitGroup
	for _, c := range calls {
		wg.Go(func() { b.hangup(c, "shutdown", nil) })
	}
	wg.Wait()
	b.mu.Lock()
	b.closing = true
	b.mu.Unlock()
	b.endLife() // nothing of a call may wait any longer
	b.wg.Wait()
	return nil
}

// drainState is a graceful stop in progress.
type drainState struct {
	retryAfter time.Duration
	idle       chan struct{} // closed once no call is left
	closed     bool
}

// Drain starts a graceful stop: new calls get 503 with Retry-After (whole
// seconds of retryAfter) while calls in progress go on. The channel it
// returns is closed once every call has ended, BYEs included; then cancel
// Run's context. Calling Drain again returns the same channel.
func (b *B2BUA) Drain(retryAfter time.Duration) <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.drain == nil {
		b.drain = &drainState{retryAfter: retryAfter, idle: make(chan struct{})}
		b.log.Info("draining: new calls are refused", "calls", len(b.calls), "retry_after", retryAfter)
		b.checkIdleLocked()
	}
	return b.drain.idle
}

// checkIdleLocked closes the drain's channel when nothing is left. b.mu is held.
func (b *B2BUA) checkIdleLocked() {
	d := b.drain
	if d == nil || d.closed || len(b.calls) > 0 || b.ending > 0 {
		return
	}
	d.closed = true
	close(d.idle)
}

// refusal is what admit's 503 carries: Retry-After while draining, so
// phones and Twilio come back (or go elsewhere) rather than fail.
func (b *B2BUA) refusal(code int) []sip.Header {
	if code != sip.StatusServiceUnavailable {
		return nil
	}
	b.mu.Lock()
	d := b.drain
	b.mu.Unlock()
	if d == nil {
		return nil
	}
	secs := max(1, int(d.retryAfter/time.Second))
	return []sip.Header{sip.NewHeader("Retry-After", strconv.Itoa(secs))}
}

// callLimitRetryAfter is the Retry-After of a 503 for the total call limit:
// calls last minutes, so sooner would only bring the caller back to be
// refused again.
const callLimitRetryAfter = "60"

// spawn runs fn in a goroutine the B2BUA owns, unless it is shutting down.
func (b *B2BUA) spawn(fn func()) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closing {
		return false
	}
	b.wg.Go(fn)
	return true
}

func (b *B2BUA) findLeg(callID, tag string) *leg {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.dialogs[dialogKey{callID, tag}]
}

func (b *B2BUA) addDialog(l *leg) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.dialogs[dialogKey{l.callID, l.localTag}] = l
}
