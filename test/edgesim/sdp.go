package edgesim

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/pion/sdp/v3"
)

// Twilio's SIP codecs are PCMU and PCMA, DTMF as RFC 4733 telephone-event
// (README "Twilio facts" 1). edgesim offers exactly these and answers only these.
const (
	ptPCMU      = 0
	ptPCMA      = 8
	ptDTMFOffer = 101 // the number edgesim offers; answers reuse the offer's
	dtmfEvents  = "0-16"
)

// SDP directions (RFC 3264 §6.1).
const (
	dirSendRecv = "sendrecv"
	dirSendOnly = "sendonly"
	dirRecvOnly = "recvonly"
	dirInactive = "inactive"
)

var (
	errSDPUnparsable = errors.New("sdp cannot be parsed")
	errNoCommonCodec = errors.New("no audio stream with PCMU or PCMA")
)

// sdpInfo is what edgesim takes from a peer's SDP.
type sdpInfo struct {
	desc  *sdp.SessionDescription
	audio int // index of the audio m= line edgesim uses
	// addr is where the peer says it receives RTP; zero when the c= line
	// is missing or not an IP.
	addr   netip.AddrPort
	codec  string // PCMU or PCMA: the first of the audio line's formats edgesim supports
	pt     uint8
	dtmfPT int    // telephone-event payload type, -1 when absent
	dtmfFM string // its fmtp value, echoed in the answer
	dir    string // the peer's direction for the audio stream
	proto  string // RTP/AVP, RTP/SAVP, ...
	// crypto are the audio stream's a=crypto lines edgesim can use.
	crypto []sdesKey
}

// parseSDP reads an offer or answer. It fails when the body is not SDP
// (errSDPUnparsable) or has no usable audio stream (errNoCommonCodec).
func parseSDP(body []byte) (sdpInfo, error) {
	var d sdp.SessionDescription
	if err := d.Unmarshal(body); err != nil {
		return sdpInfo{}, fmt.Errorf("%w: %v", errSDPUnparsable, err)
	}
	info := sdpInfo{desc: &d, audio: -1, dtmfPT: -1}
	for i, m := range d.MediaDescriptions {
		if m.MediaName.Media != "audio" || m.MediaName.Port.Value == 0 {
			continue
		}
		codec, pt, ok := pickCodec(m)
		if !ok {
			continue
		}
		info.audio, info.codec, info.pt = i, codec, pt
		info.dtmfPT, info.dtmfFM = pickDTMF(m)
		conn := m.ConnectionInformation
		if conn == nil {
			conn = d.ConnectionInformation
		}
		if conn != nil && conn.Address != nil {
			if a, err := netip.ParseAddr(conn.Address.Address); err == nil {
				info.addr = netip.AddrPortFrom(a, uint16(m.MediaName.Port.Value))
			}
		}
		info.dir = directionOf(m.Attributes, directionOf(d.Attributes, dirSendRecv))
		info.proto = strings.Join(m.MediaName.Protos, "/")
		for _, a := range m.Attributes {
			if k, ok := parseCryptoAttr(a.Value); a.Key == "crypto" && ok {
				info.crypto = append(info.crypto, k)
			}
		}
		return info, nil
	}
	return info, errNoCommonCodec
}

// rtpmaps maps payload type → "name/clock" from a=rtpmap lines.
func rtpmaps(m *sdp.MediaDescription) map[string]string {
	out := map[string]string{}
	for _, a := range m.Attributes {
		if a.Key != "rtpmap" {
			continue
		}
		pt, enc, ok := strings.Cut(a.Value, " ")
		if ok {
			out[pt] = strings.TrimSpace(enc)
		}
	}
	return out
}

// pickCodec returns the first format of the m= line that is PCMU or PCMA
// at 8000 Hz, by static payload type or by rtpmap name.
func pickCodec(m *sdp.MediaDescription) (string, uint8, bool) {
	maps := rtpmaps(m)
	for _, f := range m.MediaName.Formats {
		pt, err := strconv.ParseUint(f, 10, 7)
		if err != nil {
			continue
		}
		name := ""
		if enc, ok := maps[f]; ok {
			n, clock, _ := strings.Cut(enc, "/")
			clock, _, _ = strings.Cut(clock, "/") // drop a channel count
			if clock == "8000" {
				name = strings.ToUpper(n)
			}
		} else {
			switch pt {
			case ptPCMU:
				name = "PCMU"
			case ptPCMA:
				name = "PCMA"
			}
		}
		if name == "PCMU" || name == "PCMA" {
			return name, uint8(pt), true
		}
	}
	return "", 0, false
}

// pickDTMF finds telephone-event/8000 on the m= line.
func pickDTMF(m *sdp.MediaDescription) (int, string) {
	maps := rtpmaps(m)
	for _, f := range m.MediaName.Formats {
		if !strings.EqualFold(maps[f], "telephone-event/8000") {
			continue
		}
		pt, err := strconv.Atoi(f)
		if err != nil {
			continue
		}
		fmtp := ""
		for _, a := range m.Attributes {
			if v, ok := strings.CutPrefix(a.Value, f+" "); a.Key == "fmtp" && ok {
				fmtp = strings.TrimSpace(v)
			}
		}
		return pt, fmtp
	}
	return -1, ""
}

