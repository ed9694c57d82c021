// Package configs loads, validates and live-reloads the edgewise YAML config.
//
// One path serves startup, `edgewise check`, SIGHUP, the file watcher and the
// admin API: Load/Parse decode strictly (unknown keys are errors), apply the
// documented defaults, validate everything and return every problem at once as
// Problems, each with FILE:LINE and a field path.
//
// It imports nothing of edgewise but token/clientid, the naming rule for
// browser identities, so that users whose identities would meet are refused
// here: cmd/edgewise maps the config onto each package's own settings, so no
// package below it imports configs.
package configs

import (
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// Config is one validated, ready-to-use configuration. It is never modified
// after Parse returns; a reload builds a new one and swaps the pointer.
// The yaml tags name each field as in the file; diff.go uses them for paths.
type Config struct {
	Path    string `yaml:"-"` // file it was read from, as given
	Hash    string `yaml:"-"` // hex sha256 of the file bytes
	Version string `yaml:"-"` // first 12 hex chars of Hash

	Log      Log      `yaml:"log"`
	SIP      SIP      `yaml:"sip"`
	Twilio   Twilio   `yaml:"twilio"`
	Phones   []Phone  `yaml:"phones"`
	Store    Store    `yaml:"store"`
	Cluster  Cluster  `yaml:"cluster"`
	Admin    Admin    `yaml:"admin"`
	Media    Media    `yaml:"media"`
	Calls    Calls    `yaml:"calls"`
	Token    *Token   `yaml:"token"` // nil = token provider disabled
	Shutdown Shutdown `yaml:"shutdown"`
}

// Calls limits the calls in progress: a stolen password must not become
// hundreds of simultaneous calls to the PSTN, and the relay's port pool
// must not run dry for everyone else.
type Calls struct {
	// MaxConcurrent bounds calls in progress, both directions (503 over it);
	// 0 means what media.rtp_ports holds (each relayed call takes two
	// RTP/RTCP pairs, four ports).
	MaxConcurrent int `yaml:"max_concurrent"`
	// MaxPerUser bounds one user's calls, made and received (486 over it);
	// 0 means no per-user limit.
	MaxPerUser int `yaml:"max_per_user"`

	// Local says when a phone's call to another local user (dialled by
	// extension or user name) is connected by edgewise itself, never
	// reaching Twilio: "when_twilio_down" (no edge usable), "always" or
	// "never".
	Local string `yaml:"local"`
	// FallbackTargets (another carrier's SBC, an analog gateway) get
	// phones' calls to numbers that are not local while no Twilio edge is
	// usable: lowest priority first, drawn by weight within a priority,
	// the next on failure or silence. The number dialled is the user part.
	FallbackTargets []Target `yaml:"fallback_targets"`
	// EmergencyNumbers go to the first usable route (Twilio, else the
	// fallback targets) and are never refused for the call limits.
	EmergencyNumbers []string `yaml:"emergency_numbers"`
}

// Local call modes (calls.local).
const (
	LocalWhenTwilioDown = "when_twilio_down"
	LocalAlways         = "always"
	LocalNever          = "never"
)

// PoolCalls is how many relayed calls the RTP port range holds.
func (m Media) PoolCalls() int { return (m.RTPPorts.Max - m.RTPPorts.Min + 1) / 4 }

// Shutdown configures the graceful stop on SIGTERM: new calls and
// registrations get 503 with Retry-After while calls in progress have up to
// DrainTimeout to end by themselves; the rest are then hung up with BYE.
// SIGINT skips the drain.
type Shutdown struct {
	DrainTimeout time.Duration `yaml:"drain_timeout"`
	RetryAfter   time.Duration `yaml:"retry_after"` // whole seconds in the Retry-After header
}

// Log configures the process logger.
type Log struct {
	Level  slog.Level `yaml:"level"`  // debug|info|warn|error
	Format string     `yaml:"format"` // text|json
}

// SIP configures the phone-facing side: listeners and the local registrar.
type SIP struct {
	Listen         []Listen      `yaml:"listen"`
	PublicAddress  string        `yaml:"public_address"` // host[:port]; "" = first listen address
	Realm          string        `yaml:"realm"`
	MinExpires     time.Duration `yaml:"min_expires"`
	MaxExpires     time.Duration `yaml:"max_expires"`
	DefaultExpires time.Duration `yaml:"default_expires"`
	ExpiresSpread  int           `yaml:"expires_spread"` // percent 0..50
	MaxContacts    int           `yaml:"max_contacts"`
	NonceTTL       time.Duration `yaml:"nonce_ttl"`
	// DigestAlgorithms are offered in this order, one challenge each. Only
	// MD5 by default: SIPp answers only the first challenge, and baresip
	// (libre) fails the whole registration when any challenge names an
	// algorithm it lacks, so a SHA-256 challenge must be opted into.
	DigestAlgorithms []string      `yaml:"digest_algorithms"` // "MD5" | "SHA-256"
	QualifyInterval  time.Duration `yaml:"qualify_interval"`  // 0 = off
	Lockout          Lockout       `yaml:"lockout"`
	// TrustedProxies are SIP proxies or SBCs in front of edgewise that
	// speak for many phones: they are never locked out.
	TrustedProxies []netip.Prefix `yaml:"trusted_proxies"`
	// Connections bounds TCP, TLS and WebSocket connections.
	Connections Connections `yaml:"connections"`
	// TLS is the certificate wss: listeners present to browsers.
	TLS SIPTLS `yaml:"tls"`
}

// SIPTLS names PEM files, resolved against the config file's directory.
// They are read again when they change and on every reload (new paths
// included): new handshakes get the new certificate.
type SIPTLS struct {
	CertFile string `yaml:"cert_file"` // certificate chain, leaf first
	KeyFile  string `yaml:"key_file"`
}

// Advertise returns the host and port to put in Contact/Via towards Twilio:
// public_address when set (its port defaulting to the first listener's),
// otherwise the first listen address.
func (s SIP) Advertise() (host string, port int) {
	if len(s.Listen) > 0 {
		host, port = s.Listen[0].Host, s.Listen[0].Port
	}
	if s.PublicAddress == "" {
		return host, port
	}
	if h, p, err := net.SplitHostPort(s.PublicAddress); err == nil {
		n, _ := strconv.Atoi(p)
		return h, n
	}
	return strings.Trim(s.PublicAddress, "[]"), port
}

// AdvertiseFor is Advertise for the listener of transport (the one
// twilio.transport uses): the same host, and that listener's port. A port
// written in public_address is the first listener's public port, so it is
// used only when that listener is the first one. Without this a Contact for
// TLS would carry the UDP listener's 5060 with transport=tls, where
// Twilio's TLS connection fails. With no listener of that transport, it is
// Advertise.
func (s SIP) AdvertiseFor(transport string) (host string, port int) {
	host, port = s.Advertise()
	for i, l := range s.Listen {
		if l.Transport != transport {
			continue
		}
		if i == 0 {
			return host, port
		}
		return host, l.Port
	}
	return host, port
}

// Connections bounds TCP, TLS and WebSocket connections: a stranger can
// open them by the thousand without sending a byte.
type Connections struct {
	Max          int           `yaml:"max"`
	MaxPerSource int           `yaml:"max_per_source"`
	SetupTimeout time.Duration `yaml:"setup_timeout"` // TLS handshake + first SIP message
	IdleTimeout  time.Duration `yaml:"idle_timeout"`  // silence after that (CRLF keepalives count)
}

// Lockout locks out a source (an IPv4 address, an IPv6 /64) after repeated
// authentication failures, and guards a user that many sources fail for.
type Lockout struct {
	Failures     int           `yaml:"failures"`      // per source; 0 = disabled
	UserFailures int           `yaml:"user_failures"` // per user; 0 = disabled
	Window       time.Duration `yaml:"window"`
	Duration     time.Duration `yaml:"duration"`
	MaxSources   int           `yaml:"max_sources"` // table bound
}

// Enabled reports whether lockout is switched on.
func (l Lockout) Enabled() bool { return l.Failures > 0 || l.UserFailures > 0 }

// Listen is one parsed "transport:host:port" listen address.
type Listen struct {
	Transport string // udp|tcp|tls|ws|wss
	Host      string
	Port      int
}

// String gives "udp:127.0.0.1:5060" (IPv6 hosts in brackets).
func (l Listen) String() string { return l.Transport + ":" + l.Addr() }

// Addr gives "host:port" for net.Listen.
func (l Listen) Addr() string { return net.JoinHostPort(l.Host, strconv.Itoa(l.Port)) }

// ParseListen parses "transport:host:port". It checks syntax and the port
// range only; which transports are allowed is validation's job.
func ParseListen(s string) (Listen, error) {
	tr, rest, ok := strings.Cut(s, ":")
	if !ok || tr == "" {
		return Listen{}, fmt.Errorf("%q is not transport:host:port", s)
	}
	host, port, err := splitHostPort(rest)
	if err != nil {
		return Listen{}, fmt.Errorf("%q: %w", s, err)
	}
	return Listen{Transport: strings.ToLower(tr), Host: host, Port: port}, nil
}

// splitHostPort requires a non-empty host and a port in 1..65535.
func splitHostPort(s string) (string, int, error) {
	host, p, err := net.SplitHostPort(s)
	if err != nil {
		return "", 0, fmt.Errorf("not host:port")
	}
	if host == "" {
		return "", 0, fmt.Errorf("host is empty")
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 1 || port > 65535 {
		return "", 0, fmt.Errorf("port %q is not in 1..65535", p)
	}
	return host, port, nil
}

// Twilio configures the upstream side: where phones' users are registered.
type Twilio struct {
	Domain          string         `yaml:"domain"`
	Edges           []string       `yaml:"edges"` // in order of preference
	DNSServer       string         `yaml:"dns_server"`
	Transport       string         `yaml:"transport"` // udp|tcp|tls
	Timeout         time.Duration  `yaml:"timeout"`
	RegisterExpires time.Duration  `yaml:"register_expires"`
	FailbackHold    time.Duration  `yaml:"failback_hold"`
	Keepalive       Keepalive      `yaml:"keepalive"`
	Move            Move           `yaml:"move"`
	SignallingCIDRs []netip.Prefix `yaml:"signalling_cidrs"` // never empty after Parse
	MediaCIDRs      []netip.Prefix `yaml:"media_cidrs"`      // never empty after Parse

	// MediaEncryption is what edgewise speaks toward Twilio: "none" (plain
	// RTP/AVP) or "srtp" (SDES-keyed RTP/SAVP, which a SIP Domain with
	// Secure Media requires). It must match the domain's Secure Media
	// setting; `edgewise twilio check` compares them.
	MediaEncryption string     `yaml:"media_encryption"`
	REST            TwilioREST `yaml:"rest"`

	// CAFile is a PEM bundle trusted for SIP over TLS toward Twilio's edges
	// in addition to the system roots (a TLS-inspecting proxy's CA, a test
	// CA). Absolute after Parse. A reload re-reads it and applies it to the
	// next TLS handshake; connections already up stay up.
	CAFile string `yaml:"ca_file"`
}

// TwilioREST is how `edgewise twilio check|sync` reach Twilio's REST API.
// serve never uses it. Empty account and key fields fall back to the token
// section's account_sid and first API key.
type TwilioREST struct {
	AccountSID   string `yaml:"account_sid"` // AC + 32 hex
	APIKeySID    string `yaml:"api_key_sid"` // SK + 32 hex
	APIKeySecret Secret `yaml:"api_key_secret"`
	// Region is the REST processing region in api.<edge>.<region>.twilio.com;
	// the edges are twilio.edges (the public ones), tried in order.
	Region string `yaml:"region"`
	// CAFile is a PEM bundle trusted for the REST API in addition to the
	// system roots, for a TLS-inspecting proxy in between. Absolute after Parse.
	CAFile string `yaml:"ca_file"`
	// Line is where twilio.rest (or twilio) is in the file, so the twilio
	// commands can point at it when a setting they need is missing.
	Line int `yaml:"-"`
}

// Host gives the registrar FQDN for one edge: "<domain>.sip.<edge>.twilio.com".
func (t Twilio) Host(edge string) string { return t.Domain + ".sip." + edge + ".twilio.com" }

// Keepalive sets how the upstream flow to the current edge is probed.
type Keepalive struct {
	Method   string        `yaml:"method"` // options|register|none
	Interval time.Duration `yaml:"interval"`
	// StandbyInterval spaces OPTIONS probes of the standby edges (neither
	// active nor down), so a failover skips one already known down. Not
	// used with method none.
	StandbyInterval time.Duration `yaml:"standby_interval"`
}

// Move paces moving registrations from one edge to another.
type Move struct {
	Rate        int `yaml:"rate"`        // registrations per second
	Concurrency int `yaml:"concurrency"` // in flight
}

// Phone is one local user and the Twilio credentials it registers with.
type Phone struct {
	User           string   `yaml:"user"`
	Password       Secret   `yaml:"password"` // empty when only ha1 was given
	HA1            Secret   `yaml:"ha1"`      // hex MD5(user:realm:password); derived when password is given
	TwilioUser     string   `yaml:"twilio_user"`
	TwilioPassword Secret   `yaml:"twilio_password"`
	Targets        []Target `yaml:"targets"`
	// Extension is the short number (digits) other local phones dial to
	// reach this user; "" for none. Unique, and no user's name.
	Extension string `yaml:"extension"`
	// Line is where the phone's entry starts in the file, for problems
	// found after Parse (`edgewise twilio sync` checks Twilio's rules).
	Line int `yaml:"-"`
}

// Target is a fixed destination for the user's calls from Twilio (a PBX, an
// SBC, a phone that cannot register), tried after the user's registered
// phones: lowest Priority first, spread by Weight within a priority (RFC
// 2782), the next one when a target does not answer — as Twilio does with a
// trunk's origination URIs.
type Target struct {
	URI      string `yaml:"uri"`      // sip:[user@]host[:port][;transport=udp|tcp]
	Priority int    `yaml:"priority"` // 0..65535, lower first; default 10
	Weight   int    `yaml:"weight"`   // 0..65535 within a priority; default 10
}

// Key identifies a phone across reloads (used by the diff).
func (p Phone) Key() string { return p.User }

// Store configures the embedded database.
type Store struct {
	Path string `yaml:"path"` // absolute after Parse
	// Backend is where the bindings live: "bbolt", the file at Path (one
	// node), or "etcd", shared by the nodes of a cluster (Path then keeps
	// only this node's own state).
	Backend string `yaml:"backend"`
	Etcd    Etcd   `yaml:"etcd"`
}

// Etcd is how a node reaches the cluster's etcd.
type Etcd struct {
	Endpoints []string `yaml:"endpoints"` // http:// or https:// client URLs
	Prefix    string   `yaml:"prefix"`    // key prefix ending in "/"
	Username  string   `yaml:"username"`
	Password  Secret   `yaml:"password"`
	// CAFile verifies https endpoints (system roots when empty); CertFile
	// and KeyFile are this node's client certificate, when etcd asks.
	CAFile         string        `yaml:"ca_file"`
	CertFile       string        `yaml:"cert_file"`
	KeyFile        string        `yaml:"key_file"`
	RequestTimeout time.Duration `yaml:"request_timeout"`
}

// Cluster names this node among the nodes sharing a store. The same file
// serves every node: take the name from the environment, e.g.
// node_name: ${EDGEWISE_NODE}.
type Cluster struct {
	NodeName string `yaml:"node_name"`
	// Advertise is this node's SIP address (ip:port, UDP) for the other
	// nodes, which send it the calls for the phones registered through
	// it. "" means the first udp: address of sip.listen.
	Advertise string `yaml:"advertise"`
	// LeaseTTL is how long after a node stops renewing its etcd lease
	// (it died, or lost etcd) the others take over its users upstream.
	LeaseTTL time.Duration `yaml:"lease_ttl"`
}

// Admin configures the admin HTTP API.
type Admin struct {
	Listen string `yaml:"listen"` // host:port
	Token  Secret `yaml:"token"`  // "" = no auth (allowed on loopback only)
	// AllowedHosts are the names, besides IP literals and localhost, the
	// admin API answers to in the Host header (DNS rebinding protection).
	AllowedHosts []string `yaml:"allowed_hosts"`
}

// Media configures the RTP relay.
type Media struct {
	RTPPorts PortRange     `yaml:"rtp_ports"`
	Timeout  time.Duration `yaml:"timeout"`
	// Bind is the address the relay's sockets bind; zero means the first
	// SIP listen address's IP, or every interface when that is 0.0.0.0/::.
	Bind   netip.Addr `yaml:"bind"`
	WebRTC WebRTC     `yaml:"webrtc"`
	// Workers is the number of packet workers of the relay
	// (media.Settings.Workers); 0 means one per CPU (GOMAXPROCS).
	Workers int `yaml:"workers"`
}

// WebRTC configures the media of browser softphones (SIP over WebSocket):
// edgewise terminates their ICE/DTLS-SRTP and bridges it to plain RTP.
type WebRTC struct {
	// Listen is the one UDP host:port every browser's media uses (ICE-lite,
	// demultiplexed by ICE username); "" disables WebRTC media, and a
	// browser's call then gets 488.
	Listen string `yaml:"listen"`
	// Advertise are the addresses given to browsers as ICE candidates;
	// empty means Listen's IP, or sip.public_address when Listen is 0.0.0.0.
	Advertise []netip.Addr `yaml:"advertise"`
	// ConnectTimeout bounds ICE and DTLS after the answer: a browser whose
	// media is not up by then is hung up ("ice failed").
	ConnectTimeout time.Duration `yaml:"connect_timeout"`
}

// PortRange is an inclusive UDP port range; Min is even so RTP/RTCP pairs fit.
type PortRange struct {
	Min, Max int
}

// String gives "20000-29999".
func (r PortRange) String() string { return fmt.Sprintf("%d-%d", r.Min, r.Max) }

// Token configures the access-token provider.
type Token struct {
	Listen     string `yaml:"listen"`
	AccountSID string `yaml:"account_sid"`
	// Region is the processing region the API keys and TwiML app live in;
	// "" takes twilio.rest.region (us1 unless set).
	Region            string         `yaml:"region"`
	APIKeys           []APIKey       `yaml:"api_keys"` // first signs; all are valid for rotation
	TwiMLAppSID       string         `yaml:"twiml_app_sid"`
	PushCredentialSID string         `yaml:"push_credential_sid"`
	TTL               time.Duration  `yaml:"ttl"`
	AppendRoaming     bool           `yaml:"append_roaming"`
	CORSOrigins       []string       `yaml:"cors_origins"`
	IdentityHeader    string         `yaml:"identity_header"`
	TrustedProxies    []netip.Prefix `yaml:"trusted_proxies"`
	RateLimit         RateLimit      `yaml:"rate_limit"`
	TwiML             *TwiML         `yaml:"twiml"` // nil = no fallback TwiML app
}

// APIKey is one Twilio API key used to sign tokens.
type APIKey struct {
	SID    string `yaml:"sid"`
	Secret Secret `yaml:"secret"`
}

// Key identifies an API key across reloads (used by the diff).
func (k APIKey) Key() string { return k.SID }

// RateLimit bounds token issuance.
type RateLimit struct {
	PerIdentity int           `yaml:"per_identity"`
	PerAddress  int           `yaml:"per_address"`
	Window      time.Duration `yaml:"window"`
}

// String summarises the config without any secret.
func (c *Config) String() string {
	if c == nil {
		return "config <nil>"
	}
	ls := make([]string, len(c.SIP.Listen))
	for i, l := range c.SIP.Listen {
		ls[i] = l.String()
	}
	tok := "off"
	if c.Token != nil {
		tok = c.Token.Listen
	}
	return fmt.Sprintf("config %s version %s: sip [%s] realm %s; twilio %s edges [%s]; %d phones; store %s; admin %s; token %s",
		c.Path, c.Version, strings.Join(ls, " "), c.SIP.Realm, c.Twilio.Domain,
		strings.Join(c.Twilio.Edges, " "), len(c.Phones), c.Store.Path, c.Admin.Listen, tok)
}

// Phone returns the phone with the given user, if any.
func (c *Config) Phone(user string) (Phone, bool) {
	for _, p := range c.Phones {
		if p.User == user {
			return p, true
		}
	}
	return Phone{}, false
}

// defaults returns a Config holding every documented default. Decoding
// overwrites what the file sets; required fields stay empty so validation
// reports them.
func defaults() *Config {
	return &Config{
		Log: Log{Level: slog.LevelInfo, Format: "text"},
		SIP: SIP{
			Listen: []Listen{
				{Transport: "udp", Host: "127.0.0.1", Port: 5060},
				{Transport: "tcp", Host: "127.0.0.1", Port: 5060},
			},
			Realm:            "edgewise",
			MinExpires:       60 * time.Second,
			MaxExpires:       3600 * time.Second,
			DefaultExpires:   3600 * time.Second,
			ExpiresSpread:    10,
			MaxContacts:      10,
			NonceTTL:         30 * time.Second,
			DigestAlgorithms: []string{"MD5"},
			Lockout:          Lockout{Failures: 10, UserFailures: 20, Window: time.Minute, Duration: 5 * time.Minute, MaxSources: 100_000},
			Connections:      Connections{Max: 10000, MaxPerSource: 256, SetupTimeout: 20 * time.Second, IdleTimeout: 65 * time.Minute},
		},
		Twilio: Twilio{
			Edges:           []string{"ashburn", "umatilla"},
			Transport:       "udp",
			Timeout:         4 * time.Second,
			RegisterExpires: 600 * time.Second,
			FailbackHold:    60 * time.Second,
			Keepalive:       Keepalive{Method: "options", Interval: 10 * time.Second, StandbyInterval: 30 * time.Second},
			Move:            Move{Rate: 500, Concurrency: 50},
			MediaEncryption: "none",
			REST:            TwilioREST{Region: "us1"},
		},
		Admin:   Admin{Listen: "127.0.0.1:9060"},
		Store:   Store{Backend: "bbolt", Etcd: Etcd{Prefix: "/edgewise/", RequestTimeout: 500 * time.Millisecond}},
		Cluster: Cluster{LeaseTTL: 5 * time.Second},
		Media: Media{RTPPorts: PortRange{Min: 20000, Max: 29999}, Timeout: 60 * time.Second,
			WebRTC: WebRTC{ConnectTimeout: 20 * time.Second}},
		Calls:    Calls{MaxPerUser: 4, Local: LocalWhenTwilioDown},
		Shutdown: Shutdown{DrainTimeout: 30 * time.Second, RetryAfter: 30 * time.Second},
	}
}

// tokenDefaults holds the defaults of the optional token section.
func tokenDefaults() *Token {
	return &Token{
		Listen:    "127.0.0.1:9061",
		TTL:       time.Hour,
		RateLimit: RateLimit{PerIdentity: 10, PerAddress: 60, Window: time.Minute},
	}
}
