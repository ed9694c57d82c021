package sdp

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

const phoneOffer = "v=0\r\n" +
	"o=yealink 1234 5678 IN IP4 192.168.1.20\r\n" +
	"s=SDP data\r\n" +
	"c=IN IP4 192.168.1.20\r\n" +
	"t=0 0\r\n" +
	"m=audio 11780 RTP/AVP 0 8 9 18 101\r\n" +
	"a=rtpmap:0 PCMU/8000\r\n" +
	"a=rtpmap:8 PCMA/8000\r\n" +
	"a=rtpmap:9 G722/8000\r\n" +
	"a=rtpmap:18 G729/8000\r\n" +
	"a=fmtp:18 annexb=no\r\n" +
	"a=ptime:20\r\n" +
	"a=rtcp:11781 IN IP4 192.168.1.20\r\n" +
	"a=rtpmap:101 telephone-event/8000\r\n" +
	"a=fmtp:101 0-15\r\n" +
	"a=sendrecv\r\n"

var target = Target{Addr: netip.MustParseAddr("203.0.113.7"), Port: 20000}

func TestParse(t *testing.T) {
	info, err := Parse([]byte(phoneOffer))
	if err != nil {
		t.Fatal(err)
	}
	m, ok := info.Audio()
	if !ok || m.RTP != netip.MustParseAddrPort("192.168.1.20:11780") || m.RTCP != netip.MustParseAddrPort("192.168.1.20:11781") {
		t.Fatalf("audio %+v", m)
	}
	if m.Direction != SendRecv || m.Hold() || m.ClockRates()[9] != 8000 || m.ClockRates()[101] != 8000 ||
		len(m.Events()) != 1 || m.Events()[0] != 101 || len(m.Formats) != 5 {
		t.Errorf("audio %+v", m)
	}

	tests := []struct {
		name string
		sdp  string
		want func(Media) bool
	}{
		{"media-level c= wins", "v=0\r\no=- 1 1 IN IP4 1.1.1.1\r\ns=-\r\nc=IN IP4 1.1.1.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\nc=IN IP4 2.2.2.2\r\n",
			func(m Media) bool { return m.RTP == netip.MustParseAddrPort("2.2.2.2:4000") && m.RTCP.Port() == 4001 }},
		{"session sendonly", "v=0\r\no=- 1 1 IN IP4 1.1.1.1\r\ns=-\r\nc=IN IP4 1.1.1.1\r\nt=0 0\r\na=sendonly\r\nm=audio 4000 RTP/AVP 0\r\n",
			func(m Media) bool { return m.Direction == SendOnly && m.Hold() }},
		{"media overrides session", "v=0\r\no=- 1 1 IN IP4 1.1.1.1\r\ns=-\r\nc=IN IP4 1.1.1.1\r\nt=0 0\r\na=sendonly\r\nm=audio 4000 RTP/AVP 0\r\na=inactive\r\n",
			func(m Media) bool { return m.Direction == Inactive }},
		{"c=0.0.0.0 hold", "v=0\r\no=- 1 1 IN IP4 1.1.1.1\r\ns=-\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n",
			func(m Media) bool { return m.Hold() && !m.RTP.IsValid() }},
		{"rejected", "v=0\r\no=- 1 1 IN IP4 1.1.1.1\r\ns=-\r\nc=IN IP4 1.1.1.1\r\nt=0 0\r\nm=audio 0 RTP/AVP 0\r\n",
			func(m Media) bool { return !m.Active() && !m.RTP.IsValid() }},
		{"opus 48k and mux", "v=0\r\no=- 1 1 IN IP6 ::1\r\ns=-\r\nc=IN IP6 2001:db8::1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 111\r\na=rtpmap:111 opus/48000/2\r\na=rtcp-mux\r\n",
			func(m Media) bool {
				return m.ClockRates()[111] == 48000 && m.RTCPMux && m.RTCP == m.RTP && m.RTP.Addr().Is6()
			}},
		{"host name", "v=0\r\no=- 1 1 IN IP4 x\r\ns=-\r\nc=IN IP4 media.example.com\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n",
			func(m Media) bool { return m.Active() && !m.RTP.IsValid() }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			info, err := Parse([]byte(tc.sdp))
			if err != nil {
				t.Fatal(err)
			}
			m, ok := info.Audio()
			if !ok || !tc.want(m) {
				t.Errorf("got %+v", m)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	for name, body := range map[string]string{
		"empty":      "",
		"text":       "hello world",
		"no version": "o=- 1 1 IN IP4 1.1.1.1\r\ns=-\r\n",
		"bad m":      "v=0\r\no=- 1 1 IN IP4 1.1.1.1\r\ns=-\r\nt=0 0\r\nm=audio abc RTP/AVP 0\r\n",
		"bad rtcp":   "v=0\r\no=- 1 1 IN IP4 1.1.1.1\r\ns=-\r\nc=IN IP4 1.1.1.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\na=rtcp:xyz\r\n",
	} {
		if _, err := Parse([]byte(body)); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v", name, err)
		}
		if _, err := Rewrite([]byte(body), target); !errors.Is(err, ErrInvalid) {
			t.Errorf("rewrite %s: %v", name, err)
		}
	}
}

func TestRewrite(t *testing.T) {
	out, err := Rewrite([]byte(phoneOffer), target)
	if err != nil {
		t.Fatal(err)
	}
	want := strings.NewReplacer(
		"192.168.1.20", "203.0.113.7",
		"m=audio 11780", "m=audio 20000",
		"a=rtcp:11781", "a=rtcp:20001",
	).Replace(phoneOffer)
	if string(out) != want {
		t.Errorf("got\n%s\nwant\n%s", out, want)
	}
}

func TestRewriteCases(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"media-level c= only, second stream disabled, ICE removed",
			"v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nt=0 0\r\na=ice-lite\r\n" +
				"m=audio 4000 RTP/AVP 0\r\nc=IN IP4 10.0.0.1\r\na=candidate:1 1 UDP 1 10.0.0.1 4000 typ host\r\na=ice-ufrag:x\r\na=recvonly\r\n" +
				"m=video 5000 RTP/AVP 96\r\nc=IN IP4 10.0.0.1\r\na=rtcp:5001\r\n",
			"v=0\r\no=- 1 1 IN IP4 203.0.113.7\r\ns=-\r\nt=0 0\r\n" +
				"m=audio 20000 RTP/AVP 0\r\nc=IN IP4 203.0.113.7\r\na=recvonly\r\n" +
				"m=video 0 RTP/AVP 96\r\nc=IN IP4 203.0.113.7\r\n"},
		{"rtcp-mux keeps the RTP port in a=rtcp",
			"v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\na=rtcp:4000\r\na=rtcp-mux\r\n",
			"v=0\r\no=- 1 1 IN IP4 203.0.113.7\r\ns=-\r\nc=IN IP4 203.0.113.7\r\nt=0 0\r\nm=audio 20000 RTP/AVP 0\r\na=rtcp:20000 IN IP4 203.0.113.7\r\na=rtcp-mux\r\n"},
		{"rejected audio stays rejected",
			"v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 0 RTP/AVP 0\r\n",
			"v=0\r\no=- 1 1 IN IP4 203.0.113.7\r\ns=-\r\nc=IN IP4 203.0.113.7\r\nt=0 0\r\nm=audio 0 RTP/AVP 0\r\n"},
		{"origin host name kept",
			"v=0\r\no=- 1 1 IN IP4 pbx.local\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n",
			"v=0\r\no=- 1 1 IN IP4 pbx.local\r\ns=-\r\nc=IN IP4 203.0.113.7\r\nt=0 0\r\nm=audio 20000 RTP/AVP 0\r\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, err := Rewrite([]byte(tc.in), target)
			if err != nil {
				t.Fatal(err)
			}
			if string(out) != tc.want {
				t.Errorf("got\n%s\nwant\n%s", out, tc.want)
			}
			// The B2BUA reads the description and rewrites what it read:
			// the same result from one parse.
			info, err := Parse([]byte(tc.in))
			if err != nil {
				t.Fatal(err)
			}
			if out, err := info.Rewrite(target); err != nil || string(out) != tc.want {
				t.Errorf("Info.Rewrite: %v\ngot\n%s\nwant\n%s", err, out, tc.want)
			}
		})
	}
	if _, err := (&Info{}).Rewrite(target); !errors.Is(err, ErrInvalid) {
		t.Errorf("Info not from Parse: %v", err)
	}
	if _, err := Rewrite([]byte(phoneOffer), Target{}); err == nil {
		t.Error("empty target accepted")
	}
	v6, err := Rewrite([]byte(phoneOffer), Target{Addr: netip.MustParseAddr("2001:db8::5"), Port: 30000})
	if err != nil || !strings.Contains(string(v6), "c=IN IP6 2001:db8::5\r\n") {
		t.Errorf("v6: %v\n%s", err, v6)
	}
}
