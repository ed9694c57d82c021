package integration

import (
	"strings"
	"testing"
	"time"

	"github.com/edgewise-sip/edgewise/media"
	"github.com/edgewise-sip/edgewise/test/kit"
)

// TestTwilioMediaFromOutsideMediaCIDRsDropped: Twilio's side of the relay
// takes media only from twilio.media_cidrs until it latches. With edgesim's
// addresses outside them, edgesim's echo never reaches the phone: every
// packet is dropped and counted as not_allowed, while the phone's own media
// still goes out.
func TestTwilioMediaFromOutsideMediaCIDRsDropped(t *testing.T) {
	s := startSim(t)
	d := startDaemon(t, func(ip, dir string) string {
		return strings.Replace(upstreamConfig(s, "")(ip, dir), "  media_cidrs: [127.0.0.0/8]\n", "  media_cidrs: [192.0.2.0/24]\n", 1)
	})
	res := sippAsync(t, "call_rtp.xml", nextIP(t), d.ip+":5060", dialRow("alice", "15550006666"))
	kit.WaitFor(t, 10*time.Second, "edgesim echoing and edgewise dropping the echo", func() bool {
		cs := s.calls(t)
		if len(cs) != 1 || cs[0].Media == nil || cs[0].Media.PacketsEchoed < 20 {
			return false
		}
		return scrapeMetrics(t, d).value("edgewise_media_dropped_total", "reason", "not_allowed") >= 20
	})
	legs := 0
	for _, c := range d.calls() {
		if c.Media == nil {
			continue
		}
		for _, l := range c.Media.Legs {
			legs++
			if l.Side == media.B && l.RX.Packets != 0 {
				t.Errorf("Twilio's leg relayed %d packets from outside media_cidrs", l.RX.Packets)
			}
			if l.Side == media.A && l.RX.Packets == 0 {
				t.Error("the phone's media did not go out")
			}
		}
	}
	if legs != 2 {
		t.Fatalf("the call's status had %d media legs, want 2", legs)
	}
	waitSipp(t, res, "call with RTP")
	noCallsLeft(t, d)
}
