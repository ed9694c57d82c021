package calls

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/edgewise-sip/edgewise/registrar/directory"
	"github.com/edgewise-sip/edgewise/registrar/sip/digest"
)

// Defaults for zero Settings fields.
const (
	// DefaultTimeout is twilio.timeout: how long one Twilio IP (or one phone
	// contact) may stay silent before the next is tried (README, "Twilio facts" 4).
	DefaultTimeout = 4 * time.Second
	// DefaultSetupTimeout bounds ringing: Twilio ends unanswered calls itself
	// long before this, so it only catches a far end that went silent after
	// its provisional response.
	DefaultSetupTimeout = 3 * time.Minute
)

// TwilioSignallingRanges are the SIP signalling ranges of every public
// Twilio edge (README, "Twilio facts" 3). Twilio may send a call from any edge (for
// example Oregon while Virginia is down), so all of them are allowed when
// Settings.SignallingCIDRs is empty.
var TwilioSignallingRanges = []netip.Prefix{
	netip.MustParsePrefix("54.172.60.0/30"),    // ashburn
	netip.MustParsePrefix("54.244.51.0/30"),    // umatilla
	netip.MustParsePrefix("54.171.127.192/30"), // dublin
	netip.MustParsePrefix("35.156.191.128/30"), // frankfurt
	netip.MustParsePrefix("54.65.63.192/30"),   // tokyo
	netip.MustParsePrefix("54.169.127.128/30"), // singapore
	netip.MustParsePrefix("54.252.254.64/30"),  // sydney
	netip.MustParsePrefix("177.71.206.192/30"), // sao-paulo
}

// Settings is the plain configuration of a B2BUA, built by cmd from the
// sip: and twilio: sections. A call reads them once, when it starts.
type Settings struct {
	// Domain is the SIP Domain prefix: calls go to
	// sip:<dialled>@<Domain>.sip.<edge>.twilio.com and come from
	// sip:<twilio_user>@<Domain>.sip.twilio.com.
	Domain string
	// PublicAddress is host[:port] advertised to Twilio (Via, Contact);
	// without a port the listening port of the transport is used.
	PublicAddress string
	// LocalAddress is host[:port] advertised to phones (Via, Contact);
	// empty means the address of the socket the phone talks to, or
	// PublicAddress's host when that socket listens on every interface.
	LocalAddress string
	// Timeout is how long a Twilio IP may stay silent after an INVITE before
	// the next IP (then edge) is tried, and how long a phone contact may stay
	// silent before its fork is dropped. Zero means DefaultTimeout.
	Timeout time.Duration
	// SetupTimeout bounds the time from INVITE to answer. Zero means
	// DefaultSetupTimeout.
	SetupTimeout time.Duration
	// SignallingCIDRs are the sources new calls from Twilio are accepted
	// from; empty means TwilioSignallingRanges.
	SignallingCIDRs []netip.Prefix
	// Realm is the digest realm phones authenticate their INVITEs in (the
	// registrar's realm, so phones reuse their credentials).
	Realm string
	// NonceTTL and Algorithms are as for the registrar (digest.Config).
	NonceTTL   time.Duration
	Algorithms []digest.Algorithm
	// UserAgent is sent as User-Agent and Server.
	UserAgent string
	// Targets are fixed destinations per user for calls from Twilio, tried
	// after the user's registered phones (see orderTargets).
	Targets map[string][]Target
	// MaxCalls bounds the calls in progress, both directions; a new one over
	// it gets 503 with Retry-After. MaxCallsPerUser bounds one user's calls
	// (made and received; a call from Twilio that rings several phones is
	// one); a new one over it gets 486. Zero means no limit.
	MaxCalls        int
	MaxCallsPerUser int
	// TwilioOverTLS says edgewise registers its Contacts at Twilio with
	// transport=tls: Twilio then calls in over TLS only, and an INVITE to
	// such a Contact arriving another way is not Twilio's (the Contact
	// names are easy to guess). It is refused: 403 over TCP, silence over
	// UDP, where the source may be forged.
	TwilioOverTLS bool
	// TwilioSRTP makes the Twilio leg speak only SDES-SRTP (RTP/SAVP with
	// a=crypto), as a SIP Domain with Secure Media requires: edgewise's
	// offers to Twilio carry its key, and a plain offer or answer from
	// Twilio is refused with 488. The phone leg is unaffected, and so is
	// side B of a call that does not go to Twilio (a local callee, a
	// fallback target).
	TwilioSRTP bool

	// Local says when a phone's call to another local user (the Request-URI
	// user is an extension or a user name) is connected by edgewise itself,
	// both legs local: LocalWhenTwilioDown (the default) while no Twilio
	// edge is usable, LocalAlways, or LocalNever.
	Local LocalMode
	// Extensions maps each extension to its local user.
	Extensions map[string]string
	// FallbackTargets get phones' calls to numbers that are not local while
	// no Twilio edge is usable, or once every Twilio address failed for a
	// call: in orderTargets' order, the next on failure or silence, with
	// the number dialled as the Request-URI's user.
	FallbackTargets []Target
	// EmergencyNumbers take the first usable route (Twilio, else the
	// fallback targets) and are never refused for MaxCalls or
	// MaxCallsPerUser.
	EmergencyNumbers []string
}

