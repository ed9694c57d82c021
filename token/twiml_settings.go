package token

import (
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strings"

	"github.com/twilio/twilio-go/client"

	"github.com/edgewise-sip/edgewise/token/clientid"
)

// TwiML configures the fallback TwiML app: POST /v1/twiml/voice, the Voice
// Fallback URL of the SIP domain, of the phone numbers and of the TwiML app
// browsers call out through, and POST /v1/twiml/status for status
// callbacks. It is nil when the app is off; its paths then answer 404.
type TwiML struct {
	// AuthToken is the account's auth token. Twilio signs every webhook
	// request with it (X-Twilio-Signature, HMAC-SHA1 over the URL and the
	// form parameters); a request that does not verify is refused.
	AuthToken string
	// PublicURLs are the base URLs Twilio is given for this app
	// (https://tokens-a.example.com), one per replica or load-balanced
	// name. Twilio signs the URL it requested, which behind a proxy is not
	// the request's own scheme and Host, so the signature is checked
	// against these; a request signed for none of them is refused. A path
	// in a base URL is a prefix the proxy strips before edgewise.
	PublicURLs []string
	// Domain is twilio.domain, the first label of <domain>.sip.twilio.com.
	Domain string
	// Numbers map each Twilio phone number (E.164) to the phone user it
	// rings. A user's first number is its caller ID when it calls out.
	Numbers []TwiMLNumber
	// Users are every phone user, with the Twilio user it registers and
	// calls as: the From of its calls is sip:<twilio user>@<domain>.sip.twilio.com,
	// and a browser's is client:<clientid.Of(user)>.
	Users []TwiMLUser
}

// TwiMLNumber is one phone number and the phone user it rings.
type TwiMLNumber struct {
	Number string // E.164, +14155550100
	User   string
}

// TwiMLUser is a phone user and its Twilio SIP user.
type TwiMLUser struct {
	Name       string
	TwilioUser string
}

// e164 is ITU-T E.164 as Twilio writes it: +, a country code that does not
// start with 0, at most 15 digits in all.
var e164 = regexp.MustCompile(`^\+[1-9][0-9]{1,14}$`)

// validE164 reports whether n is an E.164 number as Twilio writes it.
func validE164(n string) bool { return e164.MatchString(n) }

// validate reports every problem at once; paths name the config fields.
func (t *TwiML) validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if t.AuthToken == "" {
		bad("twiml.auth_token: required: Twilio signs its requests with it")
	}
	if len(t.PublicURLs) == 0 {
		bad("twiml.public_urls: at least one URL is needed: Twilio signs the URL it requests")
	}
	for i, u := range t.PublicURLs {
		if err := checkPublicURL(u); err != nil {
			bad("twiml.public_urls[%d]: %w", i, err)
		}
	}
	if t.Domain == "" || strings.Contains(t.Domain, ".") {
		bad("twiml: domain %q is not the first label of <domain>.sip.twilio.com", t.Domain)
	}
	users := map[string]bool{}
	twilioUsers := map[string]string{}
	ids := map[string]string{}
	for i, u := range t.Users {
		if u.Name == "" || u.TwilioUser == "" {
			bad("twiml: users[%d] has no name or Twilio user", i)
			continue
		}
		if users[u.Name] {
			bad("twiml: user %q is listed twice", u.Name)
		}
		users[u.Name] = true
		if other, dup := twilioUsers[u.TwilioUser]; dup {
			bad("twiml: users %q and %q share the Twilio user %q: a call from it could be either's", other, u.Name, u.TwilioUser)
		}
		twilioUsers[u.TwilioUser] = u.Name
		id := clientid.Of(u.Name)
		if other, dup := ids[id]; dup {
			bad("twiml: users %q and %q share the client identity %s", other, u.Name, id)
		}
		ids[id] = u.Name
	}
	numbers := map[string]bool{}
	for i, n := range t.Numbers {
		if !validE164(n.Number) {
			bad("twiml.numbers[%d].number: %q is not E.164 (+ and the country code, e.g. +14155550100)", i, n.Number)
		}
		if numbers[n.Number] {
			bad("twiml.numbers[%d].number: %s is listed twice", i, n.Number)
		}
		numbers[n.Number] = true
		if !users[n.User] {
			bad("twiml.numbers[%d].user: %q is not a phone user", i, n.User)
		}
	}
	return errors.Join(errs...)
}

