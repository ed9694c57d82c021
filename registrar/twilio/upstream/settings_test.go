package upstream

import (
	"testing"
	"time"

	"github.com/edgewise-sip/edgewise/registrar/directory"
)

func TestContactURI(t *testing.T) {
	for _, tc := range []struct {
		s    Settings
		want string
	}{
		{Settings{PublicAddress: "203.0.113.5:5060", ContactTransport: "udp"}, "sip:alice~ashburn@203.0.113.5:5060"},
		{Settings{PublicAddress: "gw.example.com", ContactTransport: "tls"}, "sip:alice~ashburn@gw.example.com;transport=tls"},
		{Settings{PublicAddress: "[2001:db8::1]:5062", ContactTransport: "tcp"}, "sip:alice~ashburn@[2001:db8::1]:5062;transport=tcp"},
	} {
		u := contactURI(tc.s, "alice", "ashburn")
		if got := u.String(); got != tc.want {
			t.Errorf("contactURI(%+v) = %q, want %q", tc.s, got, tc.want)
		}
		if user, edge, ok := directory.ParseContact(u.String()); !ok || user != "alice" || edge != "ashburn" {
			t.Errorf("round trip of %q: %q, %q, %v", u.String(), user, edge, ok)
		}
	}
}

func TestSettingsValidate(t *testing.T) {
	good := Settings{Domain: "example", PublicAddress: "203.0.113.5:5060"}.withDefaults()
	if err := good.validate(); err != nil {
		t.Fatalf("good settings: %v", err)
	}
	for name, edit := range map[string]func(*Settings){
		"no domain":      func(s *Settings) { s.Domain = "" },
		"no address":     func(s *Settings) { s.PublicAddress = "" },
		"bad port":       func(s *Settings) { s.PublicAddress = "host:99999" },
		"bare ipv6":      func(s *Settings) { s.PublicAddress = "2001:db8::1" },
		"short expires":  func(s *Settings) { s.RegisterExpires = time.Millisecond },
		"bad transport":  func(s *Settings) { s.ContactTransport = "sctp" },
		"negative rate":  func(s *Settings) { s.MoveRate = -1 },
		"no concurrency": func(s *Settings) { s.MoveConcurrency = -1 },
	} {
		s := good
		edit(&s)
		if err := s.validate(); err == nil {
			t.Errorf("%s: accepted %+v", name, s)
		}
	}
}

func TestPacer(t *testing.T) {
	var p pacer
	p.set(500)
	now := time.Unix(1000, 0)
	started := 0
	// Over one simulated second at 1 ms steps, the pacer lets about 500 start.
	for range 1000 {
		for p.ready(now) {
			p.take(now)
			started++
		}
		now = now.Add(time.Millisecond)
	}
	if started < 490 || started > 530 {
		t.Errorf("%d starts in 1 s at rate 500", started)
	}
}

func TestBackoff(t *testing.T) {
	for n := 1; n < 40; n++ {
		for _, user := range []bool{false, true} {
			d := backoff(n, user)
			lo, hi := retryMin, retryMax
			if user {
				lo, hi = userRetryMin, userRetryMax
			}
			if d < lo*3/4 || d > hi*5/4 {
				t.Errorf("backoff(%d, %v) = %s outside [%s, %s]", n, user, d, lo*3/4, hi*5/4)
			}
		}
	}
	if backoff(1, false) > 2*time.Second || backoff(30, false) < 45*time.Second {
		t.Error("backoff does not grow from about 1 s to about a minute")
	}
}
