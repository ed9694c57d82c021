package media

import (
	"net/netip"
	"time"
)

// SessionStats is one call's media as /v1/status shows it.
type SessionStats struct {
	ID       string     `json:"id"`
	Created  time.Time  `json:"created"`
	Answered bool       `json:"answered"`
	Hold     bool       `json:"hold"`
	TimedOut bool       `json:"timed_out"`
	Legs     []LegStats `json:"legs"`
}

// LegStats is one leg: where it listens, whom it talks to, what it got and
// what it sent.
type LegStats struct {
	Side       Side           `json:"side"`
	Local      netip.AddrPort `json:"local"`       // advertised RTP address (RTCP: port+1)
	Remote     netip.AddrPort `json:"remote"`      // current RTP destination
	RemoteRTCP netip.AddrPort `json:"remote_rtcp"` // current RTCP destination
	Latched    bool           `json:"latched"`     // Remote learned from the peer's packets
	// SRTP is the SDES suite the leg's peer speaks (keys are never shown);
	// "" for plain RTP.
	SRTP string `json:"srtp,omitempty"`
	// IdleMs is the time since the last valid packet from the peer; -1 if
	// none arrived yet.
	IdleMs int64   `json:"idle_ms"`
	RX     RxStats `json:"rx"`
	TX     TxStats `json:"tx"`
}

// RxStats counts what the leg's peer sent to the relay.
type RxStats struct {
	Packets     uint64 `json:"packets"` // valid RTP
	Bytes       uint64 `json:"bytes"`
	RTCPPackets uint64 `json:"rtcp_packets"`
	RTCPBytes   uint64 `json:"rtcp_bytes"`
	// Lost is RTP packets expected from sequence numbers but not received
	// (RFC 3550 A.3), summed over the SSRCs seen.
	Lost int64 `json:"lost"`
	// JitterMs is the RFC 3550 A.8 interarrival jitter of the current SSRC.
	JitterMs float64 `json:"jitter_ms"`
	SSRC     uint32  `json:"ssrc"`
	// Dropped counts packets not relayed, by reason: stranger, not_allowed,
	// malformed, truncated, oversize.
	Dropped map[string]uint64 `json:"dropped"`
}

// TxStats counts what the relay sent to the leg's peer.
type TxStats struct {
	Packets     uint64 `json:"packets"`
	Bytes       uint64 `json:"bytes"`
	RTCPPackets uint64 `json:"rtcp_packets"`
	RTCPBytes   uint64 `json:"rtcp_bytes"`
	// Dropped counts packets for this peer that could not be sent, by
	// reason: no_remote, send_error.
	Dropped map[string]uint64 `json:"dropped"`
}

// Stats snapshots the session.
func (s *Session) Stats() SessionStats {
	now := s.r.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	st := SessionStats{
		ID: s.id, Created: s.created, Answered: s.answered, Hold: s.hold, TimedOut: s.timedOut,
		Legs: make([]LegStats, 0, 2),
	}
	for i := range s.legs {
		l := &s.legs[i]
		idle := int64(-1)
		if l.lastRx != 0 {
			idle = (now - l.lastRx) / int64(time.Millisecond)
		}
		st.Legs = append(st.Legs, LegStats{
			Side:       l.side,
			Local:      l.LocalAddr(),
			Remote:     l.rtp.remote,
			RemoteRTCP: l.rtcp.remote,
			Latched:    l.rtp.latched,
			SRTP:       l.srtp.suite(),
			IdleMs:     idle,
			RX: RxStats{
				Packets: l.rx.packets, Bytes: l.rx.bytes,
				RTCPPackets: l.rx.rtcpPackets, RTCPBytes: l.rx.rtcpBytes,
				Lost:     l.rx.stream.lost(),
				JitterMs: l.rx.stream.jitter * 1000,
				SSRC:     l.rx.stream.ssrc,
				Dropped:  l.rx.dropped.asMap(),
			},
			TX: TxStats{
				Packets: l.tx.packets, Bytes: l.tx.bytes,
				RTCPPackets: l.tx.rtcpPackets, RTCPBytes: l.tx.rtcpBytes,
				Dropped: l.tx.dropped.asMap(),
			},
		})
	}
	return st
}
