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

func mimeOf(c sdp.Codec) string { return mimeTypes[strings.ToLower(c.Name)] }

func pionParams(c sdp.Codec) pion.RTPCodecParameters {
	return pion.RTPCodecParameters{
		RTPCodecCapability: pion.RTPCodecCapability{
			MimeType: mimeOf(c), ClockRate: c.Rate, Channels: c.Channels, SDPFmtpLine: c.Fmtp,
		},
		PayloadType: pion.PayloadType(c.PT),
	}
}

// audio is what the bridge reads from one description.
type audio struct {
	codecs []sdp.Codec // those the bridge carries, in m= order
	dir    sdp.Direction
	rtp    netip.AddrPort // plain descriptions only
	rtcp   netip.AddrPort
	ptime  string
}

// parseAudio reads the first active audio stream of body. Errors wrap
// sdp.ErrInvalid so the B2BUA answers 488.
func parseAudio(body []byte) (audio, error) {
	return parseAudioAs(body, false)
}

// parsePlain is parseAudio for RTP/AVP descriptions, where c=0.0.0.0 is
// the old way to hold (RFC 2543); in WebRTC descriptions it only means
// "see the ICE candidates" (RFC 8839 §4.2.1).
func parsePlain(body []byte) (audio, error) {
	return parseAudioAs(body, true)
}

func parseAudioAs(body []byte, plain bool) (audio, error) {
	info, err := sdp.Parse(body)
	if err != nil {
		return audio{}, err
	}
	m, ok := info.Audio()
	if !ok || !m.Active() {
		return audio{}, sdp.ErrNoAudio
	}
	a := audio{dir: m.Direction, rtp: m.RTP, rtcp: m.RTCP, ptime: m.Ptime}
	if plain && m.Hold() && m.Direction == sdp.SendRecv {
		// c=0.0.0.0 (RFC 2543 hold) reads as inactive on the other side.
		a.dir = sdp.Inactive
	}
	for _, c := range m.Codecs {
		if mimeOf(c) != "" {
			a.codecs = append(a.codecs, c)
		}
	}
	return a, nil
}

// hasSpeech reports whether codecs carry audio, not only events.
func hasSpeech(codecs []sdp.Codec) bool {
	for _, c := range codecs {
		if !c.IsEvent() {
			return true
		}
	}
	return false
}

// intersect keeps the codecs of a that b also has (by name and rate), in
// a's order and with a's numbering.
func intersect(a, b []sdp.Codec) []sdp.Codec {
	var out []sdp.Codec
	for _, c := range a {
		for _, d := range b {
			if c.Key() == d.Key() {
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
func plainSDP(sessID, version uint64, at netip.AddrPort, codecs []sdp.Codec, dir sdp.Direction, ptime string) []byte {
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
		fmt.Fprintf(&b, " %d", c.PT)
	}
	b.WriteString("\r\n")
	for _, c := range codecs {
		fmt.Fprintf(&b, "a=rtpmap:%s\r\n", c.Rtpmap())
		if c.Fmtp != "" {
			fmt.Fprintf(&b, "a=fmtp:%d %s\r\n", c.PT, c.Fmtp)
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
func newPTMap(from, to []sdp.Codec) *ptMap {
	var m ptMap
	for i := range m {
		m[i] = -1
	}
	for _, c := range from {
		for _, d := range to {
			if c.Key() == d.Key() {
				m[c.PT] = int16(d.PT)
				break
			}
		}
	}
	return &m
}

func itoa(v uint32) string { return strconv.FormatUint(uint64(v), 10) }