// LocalMode is when a call between two local users stays local.
type LocalMode string

// Local modes; "" means LocalWhenTwilioDown.
const (
	LocalWhenTwilioDown LocalMode = "when_twilio_down"
	LocalAlways         LocalMode = "always"
	LocalNever          LocalMode = "never"
)

// Target is a fixed destination for a user's calls: a PBX, an SBC, a phone
// that cannot register.
type Target struct {
	URI      string // sip:[user@]host[:port][;transport=udp|tcp]
	Priority int    // lower first
	Weight   int    // share of the calls within a priority; 0 = last resort
}

func (s Settings) withDefaults() Settings {
	if s.Timeout == 0 {
		s.Timeout = DefaultTimeout
	}
	if s.SetupTimeout == 0 {
		s.SetupTimeout = DefaultSetupTimeout
	}
	if s.UserAgent == "" {
		s.UserAgent = "edgewise"
	}
	if s.Local == "" {
		s.Local = LocalWhenTwilioDown
	}
	return s
}

// hostPort is an advertised address; port 0 means "the socket's port".
type hostPort struct {
	host string
	port int
}

func parseHostPort(a string) (hostPort, error) {
	if a == "" {
		return hostPort{}, nil
	}
	if h, p, err := net.SplitHostPort(a); err == nil {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 65535 || h == "" {
			return hostPort{}, fmt.Errorf("%q: bad host or port", a)
		}
		return hostPort{host: h, port: n}, nil
	}
	if strings.ContainsAny(a, ":[]") && !strings.HasPrefix(a, "[") {
		return hostPort{}, fmt.Errorf("%q: write IPv6 as [addr]:port", a)
	}
	return hostPort{host: strings.Trim(a, "[]")}, nil
}

// state is one immutable snapshot of what Apply was given; a call keeps the
// snapshot it started with.
type state struct {
	s      Settings
	cidrs  []netip.Prefix
	public hostPort
	local  hostPort
	phones directory.Phones
	twilio directory.Twilio
	// extOf is each user's extension (From toward the callee of a local
	// call, so it can call back); emergency holds EmergencyNumbers.
	extOf     map[string]string
	emergency map[string]bool
}

func newState(s Settings, phones directory.Phones, twilio directory.Twilio) (*state, error) {
	s = s.withDefaults()
	var errs []error
	if s.Domain == "" {
		errs = append(errs, errors.New("domain is empty"))
	}
	if s.Realm == "" {
		errs = append(errs, errors.New("realm is empty"))
	}
	if s.Timeout < 0 || s.SetupTimeout < 0 {
		errs = append(errs, errors.New("timeouts must not be negative"))
	}
	if s.MaxCalls < 0 || s.MaxCallsPerUser < 0 {
		errs = append(errs, errors.New("call limits must not be negative"))
	}
	pub, err := parseHostPort(s.PublicAddress)
	if err != nil {
		errs = append(errs, fmt.Errorf("public address %w", err))
	} else if pub.host == "" {
		errs = append(errs, errors.New("public address is empty"))
	}
	loc, err := parseHostPort(s.LocalAddress)
	if err != nil {
		errs = append(errs, fmt.Errorf("local address %w", err))
	}
	for _, p := range s.SignallingCIDRs {
		if !p.IsValid() {
			errs = append(errs, fmt.Errorf("signalling CIDR %s is not valid", p))
		}
	}
	errs = append(errs, s.checkRoutes()...)
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("calls settings: %w", err)
	}
	cidrs := s.SignallingCIDRs
	if len(cidrs) == 0 {
		cidrs = TwilioSignallingRanges
	}
	if phones == nil {
		phones = directory.PhoneMap(nil)
	}
	if twilio == nil {
		twilio = directory.TwilioMap(nil)
	}
	st := &state{s: s, cidrs: cidrs, public: pub, local: loc, phones: phones, twilio: twilio,
		extOf: make(map[string]string, len(s.Extensions)), emergency: make(map[string]bool, len(s.EmergencyNumbers))}
	for ext, user := range s.Extensions {
		st.extOf[user] = ext
	}
	for _, n := range s.EmergencyNumbers {
		st.emergency[n] = true
	}
	return st, nil
}

// fromTwilio reports whether a new call may come from addr.
func (st *state) fromTwilio(addr netip.Addr) bool {
	addr = addr.Unmap()
	for _, p := range st.cidrs {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

func (st *state) digestConfig() digest.Config {
	return digest.Config{Realm: st.s.Realm, NonceTTL: st.s.NonceTTL, Algorithms: st.s.Algorithms}
}
