package edgesim

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func sdpText(lines ...string) []byte {
	return []byte(strings.Join(lines, "\r\n") + "\r\n")
}

func TestParseSDP(t *testing.T) {
	t.Parallel()
	head := []string{"v=0", "o=x 1 1 IN IP4 10.0.0.1", "s=x", "c=IN IP4 10.0.0.1", "t=0 0"}
	for _, tc := range []struct {
		name  string
		lines []string
		err   error
		codec string
		pt    uint8
		dtmf  int
		dir   string
		addr  string
		audio int
	}{
		{name: "static PCMU first", lines: []string{"m=audio 4000 RTP/AVP 0 8 101", "a=rtpmap:101 telephone-event/8000", "a=fmtp:101 0-16"},
			codec: "PCMU", pt: 0, dtmf: 101, dir: dirSendRecv, addr: "10.0.0.1:4000"},
		{name: "opus skipped, PCMA by rtpmap, dynamic DTMF", lines: []string{"m=audio 4000 RTP/AVP 111 8 96", "a=rtpmap:111 opus/48000/2", "a=rtpmap:8 PCMA/8000", "a=rtpmap:96 telephone-event/8000", "a=sendonly"},
			codec: "PCMA", pt: 8, dtmf: 96, dir: dirSendOnly, addr: "10.0.0.1:4000"},
		{name: "media c= and session direction", lines: []string{"a=inactive", "m=audio 5000 RTP/AVP 0", "c=IN IP4 10.0.0.9"},
			codec: "PCMU", pt: 0, dtmf: -1, dir: dirInactive, addr: "10.0.0.9:5000"},
		{name: "video first is passed over", lines: []string{"m=video 6000 RTP/AVP 96", "m=audio 4000 RTP/AVP 8"},
			codec: "PCMA", pt: 8, dtmf: -1, dir: dirSendRecv, addr: "10.0.0.1:4000", audio: 1},
		{name: "G.729 only", lines: []string{"m=audio 4000 RTP/AVP 18"}, err: errNoCommonCodec},
		{name: "rejected stream", lines: []string{"m=audio 0 RTP/AVP 0"}, err: errNoCommonCodec},
	} {
		t.Run(tc.name, func(t *testing.T) {
			info, err := parseSDP(sdpText(append(head, tc.lines...)...))
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("err = %v, want %v", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if info.codec != tc.codec || info.pt != tc.pt || info.dtmfPT != tc.dtmf || info.dir != tc.dir ||
				info.addr.String() != tc.addr || info.audio != tc.audio {
				t.Errorf("got %+v", info)
			}
		})
	}
	if _, err := parseSDP([]byte("hello")); !errors.Is(err, errSDPUnparsable) {
		t.Errorf("garbage: %v", err)
	}
}

func TestAnswerSDP(t *testing.T) {
	t.Parallel()
	offer, err := parseSDP(sdpText("v=0", "o=x 1 1 IN IP4 10.0.0.1", "s=x", "c=IN IP4 10.0.0.1", "t=0 0",
		"m=video 6000 RTP/AVP 96", "a=rtpmap:96 H264/90000",
		"m=audio 4000 RTP/AVP 8 0 100", "a=rtpmap:100 telephone-event/8000", "a=fmtp:100 0-15", "a=sendonly"))
	if err != nil {
		t.Fatal(err)
	}
	ss := newSDPSession()
	ip := netip.MustParseAddr("127.0.0.9")
	body := ss.answer(offer, ip, 30000, answerDirection(offer.dir))
	got, err := parseSDP(body)
	if err != nil {
		t.Fatalf("answer does not parse: %v\n%s", err, body)
	}
	if got.codec != "PCMA" || got.dtmfPT != 100 || got.dtmfFM != "0-15" || got.dir != dirRecvOnly ||
		got.addr.String() != "127.0.0.9:30000" || got.audio != 1 || len(got.desc.MediaDescriptions) != 2 ||
		got.desc.MediaDescriptions[0].MediaName.Port.Value != 0 || len(got.desc.MediaDescriptions[1].MediaName.Formats) != 2 {
		t.Errorf("answer:\n%s", body)
	}
	second := ss.answer(offer, ip, 30000, dirSendRecv)
	if !strings.Contains(string(body), "o=edgesim ") || strings.Split(string(body), "\r\n")[1] == strings.Split(string(second), "\r\n")[1] {
		t.Errorf("o= line does not move on:\n%s\n%s", body, second)
	}

	o, err := parseSDP(ss.offer(ip, 30002, dirSendRecv))
	if err != nil || o.codec != "PCMU" || o.dtmfPT != ptDTMFOffer || o.addr.String() != "127.0.0.9:30002" {
		t.Errorf("offer: %v %+v", err, o)
	}
	for offered, want := range map[string]string{dirSendRecv: dirSendRecv, dirSendOnly: dirRecvOnly, dirRecvOnly: dirSendOnly, dirInactive: dirInactive} {
		if got := answerDirection(offered); got != want {
			t.Errorf("answerDirection(%s) = %s, want %s", offered, got, want)
		}
	}
}
