package token

import (
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"time"
)

// Lifetime bounds. Twilio refuses tokens that live longer than 24 h; below a
// minute a browser would spend its time refreshing.
const (
	DefaultTTL = time.Hour
	MinTTL     = time.Minute
	MaxTTL     = 24 * time.Hour

	// DefaultRateWindow is used when a rate limit is set without a window.
	DefaultRateWindow = time.Minute
)

// Regions are Twilio's processing regions a token can be for.
var Regions = []string{"us1", "ie1", "au1"}

// Roaming is the Voice SDK's latency-based edge; AppendRoaming adds it last.
const Roaming = "roaming"

// Settings is everything a Provider needs, built by the caller from its config.
// The zero value of an optional field means "off".
type Settings struct {
	AccountSID string // AC + 32 hex
	// Region is the account's processing region (us1, ie1, au1; empty =
	// us1). API keys and TwiML apps exist per region, and a token signed by
	// a non-US key must say its region in the JWT header (twr), or the
	// Voice SDK's connection is refused.
	Region string
	// Keys are the API keys. The first usable one signs; the others stay
	// listed so a rotation can be rolled out replica by replica.
	Keys              []Key
	TwiMLAppSID       string        // AP + 32 hex; empty = no outgoing grant
	PushCredentialSID string        // CR + 32 hex; optional
	TTL               time.Duration // 0 = DefaultTTL; MinTTL..MaxTTL
	Edges             []string      // ordered, as in twilio.edges
	AppendRoaming     bool          // add "roaming" after Edges
	CORSOrigins       []string      // exact origins (scheme://host[:port]) allowed to fetch tokens
	// IdentityHeader names a header (e.g. X-Forwarded-User) carrying an
	// identity asserted by a proxy; it is read only from TrustedProxies.
	IdentityHeader string
	TrustedProxies []netip.Prefix
	RateLimit      RateLimit
	// TwiML turns on the fallback TwiML app on the same listener; nil = off.
	TwiML *TwiML
}

// Key is one Twilio API key. An empty Secret makes the key unusable (the
// provider is not ready while no key is usable).
type Key struct {
	SID    string // SK + 32 hex
	Secret string
}

// RateLimit bounds token requests per window, per authenticated identity and
// per source address; 0 disables that limit.
type RateLimit struct {
	PerIdentity int
	PerAddress  int
	Window      time.Duration // 0 = DefaultRateWindow
}

// usable reports whether k can sign: twilio-go panics on an empty secret.
func (k Key) usable() bool {
	return k.Secret != "" && validSID(k.SID, "SK")
}

// Validate reports every problem in s at once. Keys without a secret are not
// an error here (see Key); a malformed key SID is.
func (s Settings) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	if !validSID(s.AccountSID, "AC") {
		bad("account_sid: %q is not AC followed by 32 hex digits", s.AccountSID)
	}
	if !slices.Contains(Regions, s.Region) && s.Region != "" {
		bad("region: %q is not one of %s", s.Region, strings.Join(Regions, ", "))
	}
	if len(s.Keys) == 0 {
		bad("api_keys: at least one key is needed")
	}
	seen := map[string]bool{}
	for i, k := range s.Keys {
		if !validSID(k.SID, "SK") {
			bad("api_keys[%d].sid: %q is not SK followed by 32 hex digits", i, k.SID)
		}
		if seen[k.SID] {
			bad("api_keys[%d].sid: %s is listed twice", i, k.SID)
		}
		seen[k.SID] = true
	}
	if s.TwiMLAppSID != "" && !validSID(s.TwiMLAppSID, "AP") {
		bad("twiml_app_sid: %q is not AP followed by 32 hex digits", s.TwiMLAppSID)
	}
	if s.PushCredentialSID != "" && !validSID(s.PushCredentialSID, "CR") {
		bad("push_credential_sid: %q is not CR followed by 32 hex digits", s.PushCredentialSID)
	}
	if s.TTL != 0 && (s.TTL < MinTTL || s.TTL > MaxTTL) {
		bad("ttl: %s is outside %s..%s", s.TTL, MinTTL, MaxTTL)
	}
	for i, e := range s.Edges {
		if e == "" || strings.TrimSpace(e) != e {
			bad("edges[%d]: %q is not an edge name", i, e)
		}
	}
	for i, o := range s.CORSOrigins {
		if err := checkOrigin(o); err != nil {
			bad("cors_origins[%d]: %w", i, err)
		}
	}
	if s.IdentityHeader != "" && len(s.TrustedProxies) == 0 {
		bad("identity_header: %s is set but trusted_proxies is empty, so it would never be read", s.IdentityHeader)
	}
	for i, p := range s.TrustedProxies {
		if !p.IsValid() {
			bad("trusted_proxies[%d]: invalid prefix", i)
		}
	}
	if s.RateLimit.PerIdentity < 0 || s.RateLimit.PerAddress < 0 || s.RateLimit.Window < 0 {
		bad("rate_limit: values must not be negative")
	}
	if s.TwiML != nil {
		if err := s.TwiML.validate(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// ttl returns the effective token lifetime.
func (s Settings) ttl() time.Duration {
	if s.TTL == 0 {
		return DefaultTTL
	}
	return s.TTL.Truncate(time.Second)
}

// answerEdges is the edge list handed to browsers: the configured order, then
// roaming when asked for and not already listed.
func (s Settings) answerEdges() []string {
	edges := make([]string, 0, len(s.Edges)+1)
	edges = append(edges, s.Edges...)
	if s.AppendRoaming && !contains(edges, Roaming) {
		edges = append(edges, Roaming)
	}
	return edges
}

func contains(list []string, v string) bool {
	for _, x := range list {
		if x == v {
			return true
		}
	}
	return false
}

// validSID checks Twilio's "two-letter prefix + 32 lowercase or uppercase hex" shape.
func validSID(sid, prefix string) bool {
	if len(sid) != 34 || sid[:2] != prefix {
		return false
	}
	for _, c := range sid[2:] {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
			return false
		}
	}
	return true
}

// checkOrigin accepts exactly what a browser sends in Origin. A wildcard is
// refused: tokens are handed out on ambient credentials (Basic, proxy
// cookies), so any site could otherwise mint tokens for a visiting user.
func checkOrigin(o string) error {
	if o == "*" {
		return errors.New(`"*" is not allowed; list each page origin`)
	}
	u, err := url.Parse(o)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" ||
		u.Path != "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return fmt.Errorf("%q is not an origin like https://phones.example.com", o)
	}
	if strings.ToLower(o) != o {
		return fmt.Errorf("%q must be lower case, as browsers send it", o)
	}
	return nil
}
