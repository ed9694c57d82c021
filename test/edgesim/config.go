package edgesim

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"regexp"
	"slices"
	"strings"
	"time"
	"unicode"

	"go.yaml.in/yaml/v3"
)

// Twilio's registration rules (README "Twilio facts" 1); a zero field in [Rules]
// takes these.
const (
	DefaultMinExpires       = 600
	DefaultMaxExpires       = 3600
	DefaultMaxRegistrations = 10
	DefaultRegisterRate     = 5
	DefaultDNSTTL           = 600 // seconds; Twilio's edge records carry 10 min (README "Twilio facts" 4)
	DefaultSlowDelay        = 5 * time.Second

	// Call defaults; a zero field in [CallsConfig] takes these.
	DefaultSlowAnswer  = 3 * time.Second
	DefaultRingTimeout = 60 * time.Second
	DefaultMaxCalls    = 1000
	DefaultCallHistory = 1000
)

// Config is the whole edgesim configuration. It is decoded from YAML
// strictly (unknown keys are errors) by [LoadConfig] and [ParseConfig]; code
// that embeds the simulator may also build it directly and hand it to [New].
type Config struct {
	// Domain is the SIP Domain name: edges answer <domain>.sip.<edge>.twilio.com.
	Domain string `yaml:"domain"`
	// Edges are the simulated edge locations, each with its own IPs.
	Edges []EdgeConfig `yaml:"edges"`
	// Transports lists the SIP transports every edge IP listens on: udp,
	// tcp, tls. Empty means udp and tcp.
	Transports []string `yaml:"transports"`
	// CAFile, when set, is where edgesim writes the PEM of its test CA,
	// which signs every edge's SIP TLS certificate (and the REST API's), so
	// clients can trust it. Relative paths are relative to edgesim's
	// working directory.
	CAFile string `yaml:"ca_file"`
	// DNS is the resolver that answers the edge FQDNs.
	DNS DNSConfig `yaml:"dns"`
	// Control is the HTTP control API.
	Control ControlConfig `yaml:"control"`
	// Credentials is the credential list mapped to the SIP Domain.
	Credentials []Credential `yaml:"credentials"`
	// Rules are the registrar limits; zero fields take Twilio's values.
	Rules Rules `yaml:"rules"`
	// SlowDelay is how long an edge in slow mode waits before answering when
	// the mode change names no delay. Zero means 5 s.
	SlowDelay time.Duration `yaml:"slow_delay"`
	// Calls tunes the calls edgesim answers and places.
	Calls CallsConfig `yaml:"calls"`
	// REST serves the SIP Domain subset of Twilio's REST API; nil = off.
	REST *RESTConfig `yaml:"rest"`
}

// CallsConfig tunes calls in both directions; zero fields take defaults.
type CallsConfig struct {
	// SlowAnswer is how long the scripted numbers "slowanswer" and
	// "earlymedia" ring before they answer. Zero means 3 s.
	SlowAnswer time.Duration `yaml:"slow_answer"`
	// RingTimeout is how long a placed call rings before edgesim cancels
	// it, when the request names no timeout. Zero means 60 s.
	RingTimeout time.Duration `yaml:"ring_timeout"`
	// MaxCalls bounds calls in progress, both directions together; beyond
	// it INVITEs get 503 and PlaceCall an error. Zero means 1000.
	MaxCalls int `yaml:"max_calls"`
	// History is how many finished calls GET /v1/calls keeps, oldest
	// dropped first. Zero means 1000.
	History int `yaml:"history"`
	// SecureMedia is the SIP Domain's Secure Media switch: on, edgesim
	// offers and accepts only RTP/SAVP keyed by a=crypto
	// (AES_CM_128_HMAC_SHA1_80 or _32), refuses plain offers with 488 and
	// echoes SRTP under its own key; off, it refuses RTP/SAVP.
	SecureMedia bool `yaml:"secure_media"`
}

// EdgeConfig is one simulated edge location.
type EdgeConfig struct {
	// Name is the edge name as it appears in the FQDN (ashburn, umatilla, …).
	Name string `yaml:"name"`
	// IPs are the addresses the edge listens on and DNS answers with.
	IPs []string `yaml:"ips"`
	// Port is the SIP port (UDP and TCP) on every IP. 0 picks one free port
	// shared by every IP configured with 0, which tests use to avoid
	// collisions; read it back with [Sim.Edges] or [Sim.SIPAddr].
	Port int `yaml:"port"`
	// TLSPort is the SIP over TLS port on every IP (Twilio's is 5061), used
	// when transports lists tls. 0 picks one free port shared by every IP
	// configured with 0; read it back with [Sim.Edges] or [Sim.TLSAddr].
	TLSPort int `yaml:"tls_port"`
}