func directionOf(attrs []sdp.Attribute, def string) string {
	for _, a := range attrs {
		switch a.Key {
		case dirSendRecv, dirSendOnly, dirRecvOnly, dirInactive:
			return a.Key
		}
	}
	return def
}

// answerDirection is the direction that answers an offered one (RFC 3264
// §6.1): hold with sendonly is answered recvonly, inactive with inactive.
func answerDirection(offered string) string {
	switch offered {
	case dirSendOnly:
		return dirRecvOnly
	case dirRecvOnly:
		return dirSendOnly
	case dirInactive:
		return dirInactive
	default:
		return dirSendRecv
	}
}

// canSend reports whether edgesim, in direction dir, may send media, and
// so echo.
func canSend(dir string) bool { return dir == dirSendRecv || dir == dirSendOnly }

// sdpSession is the o= line state of edgesim's side of one call; the
// version goes up with every new SDP edgesim sends (RFC 3264 §8).
type sdpSession struct {
	id      uint64
	version uint64
}

func newSDPSession() *sdpSession {
	return &sdpSession{id: randomUint63(), version: 1}
}

func (s *sdpSession) base(ip netip.Addr) *sdp.SessionDescription {
	addrType := "IP4"
	if ip.Is6() {
		addrType = "IP6"
	}
	v := s.version
	s.version++
	return &sdp.SessionDescription{
		Version: 0,
		Origin: sdp.Origin{
			Username: "edgesim", SessionID: s.id, SessionVersion: v,
			NetworkType: "IN", AddressType: addrType, UnicastAddress: ip.String(),
		},
		SessionName: "edgesim",
		ConnectionInformation: &sdp.ConnectionInformation{
			NetworkType: "IN", AddressType: addrType, Address: &sdp.Address{Address: ip.String()},
		},
		TimeDescriptions: []sdp.TimeDescription{{Timing: sdp.Timing{}}},
	}
}

// offer is what edgesim offers as the far end of a call: PCMU, PCMA and
// telephone-event 101, 20 ms packets.
func (s *sdpSession) offer(ip netip.Addr, port int, dir string) []byte {
	d := s.base(ip)
	d.MediaDescriptions = []*sdp.MediaDescription{{
		MediaName: sdp.MediaName{
			Media: "audio", Port: sdp.RangedPort{Value: port}, Protos: []string{"RTP", "AVP"},
			Formats: []string{strconv.Itoa(ptPCMU), strconv.Itoa(ptPCMA), strconv.Itoa(ptDTMFOffer)},
		},
		Attributes: []sdp.Attribute{
			sdp.NewAttribute("rtpmap", "0 PCMU/8000"),
			sdp.NewAttribute("rtpmap", "8 PCMA/8000"),
			sdp.NewAttribute("rtpmap", fmt.Sprintf("%d telephone-event/8000", ptDTMFOffer)),
			sdp.NewAttribute("fmtp", fmt.Sprintf("%d %s", ptDTMFOffer, dtmfEvents)),
			sdp.NewAttribute("ptime", "20"),
			sdp.NewPropertyAttribute(dir),
		},
	}}
	return mustMarshal(d)
}

// answer answers offer with one codec (the offer's first supported one),
// telephone-event when offered, and dir. Every other m= line is rejected
// with port 0, keeping the line count as RFC 3264 §6 requires.
func (s *sdpSession) answer(offer sdpInfo, ip netip.Addr, port int, dir string) []byte {
	d := s.base(ip)
	for i, m := range offer.desc.MediaDescriptions {
		if i != offer.audio {
			d.MediaDescriptions = append(d.MediaDescriptions, &sdp.MediaDescription{
				MediaName: sdp.MediaName{Media: m.MediaName.Media, Port: sdp.RangedPort{Value: 0},
					Protos: m.MediaName.Protos, Formats: m.MediaName.Formats},
			})
			continue
		}
		formats := []string{strconv.Itoa(int(offer.pt))}
		attrs := []sdp.Attribute{sdp.NewAttribute("rtpmap", fmt.Sprintf("%d %s/8000", offer.pt, offer.codec))}
		if offer.dtmfPT >= 0 {
			formats = append(formats, strconv.Itoa(offer.dtmfPT))
			fmtp := offer.dtmfFM
			if fmtp == "" {
				fmtp = dtmfEvents
			}
			attrs = append(attrs,
				sdp.NewAttribute("rtpmap", fmt.Sprintf("%d telephone-event/8000", offer.dtmfPT)),
				sdp.NewAttribute("fmtp", fmt.Sprintf("%d %s", offer.dtmfPT, fmtp)))
		}
		attrs = append(attrs, sdp.NewAttribute("ptime", "20"), sdp.NewPropertyAttribute(dir))
		d.MediaDescriptions = append(d.MediaDescriptions, &sdp.MediaDescription{
			MediaName: sdp.MediaName{Media: "audio", Port: sdp.RangedPort{Value: port},
				Protos: m.MediaName.Protos, Formats: formats},
			Attributes: attrs,
		})
	}
	return mustMarshal(d)
}

// mustMarshal marshals an SDP edgesim built itself. pion's Marshal has an
// error result but never returns one (v3.0.20).
func mustMarshal(d *sdp.SessionDescription) []byte {
	b, _ := d.Marshal()
	return b
}
