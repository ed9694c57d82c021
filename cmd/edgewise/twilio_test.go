package main

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/edgewise-sip/edgewise/configs"
)

func TestTwilioDispatch(t *testing.T) {
	dir := t.TempDir()
	noKey := filepath.Join(dir, "nokey.yaml")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.WriteFile(noKey, []byte("twilio:\n  domain: demo\n  edges: [ashburn]\nstore: {path: x.db}\n"), 0o600))
	cases := []struct {
		args     []string
		env      string
		wantCode int
		wantOut  string
	}{
		{[]string{"twilio"}, "", 2, "usage: edgewise twilio check"},
		{[]string{"twilio", "frob"}, "", 2, `unknown command "frob"`},
		{[]string{"twilio", "help"}, "", 0, "--update-passwords"},
		{[]string{"twilio", "check", "-c", "/nonexistent/edgewise.yaml"}, "", 2, "/nonexistent/edgewise.yaml"},
		{[]string{"twilio", "sync", "--bogus"}, "", 2, "flag provided but not defined"},
		{[]string{"twilio", "check", "-c", noKey, "extra"}, "", 2, `unexpected arguments ["extra"]`},
		{[]string{"twilio", "check", "-c", noKey}, "", 2, noKey + ":1: twilio.rest.account_sid: required by `edgewise twilio`"},
		{[]string{"twilio", "sync", "-c", noKey}, "", 2, noKey + ":1: twilio.rest.api_key_sid: required by `edgewise twilio`"},
	}
	for _, tc := range cases {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			var out bytes.Buffer
			if code := run(tc.args, &out, &out); code != tc.wantCode {
				t.Fatalf("exit %d, want %d; output:\n%s", code, tc.wantCode, out.String())
			}
			if !strings.Contains(out.String(), tc.wantOut) {
				t.Fatalf("output lacks %q:\n%s", tc.wantOut, out.String())
			}
		})
	}
	t.Setenv(restPortEnv, "http")
	var out bytes.Buffer
	withKey := filepath.Join(dir, "key.yaml")
	must(os.WriteFile(withKey, []byte("twilio:\n  domain: demo\n  rest:\n    account_sid: AC0123456789abcdef0123456789abcdef\n"+
		"    api_key_sid: SK0123456789abcdef0123456789abcdef\n    api_key_secret: abc123\nstore: {path: x.db}\n"), 0o600))
	if code := run([]string{"twilio", "check", "-c", withKey}, &out, &out); code != 2 || !strings.Contains(out.String(), `EDGEWISE_TWILIO_REST_PORT="http" is not a port`) {
		t.Errorf("bad port hook: exit %d, output %q", code, out.String())
	}
}

func TestRESTSettingsFromConfig(t *testing.T) {
	const head = "twilio:\n  domain: demo\n  edges: [ashburn, ashburn-ix, us1, dublin]\n  signalling_cidrs: [10.20.0.0/24]\n"
	const token = "token:\n  account_sid: AC00000000000000000000000000000001\n  twiml_app_sid: AP00000000000000000000000000000003\n" +
		"  api_keys:\n    - {sid: SK00000000000000000000000000000002, secret: tokenSecret0}\n    - {sid: SK00000000000000000000000000000004, secret: other}\n"
	const tail = "store: {path: x.db}\n"
	cases := []struct {
		name     string
		yaml     string
		account  string
		key      string
		secret   string
		keyFrom  string
		problems []string
	}{
		{"from the token section", head + token + tail, "AC00000000000000000000000000000001", "SK00000000000000000000000000000002", "tokenSecret0",
			"token.api_keys[0] (used while twilio.rest.api_key_sid is not set)", nil},
		{"twilio.rest wins", head + "  rest:\n    account_sid: AC0123456789abcdef0123456789abcdef\n    api_key_sid: SK0123456789abcdef0123456789abcdef\n    api_key_secret: restSecret1\n" + token + tail,
			"AC0123456789abcdef0123456789abcdef", "SK0123456789abcdef0123456789abcdef", "restSecret1", "twilio.rest.api_key_sid and api_key_secret", nil},
		{"token secret twilio-go would refuse", head + strings.Replace(token, "tokenSecret0", "token-secret", 1) + tail, "AC00000000000000000000000000000001", "SK00000000000000000000000000000002", "token-secret",
			"token.api_keys[0] (used while twilio.rest.api_key_sid is not set)", []string{
				"c.yaml:1: token.api_keys[0] (used while twilio.rest.api_key_sid is not set): the API key secret has characters a Twilio secret never has (hint: copy it exactly as Twilio showed it)",
			}},
		{"nothing", head + tail, "", "", "", "twilio.rest.api_key_sid and api_key_secret", []string{
			"c.yaml:1: twilio.rest.account_sid: required by `edgewise twilio` (hint: AC followed by 32 hex digits; or a token section's account_sid)",
			"c.yaml:1: twilio.rest.api_key_sid: required by `edgewise twilio` (hint: an API key of the account, with api_key_secret: ${TWILIO_API_KEY_SECRET}; or a token section's api_keys)",
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := configs.Parse("c.yaml", []byte(tc.yaml))
			if err != nil {
				t.Fatal(err)
			}
			s, keyFrom, problems := restSettings(cfg)
			if s.AccountSID != tc.account || s.APIKeySID != tc.key || s.APIKeySecret != tc.secret || keyFrom != tc.keyFrom {
				t.Errorf("got %s %s %q from %q", s.AccountSID, s.APIKeySID, s.APIKeySecret, keyFrom)
			}
			if !reflect.DeepEqual(problems, tc.problems) {
				t.Errorf("problems:\n%s\nwant:\n%s", strings.Join(problems, "\n"), strings.Join(tc.problems, "\n"))
			}
			// Only public edges are REST edges, in the configured order.
			if !reflect.DeepEqual(s.Edges, []string{"ashburn", "dublin"}) || s.Region != "us1" {
				t.Errorf("edges %v region %q", s.Edges, s.Region)
			}
		})
	}
}
