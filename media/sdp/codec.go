package sdp

import (
	"fmt"
	"strconv"
	"strings"

	psdp "github.com/pion/sdp/v3"
)

// Codec is one payload type of an RTP m= line: its a=rtpmap, or RFC 3551's
// static table when the m= line lists a static type without one, and its
// a=fmtp.
type Codec struct {
	PT       uint8
	Name     string // encoding name as written: PCMU, opus, telephone-event
	Rate     uint32 // RTP clock rate
	Channels uint16 // 0 when a=rtpmap gives none
	Fmtp     string // a=fmtp parameters; "" when none
}

// Key identifies a codec across descriptions that number it differently:
// the encoding name (case-insensitive, RFC 4855 §3) and the clock rate.
func (c Codec) Key() string {
	return strings.ToLower(c.Name) + "/" + strconv.FormatUint(uint64(c.Rate), 10)
}

// IsEvent reports whether c is RFC 4733 telephone-event.
func (c Codec) IsEvent() bool { return strings.EqualFold(c.Name, "telephone-event") }

// Rtpmap is the value of c's a=rtpmap line: "<pt> <name>/<rate>[/<channels>]".
func (c Codec) Rtpmap() string {
	s := fmt.Sprintf("%d %s/%d", c.PT, c.Name, c.Rate)
	if c.Channels > 1 {
		s += "/" + strconv.FormatUint(uint64(c.Channels), 10)
	}
	return s
}

// staticCodecs is RFC 3551 §6's table of static payload types. G.722 (9)
// really is 8000: the RFC keeps the clock at 8 kHz for compatibility.
var staticCodecs = map[uint8]Codec{
	0: {PT: 0, Name: "PCMU", Rate: 8000}, 3: {PT: 3, Name: "GSM", Rate: 8000},
	4: {PT: 4, Name: "G723", Rate: 8000}, 5: {PT: 5, Name: "DVI4", Rate: 8000},
	6: {PT: 6, Name: "DVI4", Rate: 16000}, 7: {PT: 7, Name: "LPC", Rate: 8000},
	8: {PT: 8, Name: "PCMA", Rate: 8000}, 9: {PT: 9, Name: "G722", Rate: 8000},
	10: {PT: 10, Name: "L16", Rate: 44100, Channels: 2}, 11: {PT: 11, Name: "L16", Rate: 44100},
	12: {PT: 12, Name: "QCELP", Rate: 8000}, 13: {PT: 13, Name: "CN", Rate: 8000},
	14: {PT: 14, Name: "MPA", Rate: 90000}, 15: {PT: 15, Name: "G728", Rate: 8000},
	16: {PT: 16, Name: "DVI4", Rate: 11025}, 17: {PT: 17, Name: "DVI4", Rate: 22050},
	18: {PT: 18, Name: "G729", Rate: 8000}, 25: {PT: 25, Name: "CelB", Rate: 90000},
	26: {PT: 26, Name: "JPEG", Rate: 90000}, 28: {PT: 28, Name: "nv", Rate: 90000},
	31: {PT: 31, Name: "H261", Rate: 90000}, 32: {PT: 32, Name: "MPV", Rate: 90000},
	33: {PT: 33, Name: "MP2T", Rate: 90000}, 34: {PT: 34, Name: "H263", Rate: 90000},
}

// ParseRtpmap reads an a=rtpmap value, "<pt> <name>/<rate>[/<channels>]"
// (RFC 4566 §6). ok is false for anything else.
func ParseRtpmap(v string) (c Codec, ok bool) {
	ptStr, enc, ok := strings.Cut(v, " ")
	if !ok {
		return Codec{}, false
	}
	pt, err := strconv.ParseUint(ptStr, 10, 7)
	if err != nil {
		return Codec{}, false
	}
	parts := strings.Split(strings.TrimSpace(enc), "/")
	if len(parts) < 2 || parts[0] == "" {
		return Codec{}, false
	}
	rate, err := strconv.ParseUint(parts[1], 10, 32)
	if err != nil || rate == 0 {
		return Codec{}, false
	}
	c = Codec{PT: uint8(pt), Name: parts[0], Rate: uint32(rate)}
	if len(parts) > 2 {
		if ch, err := strconv.ParseUint(parts[2], 10, 16); err == nil {
			c.Channels = uint16(ch)
		}
	}
	return c, true
}

// readCodecs reads the payload types of an RTP m= line in preference
// order, with their rtpmap (else the static table) and fmtp, and the
// a=ptime. A dynamic type without a=rtpmap is left out: nothing says what
// it is.
func readCodecs(md *psdp.MediaDescription) (codecs []Codec, ptime string) {
	byPT := make(map[uint8]Codec)
	fmtps := make(map[uint8]string)
	for _, a := range md.Attributes {
		switch a.Key {
		case "rtpmap":
			if c, ok := ParseRtpmap(a.Value); ok {
				byPT[c.PT] = c
			}
		case "fmtp":
			ptStr, v, ok := strings.Cut(a.Value, " ")
			if pt, err := strconv.ParseUint(ptStr, 10, 7); ok && err == nil {
				fmtps[uint8(pt)] = strings.TrimSpace(v)
			}
		case "ptime":
			ptime = strings.TrimSpace(a.Value)
		}
	}
	for _, f := range md.MediaName.Formats {
		pt, err := strconv.ParseUint(f, 10, 7)
		if err != nil {
			continue
		}
		c, ok := byPT[uint8(pt)]
		if !ok {
			c, ok = staticCodecs[uint8(pt)]
		}
		if !ok {
			continue
		}
		c.Fmtp = fmtps[c.PT]
		codecs = append(codecs, c)
	}
	return codecs, ptime
}
