package main

import (
	"strings"
	"testing"
	"time"

	"github.com/edgewise-sip/edgewise/token"
)

// TestTwiMLSettingsFromConfig: token.twiml reaches the provider with the
// phones it rings under their Twilio users and the domain their calls come
// from; the provider accepts it.
func TestTwiMLSettingsFromConfig(t *testing.T) {
	cfg := parse(t, func(s string) string {
		s = strings.Replace(s, "    password: bob-secret\n", "    password: bob-secret\n    twilio_user: bob-desk\n", 1)
		return s + `  twiml:
    auth_token: 0123456789abcdef0123456789abcdef
    public_urls: [https://tokens-a.example.com]
    numbers:
      - {number: "+14155550100", user: alice}
      - {number: "+14155550101", user: bob}
`
	})
	ts := tokenSettings(cfg)
	tw := ts.TwiML
	if tw == nil {
		t.Fatal("no TwiML settings")
	}
	if tw.AuthToken != "0123456789abcdef0123456789abcdef" || tw.Domain != cfg.Twilio.Domain ||
		strings.Join(tw.PublicURLs, ",") != "https://tokens-a.example.com" || len(tw.Numbers) != 2 ||
		tw.Numbers[1] != (token.TwiMLNumber{Number: "+14155550101", User: "bob"}) {
		t.Errorf("twiml settings %+v", tw)
	}
	users := map[string]string{}
	for _, u := range tw.Users {
		users[u.Name] = u.TwilioUser
	}
	if users["bob"] != "bob-desk" || users["alice"] != "alice" || len(users) != len(cfg.Phones) {
		t.Errorf("users %v", users)
	}
	if err := ts.Validate(); err != nil {
		t.Errorf("provider refuses the mapped settings: %v", err)
	}
	if tokenSettings(parse(t, func(s string) string { return s })).TwiML != nil {
		t.Error("TwiML settings without token.twiml")
	}
}

// TestCallEventJournal: a call the status callbacks report as not
// connected becomes a recent event.
func TestCallEventJournal(t *testing.T) {
	j := &journal{}
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	j.callEvent(token.CallEvent{At: at, CallSID: "CA1", Status: "failed", ErrorCode: "32009",
		ErrorMessage: "not registered", From: "+14155559999", To: "+14155550100"})
	ev := j.recent(nil)
	if len(ev) != 1 || ev[0].Kind != "call_not_connected" || ev[0].Severity != "warn" || !ev[0].At.Equal(at) ||
		ev[0].Text != "call CA1 +14155559999 → +14155550100: failed (error 32009: not registered)" {
		t.Errorf("events %+v", ev)
	}
}