// DNSConfig configures the simulated resolver.
type DNSConfig struct {
	// Listen is host:port for UDP and TCP. Empty disables the DNS server.
	// Port 0 picks a free port; read it back with [Sim.DNSAddr].
	Listen string `yaml:"listen"`
	// TTL of the A records, in seconds. Zero means 600.
	TTL int `yaml:"ttl"`
}

// ControlConfig configures the HTTP control API.
type ControlConfig struct {
	// Listen is host:port. Empty disables the HTTP server (the same
	// operations stay available as methods on [Sim]).
	Listen string `yaml:"listen"`
}

// Credential is one entry of the SIP Domain's credential list.
type Credential struct {
	User     string `yaml:"user"`
	Password string `yaml:"password"`
}

// Rules are the registrar limits, all per AOR; all are shared across edges
// because Twilio's registrar is.
type Rules struct {
	// MinExpires in seconds: a shorter non-zero expiry gets 423.
	MinExpires int `yaml:"min_expires"`
	// MaxExpires in seconds: a longer expiry is cut to this.
	MaxExpires int `yaml:"max_expires"`
	// MaxRegistrations is the number of bindings one AOR may hold.
	MaxRegistrations int `yaml:"max_registrations"`
	// RegisterRate is how many REGISTERs (every attempt, challenged or
	// not) one AOR may send per second before getting 503.
	RegisterRate int `yaml:"register_rate"`
}

// LoadConfig reads, decodes, defaults and validates the file at path.
func LoadConfig(path string) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("read config: %w", err)
	}
	cfg, err := ParseConfig(data)
	if err != nil {
		return Config{}, fmt.Errorf("%s: %w", path, err)
	}
	return cfg, nil
}

