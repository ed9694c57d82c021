package integration

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/edgewise-sip/edgewise/test/kit"
)

// survRegisterUAS registers user from a fresh address's port 5060 and runs
// a one-call SIPp UAS scenario there: the phone rings at most once, so a
// stranger who reached it would leave nobody to answer the real call.
func survRegisterUAS(t *testing.T, d *daemon, user, scenario string) <-chan sippResult {
	t.Helper()
	ip := nextIP(t)
	if code, out := sippRun(t, "register.xml", ip, d.ip+":5060",
		[][]string{authRow(user, user+"-secret", 3600)}, 1, "-p", "5060"); code != 0 {
		t.Fatalf("register %s from %s: sipp exited %d:\n%s", user, ip, code, out)
	}
	return sippUAS(t, scenario, ip)
}

// TestSecuritySurvivalStrangersReachNobody plays the stranger while every
// edge is down and edgewise connects calls itself: INVITEs to bob's
// extension, to his user name and to a number the fallback target takes,
// without credentials from a stranger's address and from Twilio's own
// (where a forged UDP source would come from), get 407; a Contact-form
// Request-URI naming the extension gets 404; a wrong password gets 403.
// Neither bob's phone nor the fallback target rings (each answers one call
// only), and alice, authenticated, then reaches both.
func TestSecuritySurvivalStrangersReachNobody(t *testing.T) {
	s := startSim(t)
	target := nextIP(t)
	d := startDaemon(t, survConfig(s, fmt.Sprintf("  fallback_targets: [{uri: \"sip:%s:5060\"}]\n", target)))
	bob := survRegisterUAS(t, d, "bob", "uas_answer.xml")
	gateway := survSippUAS(t, "uas_fallback.xml", target, 1)
	survDropEdges(t, s, d)

	for _, from := range []struct{ name, ip string }{
		{"a stranger", nextIP(t)},
		{"Twilio's address", s.ips["ashburn"][0]},
	} {
		c := dialRawSIP(t, "udp", from.ip, d.ip+":5060")
		for i, dialled := range []string{"201", "bob", "15550001111", "201~ashburn"} {
			if dialled == "201~ashburn" && from.name == "a stranger" {
				continue // Contacts are for Twilio's addresses: a stranger's gets silence (TestSecurityForgedInboundRefused)
			}
			uri := fmt.Sprintf("sip:%s@%s:5060", dialled, d.ip)
			req := sipRequest{
				Method: "INVITE", URI: uri, Transport: "UDP",
				ViaHost: c.ip, ViaPort: c.port(), Branch: randHex(8),
				From: "sip:mallory@" + c.ip, FromTag: randHex(4), To: uri,
				CallID: randHex(10), CSeq: 1, Contact: fmt.Sprintf("sip:mallory@%s:%d", c.ip, c.port()),
				Body: secPhoneSDP(c.ip, 42000+2*i),
			}
			want := 407
			if strings.Contains(dialled, "~") {
				want = 404 // no Twilio user 201: Twilio's way in rings only a user's own phones
			}
			c.send(req.String())
			res := c.expectFinal(req, want, from.name+" dialling "+dialled)
			c.send(secACKForError(req, res))
			if want != 407 {
				continue
			}
			// The same INVITE as alice with a guessed password.
			req.CSeq, req.Branch = 2, randHex(8)
			req.Auth = answerChallenge(t, res, "INVITE", uri, "alice", "guessed-password", 1)
			c.send(req.String())
			res = c.expectFinal(req, 403, from.name+" dialling "+dialled+" with a guessed password")
			c.send(secACKForError(req, res))
		}
	}

	if code, out := sippRun(t, "call.xml", nextIP(t), d.ip+":5060", dialRow("alice", "201"), 1); code != 0 {
		t.Fatalf("alice's call to bob's extension: sipp exited %d:\n%s", code, out)
	}
	if code, out := sippRun(t, "call.xml", nextIP(t), d.ip+":5060", dialRow("alice", "15550001111"), 1); code != 0 {
		t.Fatalf("alice's call to the fallback target: sipp exited %d:\n%s", code, out)
	}
	waitSipp(t, bob, "bob's phone (one call: alice's)")
	waitSipp(t, gateway, "the fallback target (one call: alice's)")
	kit.WaitFor(t, 5*time.Second, "two calls carried in survival mode", func() bool {
		st, err := d.getStatus()
		return err == nil && st.Survival != nil && st.Survival.Calls == 2
	})
	if cs := s.mustCalls(t); len(cs) != 0 {
		t.Fatalf("edgesim saw %d calls", len(cs))
	}
}
