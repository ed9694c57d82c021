package sdp

import (
	"reflect"
	"testing"
)

func TestParseRtpmap(t *testing.T) {
	tests := []struct {
		in   string
		want Codec
		ok   bool
	}{
		{"0 PCMU/8000", Codec{PT: 0, Name: "PCMU", Rate: 8000}, true},
		{"111 opus/48000/2", Codec{PT: 111, Name: "opus", Rate: 48000, Channels: 2}, true},
		{"101 telephone-event/8000", Codec{PT: 101, Name: "telephone-event", Rate: 8000}, true},
		{"96  AMR/8000 ", Codec{PT: 96, Name: "AMR", Rate: 8000}, true}, // extra spaces
		{"128 PCMU/8000", Codec{}, false},                               // PT is 7 bits
		{"0 PCMU", Codec{}, false},                                      // no rate
		{"0 PCMU/0", Codec{}, false},                                    // zero rate
		{"0 /8000", Codec{}, false},                                     // no name
		{"x PCMU/8000", Codec{}, false},
		{"", Codec{}, false},
	}
	for _, tc := range tests {
		got, ok := ParseRtpmap(tc.in)
		if ok != tc.ok || got != tc.want {
			t.Errorf("ParseRtpmap(%q) = %+v, %v; want %+v, %v", tc.in, got, ok, tc.want, tc.ok)
		}
		if ok {
			if back, _ := ParseRtpmap(got.Rtpmap()); back != got {
				t.Errorf("Rtpmap() of %+v reads back as %+v", got, back)
			}
		}
	}
}

// TestCodecs: the m= order, rtpmap over the static table, static types
// without rtpmap, fmtp attached, a dynamic type without rtpmap left out.
func TestCodecs(t *testing.T) {
	body := "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n" +
		"m=audio 4000 RTP/AVP 111 8 0 97 101\r\n" +
		"a=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=10\r\n" +
		"a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=ptime:20\r\n"
	info, err := Parse([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	m, _ := info.Audio()
	want := []Codec{
		{PT: 111, Name: "opus", Rate: 48000, Channels: 2, Fmtp: "minptime=10"},
		{PT: 8, Name: "PCMA", Rate: 8000},
		{PT: 0, Name: "PCMU", Rate: 8000},
		{PT: 101, Name: "telephone-event", Rate: 8000, Fmtp: "0-15"},
	}
	if !reflect.DeepEqual(m.Codecs, want) {
		t.Errorf("codecs %+v\nwant   %+v", m.Codecs, want)
	}
	if m.Ptime != "20" || !reflect.DeepEqual(m.Events(), []uint8{101}) || m.ClockRates()[111] != 48000 {
		t.Errorf("ptime %q events %v rates %v", m.Ptime, m.Events(), m.ClockRates())
	}
	if (Codec{Name: "OPUS", Rate: 48000}).Key() != (Codec{Name: "opus", Rate: 48000}).Key() {
		t.Error("Key is case-sensitive")
	}
}
