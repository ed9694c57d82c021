package sdp

import "testing"

func TestIsWebRTC(t *testing.T) {
	const head = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
	for _, tc := range []struct {
		name string
		body string
		want bool
	}{
		{"plain", head + "m=audio 4000 RTP/AVP 0\r\n", false},
		{"savpf profile", head + "m=audio 9 UDP/TLS/RTP/SAVPF 111 0\r\n", true},
		{"savp profile", head + "m=audio 9 UDP/TLS/RTP/SAVP 0\r\n", true},
		{"ice and fingerprint on old profile", head + "a=fingerprint:sha-256 AB:CD\r\nm=audio 4000 RTP/SAVPF 0\r\na=ice-ufrag:abcd\r\n", true},
		{"ice without fingerprint", head + "m=audio 4000 RTP/AVP 0\r\na=ice-ufrag:abcd\r\n", false},
		{"sdes-srtp", head + "m=audio 4000 RTP/SAVP 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:x\r\n", false},
		{"disabled webrtc stream", head + "m=audio 0 UDP/TLS/RTP/SAVPF 0\r\nm=audio 4000 RTP/AVP 0\r\n", false},
		{"not sdp", "hello", false},
		{"empty", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := IsWebRTC([]byte(tc.body)); got != tc.want {
				t.Errorf("IsWebRTC = %v, want %v", got, tc.want)
			}
		})
	}
}
