package webrtc

import (
	"errors"
	"net/netip"
	"time"
)

// Defaults. A browser sends STUN consent checks every ~5 s (RFC 7675 §5.1)
// and media at 50 pps, so 10 s without a packet is a real outage; 10 s + 15 s
// hangs a vanished browser up within 25 s, inside the 30 s the product
// promises, with margin for the monitor's tick.
const (
	DefaultDisconnectedTimeout = 10 * time.Second
	DefaultFailedTimeout       = 15 * time.Second
	DefaultConnectTimeout      = 20 * time.Second
)

// Settings configure a Hub; cmd/edgewise builds them from the config.
type Settings struct {
	// Listen is the one UDP address every bridge's ICE and DTLS-SRTP
	// traffic uses (a UDP mux, demultiplexed by ICE username). Port 0 picks
	// one (tests). Unspecified IP = all interfaces.
	Listen netip.AddrPort
	// Advertise are the addresses written into ICE host candidates
	// (edgewise's public or LAN address); empty means Listen's IP, which
	// then must be specified.
	Advertise []netip.Addr
	// PlainIP is where each bridge's plain RTP socket binds and what its
	// RTP/AVP descriptions name; zero means 127.0.0.1, since the only peer
	// is the relay on the same host.
	PlainIP netip.Addr
	// DisconnectedTimeout and FailedTimeout: with no packet from the
	// browser (media or consent STUN) for Disconnected, ICE is
	// disconnected; after Disconnected+Failed the bridge fails with
	// ErrConsentLost. Zero means the defaults above.
	DisconnectedTimeout time.Duration
	FailedTimeout       time.Duration
	// ConnectTimeout bounds ICE + DTLS setup after the offer/answer
	// completes; zero means DefaultConnectTimeout.
	ConnectTimeout time.Duration
	// SocketBuffer is SO_RCVBUF/SO_SNDBUF of the shared socket; zero means
	// 4 MiB (capped by net.core.rmem_max): ~20,000 packets of headroom for
	// the one goroutine that reads every call's packets.
	SocketBuffer int
}

func (s Settings) withDefaults() (Settings, error) {
	if !s.Listen.IsValid() {
		return s, errors.New("webrtc: Listen is required")
	}
	if len(s.Advertise) == 0 {
		if s.Listen.Addr().IsUnspecified() {
			return s, errors.New("webrtc: Advertise is required when Listen is not a specific address")
		}
		s.Advertise = []netip.Addr{s.Listen.Addr()}
	}
	for _, a := range s.Advertise {
		if !a.IsValid() || a.IsUnspecified() {
			return s, errors.New("webrtc: Advertise holds an unusable address")
		}
	}
	if !s.PlainIP.IsValid() {
		s.PlainIP = netip.AddrFrom4([4]byte{127, 0, 0, 1})
	}
	if s.DisconnectedTimeout <= 0 {
		s.DisconnectedTimeout = DefaultDisconnectedTimeout
	}
	if s.FailedTimeout <= 0 {
		s.FailedTimeout = DefaultFailedTimeout
	}
	if s.SocketBuffer <= 0 {
		s.SocketBuffer = 4 << 20
	}
	if s.ConnectTimeout <= 0 {
		s.ConnectTimeout = DefaultConnectTimeout
	}
	return s, nil
}
