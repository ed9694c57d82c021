package token

import (
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestSettingsValidate(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(*Settings)
		want   string // substring of the error; "" = valid
	}{
		{"valid", func(*Settings) {}, ""},
		{"ttl default", func(s *Settings) { s.TTL = 0 }, ""},
		{"ttl min", func(s *Settings) { s.TTL = time.Minute }, ""},
		{"key without secret is not an error", func(s *Settings) { s.Keys[0].Secret = "" }, ""},
		{"bad account", func(s *Settings) { s.AccountSID = "AC123" }, `account_sid: "AC123" is not AC followed by 32 hex digits`},
		{"account with key prefix", func(s *Settings) { s.AccountSID = testKeySID }, "account_sid"},
		{"no keys", func(s *Settings) { s.Keys = nil }, "api_keys: at least one key"},
		{"bad key sid", func(s *Settings) { s.Keys[1].SID = "SKxyz" }, "api_keys[1].sid"},
		{"duplicate key", func(s *Settings) { s.Keys[1].SID = s.Keys[0].SID }, "listed twice"},
		{"bad app", func(s *Settings) { s.TwiMLAppSID = testAccount }, "twiml_app_sid"},
		{"bad push", func(s *Settings) { s.PushCredentialSID = "CR" }, "push_credential_sid"},
		{"ttl too short", func(s *Settings) { s.TTL = 59 * time.Second }, "ttl: 59s is outside 1m0s..24h0m0s"},
		{"ttl too long", func(s *Settings) { s.TTL = 25 * time.Hour }, "ttl: 25h0m0s is outside"},
		{"empty edge", func(s *Settings) { s.Edges = []string{"ashburn", ""} }, "edges[1]"},
		{"wildcard origin", func(s *Settings) { s.CORSOrigins = []string{"*"} }, `cors_origins[0]: "*" is not allowed`},
		{"origin with path", func(s *Settings) { s.CORSOrigins = []string{"https://a.example/app"} }, "is not an origin"},
		{"origin upper case", func(s *Settings) { s.CORSOrigins = []string{"https://A.example"} }, "lower case"},
		{"origin ok with port", func(s *Settings) { s.CORSOrigins = []string{"http://127.0.0.1:8080"} }, ""},
		{"header without proxies", func(s *Settings) { s.IdentityHeader = "X-Forwarded-User" }, "trusted_proxies is empty"},
		{"invalid prefix", func(s *Settings) {
			s.IdentityHeader = "X-U"
			s.TrustedProxies = []netip.Prefix{{}}
		}, "trusted_proxies[0]"},
		{"negative rate", func(s *Settings) { s.RateLimit.PerAddress = -1 }, "rate_limit"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := testSettings()
			tc.change(&s)
			err := s.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("error %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestSettingsValidateReportsAll(t *testing.T) {
	s := Settings{TTL: time.Second, CORSOrigins: []string{"*"}}
	err := s.Validate()
	if err == nil {
		t.Fatal("no error")
	}
	if n := strings.Count(err.Error(), "\n") + 1; n != 4 {
		t.Errorf("want 4 problems (account, keys, ttl, origin), got %d:\n%v", n, err)
	}
}

func TestAnswerEdges(t *testing.T) {
	for _, tc := range []struct {
		edges   []string
		roaming bool
		want    string
	}{
		{[]string{"ashburn", "umatilla"}, false, "ashburn,umatilla"},
		{[]string{"ashburn", "umatilla"}, true, "ashburn,umatilla,roaming"},
		{[]string{"roaming", "dublin"}, true, "roaming,dublin"},
		{nil, true, "roaming"},
		{nil, false, ""},
	} {
		s := Settings{Edges: tc.edges, AppendRoaming: tc.roaming}
		got := s.answerEdges()
		if got == nil || strings.Join(got, ",") != tc.want {
			t.Errorf("%v roaming=%v: %#v, want %q", tc.edges, tc.roaming, got, tc.want)
		}
	}
}
