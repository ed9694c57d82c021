package configs

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// twimlHead is a valid file with a token section; cases append token.twiml.
// Line 18 is "  twiml:".
const twimlHead = `twilio:
  domain: example
store:
  path: /var/lib/edgewise/e.db
phones:
  - user: alice
    password: a
    twilio_password: t
  - user: bob
    password: b
    twilio_user: bob-desk
    twilio_password: t
token:
  account_sid: AC0123456789abcdef0123456789abcdef
  api_keys: [{sid: SK0123456789abcdef0123456789abcdef, secret: s}]
  twiml_app_sid: AP0123456789abcdef0123456789abcdef
  append_roaming: false
  twiml:
`

const twimlAuthToken = "0123456789abcdef0123456789abcdef"

// TestTwiMLConfig covers token.twiml: every problem with FILE:LINE, field
// and fix, and a valid section as the token provider will get it.
func TestTwiMLConfig(t *testing.T) {
	t.Setenv("TW_AUTH", twimlAuthToken)
	t.Setenv("TW_NOT_HEX", "not-an-auth-token-at-all-0123456")
	for _, tc := range []struct {
		name, yaml string
		want       []string
	}{
		{"empty section", twimlHead + "    {}\n", []string{
			`c.yaml:18: token.twiml.auth_token: required: Twilio signs every webhook with the account's auth token (hint: auth_token: ${TWILIO_AUTH_TOKEN} or auth_token_file)`,
			`c.yaml:18: token.twiml.public_urls: at least one URL is required: Twilio signs the URL it requests (hint: the URLs Twilio is given, e.g. ["https://tokens-a.example.com", "https://tokens-b.example.com"])`,
		}},
		{"not a mapping", twimlHead + "    [a]\n", []string{
			`c.yaml:18: token.twiml: must be a mapping, not a list`,
		}},
		{"unknown key", twimlHead + "    auth_token: ${TW_AUTH}\n    public_urls: [https://a.example.com]\n    numbrs: []\n", []string{
			`c.yaml:21: token.twiml.numbrs: unknown key (hint: did you mean "numbers"?)`,
		}},
		{"auth token not hex, unset variable", twimlHead + "    auth_token: ${TW_NOT_HEX}\n    public_urls: [https://a.example.com]\n", []string{
			`c.yaml:19: token.twiml.auth_token: must be 32 hex digits (hint: copy the Auth Token from the Console's account page (not an API key secret))`,
		}},
		{"auth token variable unset", twimlHead + "    auth_token: ${EDGEWISE_TEST_UNSET_TW}\n    public_urls: [https://a.example.com]\n", []string{
			`c.yaml:19: token.twiml.auth_token: environment variable EDGEWISE_TEST_UNSET_TW is not set (hint: export it or use auth_token_file)`,
		}},
		{"auth token both ways", twimlHead + "    auth_token: ${TW_AUTH}\n    auth_token_file: x\n    public_urls: [https://a.example.com]\n", []string{
			`c.yaml:20: token.twiml.auth_token_file: give either auth_token or auth_token_file, not both`,
		}},
		{"public URLs", twimlHead + `    auth_token: ${TW_AUTH}
    public_urls:
      - https://a.example.com
      - ftp://b.example.com
      - https://c.example.com/v1/twiml/voice
      - https://user:pw@d.example.com
      - https://e.example.com/?x=1
      - https://a.example.com/
      - "https://"
`, []string{
			`c.yaml:22: token.twiml.public_urls[1]: "ftp://b.example.com": the scheme must be https (or http) (hint: a base URL, e.g. "https://tokens-a.example.com")`,
			`c.yaml:23: token.twiml.public_urls[2]: "https://c.example.com/v1/twiml/voice": give the base URL; edgewise adds /v1/twiml/voice and /v1/twiml/status (hint: a base URL, e.g. "https://tokens-a.example.com")`,
			`c.yaml:24: token.twiml.public_urls[3]: "https://user:pw@d.example.com": credentials in the URL are not allowed (hint: a base URL, e.g. "https://tokens-a.example.com")`,
			`c.yaml:25: token.twiml.public_urls[4]: "https://e.example.com/?x=1": give it without query or fragment (hint: a base URL, e.g. "https://tokens-a.example.com")`,
			`c.yaml:26: token.twiml.public_urls[5]: duplicate of token.twiml.public_urls[0]`,
			`c.yaml:27: token.twiml.public_urls[6]: "https://" has no host (hint: a base URL, e.g. "https://tokens-a.example.com")`,
		}},
		{"public URLs not a list", twimlHead + "    auth_token: ${TW_AUTH}\n    public_urls: https://a.example.com\n", []string{
			`c.yaml:20: token.twiml.public_urls: must be a list, not a value (hint: write a list, e.g. [https://a.example.com])`,
		}},
		{"numbers", twimlHead + `    auth_token: ${TW_AUTH}
    public_urls: [https://a.example.com]
    numbers:
      - {number: "+14155550100", user: alice}
      - {number: "14155550101", user: alice}
      - {number: "+1 415 555 0102", user: bob}
      - {number: "+14155550100", user: bob}
      - {number: "+14155550103", user: alcie}
      - {number: "+14155550104", user: mallory}
      - {user: bob}
      - {number: "+14155550105"}
      - "+14155550106"
`, []string{
			`c.yaml:23: token.twiml.numbers[1].number: "14155550101" is not an E.164 number (hint: + and the country code, no spaces, e.g. +14155550100)`,
			`c.yaml:24: token.twiml.numbers[2].number: "+1 415 555 0102" is not an E.164 number (hint: + and the country code, no spaces, e.g. +14155550100)`,
			`c.yaml:25: token.twiml.numbers[3].number: duplicate number +14155550100 (also token.twiml.numbers[0]) (hint: a number rings one user)`,
			`c.yaml:26: token.twiml.numbers[4].user: unknown user "alcie" (hint: did you mean "alice"?)`,
			`c.yaml:27: token.twiml.numbers[5].user: unknown user "mallory" (hint: a phones[].user)`,
			`c.yaml:28: token.twiml.numbers[6].number: required (hint: e.g. "+14155550100")`,
			`c.yaml:29: token.twiml.numbers[7].user: required (hint: the phones[].user this number rings)`,
			`c.yaml:30: token.twiml.numbers[8]: must be a mapping, not a value`,
		}},
		{"two phones, one Twilio user", strings.Replace(twimlHead, "twilio_user: bob-desk", "twilio_user: alice", 1) +
			"    auth_token: ${TW_AUTH}\n    public_urls: [https://a.example.com]\n", []string{
			`c.yaml:11: phones[1].twilio_user: "alice" is also the twilio_user of "alice" (line 6): the TwiML app could not tell whose call it is (hint: give each phone its own twilio_user, or remove token.twiml)`,
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := Parse("c.yaml", []byte(tc.yaml))
			if cfg != nil {
				t.Fatal("got a config with problems")
			}
			got := problemsOf(t, err)
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("problems:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
		})
	}
}

func TestTwiMLConfigValues(t *testing.T) {
	dir := t.TempDir()
	must(t, os.WriteFile(filepath.Join(dir, "auth-token"), []byte(twimlAuthToken+"\n"), 0o600))
	src := twimlHead + `    auth_token_file: auth-token
    public_urls: [https://tokens-a.example.com, "https://tokens-b.example.com/edgewise/"]
    numbers:
      - {number: "+14155550100", user: alice}
      - {number: "+14155550101", user: bob}
`
	cfg, err := Parse(filepath.Join(dir, "c.yaml"), []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	tw := cfg.Token.TwiML
	if tw == nil || tw.AuthToken.Value() != twimlAuthToken || tw.AuthToken.String() != "[redacted]" {
		t.Fatalf("twiml %+v", tw)
	}
	if !reflect.DeepEqual(tw.PublicURLs, []string{"https://tokens-a.example.com", "https://tokens-b.example.com/edgewise/"}) {
		t.Errorf("public urls %v", tw.PublicURLs)
	}
	if !reflect.DeepEqual(tw.Numbers, []TwiMLNumber{{"+14155550100", "alice"}, {"+14155550101", "bob"}}) {
		t.Errorf("numbers %v", tw.Numbers)
	}

	// A reload names what changed, number by number; nothing needs a restart.
	changed := strings.Replace(src, `user: bob}`, `user: alice}`, 1)
	changed = strings.Replace(changed, "tokens-a", "tokens-c", 1)
	cfg2, err := Parse(filepath.Join(dir, "c.yaml"), []byte(changed))
	if err != nil {
		t.Fatal(err)
	}
	d := Diff(cfg, cfg2)
	if !reflect.DeepEqual(d, []string{"token.twiml.public_urls", "token.twiml.numbers[+14155550101].user"}) {
		t.Errorf("diff %v", d)
	}
	if r := NeedsRestart(d); len(r) != 0 {
		t.Errorf("needs restart %v", r)
	}

	// Without the section there is no app.
	noApp := strings.TrimSuffix(twimlHead, "  twiml:\n")
	cfg3, err := Parse("c.yaml", []byte(noApp))
	if err != nil {
		t.Fatal(err)
	}
	if cfg3.Token.TwiML != nil {
		t.Errorf("twiml without the section: %+v", cfg3.Token.TwiML)
	}
}

// TestTwiMLInProductionExample: the example documents every token.twiml key
// (TestExampleFiles parses it).
func TestTwiMLInProductionExample(t *testing.T) {
	data, err := os.ReadFile("production.example.yaml")
	must(t, err)
	for _, key := range []string{"twiml", "auth_token", "public_urls", "numbers", "number"} {
		if !strings.Contains(string(data), key+":") {
			t.Errorf("production.example.yaml does not mention %s", key)
		}
	}
	if !strings.Contains(string(data), "auth_token_file") {
		t.Error("production.example.yaml does not mention auth_token_file")
	}
}
