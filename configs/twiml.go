package configs

import (
	"fmt"
	"net/url"
	"regexp"
	"strings"
)

// TwiML configures the fallback TwiML app the token provider serves on
// token.listen (POST /v1/twiml/voice and /v1/twiml/status): every replica
// of the token provider answers it, so it can be the Voice Fallback URL of
// the SIP domain, of the phone numbers and of the browsers' TwiML app. It
// lives under token: because it needs that listener and its replicas.
type TwiML struct {
	// AuthToken is the account's auth token, which Twilio signs every
	// webhook request with.
	AuthToken Secret `yaml:"auth_token"`
	// PublicURLs are the base URLs Twilio is given for the app, one per
	// replica (or one load-balanced name). Twilio signs the URL it
	// requested; behind a proxy that is not the request's own scheme and
	// Host, so the file says it. One file serves every replica, hence a list.
	PublicURLs []string `yaml:"public_urls"`
	// Numbers map each Twilio phone number to the phone user it rings; a
	// user's first number is its caller ID when it calls out.
	Numbers []TwiMLNumber `yaml:"numbers"`
}

// TwiMLNumber is one phone number (E.164) and the phone user it rings.
type TwiMLNumber struct {
	Number string `yaml:"number"`
	User   string `yaml:"user"`
}

// Key identifies a number across reloads (used by the diff).
func (n TwiMLNumber) Key() string { return n.Number }

// e164 is an E.164 number as Twilio writes it: +, a country code that does
// not start with 0, at most 15 digits.
var e164 = regexp.MustCompile(`^\+[1-9][0-9]{1,14}$`)

// decodeTwiML reads token.twiml; nil when the section is absent.
func (d *decoder) decodeTwiML(token *fields) *TwiML {
	if !token.has("twiml") {
		return nil
	}
	f := d.mapping(token.node("twiml"), "token.twiml", "auth_token", "auth_token_file", "public_urls", "numbers")
	if !f.ok {
		return nil
	}
	t := &TwiML{}
	switch {
	case !f.secret("auth_token", &t.AuthToken):
		d.problem("token.twiml.auth_token", "auth_token: ${TWILIO_AUTH_TOKEN} or auth_token_file",
			"required: Twilio signs every webhook with the account's auth token")
	case t.AuthToken.IsSet() && !isHex(t.AuthToken.Value(), 32):
		d.problem("token.twiml.auth_token", "copy the Auth Token from the Console's account page (not an API key secret)",
			"must be 32 hex digits")
	}

	items, _ := f.strList("public_urls")
	if len(items) == 0 && !d.bad["token.twiml.public_urls"] {
		d.problem("token.twiml.public_urls", `the URLs Twilio is given, e.g. ["https://tokens-a.example.com", "https://tokens-b.example.com"]`,
			"at least one URL is required: Twilio signs the URL it requests")
	}
	seen := map[string]string{}
	for _, it := range items {
		if err := checkPublicURL(it.Value); err != nil {
			d.problem(it.Path, `a base URL, e.g. "https://tokens-a.example.com"`, "%v", err)
			continue
		}
		key := strings.TrimRight(it.Value, "/")
		if first, dup := seen[key]; dup {
			d.problem(it.Path, "", "duplicate of %s", first)
			continue
		}
		seen[key] = it.Path
		t.PublicURLs = append(t.PublicURLs, it.Value)
	}

	nums, _ := f.list("numbers")
	seenNum := map[string]string{}
	for _, it := range nums {
		nf := d.mapping(it.Node, it.Path, "number", "user")
		if !nf.ok {
			continue
		}
		var n TwiMLNumber
		switch {
		case !nf.str("number", &n.Number) || n.Number == "":
			d.problem(nf.sub("number"), `e.g. "+14155550100"`, "required")
		case !e164.MatchString(n.Number):
			d.problem(nf.sub("number"), "+ and the country code, no spaces, e.g. +14155550100", "%q is not an E.164 number", n.Number)
		default:
			if first, dup := seenNum[n.Number]; dup {
				d.problem(nf.sub("number"), "a number rings one user", "duplicate number %s (also %s)", n.Number, first)
			}
			seenNum[n.Number] = it.Path
		}
		if !nf.str("user", &n.User) || n.User == "" {
			d.problem(nf.sub("user"), "the phones[].user this number rings", "required")
		}
		t.Numbers = append(t.Numbers, n)
	}
	return t
}

// checkPublicURL accepts a base URL Twilio can be given: http or https, a
// host, no credentials, query or fragment. A path is a prefix a proxy
// strips; the app's own paths are added to it.
func checkPublicURL(s string) error {
	u, err := url.Parse(s)
	path := ""
	if err == nil {
		path = strings.TrimRight(u.Path, "/")
	}
	switch {
	case err != nil:
		return fmt.Errorf("%q is not a URL", s)
	case u.Scheme != "https" && u.Scheme != "http":
		return fmt.Errorf("%q: the scheme must be https (or http)", s)
	case u.Hostname() == "":
		return fmt.Errorf("%q has no host", s)
	case u.User != nil:
		return fmt.Errorf("%q: credentials in the URL are not allowed", s)
	case u.RawQuery != "" || u.ForceQuery || u.Fragment != "":
		return fmt.Errorf("%q: give it without query or fragment", s)
	case strings.HasSuffix(path, "/v1/twiml/voice") || strings.HasSuffix(path, "/v1/twiml/status"):
		return fmt.Errorf("%q: give the base URL; edgewise adds /v1/twiml/voice and /v1/twiml/status", s)
	}
	return nil
}

// validateTwiML checks what needs the phones: every number rings a phone
// user, and no two phones call out as one Twilio user (a call's From names
// only the Twilio user, so the app could not tell whose caller ID to use).
func (d *decoder) validateTwiML(c *Config) {
	if c.Token == nil || c.Token.TwiML == nil {
		return
	}
	users := make([]string, 0, len(c.Phones))
	for _, p := range c.Phones {
		users = append(users, p.User)
	}
	for i, n := range c.Token.TwiML.Numbers {
		if n.User == "" {
			continue // reported by decode
		}
		if _, ok := c.Phone(n.User); !ok {
			hint := "a phones[].user"
			if near := nearest(n.User, users); near != "" {
				hint = fmt.Sprintf("did you mean %q?", near)
			}
			d.problem(fmt.Sprintf("token.twiml.numbers[%d].user", i), hint, "unknown user %q", n.User)
		}
	}
	first := map[string]int{}
	for i, p := range c.Phones {
		j, dup := first[p.TwilioUser]
		if !dup {
			first[p.TwilioUser] = i
			continue
		}
		d.problem(fmt.Sprintf("phones[%d].twilio_user", i), "give each phone its own twilio_user, or remove token.twiml",
			"%q is also the twilio_user of %q (line %d): the TwiML app could not tell whose call it is", p.TwilioUser, c.Phones[j].User, c.Phones[j].Line)
	}
}
