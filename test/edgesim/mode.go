package edgesim

import (
	"fmt"
	"time"
)

// Mode is how an edge, or one IP of it, treats what it receives.
type Mode string

const (
	// ModeUp answers normally.
	ModeUp Mode = "up"
	// ModeDrop reads every message and ignores it: no answer at all, as when
	// an edge's SIP proxy hangs. Senders see a timeout.
	ModeDrop Mode = "drop"
	// ModeReject answers every request with 503 Service Unavailable.
	ModeReject Mode = "reject"
	// ModeSlow answers normally, but only after a delay.
	ModeSlow Mode = "slow"
	// ModeRefuse closes the IP's sockets: UDP senders get ICMP port
	// unreachable, TCP connects are refused, open TCP connections are closed.
	ModeRefuse Mode = "refuse"
	// ModeInherit is only for IPs: it removes the IP's own mode so the IP
	// follows its edge again.
	ModeInherit Mode = "inherit"

	// The certificate modes answer like up but present a bad certificate
	// on the TLS port, so a client's certificate checks can be tested.
	// UDP and TCP are unaffected.

	// ModeExpiredCert presents a certificate for the edge's names, from
	// edgesim's CA, that expired a day ago.
	ModeExpiredCert Mode = "expired-cert"
	// ModeWrongNameCert presents a valid certificate from edgesim's CA for
	// another name (WrongCertName).
	ModeWrongNameCert Mode = "wrong-name-cert"
	// ModeSelfSignedCert presents a self-signed certificate for the edge's
	// names: what a man in the middle without the CA's key can show.
	ModeSelfSignedCert Mode = "self-signed-cert"
)

// WrongCertName is the only name in the certificate of ModeWrongNameCert.
const WrongCertName = "wrong-name.edgesim.invalid"

// answers reports whether an IP in this mode serves SIP (possibly late).
func (m Mode) answers() bool {
	switch m {
	case ModeUp, ModeSlow, ModeExpiredCert, ModeWrongNameCert, ModeSelfSignedCert:
		return true
	}
	return false
}

// maxSlowDelay bounds a slow-mode delay so a typo cannot park handlers for
// hours.
const maxSlowDelay = 10 * time.Minute

// ModeSetting is a mode with its slow-mode delay (zero means the configured
// slow_delay; ignored by other modes).
type ModeSetting struct {
	Mode  Mode
	Delay time.Duration
}

// check reports a setting that is not valid for an edge (forIP=false) or an
// IP (forIP=true).
func (m ModeSetting) check(forIP bool) error {
	switch m.Mode {
	case ModeUp, ModeDrop, ModeReject, ModeSlow, ModeRefuse, ModeExpiredCert, ModeWrongNameCert, ModeSelfSignedCert:
	case ModeInherit:
		if !forIP {
			return fmt.Errorf("mode %q applies to IPs only", m.Mode)
		}
	default:
		return fmt.Errorf("unknown mode %q (up, drop, reject, slow, refuse, %s, %s, %s%s)", m.Mode,
			ModeExpiredCert, ModeWrongNameCert, ModeSelfSignedCert, map[bool]string{true: ", inherit"}[forIP])
	}
	if m.Delay < 0 || m.Delay > maxSlowDelay {
		return fmt.Errorf("delay %s is out of range 0..%s", m.Delay, maxSlowDelay)
	}
	if m.Delay != 0 && m.Mode != ModeSlow {
		return fmt.Errorf("delay is only valid with mode %q", ModeSlow)
	}
	return nil
}
