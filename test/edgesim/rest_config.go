package edgesim

import (
	"fmt"
	"regexp"
)

// DefaultRESTRegion is the region of the simulated REST hosts
// api.<edge>.<region>.twilio.com when the config names none.
const DefaultRESTRegion = "us1"

// RESTConfig turns on the simulated REST API: the SIP Domain subset of
// Twilio's 2010-04-01 API (domains, credential lists, their credentials,
// the domain's registration mappings and its Voice Authentication (calls)
// mappings), over HTTPS on each edge's first IP.
type RESTConfig struct {
	// Port is the HTTPS port on each edge's first IP. 0 picks one free port
	// shared by every edge (read it back with [Sim.RESTPort]).
	Port int `yaml:"port"`
	// Region is the region label of the host names. Empty means us1.
	Region string `yaml:"region"`
	// CAFile, when set, is where edgesim writes the PEM of the test CA that
	// signed its REST certificate, so clients can trust it. Relative paths
	// are relative to edgesim's working directory.
	CAFile string `yaml:"ca_file"`
	// AccountSID is the one account the API serves (AC + 32 hex).
	AccountSID string `yaml:"account_sid"`
	// APIKeys are the API keys accepted with HTTP Basic auth.
	APIKeys []RESTKey `yaml:"api_keys"`
	// Domain seeds the SIP Domain <domain>.sip.twilio.com. The top-level
	// credentials become a credential list named "edgesim" mapped to it for
	// registration and, unless CallsCredentialList is false, for calls.
	Domain RESTDomainConfig `yaml:"domain"`
}

// RESTKey is one API key: SID (SK + 32 hex) and secret.
type RESTKey struct {
	SID    string `yaml:"sid"`
	Secret string `yaml:"secret"`
}

// RESTDomainConfig is the seeded SIP Domain's settings.
type RESTDomainConfig struct {
	// SIPRegistration is the domain's "SIP Registration" switch; nil = on.
	SIPRegistration *bool `yaml:"sip_registration"`
	// VoiceURL is the TwiML URL of calls to the domain; empty = none set.
	VoiceURL string `yaml:"voice_url"`
	// Secure is the domain's Secure Media (TLS and SRTP required) switch.
	Secure bool `yaml:"secure"`
	// CallsCredentialList maps the seeded "edgesim" list to the domain for
	// calls (Voice Authentication › Credential Lists) too; nil = true.
	CallsCredentialList *bool `yaml:"calls_credential_list"`
	// CallsIPACLs names IP access control lists the seed creates (without
	// addresses) and maps to the domain for calls (Voice Authentication ›
	// IP Access Control Lists). They are REST state only: edgesim's SIP
	// side does not filter calls by address.
	CallsIPACLs []string `yaml:"calls_ip_access_control_lists"`
}

var (
	accountSIDRE = regexp.MustCompile(`^AC[0-9a-f]{32}$`)
	keySIDRE     = regexp.MustCompile(`^SK[0-9a-f]{32}$`)
	alnumRE      = regexp.MustCompile(`^[A-Za-z0-9]+$`)
)

func (r *RESTConfig) withDefaults() *RESTConfig {
	if r == nil {
		return nil
	}
	c := *r
	if c.Region == "" {
		c.Region = DefaultRESTRegion
	}
	return &c
}

// validate reports the REST section's problems.
func (r *RESTConfig) validate() []error {
	if r == nil {
		return nil
	}
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if r.Port < 0 || r.Port > 65535 {
		bad("rest.port: %d is out of range 0..65535", r.Port)
	}
	if !labelRE.MatchString(r.Region) {
		bad("rest.region: %q is not a DNS label", r.Region)
	}
	if !accountSIDRE.MatchString(r.AccountSID) {
		bad("rest.account_sid: %q is not AC followed by 32 lower-case hex digits", r.AccountSID)
	}
	if len(r.APIKeys) == 0 {
		bad("rest.api_keys: at least one key is required")
	}
	seen := map[string]bool{}
	for i, k := range r.APIKeys {
		switch {
		case !keySIDRE.MatchString(k.SID):
			bad("rest.api_keys[%d].sid: %q is not SK followed by 32 lower-case hex digits", i, k.SID)
		case seen[k.SID]:
			bad("rest.api_keys[%d].sid: duplicate key %s", i, k.SID)
		}
		seen[k.SID] = true
		if !alnumRE.MatchString(k.Secret) {
			bad("rest.api_keys[%d].secret: must be letters and digits, as Twilio's are", i)
		}
	}
	acls := map[string]bool{}
	for i, name := range r.Domain.CallsIPACLs {
		switch {
		case name == "" || len(name) > 64:
			bad("rest.domain.calls_ip_access_control_lists[%d]: a name of 1 to 64 characters is required", i)
		case acls[name]:
			bad("rest.domain.calls_ip_access_control_lists[%d]: %q is listed twice", i, name)
		}
		acls[name] = true
	}
	return errs
}
