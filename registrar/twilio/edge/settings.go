package edge

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Defaults applied by Settings.withDefaults when a field is zero. They follow
// README "Twilio facts" 4 (4 s per IP, not SIP Timer F's 32 s) and the config schema.
const (
	DefaultTimeout           = 4 * time.Second
	DefaultKeepaliveInterval = 10 * time.Second
	DefaultFailbackHold      = 60 * time.Second
	// DefaultStandbyInterval spaces probes of the standby edges: slower than
	// the active edge's keepalives (they carry no registrations), fast
	// enough that a failover rarely meets a standby nobody looked at for
	// long.
	DefaultStandbyInterval = 30 * time.Second
)

// Keepalive methods (twilio.keepalive.method).
const (
	// KeepaliveOptions probes every IP of the active edge with the Prober each interval.
	KeepaliveOptions = "options"
	// KeepaliveRegister leaves the active edge to the REGISTER refreshes the
	// upstream manager reports; whether Twilio answers OPTIONS is unconfirmed.
	KeepaliveRegister = "register"
	// KeepaliveNone sends no keepalives to the active edge; only Report feeds it.
	KeepaliveNone = "none"
)

// Settings is the plain configuration of a Monitor, built by the caller from
// the twilio: section so this package does not depend on configs.
type Settings struct {
	// Domain is the SIP Domain prefix: edges resolve as <Domain>.sip.<edge>.twilio.com.
	Domain string
	// Edges in order of preference; the first healthy one is active.
	Edges []string
	// DNSServer is host[:port] of the server to ask; "" = the system resolver.
	DNSServer string
	// Transport is udp, tcp or tls ("" = udp).
	Transport string
	// Port is the edge port; 0 = 5060, or 5061 for tls.
	Port int
	// Timeout is how long one IP may stay silent before the next is tried.
	Timeout time.Duration
	// KeepaliveInterval spaces probes of the active edge and of down edges/IPs.
	KeepaliveInterval time.Duration
	// FailbackHold is how long a recovered, more-preferred edge must stay up
	// before it becomes active again (0 = the default; use 1ns for "at once").
	FailbackHold time.Duration
	// KeepaliveMethod is options, register or none ("" = options).
	KeepaliveMethod string
	// StandbyInterval spaces probes of every IP of the edges that are
	// neither active nor down, so that a failover skips a standby already
	// known to be down instead of finding out by timing out on it. Not
	// with KeepaliveMethod none, which probes no edge that is up.
	StandbyInterval time.Duration
}

// FQDN returns the registration host of edge: <domain>.sip.<edge>.twilio.com
// (README, "Twilio facts" 1).
func (s Settings) FQDN(edge string) string {
	return s.Domain + ".sip." + edge + ".twilio.com"
}

// withDefaults fills zero fields and lower-cases the enums.
func (s Settings) withDefaults() Settings {
	s.Edges = slices.Clone(s.Edges)
	s.Transport = strings.ToLower(s.Transport)
	if s.Transport == "" {
		s.Transport = "udp"
	}
	if s.Port == 0 {
		s.Port = 5060
		if s.Transport == "tls" {
			s.Port = 5061
		}
	}
	if s.Timeout <= 0 {
		s.Timeout = DefaultTimeout
	}
	if s.KeepaliveInterval <= 0 {
		s.KeepaliveInterval = DefaultKeepaliveInterval
	}
	if s.FailbackHold <= 0 {
		s.FailbackHold = DefaultFailbackHold
	}
	if s.StandbyInterval <= 0 {
		s.StandbyInterval = DefaultStandbyInterval
	}
	s.KeepaliveMethod = strings.ToLower(s.KeepaliveMethod)
	if s.KeepaliveMethod == "" {
		s.KeepaliveMethod = KeepaliveOptions
	}
	return s
}

// validate reports settings the monitor cannot work with. configs validates
// the file; this guards callers that build Settings by hand.
func (s Settings) validate() error {
	var errs []error
	if s.Domain == "" {
		errs = append(errs, errors.New("domain is empty"))
	}
	if len(s.Edges) == 0 {
		errs = append(errs, errors.New("no edges"))
	}
	seen := make(map[string]bool, len(s.Edges))
	for _, e := range s.Edges {
		if e == "" {
			errs = append(errs, errors.New("empty edge name"))
		} else if seen[e] {
			errs = append(errs, fmt.Errorf("edge %q listed twice", e))
		}
		seen[e] = true
	}
	switch s.Transport {
	case "udp", "tcp", "tls":
	default:
		errs = append(errs, fmt.Errorf("transport %q is not udp, tcp or tls", s.Transport))
	}
	switch s.KeepaliveMethod {
	case KeepaliveOptions, KeepaliveRegister, KeepaliveNone:
	default:
		errs = append(errs, fmt.Errorf("keepalive method %q is not options, register or none", s.KeepaliveMethod))
	}
	if s.Port < 1 || s.Port > 65535 {
		errs = append(errs, fmt.Errorf("port %d out of range", s.Port))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("edge settings: %w", err)
	}
	return nil
}
