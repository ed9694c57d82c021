package webrtc

import (
	"sync/atomic"
	"time"

	"github.com/edgewise-sip/edgewise/media/sdp"
)

// dropReason is why a packet was not relayed; the set is closed.
type dropReason uint8

const (
	// dropNotReady: negotiation or DTLS not complete yet.
	dropNotReady dropReason = iota
	// dropCodec: a payload type the other side did not accept (CN, …).
	dropCodec
	// dropMalformed: not RTP/RTCP.
	dropMalformed
	// dropSendError: the socket or pion refused the packet.
	dropSendError
	// dropAuth: SRTP from the browser's address that failed authentication
	// or replayed a packet (fast path; pion's path counts nothing).
	dropAuth
	numDrops
)

var dropNames = [numDrops]string{"not_ready", "codec", "malformed", "send_error", "srtp_auth"}

type dir struct{ packets, bytes, rtcpPackets, rtcpBytes atomic.Uint64 }

type side struct{ in, out dir }

func (s *side) rx(n int)     { s.in.packets.Add(1); s.in.bytes.Add(uint64(n)) }
func (s *side) tx(n int)     { s.out.packets.Add(1); s.out.bytes.Add(uint64(n)) }
func (s *side) rxRTCP(n int) { s.in.rtcpPackets.Add(1); s.in.rtcpBytes.Add(uint64(n)) }
func (s *side) txRTCP(n int) { s.out.rtcpPackets.Add(1); s.out.rtcpBytes.Add(uint64(n)) }

type counters struct {
	srtp, plain side
	drops       [numDrops]atomic.Uint64
}

func (c *counters) drop(r dropReason) { c.drops[r].Add(1) }

// Counters are one direction's packets, as the media package's status
// names them (rx: sent to the bridge; tx: sent by it).
type Counters struct {
	Packets     uint64 `json:"packets"`
	Bytes       uint64 `json:"bytes"`
	RTCPPackets uint64 `json:"rtcp_packets"`
	RTCPBytes   uint64 `json:"rtcp_bytes"`
}

// Leg is one side of the bridge.
type Leg struct {
	Rx Counters `json:"rx"`
	Tx Counters `json:"tx"`
}

func (d *dir) snapshot() Counters {
	return Counters{Packets: d.packets.Load(), Bytes: d.bytes.Load(),
		RTCPPackets: d.rtcpPackets.Load(), RTCPBytes: d.rtcpBytes.Load()}
}

// Stats is the bridge's status, for the B2BUA's call status next to the
// relay's Session.Stats.
type Stats struct {
	ID        string        `json:"id"`
	Created   time.Time     `json:"created"`
	ICE       string        `json:"ice"`
	DTLS      string        `json:"dtls"`
	Connected time.Time     `json:"connected,omitzero"`
	Remote    string        `json:"remote,omitempty"` // browser's selected candidate
	Plain     string        `json:"plain"`            // the bridge's plain socket
	PlainPeer string        `json:"plain_peer,omitempty"`
	Codecs    []string      `json:"codecs,omitempty"` // negotiated, browser numbering
	Direction sdp.Direction `json:"direction"`
	Failure   string        `json:"failure,omitempty"`
	// Path is who carries the RTP: "bridge" (the fast path, once a browser
	// packet authenticated with the bridge's own SRTP keys) or "pion".
	Path string `json:"path"`
	// SRTP is the browser side: rx what the browser sent (counted after
	// decryption, so bytes are RTP sizes; SRTP adds its 10-byte tag), tx
	// what the bridge sent it.
	SRTP Leg `json:"srtp"`
	// RTP is the plain side toward the relay.
	RTP     Leg               `json:"rtp"`
	Dropped map[string]uint64 `json:"dropped"`
}

// Stats returns a snapshot of the bridge's state and counters.
func (b *Bridge) Stats() Stats {
	st := b.state.Load()
	s := Stats{
		ID: b.id, Created: b.created, ICE: st.ice.String(), DTLS: st.dtls.String(),
		Connected: st.connected, Remote: st.remote, Plain: b.local.String(),
		SRTP:    Leg{Rx: b.c.srtp.in.snapshot(), Tx: b.c.srtp.out.snapshot()},
		RTP:     Leg{Rx: b.c.plain.in.snapshot(), Tx: b.c.plain.out.snapshot()},
		Dropped: make(map[string]uint64),
	}
	for r := range dropReason(numDrops) {
		if v := b.c.drops[r].Load(); v > 0 {
			s.Dropped[dropNames[r]] = v
		}
	}
	if r := b.remote.Load(); r != nil {
		s.PlainPeer = r.rtp.String()
	}
	s.Path = "pion"
	if f := b.fast.Load(); f != nil && f.verified.Load() {
		s.Path = "bridge"
	}
	b.mu.Lock()
	s.Direction = b.dir
	for _, c := range b.codecs {
		s.Codecs = append(s.Codecs, c.Name+"/"+itoa(c.Rate)+" pt "+itoa(uint32(c.PT)))
	}
	if b.failure != nil {
		s.Failure = b.failure.Error()
	}
	b.mu.Unlock()
	return s
}
