package integration

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/edgewise-sip/edgewise/test/kit"
)

// TestSecurityForgedInboundRefused plays an attacker who forges INVITEs from
// Twilio's own address (over UDP nothing stops that) to reach a phone: to a
// Contact edgewise never registered at Twilio (alice at another edge), and
// to a configured user with no phone, so never registered upstream. Both are refused 404 and no phone rings; Twilio's real call to the
// Contact edgewise holds still rings and is answered by the phone.
func TestSecurityForgedInboundRefused(t *testing.T) {
	s := startSim(t)
	d := startDaemon(t, strangerConfig(s, ""))
	phone := registerUAS(t, d, "uas_answer.xml")
	kit.WaitFor(t, 10*time.Second, "alice registered upstream", func() bool { return onlyOn(s.edgesOf(t, "alice"), "ashburn") })

	forger := dialRawSIP(t, "udp", s.ips["ashburn"][0], d.ip+":5060")
	for i, contact := range []string{"alice~umatilla", "carol~ashburn"} {
		uri := fmt.Sprintf("sip:%s@%s:5060", contact, d.ip)
		req := sipRequest{
			Method: "INVITE", URI: uri, Transport: "UDP",
			ViaHost: forger.ip, ViaPort: forger.port(), Branch: randHex(8),
			From: "sip:+19005550100@itest.sip.twilio.com", FromTag: randHex(4), To: uri,
			CallID: randHex(10), CSeq: 1, Body: secPhoneSDP(forger.ip, 41000+2*i),
		}
		forger.send(req.String())
		res := forger.expectFinal(req, 404, "forged INVITE to "+contact)
		if !strings.Contains(res.Reason, "No Such Contact") && contact == "alice~umatilla" {
			t.Errorf("refusal reason %q does not say why", res.Reason)
		}
		forger.send(secACKForError(req, res))
	}
	// The phone is one SIPp call: had a forged INVITE rung it, Twilio's
	// real call below would find nobody to answer.
	placed := s.placeCall(t, "alice")
	kit.WaitFor(t, 10*time.Second, "Twilio's real call answered", func() bool { return s.call(t, placed.ID).State == "answered" })
	s.hangUp(t, placed.ID)
	waitSipp(t, phone, "the phone")
	if got := scrapeMetrics(t, d).value("edgewise_b2bua_call_setups_total", "direction", "inbound", "outcome", "unknown_contact"); got != 2 {
		t.Errorf("unknown_contact setups = %v, want 2", got)
	}
}

// TestSecurityCallLimits: a stolen phone password used for many calls at
// once. With calls.max_per_user 2, SIPp places four simultaneous calls as
// alice: two are answered and talk, two get 486 with the limit in the
// reason; the limit is counted.
func TestSecurityCallLimits(t *testing.T) {
	s := startSim(t)
	d := startDaemon(t, func(ip, dir string) string {
		return strangerConfig(s, "")(ip, dir) + "calls:\n  max_per_user: 2\n"
	})
	rows := [][]string{}
	for range 4 {
		rows = append(rows, dialRow("alice", "15550001111")[0])
	}
	_, out := sippRun(t, "call_rtp.xml", nextIP(t), d.ip+":5060", rows, 4, "-l", "4", "-r", "20")
	ok, failed := callloadLast(callloadReSuccess, out), callloadLast(callloadReFailed, out)
	if ok != 2 || failed != 2 {
		t.Fatalf("SIPp: %d calls succeeded and %d failed, want 2 and 2:\n%s", ok, failed, out)
	}
	if !strings.Contains(out, "486") {
		t.Errorf("SIPp did not see the 486:\n%s", out)
	}
	m := scrapeMetrics(t, d)
	if got := m.value("edgewise_b2bua_call_setups_total", "direction", "outbound", "outcome", "user_call_limit"); got != 2 {
		t.Errorf("user_call_limit setups = %v, want 2", got)
	}
	if got := m.value("edgewise_b2bua_call_setups_total", "direction", "outbound", "outcome", "answered"); got != 2 {
		t.Errorf("answered setups = %v, want 2", got)
	}
	answered := 0
	for _, c := range s.mustCalls(t) {
		if c.Code == 200 && c.Media != nil && c.Media.PacketsEchoed > 0 {
			answered++
		}
	}
	if answered != 2 {
		t.Errorf("edgesim saw %d answered calls with media, want 2", answered)
	}
	noCallsLeft(t, d)
}
