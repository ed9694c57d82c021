// Package sdp reads and rewrites the session descriptions a B2BUA bridges,
// with github.com/pion/sdp/v3 doing the parsing and printing. Parse extracts
// what the media relay needs (where the peer wants media, its direction for
// hold detection, the codecs' clock rates); Rewrite points a description at
// the relay and leaves everything else — codecs, rtpmap, fmtp,
// telephone-event, direction — as the peer wrote it.
//
// It imports nothing of edgewise.
package sdp

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	psdp "github.com/pion/sdp/v3"
)

// ErrInvalid wraps every failure to read a description; the B2BUA answers it
// with 488 Not Acceptable Here.
var ErrInvalid = errors.New("sdp: unusable session description")

// ErrNoAudio is returned when a description has no audio stream at all
// (errors.Is(err, ErrInvalid) holds too).
var ErrNoAudio = fmt.Errorf("%w: no audio stream", ErrInvalid)

// Direction is a stream's a=sendrecv|sendonly|recvonly|inactive (RFC 4566
// §6, RFC 3264 §5.1).
type Direction uint8

const (
	SendRecv Direction = iota
	SendOnly
	RecvOnly
	Inactive
)

var directionNames = [...]string{"sendrecv", "sendonly", "recvonly", "inactive"}

func (d Direction) String() string {
	if int(d) < len(directionNames) {
		return directionNames[d]
	}
	return "direction(" + strconv.Itoa(int(d)) + ")"
}

// MarshalText makes a Direction print as its SDP name in JSON.
func (d Direction) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// UnmarshalText reads the SDP name back, so that a status document decodes
// into the types that produced it.
func (d *Direction) UnmarshalText(b []byte) error {
	dir, ok := parseDirection(string(b))
	if !ok {
		return fmt.Errorf("direction %q: want sendrecv, sendonly, recvonly or inactive", b)
	}
	*d = dir
	return nil
}

func parseDirection(key string) (Direction, bool) {
	for i, n := range directionNames {
		if key == n {
			return Direction(i), true
		}
	}
	return 0, false
}

// Media is what Parse learned about one m= line.
type Media struct {
	Index int    // position among the m= lines
	Kind  string // audio, video, ...
	Proto string // RTP/AVP, RTP/SAVP, ...
	// RTP is where the peer wants this stream sent. It is not valid when the
	// stream is disabled (port 0), when the address is a host name, or when
	// the address is unspecified (RFC 2543 hold, c=0.0.0.0).
	RTP netip.AddrPort
	// RTCP is from a=rtcp (RFC 3605) or else the RTP port + 1.
	RTCP    netip.AddrPort
	RTCPMux bool // a=rtcp-mux (RFC 5761)
	// Port is the m= port as written; 0 means the stream is disabled.
	Port      int
	Direction Direction
	// Formats are the payload types of the m= line in preference order.
	Formats []uint8
	// Codecs are the payload types of an RTP m= line that are known (by
	// a=rtpmap or RFC 3551's static table), in preference order.
	Codecs []Codec
	// Ptime is a=ptime as written; "" when absent.
	Ptime string
	// Crypto are the a=crypto lines that could be read, in order;
	// CryptoProblems say why the others could not (see ParseCrypto).
	Crypto         []Crypto
	CryptoProblems []string

	unspecified bool // c= 0.0.0.0 or ::
}

// ClockRates maps each known payload type of the m= line to its RTP clock
// rate.
func (m Media) ClockRates() map[uint8]uint32 {
	rates := make(map[uint8]uint32, len(m.Codecs))
	for _, c := range m.Codecs {
		rates[c.PT] = c.Rate
	}
	return rates
}

// Events are the payload types mapped to telephone-event (RFC 4733).
func (m Media) Events() []uint8 {
	var pts []uint8
	for _, c := range m.Codecs {
		if c.IsEvent() {
			pts = append(pts, c.PT)
		}
	}
	return pts
}

// Active reports whether the stream is in use (port not 0).
func (m Media) Active() bool { return m.Port != 0 }

// Hold reports whether the stream is held: any direction but sendrecv, or the
// old-style unspecified connection address (RFC 2543 hold, c=0.0.0.0).
func (m Media) Hold() bool {
	return m.Direction != SendRecv || m.unspecified
}

// Info is the result of Parse.
type Info struct {
	Media []Media

	desc *psdp.SessionDescription // what Parse read, for Info.Rewrite
}

// Audio returns the first active audio stream, which is the one the relay
// carries; else the first audio stream, with ok false if there is none.
func (i *Info) Audio() (Media, bool) {
	first := -1
	for k, m := range i.Media {
		if m.Kind != "audio" {
			continue
		}
		if m.Active() {
			return m, true
		}
		if first < 0 {
			first = k
		}
	}
	if first >= 0 {
		return i.Media[first], true
	}
	return Media{}, false
}

