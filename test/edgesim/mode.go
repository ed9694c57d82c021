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
)

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
	case ModeUp, ModeDrop, ModeReject, ModeSlow, ModeRefuse:
	case ModeInherit:
		if !forIP {
			return fmt.Errorf("mode %q applies to IPs only", m.Mode)
		}
	default:
		return fmt.Errorf("unknown mode %q (up, drop, reject, slow, refuse%s)", m.Mode, map[bool]string{true: ", inherit"}[forIP])
	}
	if m.Delay < 0 || m.Delay > maxSlowDelay {
		return fmt.Errorf("delay %s is out of range 0..%s", m.Delay, maxSlowDelay)
	}
	if m.Delay != 0 && m.Mode != ModeSlow {
		return fmt.Errorf("delay is only valid with mode %q", ModeSlow)
	}
	return nil
}
