package webrtc

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	psdp "github.com/pion/sdp/v3"
	pion "github.com/pion/webrtc/v4"

	"github.com/edgewise-sip/edgewise/media/sdp"
)

// codec is one payload type of an audio m= line.
type codec struct {
	pt       uint8
	name     string // as written: PCMU, opus, telephone-event
	rate     uint32
	channels uint16
	fmtp     string
}

// key identifies a codec across descriptions that number it differently.
func (c codec) key() string {
	return strings.ToLower(c.name) + "/" + strconv.FormatUint(uint64(c.rate), 10)
}

// mimeTypes are the codecs the bridge carries, by lower-case encoding name.
// Browsers decode all of them, so PCMU/PCMA/G722 pass through untouched;
// Opus only ever appears when both sides list it. Anything else (RED, CN,
// iLBC, video) is left out of what the bridge offers or answers.
var mimeTypes = map[string]string{
	"pcmu":            pion.MimeTypePCMU,
	"pcma":            pion.MimeTypePCMA,
	"g722":            pion.MimeTypeG722,
	"opus":            pion.MimeTypeOpus,
	"telephone-event": "audio/telephone-event",
}

// staticCodecs are the RFC 3551 static payload types the bridge carries,
// for m= lines that list them without a=rtpmap.
var staticCodecs = map[uint8]codec{
	0: {pt: 0, name: "PCMU", rate: 8000},
	8: {pt: 8, name: "PCMA", rate: 8000},
	9: {pt: 9, name: "G722", rate: 8000},
}

func (c codec) mime() string { return mimeTypes[strings.ToLower(c.name)] }

func (c codec) params() pion.RTPCodecParameters {
	return pion.RTPCodecParameters{
		RTPCodecCapability: pion.RTPCodecCapability{
			MimeType: c.mime(), ClockRate: c.rate, Channels: c.channels, SDPFmtpLine: c.fmtp,
		},
		PayloadType: pion.PayloadType(c.pt),
	}
}

// audio is what the bridge reads from one description.
type audio struct {
	codecs []codec // supported ones, in m= order
	dir    sdp.Direction
	rtp    netip.AddrPort // plain descriptions only
	rtcp   netip.AddrPort
	ptime  string
}

// parseAudio reads the first active audio stream of body. Errors wrap
// sdp.ErrInvalid so the B2BUA answers 488.
func parseAudio(body []byte) (*psdp.SessionDescription, audio, error) {
	return parseAudioAs(body, false)
}

// parsePlain is parseAudio for RTP/AVP descriptions, where c=0.0.0.0 is
// the old way to hold (RFC 2543); in WebRTC descriptions it only means
// "see the ICE candidates" (RFC 8839 §4.2.1).
func parsePlain(body []byte) (*psdp.SessionDescription, audio, error) {
	return parseAudioAs(body, true)
}

func parseAudioAs(body []byte, plain bool) (*psdp.SessionDescription, audio, error) {
	info, err := sdp.Parse(body)
	if err != nil {
		return nil, audio{}, err
	}
	m, ok := info.Audio()
	if !ok || !m.Active() {
		return nil, audio{}, sdp.ErrNoAudio
	}
	var d psdp.SessionDescription
	if err := d.UnmarshalString(string(body)); err != nil {
		return nil, audio{}, fmt.Errorf("%w: %w", sdp.ErrInvalid, err)
	}
	md := d.MediaDescriptions[m.Index]
	a := audio{dir: m.Direction, rtp: m.RTP, rtcp: m.RTCP}
	if plain && m.Hold() && m.Direction == sdp.SendRecv {
		// c=0.0.0.0 (RFC 2543 hold) reads as inactive on the other side.
		a.dir = sdp.Inactive
	}
	byPT := make(map[uint8]codec)
	fmtps := make(map[uint8]string)
	for _, at := range md.Attributes {
		switch at.Key {
		case "rtpmap":
			c, ok := parseRtpmap(at.Value)
			if ok {
				byPT[c.pt] = c
			}
		case "fmtp":
			ptStr, v, ok := strings.Cut(at.Value, " ")
			if pt, err := strconv.ParseUint(ptStr, 10, 7); ok && err == nil {
				fmtps[uint8(pt)] = strings.TrimSpace(v)
			}
		case "ptime":
			a.ptime = at.Value
		}
	}
	for _, pt := range m.Formats {
		c, ok := byPT[pt]
		if !ok {
			c, ok = staticCodecs[pt]
		}
		if !ok || c.mime() == "" {
			continue
		}
		c.fmtp = fmtps[pt]
		a.codecs = append(a.codecs, c)
	}
	return &d, a, nil
}