func unmarshal(body []byte) (*psdp.SessionDescription, error) {
	// pion accepts an empty body as an empty description; a SIP body that
	// is not even "v=" is not SDP (RFC 4566 §5: v= comes first).
	if !bytes.HasPrefix(body, []byte("v=")) {
		return nil, fmt.Errorf("%w: does not start with v=", ErrInvalid)
	}
	for i, c := range body {
		// RFC 4566 §5: no NUL, no bare CR or LF inside a line; a stray
		// control byte would not survive a second parse and print.
		if (c < 0x20 && c != '\r' && c != '\n' && c != '\t') || c == 0x7f ||
			(c == '\r' && (i+1 >= len(body) || body[i+1] != '\n')) {
			return nil, fmt.Errorf("%w: control byte 0x%02x at offset %d", ErrInvalid, c, i)
		}
	}
	var d psdp.SessionDescription
	if err := d.UnmarshalString(string(body)); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return &d, nil
}

// Parse reads a description. Errors wrap ErrInvalid.
func Parse(body []byte) (*Info, error) {
	d, err := unmarshal(body)
	if err != nil {
		return nil, err
	}
	return describe(d)
}

func describe(d *psdp.SessionDescription) (*Info, error) {
	sessDir := SendRecv
	for _, a := range d.Attributes {
		if dir, ok := parseDirection(a.Key); ok {
			sessDir = dir
		}
	}
	info := &Info{desc: d}
	for i, md := range d.MediaDescriptions {
		m := Media{
			Index:     i,
			Kind:      md.MediaName.Media,
			Proto:     strings.Join(md.MediaName.Protos, "/"),
			Port:      md.MediaName.Port.Value,
			Direction: sessDir,
		}
		if m.Port < 0 || m.Port > 65535 {
			return nil, fmt.Errorf("%w: m=%s port %d out of range", ErrInvalid, m.Kind, m.Port)
		}
		conn := md.ConnectionInformation
		if conn == nil {
			conn = d.ConnectionInformation
		}
		addr, hasAddr := connAddr(conn)
		rtcpPort := m.Port + 1
		rtcpAddr := addr
		for _, a := range md.Attributes {
			if dir, ok := parseDirection(a.Key); ok {
				m.Direction = dir
				continue
			}
			switch a.Key {
			case "rtcp-mux":
				m.RTCPMux = true
			case "crypto":
				if c, err := ParseCrypto(a.Value); err == nil {
					m.Crypto = append(m.Crypto, c)
				} else {
					m.CryptoProblems = append(m.CryptoProblems, err.Error())
				}
			case "rtcp":
				p, ra, err := parseRTCPAttr(a.Value)
				if err != nil {
					return nil, err
				}
				rtcpPort = p
				if ra.IsValid() {
					rtcpAddr = ra
				}
			}
		}
		if hasAddr && addr.IsUnspecified() {
			m.unspecified = true
		}
		if m.Port != 0 && hasAddr && !addr.IsUnspecified() {
			m.RTP = netip.AddrPortFrom(addr, uint16(m.Port))
			if m.RTCPMux {
				rtcpPort, rtcpAddr = m.Port, addr
			}
			if rtcpPort > 0 && rtcpPort <= 65535 && rtcpAddr.IsValid() {
				m.RTCP = netip.AddrPortFrom(rtcpAddr, uint16(rtcpPort))
			}
		}
		if strings.HasPrefix(m.Proto, "RTP/") || strings.HasPrefix(m.Proto, "UDP/TLS/RTP/") {
			m.Codecs, m.Ptime = readCodecs(md)
			for _, f := range md.MediaName.Formats {
				if pt, err := strconv.ParseUint(f, 10, 7); err == nil {
					m.Formats = append(m.Formats, uint8(pt))
				}
			}
		}
		info.Media = append(info.Media, m)
	}
	return info, nil
}

// connAddr returns the address of a c= line; ok is false for a missing line
// or a host name, which the relay cannot send to without DNS.
func connAddr(c *psdp.ConnectionInformation) (netip.Addr, bool) {
	if c == nil || c.Address == nil || c.NetworkType != "IN" {
		return netip.Addr{}, false
	}
	a, err := netip.ParseAddr(c.Address.Address)
	if err != nil {
		return netip.Addr{}, false
	}
	return a.Unmap(), true
}

// parseRTCPAttr reads "a=rtcp:<port> [IN IP4 <addr>]" (RFC 3605).
func parseRTCPAttr(v string) (int, netip.Addr, error) {
	f := strings.Fields(v)
	if len(f) == 0 {
		return 0, netip.Addr{}, fmt.Errorf("%w: empty a=rtcp", ErrInvalid)
	}
	p, err := strconv.Atoi(f[0])
	if err != nil || p < 0 || p > 65535 {
		return 0, netip.Addr{}, fmt.Errorf("%w: a=rtcp port %q", ErrInvalid, f[0])
	}
	if len(f) >= 4 && f[0] != "" {
		if a, err := netip.ParseAddr(f[3]); err == nil {
			return p, a.Unmap(), nil
		}
	}
	return p, netip.Addr{}, nil
}
