package media

import (
	"errors"
	"fmt"
	"net/netip"
	"runtime"
	"time"
)

// DefaultTimeout is how long a leg may be silent before OnTimeout fires.
const DefaultTimeout = 60 * time.Second

// tosEF is DSCP EF (46) in the IP TOS byte: voice gets expedited forwarding
// on networks that honour it.
const tosEF = 46 << 2

// Side names a leg of a call.
type Side uint8

const (
	// A is the phone side; its address in SDP is Settings.LocalIP.
	A Side = iota
	// B is the Twilio side; its address in SDP is Settings.PublicIP.
	B
)

// Other returns the opposite leg.
func (s Side) Other() Side { return s ^ 1 }

func (s Side) String() string {
	if s == A {
		return "A"
	}
	return "B"
}

// MarshalText prints the side as "A" or "B" in JSON.
func (s Side) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText reads "A" or "B", so that a status document decodes back
// into the types that produced it.
func (s *Side) UnmarshalText(b []byte) error {
	switch string(b) {
	case "A":
		*s = A
	case "B":
		*s = B
	default:
		return fmt.Errorf("media side %q: want A or B", b)
	}
	return nil
}

// Settings configure a Relay; cmd/edgewise builds them from the media: and
// sip: sections of the config.
type Settings struct {
	Ports   PortRange     // media.rtp_ports
	Timeout time.Duration // media.timeout; 0 means DefaultTimeout
	// LocalIP is written into SDP sent to phones (leg A).
	LocalIP netip.Addr
	// PublicIP is written into SDP sent to Twilio (leg B); zero means LocalIP.
	PublicIP netip.Addr
	// BindIP is where every relay socket binds; zero means the unspecified
	// address of LocalIP's family (all interfaces), which suits a host whose
	// public address is NATed 1:1 onto a private one.
	BindIP netip.Addr
	// AllowB, when not empty, lists the only sources leg B accepts media from
	// (Twilio's media ranges); anything else is dropped as not_allowed.
	AllowB []netip.Prefix
	// Workers is the number of packet goroutines; 0 means GOMAXPROCS.
	Workers int
	// Coalesce, when positive, is how long a busy worker naps between polls
	// (see worker.loop): fewer wake-ups per packet at high rates, for up to
	// that much added delay while many sockets are ready at once. 0 (the
	// default) serves every wake-up at once; on loopback benchmarks the
	// nap raised latency without a clear throughput gain.
	Coalesce time.Duration
	// SocketBuffer is SO_RCVBUF/SO_SNDBUF per socket; 0 means 256 KiB, enough
	// for bursts of a few hundred packets on one stream.
	SocketBuffer int
}

func (s Settings) withDefaults() (Settings, error) {
	if s.Timeout == 0 {
		s.Timeout = DefaultTimeout
	}
	if s.Timeout < 0 {
		return s, errors.New("media: timeout must be positive")
	}
	if !s.LocalIP.IsValid() {
		return s, errors.New("media: LocalIP is required")
	}
	if !s.PublicIP.IsValid() {
		s.PublicIP = s.LocalIP
	}
	if !s.BindIP.IsValid() {
		if s.LocalIP.Is4() {
			s.BindIP = netip.IPv4Unspecified()
		} else {
			s.BindIP = netip.IPv6Unspecified()
		}
	}
	if s.Ports.Min < 1 || s.Ports.Max > 65535 || s.Ports.Max <= s.Ports.Min {
		return s, fmt.Errorf("media: port range %s is not within 1..65535", s.Ports)
	}
	if s.Workers <= 0 {
		s.Workers = runtime.GOMAXPROCS(0)
	}
	if s.SocketBuffer == 0 {
		s.SocketBuffer = 256 << 10
	}
	return s, nil
}
