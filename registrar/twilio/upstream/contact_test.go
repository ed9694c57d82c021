package upstream

import (
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
)

func TestParseContact(t *testing.T) {
	for _, tc := range []struct {
		in         string
		user, edge string
		ok         bool
	}{
		{"sip:alice~ashburn@203.0.113.5:5060", "alice", "ashburn", true},
		{"sip:alice~ashburn@203.0.113.5:5060;transport=tcp", "alice", "ashburn", true},
		{"<sip:alice~ashburn@203.0.113.5>;expires=600", "alice", "ashburn", true},
		{"SIP:a.b-c_d~sao-paulo@host", "a.b-c_d", "sao-paulo", true},
		{"sips:bob~umatilla@[2001:db8::1]:5061", "bob", "umatilla", true},
		{"sip:bob~umatilla:secret@host", "bob", "umatilla", true},
		{"bob~frankfurt-ix", "bob", "frankfurt-ix", true},
		{"sip:alice@203.0.113.5", "", "", false},   // a phone's own contact
		{"sip:~ashburn@host", "", "", false},       // no user
		{"sip:alice~@host", "", "", false},         // no edge
		{"sip:alice~Ashburn@host", "", "", false},  // edges are lower case
		{"sip:alice~ash.burn@host", "", "", false}, // not a label
		{"sip:ali ce~ashburn@host", "", "", false}, // not a user
		{"sip:alice~-ashburn@host", "", "", false}, // label starts with -
		{"tel:+15551234~ashburn", "", "", false},   // another scheme
		{"sip:alice~ashburn", "", "", false},       // scheme but no host
		{"alice~ashburn@host", "", "", false},      // no scheme, not a bare user part
		{"", "", "", false},
	} {
		user, edge, ok := ParseContact(tc.in)
		if user != tc.user || edge != tc.edge || ok != tc.ok {
			t.Errorf("ParseContact(%q) = %q, %q, %v; want %q, %q, %v", tc.in, user, edge, ok, tc.user, tc.edge, tc.ok)
		}
	}
}

func TestParseContactURI(t *testing.T) {
	var u sip.Uri
	if err := sip.ParseUri("sip:alice~dublin@198.51.100.7:5080;transport=udp", &u); err != nil {
		t.Fatal(err)
	}
	if user, edge, ok := ParseContactURI(u); !ok || user != "alice" || edge != "dublin" {
		t.Errorf("ParseContactURI = %q, %q, %v", user, edge, ok)
	}
	if _, _, ok := ParseContactURI(sip.Uri{Host: "example.com"}); ok {
		t.Error("a URI without user parsed")
	}
}

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
		if user, edge, ok := ParseContact(u.String()); !ok || user != "alice" || edge != "ashburn" {
			t.Errorf("round trip of %q: %q, %q, %v", u.String(), user, edge, ok)
		}
	}
}

// FuzzParseContact: any input is handled without panic, and what
// ContactUser builds from a valid user and edge always parses back.
func FuzzParseContact(f *testing.F) {
	for _, s := range []string{"sip:alice~ashburn@1.2.3.4:5060", "<sip:a~b@h>", "a~b", "~", "sip:@", "sip:a~b:c@d;e"} {
		f.Add(s, "alice", "ashburn")
	}
	f.Fuzz(func(t *testing.T, in, user, edge string) {
		ParseContact(in)
		if !validUser(user) || !validEdge(edge) {
			return
		}
		for _, s := range []string{ContactUser(user, edge), "sip:" + ContactUser(user, edge) + "@h:1;transport=udp"} {
			u, e, ok := ParseContact(s)
			if !ok || u != user || e != edge {
				t.Fatalf("ParseContact(%q) = %q, %q, %v; want %q, %q", s, u, e, ok, user, edge)
			}
		}
	})
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