// ParseConfig decodes YAML strictly, fills defaults and validates.
func ParseConfig(data []byte) (Config, error) {
	var cfg Config
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil {
		if errors.Is(err, io.EOF) {
			return Config{}, errors.New("config is empty")
		}
		return Config{}, fmt.Errorf("decode config: %w", err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return Config{}, errors.New("config holds more than one YAML document")
	}
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

// WithDefaults returns a copy with every zero field that has a default
// filled in. It never changes a value that was set.
func (c Config) WithDefaults() Config {
	if len(c.Transports) == 0 {
		c.Transports = []string{"udp", "tcp"}
	}
	if c.DNS.TTL == 0 {
		c.DNS.TTL = DefaultDNSTTL
	}
	if c.Rules.MinExpires == 0 {
		c.Rules.MinExpires = DefaultMinExpires
	}
	if c.Rules.MaxExpires == 0 {
		c.Rules.MaxExpires = DefaultMaxExpires
	}
	if c.Rules.MaxRegistrations == 0 {
		c.Rules.MaxRegistrations = DefaultMaxRegistrations
	}
	if c.Rules.RegisterRate == 0 {
		c.Rules.RegisterRate = DefaultRegisterRate
	}
	if c.SlowDelay == 0 {
		c.SlowDelay = DefaultSlowDelay
	}
	if c.Calls.SlowAnswer == 0 {
		c.Calls.SlowAnswer = DefaultSlowAnswer
	}
	if c.Calls.RingTimeout == 0 {
		c.Calls.RingTimeout = DefaultRingTimeout
	}
	if c.Calls.MaxCalls == 0 {
		c.Calls.MaxCalls = DefaultMaxCalls
	}
	if c.Calls.History == 0 {
		c.Calls.History = DefaultCallHistory
	}
	c.REST = c.REST.withDefaults()
	return c
}

var (
	labelRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]*[a-z0-9])?$`)
	userRE  = regexp.MustCompile(`^[A-Za-z0-9._~!$&'()*+,;=-]+$`)
)

// Validate reports every problem of a defaulted config, one per line.
func (c Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	if !labelRE.MatchString(c.Domain) {
		bad("domain: %q is not a DNS label (lower-case letters, digits, '-')", c.Domain)
	}
	if len(c.Edges) == 0 {
		bad("edges: at least one edge is required")
	}
	names := map[string]bool{}
	ips := map[netip.Addr]string{}
	for i, e := range c.Edges {
		at := fmt.Sprintf("edges[%d]", i)
		switch {
		case !labelRE.MatchString(e.Name):
			bad("%s.name: %q is not a DNS label (lower-case letters, digits, '-')", at, e.Name)
		case names[e.Name]:
			bad("%s.name: duplicate edge %q", at, e.Name)
		}
		names[e.Name] = true
		if len(e.IPs) == 0 {
			bad("%s.ips: at least one IP is required", at)
		}
		for j, s := range e.IPs {
			ip, err := netip.ParseAddr(s)
			if err != nil || ip.Zone() != "" {
				bad("%s.ips[%d]: %q is not an IP address", at, j, s)
				continue
			}
			if !ip.IsLoopback() {
				// The simulator must never look like a real edge on a real
				// network; loopback keeps every test offline.
				bad("%s.ips[%d]: %s is not a loopback address", at, j, s)
			}
			if other, dup := ips[ip.Unmap()]; dup {
				bad("%s.ips[%d]: %s is already used by edge %q", at, j, s, other)
			}
			ips[ip.Unmap()] = e.Name
		}
		if e.Port < 0 || e.Port > 65535 {
			bad("%s.port: %d is out of range 0..65535", at, e.Port)
		}
		if e.TLSPort < 0 || e.TLSPort > 65535 {
			bad("%s.tls_port: %d is out of range 0..65535", at, e.TLSPort)
		}
		if e.TLSPort != 0 && e.TLSPort == e.Port && slices.Contains(c.Transports, "tls") && slices.Contains(c.Transports, "tcp") {
			bad("%s.tls_port: %d is the SIP port too; TLS and TCP need their own ports (Twilio: 5060 and 5061)", at, e.TLSPort)
		}
	}
	seenT := map[string]bool{}
	for i, t := range c.Transports {
		if t != "udp" && t != "tcp" && t != "tls" {
			bad("transports[%d]: %q is not supported (udp, tcp, tls)", i, t)
		}
		if seenT[t] {
			bad("transports[%d]: duplicate %q", i, t)
		}
		seenT[t] = true
	}
	if c.DNS.Listen != "" {
		if err := checkHostPort(c.DNS.Listen); err != nil {
			bad("dns.listen: %v", err)
		}
	}
	if c.DNS.TTL < 0 {
		bad("dns.ttl: %d must not be negative", c.DNS.TTL)
	}
	if c.Control.Listen != "" {
		if err := checkHostPort(c.Control.Listen); err != nil {
			bad("control.listen: %v", err)
		}
	}
	users := map[string]bool{}
	for i, cr := range c.Credentials {
		at := fmt.Sprintf("credentials[%d]", i)
		switch {
		case !userRE.MatchString(cr.User):
			bad("%s.user: %q is empty or has characters not allowed in a SIP user", at, cr.User)
		case users[cr.User]:
			bad("%s.user: duplicate user %q", at, cr.User)
		}
		users[cr.User] = true
		if err := checkTwilioPassword(cr.Password); err != nil {
			bad("%s.password: %v", at, err)
		}
	}
	r := c.Rules
	if r.MinExpires < 1 {
		bad("rules.min_expires: %d must be at least 1", r.MinExpires)
	}
	if r.MaxExpires < r.MinExpires {
		bad("rules.max_expires: %d is below min_expires %d", r.MaxExpires, r.MinExpires)
	}
	if r.MaxRegistrations < 1 {
		bad("rules.max_registrations: %d must be at least 1", r.MaxRegistrations)
	}
	if r.RegisterRate < 1 {
		bad("rules.register_rate: %d must be at least 1", r.RegisterRate)
	}
	if c.SlowDelay <= 0 {
		bad("slow_delay: %s must be positive", c.SlowDelay)
	}
	cc := c.Calls
	if cc.SlowAnswer < 0 || cc.SlowAnswer > maxSlowDelay {
		bad("calls.slow_answer: %s is out of range 0..%s", cc.SlowAnswer, maxSlowDelay)
	}
	if cc.RingTimeout < 0 || cc.RingTimeout > maxRingTimeout {
		bad("calls.ring_timeout: %s is out of range 0..%s", cc.RingTimeout, maxRingTimeout)
	}
	if cc.MaxCalls < 1 {
		bad("calls.max_calls: %d must be at least 1", cc.MaxCalls)
	}
	if cc.History < 1 {
		bad("calls.history: %d must be at least 1", cc.History)
	}
	errs = append(errs, c.REST.validate()...)
	return errors.Join(errs...)
}

func checkHostPort(s string) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("%q is not host:port: %w", s, err)
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return fmt.Errorf("%q: host must be an IP address", s)
	}
	if !ip.IsLoopback() {
		return fmt.Errorf("%q: host must be a loopback address", s)
	}
	var p int
	if _, err := fmt.Sscanf(port, "%d", &p); err != nil || p < 0 || p > 65535 || fmt.Sprint(p) != port {
		return fmt.Errorf("%q: bad port", s)
	}
	return nil
}

// checkTwilioPassword applies Twilio's credential rules (README "Twilio facts" 1), so
// a demo config cannot hold a password the real Twilio would refuse.
func checkTwilioPassword(pw string) error {
	var upper, lower, digit bool
	for _, r := range pw {
		upper = upper || unicode.IsUpper(r)
		lower = lower || unicode.IsLower(r)
		digit = digit || unicode.IsDigit(r)
	}
	var missing []string
	if len(pw) < 12 {
		missing = append(missing, "at least 12 characters")
	}
	if !upper || !lower {
		missing = append(missing, "upper and lower case")
	}
	if !digit {
		missing = append(missing, "a digit")
	}
	if len(missing) > 0 {
		return fmt.Errorf("needs %s (Twilio's password rules)", strings.Join(missing, ", "))
	}
	return nil
}
