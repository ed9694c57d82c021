package upstream

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/edgewise-sip/edgewise/registrar/directory"
)

// Defaults for zero Settings fields; they follow the config schema.
const (
	DefaultRegisterExpires = 600 * time.Second
	DefaultMoveRate        = 500
	DefaultMoveConcurrency = 50
)

// Settings is the plain configuration of a Manager, built by cmd from the
// twilio: and sip: sections so this package does not depend on configs.
// Per-IP timeout and keepalive method/interval are not here: the Manager
// reads them from the edge monitor's Settings, so both always agree.
type Settings struct {
	// Domain is the SIP Domain prefix: the AOR is
	// sip:<twilio_user>@<Domain>.sip.twilio.com.
	Domain string
	// RegisterExpires is the expiry asked for (Twilio grants 600–3600 s;
	// configs validates that range, tests use shorter ones).
	RegisterExpires time.Duration
	// MoveRate bounds how many registrations start per second when many are
	// due at once (a failover, a reload, a start-up), so 1,000 users move in
	// about 2 s without a burst that looks like an attack.
	MoveRate int
	// MoveConcurrency bounds the REGISTER exchanges in flight.
	MoveConcurrency int
	// PublicAddress is host[:port] that Twilio sends INVITEs to: it goes into
	// every Contact. Without a port the transport's default is implied.
	PublicAddress string
	// ContactTransport is the transport of the Contact (udp, tcp, tls; "" =
	// udp): the one edgewise listens on for Twilio's INVITEs.
	ContactTransport string
	// UserAgent is sent in the User-Agent header ("" = none).
	UserAgent string
}

// withDefaults fills zero fields.
func (s Settings) withDefaults() Settings {
	if s.RegisterExpires == 0 {
		s.RegisterExpires = DefaultRegisterExpires
	}
	if s.MoveRate == 0 {
		s.MoveRate = DefaultMoveRate
	}
	if s.MoveConcurrency == 0 {
		s.MoveConcurrency = DefaultMoveConcurrency
	}
	s.ContactTransport = strings.ToLower(s.ContactTransport)
	if s.ContactTransport == "" {
		s.ContactTransport = "udp"
	}
	return s
}

// validate reports settings the Manager cannot work with. configs validates
// the file; this guards callers that build Settings by hand.
func (s Settings) validate() error {
	var errs []error
	if s.Domain == "" {
		errs = append(errs, errors.New("domain is empty"))
	}
	if s.RegisterExpires < time.Second {
		errs = append(errs, fmt.Errorf("register expires %s is below 1s", s.RegisterExpires))
	}
	if s.MoveRate < 1 {
		errs = append(errs, fmt.Errorf("move rate %d is below 1", s.MoveRate))
	}
	if s.MoveConcurrency < 1 {
		errs = append(errs, fmt.Errorf("move concurrency %d is below 1", s.MoveConcurrency))
	}
	if _, _, err := s.contactHostPort(); err != nil {
		errs = append(errs, err)
	}
	switch s.ContactTransport {
	case "udp", "tcp", "tls":
	default:
		errs = append(errs, fmt.Errorf("contact transport %q is not udp, tcp or tls", s.ContactTransport))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("upstream settings: %w", err)
	}
	return nil
}

// contactHostPort splits PublicAddress; port 0 means "not given".
func (s Settings) contactHostPort() (string, int, error) {
	a := s.PublicAddress
	if a == "" {
		return "", 0, errors.New("public address is empty")
	}
	if host, p, err := net.SplitHostPort(a); err == nil {
		port, err := strconv.Atoi(p)
		if err != nil || port < 1 || port > 65535 || host == "" {
			return "", 0, fmt.Errorf("public address %q: bad host or port", a)
		}
		return host, port, nil
	}
	if strings.ContainsAny(a, ":[]") && !strings.HasPrefix(a, "[") {
		// A bare IPv6 address without brackets is ambiguous with a port.
		return "", 0, fmt.Errorf("public address %q: write IPv6 as [addr]:port", a)
	}
	return strings.Trim(a, "[]"), 0, nil
}

// contactURI is the Contact URI for user at edge under s.
func contactURI(s Settings, user, edge string) sip.Uri {
	host, port, _ := s.contactHostPort()
	u := sip.Uri{Scheme: "sip", User: directory.ContactUser(user, edge), Host: host, Port: port}
	if s.ContactTransport != "udp" {
		u.UriParams = sip.NewParams()
		u.UriParams.Add("transport", s.ContactTransport)
	}
	return u
}
