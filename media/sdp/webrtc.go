package sdp

import "strings"

// IsWebRTC reports whether body describes WebRTC media, which the relay
// cannot carry by itself and the B2BUA hands to media/webrtc instead: an
// active m= line with a DTLS-SRTP profile (UDP/TLS/RTP/SAVP[F], RFC 5764
// §8), or — for endpoints that still write RTP/SAVPF — ICE credentials
// together with a DTLS fingerprint (RFC 8839, RFC 8122). A body that does
// not parse is not WebRTC.
func IsWebRTC(body []byte) bool {
	d, err := unmarshal(body)
	if err != nil {
		return false
	}
	has := func(key string, mediaAttrs bool, i int) bool {
		if _, ok := d.Attribute(key); ok {
			return true
		}
		if mediaAttrs {
			_, ok := d.MediaDescriptions[i].Attribute(key)
			return ok
		}
		return false
	}
	for i, md := range d.MediaDescriptions {
		if md.MediaName.Port.Value == 0 {
			continue
		}
		proto := strings.ToUpper(strings.Join(md.MediaName.Protos, "/"))
		if strings.HasPrefix(proto, "UDP/TLS/RTP/SAVP") {
			return true
		}
		if has("fingerprint", true, i) && has("ice-ufrag", true, i) {
			return true
		}
	}
	return false
}
