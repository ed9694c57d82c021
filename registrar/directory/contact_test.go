package directory

import (
	"testing"

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
