package sdp

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	psdp "github.com/pion/sdp/v3"
)

// Target is where the relay wants one side's media: its advertised address
// and the RTP port of the leg's pair (RTCP is Port+1), and the SRTP key the
// relay sends with, when that side speaks SRTP.
type Target struct {
	Addr netip.Addr
	Port uint16
	// Crypto, when set, makes the stream RTP/SAVP with this one a=crypto
	// line; nil makes it plain RTP/AVP. Either way the peer's own a=crypto
	// lines are removed: the relay terminates SRTP on each side.
	Crypto *Crypto
}

// iceAttributes point the peer at addresses that bypass the relay; the relay
// does not terminate ICE, so they are removed (as rtpengine's ICE=remove).
var iceAttributes = map[string]bool{
	"candidate": true, "remote-candidates": true, "end-of-candidates": true,
	"ice-ufrag": true, "ice-pwd": true, "ice-options": true, "ice-lite": true,
	"ice-mismatch": true,
}

// Rewrite points body at t: the origin and every connection address become
// t.Addr, the audio stream the relay carries (Info.Audio) gets t.Port and a
// matching a=rtcp if it had one, and any other active stream is disabled
// (port 0, RFC 3264 §6) because the relay carries one stream per call.
// Codecs, a=rtpmap, a=fmtp, telephone-event and direction attributes are
// kept as written; the audio stream's protocol and a=crypto follow
// t.Crypto. Errors wrap ErrInvalid. A caller that also reads the
// description parses it once with Parse and calls Info.Rewrite.
func Rewrite(body []byte, t Target) ([]byte, error) {
	info, err := Parse(body)
	if err != nil {
		return nil, err
	}
	return info.Rewrite(t)
}

// Rewrite is Rewrite of the description Parse read, without parsing it
// again (the B2BUA reads and rewrites every offer and answer of a call).
// It rewrites the parsed description in place: call it once per Info.
func (info *Info) Rewrite(t Target) ([]byte, error) {
	if !t.Addr.IsValid() || t.Port == 0 {
		return nil, fmt.Errorf("sdp: rewrite target %v:%d is not an address and port", t.Addr, t.Port)
	}
	d := info.desc
	if d == nil {
		return nil, fmt.Errorf("%w: not read by Parse", ErrInvalid)
	}
	audio, ok := info.Audio()
	if !ok {
		return nil, ErrNoAudio
	}
	addr := t.Addr.Unmap()
	addrType := "IP4"
	if addr.Is6() {
		addrType = "IP6"
	}
	conn := func() *psdp.ConnectionInformation {
		return &psdp.ConnectionInformation{NetworkType: "IN", AddressType: addrType,
			Address: &psdp.Address{Address: addr.String()}}
	}
	if _, err := netip.ParseAddr(d.Origin.UnicastAddress); err == nil {
		d.Origin.NetworkType, d.Origin.AddressType, d.Origin.UnicastAddress = "IN", addrType, addr.String()
	}
	if d.ConnectionInformation != nil {
		d.ConnectionInformation = conn()
	}
	d.Attributes = dropICE(d.Attributes)
	for i, md := range d.MediaDescriptions {
		if md.ConnectionInformation != nil || d.ConnectionInformation == nil {
			md.ConnectionInformation = conn()
		}
		md.Attributes = dropICE(md.Attributes)
		if i != audio.Index || !audio.Active() {
			if md.MediaName.Port.Value != 0 {
				md.MediaName.Port = psdp.RangedPort{Value: 0}
			}
			md.Attributes = dropAttr(md.Attributes, "rtcp")
			continue
		}
		md.MediaName.Port = psdp.RangedPort{Value: int(t.Port)}
		if proto := strings.Join(md.MediaName.Protos, "/"); proto == "RTP/AVP" || proto == "RTP/AVPF" || IsSecure(proto) {
			md.MediaName.Protos = strings.Split(secureProto(proto, t.Crypto != nil), "/")
		}
		md.Attributes = dropAttr(md.Attributes, "crypto")
		if t.Crypto != nil {
			md.Attributes = append(md.Attributes, psdp.Attribute{Key: "crypto", Value: t.Crypto.attrValue()})
		}
		for k, a := range md.Attributes {
			if a.Key != "rtcp" {
				continue
			}
			v := strconv.Itoa(int(t.Port) + 1)
			if audio.RTCPMux {
				v = strconv.Itoa(int(t.Port))
			}
			md.Attributes[k].Value = v + " IN " + addrType + " " + addr.String()
		}
	}
	out, err := d.Marshal()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return out, nil
}

func dropICE(attrs []psdp.Attribute) []psdp.Attribute {
	out := attrs[:0]
	for _, a := range attrs {
		if !iceAttributes[a.Key] {
			out = append(out, a)
		}
	}
	return out
}

func dropAttr(attrs []psdp.Attribute, key string) []psdp.Attribute {
	out := attrs[:0]
	for _, a := range attrs {
		if a.Key != key {
			out = append(out, a)
		}
	}
	return out
}