// checkPublicURL accepts a base URL Twilio can be given: http or https, a
// host, no query, fragment or credentials. A path is allowed (a prefix a
// proxy strips).
func checkPublicURL(s string) error {
	u, err := url.Parse(s)
	switch {
	case err != nil:
		return fmt.Errorf("%q is not a URL", s)
	case u.Scheme != "https" && u.Scheme != "http":
		return fmt.Errorf("%q: the scheme must be https (or http)", s)
	case u.Host == "" || u.Hostname() == "":
		return fmt.Errorf("%q has no host", s)
	case u.User != nil:
		return fmt.Errorf("%q: credentials in the URL are not allowed", s)
	case u.RawQuery != "" || u.ForceQuery || u.Fragment != "":
		return fmt.Errorf("%q: give the base URL without query or fragment; edgewise adds %s and %s", s, PathTwiMLVoice, PathTwiMLStatus)
	case strings.HasSuffix(strings.TrimRight(u.Path, "/"), "/v1/twiml/voice") || strings.HasSuffix(strings.TrimRight(u.Path, "/"), "/v1/twiml/status"):
		return fmt.Errorf("%q: give the base URL; edgewise adds %s and %s", s, PathTwiMLVoice, PathTwiMLStatus)
	}
	return nil
}

// twimlState is one applied TwiML configuration with its look-up tables,
// never modified after Apply.
type twimlState struct {
	validator client.RequestValidator
	bases     []string        // PublicURLs without a trailing slash
	hosts     map[string]bool // lower-case hosts of the SIP domain: global and per edge
	domain    string          // <domain>.sip.twilio.com
	byNumber  map[string]string
	byTwilio  map[string]string // Twilio user → phone user
	byID      map[string]string // client identity → phone user
	twilioOf  map[string]string // phone user → Twilio user
	callerID  map[string]string // phone user → its first number
}

func newTwiMLState(t *TwiML, edges []string) *twimlState {
	st := &twimlState{
		validator: client.NewRequestValidator(t.AuthToken),
		hosts:     map[string]bool{},
		domain:    strings.ToLower(t.Domain) + ".sip.twilio.com",
		byNumber:  map[string]string{},
		byTwilio:  map[string]string{},
		byID:      map[string]string{},
		twilioOf:  map[string]string{},
		callerID:  map[string]string{},
	}
	for _, b := range t.PublicURLs {
		st.bases = append(st.bases, strings.TrimRight(b, "/"))
	}
	// A call's From names the domain without an edge (edgewise sends it so);
	// the edge forms are accepted too, for a phone that registers directly.
	st.hosts[st.domain] = true
	for _, e := range edges {
		st.hosts[strings.ToLower(t.Domain+".sip."+e+".twilio.com")] = true
	}
	for _, u := range t.Users {
		st.byTwilio[u.TwilioUser] = u.Name
		st.byID[clientid.Of(u.Name)] = u.Name
		st.twilioOf[u.Name] = u.TwilioUser
	}
	for _, n := range t.Numbers {
		st.byNumber[n.Number] = n.User
		if _, ok := st.callerID[n.User]; !ok {
			st.callerID[n.User] = n.Number
		}
	}
	return st
}

// clone copies t so the caller may reuse its slices.
func (t *TwiML) clone() *TwiML {
	if t == nil {
		return nil
	}
	c := *t
	c.PublicURLs = append([]string(nil), t.PublicURLs...)
	c.Numbers = append([]TwiMLNumber(nil), t.Numbers...)
	c.Users = append([]TwiMLUser(nil), t.Users...)
	return &c
}