// parseRtpmap reads "<pt> <name>/<rate>[/<channels>]".
func parseRtpmap(v string) (codec, bool) {
	ptStr, enc, ok := strings.Cut(v, " ")
	if !ok {
		return codec{}, false
	}
	pt, err := strconv.ParseUint(ptStr, 10, 7)
	if err != nil {
		return codec{}, false
	}
	parts := strings.Split(strings.TrimSpace(enc), "/")
	if len(parts) < 2 {
		return codec{}, false
	}
	rate, err := strconv.ParseUint(parts[1], 10, 32)
	if err != nil || rate == 0 {
		return codec{}, false
	}
	c := codec{pt: uint8(pt), name: parts[0], rate: uint32(rate)}
	if len(parts) > 2 {
		if ch, err := strconv.ParseUint(parts[2], 10, 16); err == nil {
			c.channels = uint16(ch)
		}
	}
	return c, true
}

// hasSpeech reports whether codecs carry audio, not only events.
func hasSpeech(codecs []codec) bool {
	for _, c := range codecs {
		if !strings.EqualFold(c.name, "telephone-event") {
			return true
		}
	}
	return false
}

// intersect keeps the codecs of a that b also has (by name and rate), in
// a's order and with a's numbering.
func intersect(a, b []codec) []codec {
	var out []codec
	for _, c := range a {
		for _, d := range b {
			if c.key() == d.key() {
				out = append(out, c)
				break
			}
		}
	}
	return out
}

// plainSDP writes the RTP/AVP description of the bridge's plain socket.
// a=rtcp names the same port: the bridge reads RTP and RTCP on one socket,
// and a relay that follows RFC 3605 sends RTCP there without needing
// rtcp-mux negotiated toward the far end.
func plainSDP(sessID, version uint64, at netip.AddrPort, codecs []codec, dir sdp.Direction, ptime string) []byte {
	ipv := "IP4"
	if at.Addr().Is6() {
		ipv = "IP6"
	}
	ip := at.Addr().String()
	var b strings.Builder
	fmt.Fprintf(&b, "v=0\r\no=edgewise %d %d IN %s %s\r\ns=edgewise\r\nc=IN %s %s\r\nt=0 0\r\n",
		sessID, version, ipv, ip, ipv, ip)
	fmt.Fprintf(&b, "m=audio %d RTP/AVP", at.Port())
	for _, c := range codecs {
		fmt.Fprintf(&b, " %d", c.pt)
	}
	b.WriteString("\r\n")
	for _, c := range codecs {
		fmt.Fprintf(&b, "a=rtpmap:%d %s/%d", c.pt, c.name, c.rate)
		if c.channels > 1 {
			fmt.Fprintf(&b, "/%d", c.channels)
		}
		b.WriteString("\r\n")
		if c.fmtp != "" {
			fmt.Fprintf(&b, "a=fmtp:%d %s\r\n", c.pt, c.fmtp)
		}
	}
	if ptime != "" {
		fmt.Fprintf(&b, "a=ptime:%s\r\n", ptime)
	}
	fmt.Fprintf(&b, "a=rtcp:%d\r\na=%s\r\n", at.Port(), dir)
	return []byte(b.String())
}

var directions = map[string]bool{"sendrecv": true, "sendonly": true, "recvonly": true, "inactive": true}

// withDirection returns body with every audio section's direction set to
// dir (and session-level directions removed). The bridge keeps pion's own
// view of the stream at sendrecv and carries hold only in what the two
// endpoints see: pion stops a transceiver for good when a remote offer says
// inactive, which would make resume impossible on the same bridge.
func withDirection(body string, dir sdp.Direction) (string, error) {
	var d psdp.SessionDescription
	if err := d.UnmarshalString(body); err != nil {
		return "", fmt.Errorf("%w: %w", sdp.ErrInvalid, err)
	}
	d.Attributes = dropDirections(d.Attributes)
	for _, md := range d.MediaDescriptions {
		if md.MediaName.Media != "audio" {
			continue
		}
		md.Attributes = append(dropDirections(md.Attributes), psdp.Attribute{Key: dir.String()})
	}
	out, err := d.Marshal()
	if err != nil {
		return "", fmt.Errorf("%w: %w", sdp.ErrInvalid, err)
	}
	return string(out), nil
}

func dropDirections(attrs []psdp.Attribute) []psdp.Attribute {
	out := attrs[:0]
	for _, a := range attrs {
		if !directions[a.Key] {
			out = append(out, a)
		}
	}
	return out
}

// ptMap renumbers payload types between the two sides; -1 drops.
type ptMap [128]int16

// newPTMap maps every codec of from to the codec of to with the same name
// and rate. Anything unmapped (comfort noise, a codec the other side never
// accepted) is dropped rather than sent under a number the receiver would
// decode as something else.
func newPTMap(from, to []codec) *ptMap {
	var m ptMap
	for i := range m {
		m[i] = -1
	}
	for _, c := range from {
		for _, d := range to {
			if c.key() == d.key() {
				m[c.pt] = int16(d.pt)
				break
			}
		}
	}
	return &m
}

func itoa(v uint32) string { return strconv.FormatUint(uint64(v), 10) }
