package configs

import (
	"crypto/md5"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/edgewise-sip/edgewise/token/clientid"
)

// validate checks ranges and cross-field rules on the decoded, defaulted
// config. It never changes a value the file set; the only thing it fills in
// is derived data (phones' HA1).
func (d *decoder) validate(c *Config) {
	d.validateLog(c.Log)
	d.validateSIP(c.SIP)
	d.validateTwilio(c.Twilio)
	d.derivePhones(c)
	if c.Store.Path == "" {
		d.problem("store.path", "e.g. /var/lib/edgewise/edgewise.db", "required")
	}
	d.validateStore(c.Store, &c.Cluster, c.SIP)
	d.validateAdmin(c.Admin)
	d.validateMedia(c.Media, c.SIP)
	d.validateCalls(c.Calls, c.Media)
	d.validateExtensions(c.Phones, c.Calls)
	d.validateShutdown(c.Shutdown)
	if c.Token != nil {
		if c.Token.Region == "" {
			c.Token.Region = c.Twilio.REST.Region
		}
		d.validateToken(c.Token)
		d.validateIdentities(c.Phones)
		d.validateTwiML(c)
	}
}

// validateIdentities refuses phones whose browser identities meet: a token
// for one would ring the other's browsers. Identities escape what Twilio
// refuses ("anna.lee" is anna_2E_lee), so only such look-alikes collide.
func (d *decoder) validateIdentities(phones []Phone) {
	seen := make(map[string]int, len(phones))
	for i, p := range phones {
		id := clientid.Of(p.User)
		j, dup := seen[id]
		if !dup {
			seen[id] = i
			continue
		}
		if phones[j].User == p.User {
			continue // the duplicate user is already reported
		}
		d.problem(fmt.Sprintf("phones[%d].user", i), "rename one of them",
			"%q and %q (line %d) would share the browser identity %s", p.User, phones[j].User, phones[j].Line, id)
	}
}

func (d *decoder) validateStore(s Store, c *Cluster, sipc SIP) {
	switch s.Backend {
	case "bbolt":
		return
	case "etcd":
	default:
		d.problem("store.backend", "bbolt for one node, etcd for a cluster", "%q is not one of bbolt, etcd", s.Backend)
		return
	}
	e := s.Etcd
	// What etcd needs is reported where it was asked for, when absent.
	at := d.lineOf("store.backend")
	if len(e.Endpoints) == 0 && !d.bad["store.etcd.endpoints"] {
		d.problemLine(at, "store.etcd.endpoints", `e.g. ["https://10.0.0.5:2379", "https://10.0.0.6:2379", "https://10.0.0.7:2379"]`, "required with store.backend: etcd")
	}
	if !strings.HasPrefix(e.Prefix, "/") || !strings.HasSuffix(e.Prefix, "/") {
		d.problem("store.etcd.prefix", `e.g. "/edgewise/"`, "%q must start and end with /", e.Prefix)
	}
	if (e.CertFile == "") != (e.KeyFile == "") {
		d.problem("store.etcd.cert_file", "give both cert_file and key_file, or neither", "a client certificate needs its key")
	}
	for _, f := range []struct{ path, file string }{{"store.etcd.ca_file", e.CAFile}, {"store.etcd.cert_file", e.CertFile}, {"store.etcd.key_file", e.KeyFile}} {
		if f.file == "" {
			continue
		}
		if _, err := os.Stat(f.file); err != nil {
			d.problem(f.path, "", "%v", unwrapPathErr(err))
		}
	}
	if e.Username != "" && !e.Password.IsSet() && !d.bad["store.etcd.password"] && !d.bad["store.etcd.password_file"] {
		d.problem("store.etcd.password", "password: ${ETCD_PASSWORD} or password_file", "required with username")
	}
	if e.RequestTimeout < 50*time.Millisecond || e.RequestTimeout > 10*time.Second {
		d.problem("store.etcd.request_timeout", "short: a REGISTER waits at most this long for etcd before it is answered from memory", "%s is outside 50ms..10s", fmtDur(e.RequestTimeout))
	}
	if c.Advertise == "" {
		for _, l := range sipc.Listen {
			if l.Transport == "udp" {
				if a, err := netip.ParseAddr(l.Host); err == nil && !a.IsUnspecified() {
					c.Advertise = netip.AddrPortFrom(a, uint16(l.Port)).String()
				}
				break
			}
		}
		if c.Advertise == "" && !d.bad["cluster.advertise"] {
			d.problemLine(d.lineOf("store.backend"), "cluster.advertise", `the node's SIP address on the cluster network, e.g. advertise: ${EDGEWISE_NODE_SIP} = "10.0.0.6:5060"`,
				"required: sip.listen has no udp: address with a specific IP")
		}
	} else if ap, err := netip.ParseAddrPort(c.Advertise); err != nil || ap.Addr().IsUnspecified() {
		d.problem("cluster.advertise", `ip:port, e.g. "10.0.0.6:5060"`, "%q is not an IP address and port", c.Advertise)
	}
	if c.LeaseTTL < 2*time.Second || c.LeaseTTL > time.Minute || c.LeaseTTL%time.Second != 0 {
		d.problem("cluster.lease_ttl", "whole seconds: a dead node's users move after about this long", "%s is not whole seconds in 2s..1m", fmtDur(c.LeaseTTL))
	}
	if c.NodeName == "" && !d.bad["cluster.node_name"] {
		d.problemLine(at, "cluster.node_name", "node_name: ${EDGEWISE_NODE}, a name unique in the cluster", "required with store.backend: etcd")
	} else if c.NodeName != "" && !validUser(c.NodeName) {
		d.problem("cluster.node_name", "", "%q may only contain %s", c.NodeName, userChars)
	}
}

func (d *decoder) validateLog(l Log) {
	if l.Format != "text" && l.Format != "json" {
		d.problem("log.format", "", "%q is not one of text, json", l.Format)
	}
}

func (d *decoder) validateSIP(s SIP) {
	if s.PublicAddress != "" && !validHostOptPort(s.PublicAddress) {
		d.problem("sip.public_address", `host or host:port, e.g. "203.0.113.10" or "sip.example.com:5060"`, "%q is not host[:port]", s.PublicAddress)
	} else if host, _ := s.Advertise(); len(s.Listen) > 0 && isUnspecified(host) {
		// 0.0.0.0 in a Contact header would send Twilio's requests nowhere.
		d.problem("sip.public_address", "set the address Twilio can reach", "required when the first listen address is %s", host)
	} else if len(s.Listen) > 0 && isUnspecified(s.Listen[0].Host) && !publicIP(s) {
		// The relay writes an address into every SDP; with SIP on every
		// interface only public_address can say which, and SDP needs an IP.
		d.problem("sip.public_address", "the IP address phones and Twilio send RTP to, e.g. 203.0.113.10",
			"must be an IP address when the first listen address is %s: it goes into SDP", s.Listen[0].Host)
	}
	d.validateListenTLS(s)
	if s.Realm == "" {
		d.problem("sip.realm", "", "must not be empty")
	} else if strings.ContainsAny(s.Realm, "\"\\\r\n") {
		d.problem("sip.realm", "", "must not contain quotes, backslashes or newlines")
	}
	d.wholeSeconds("sip.min_expires", s.MinExpires)
	d.wholeSeconds("sip.max_expires", s.MaxExpires)
	d.wholeSeconds("sip.default_expires", s.DefaultExpires)
	switch {
	case s.MinExpires <= 0:
		d.problem("sip.min_expires", "", "must be positive")
	case s.MinExpires > s.MaxExpires:
		d.problem("sip.min_expires", "", "%s is above max_expires %s", fmtDur(s.MinExpires), fmtDur(s.MaxExpires))
	case s.DefaultExpires < s.MinExpires || s.DefaultExpires > s.MaxExpires:
		d.problem("sip.default_expires", "", "%s is not between min_expires %s and max_expires %s", fmtDur(s.DefaultExpires), fmtDur(s.MinExpires), fmtDur(s.MaxExpires))
	}
	if s.ExpiresSpread < 0 || s.ExpiresSpread > 50 {
		d.problem("sip.expires_spread", "a percentage", "%d is not in 0..50", s.ExpiresSpread)
	}
	if s.MaxContacts < 1 {
		d.problem("sip.max_contacts", "", "must be at least 1")
	}
	if s.NonceTTL <= 0 {
		d.problem("sip.nonce_ttl", "", "must be positive")
	}
	if s.QualifyInterval < 0 {
		d.problem("sip.qualify_interval", "0s turns qualify off", "must not be negative")
	}
	cn := s.Connections
	if cn.Max < 1 {
		d.problem("sip.connections.max", "e.g. 10000", "must be at least 1")
	}
	if cn.MaxPerSource < 1 {
		d.problem("sip.connections.max_per_source", "phones behind one NAT share a source; e.g. 256", "must be at least 1")
	}
	if cn.SetupTimeout < time.Second || cn.SetupTimeout > 5*time.Minute {
		d.problem("sip.connections.setup_timeout", "e.g. 20s", "%s is outside 1s..5m", fmtDur(cn.SetupTimeout))
	}
	if cn.IdleTimeout < 10*time.Second {
		d.problem("sip.connections.idle_timeout", "longer than a registration (max_expires), unless phones send keepalives", "%s is below 10s", fmtDur(cn.IdleTimeout))
	}
	lo := s.Lockout
	switch {
	case lo.Failures < 0:
		d.problem("sip.lockout.failures", "0 disables lockout", "must not be negative")
	case lo.UserFailures < 0:
		d.problem("sip.lockout.user_failures", "0 disables the per-user rule", "must not be negative")
	case lo.Enabled() && lo.Window <= 0:
		d.problem("sip.lockout.window", "", "must be positive when lockout is enabled")
	case lo.Enabled() && lo.Duration <= 0:
		d.problem("sip.lockout.duration", "set failures: 0 and user_failures: 0 to disable lockout", "must be positive when lockout is enabled")
	case lo.MaxSources < 100:
		d.problem("sip.lockout.max_sources", "e.g. 100000 (about 150 bytes each)", "must be at least 100")
	}
}

func (d *decoder) validateTwilio(t Twilio) {
	switch {
	case t.Domain == "":
		d.problem("twilio.domain", "the first label of <domain>.sip.twilio.com", "required")
	case strings.Contains(t.Domain, "."):
		d.problem("twilio.domain", "give only the first label: for example.sip.twilio.com write example", "%q is not a single DNS label", t.Domain)
	case !isDNSLabel(t.Domain):
		d.problem("twilio.domain", "", "%q is not a valid DNS label (letters, digits, inner hyphens, at most 63)", t.Domain)
	}
	if t.DNSServer != "" {
		host, _, err := splitHostPort(t.DNSServer)
		if err == nil {
			if _, aerr := netip.ParseAddr(host); aerr != nil {
				d.problem("twilio.dns_server", "", "host %q must be an IP address", host)
			}
		} else {
			d.problem("twilio.dns_server", `e.g. "127.0.0.1:53"`, "%q: %v", t.DNSServer, err)
		}
	}
	if !contains([]string{"udp", "tcp", "tls"}, t.Transport) {
		d.problem("twilio.transport", "", "%q is not one of udp, tcp, tls", t.Transport)
	}
	d.caFile("twilio.ca_file", t.CAFile)
	if t.Timeout <= 0 || t.Timeout >= 32*time.Second {
		d.problem("twilio.timeout", "Twilio's own guidance is 4s", "%s must be above 0 and below 32s (SIP timer B)", fmtDur(t.Timeout))
	}
	if t.RegisterExpires < 600*time.Second || t.RegisterExpires > 3600*time.Second {
		d.problem("twilio.register_expires", "", "%s is outside Twilio's limits 600s..3600s (less gets 423 Interval Too Brief, more is cut to 3600s)", fmtDur(t.RegisterExpires))
	} else {
		d.wholeSeconds("twilio.register_expires", t.RegisterExpires)
	}
	if t.FailbackHold < 0 {
		d.problem("twilio.failback_hold", "", "must not be negative")
	}
	switch t.Keepalive.Method {
	case "options", "register":
		if t.Keepalive.Interval <= 0 {
			d.problem("twilio.keepalive.interval", "or set method: none", "must be positive")
		}
		if t.Keepalive.StandbyInterval < time.Second {
			d.problem("twilio.keepalive.standby_interval", "default 30s", "%s is below 1s: every standby IP would be probed that often", fmtDur(t.Keepalive.StandbyInterval))
		}
	case "none":
	default:
		d.problem("twilio.keepalive.method", "", "%q is not one of options, register, none", t.Keepalive.Method)
	}
	if t.Move.Rate < 1 {
		d.problem("twilio.move.rate", "", "must be at least 1 per second")
	}
	if t.Move.Concurrency < 1 {
		d.problem("twilio.move.concurrency", "", "must be at least 1")
	}
	switch t.MediaEncryption {
	case "none":
	case "srtp":
		// SDES sends the keys inside the SDP: over UDP or TCP anyone on
		// the path reads them, and Twilio's Secure Media requires TLS.
		if t.Transport != "tls" {
			d.problem("twilio.media_encryption", "set twilio.transport: tls (and a tls: entry in sip.listen)",
				"srtp needs TLS signalling: its keys travel in the SDP, and Twilio refuses Secure Media calls over %s", t.Transport)
		}
	default:
		d.problem("twilio.media_encryption", "", "%q is not one of none, srtp", t.MediaEncryption)
	}
	d.validateTwilioREST(t.REST)
}

// TwilioRESTRegions are the REST API's processing regions.
var TwilioRESTRegions = []string{"us1", "ie1", "au1"}

func (d *decoder) validateTwilioREST(r TwilioREST) {
	d.sid("twilio.rest.account_sid", r.AccountSID, "AC", false)
	d.sid("twilio.rest.api_key_sid", r.APIKeySID, "SK", false)
	switch {
	case r.APIKeySID != "" && !r.APIKeySecret.IsSet() && !d.bad["twilio.rest.api_key_secret"] && !d.bad["twilio.rest.api_key_secret_file"]:
		d.problem("twilio.rest.api_key_secret", "api_key_secret: ${TWILIO_API_KEY_SECRET} or api_key_secret_file", "required with api_key_sid")
	case r.APIKeySID == "" && r.APIKeySecret.IsSet():
		d.problem("twilio.rest.api_key_sid", "the SK... SID of the key whose secret this is", "required with api_key_secret")
	case r.APIKeySecret.IsSet() && !isAlnum(r.APIKeySecret.Value()):
		// twilio-go refuses such a secret before sending anything.
		d.problem("twilio.rest.api_key_secret", "copy the secret exactly as Twilio showed it", "must be letters and digits only")
	}
	if !contains(TwilioRESTRegions, r.Region) {
		hint := "known regions: " + strings.Join(TwilioRESTRegions, ", ")
		if near := nearest(strings.ToLower(r.Region), TwilioRESTRegions); near != "" {
			hint = fmt.Sprintf("did you mean %q?", near)
		}
		d.problem("twilio.rest.region", hint, "unknown region %q", r.Region)
	}
	d.caFile("twilio.rest.ca_file", r.CAFile)
}

// caFile checks that a configured CA bundle reads as PEM certificates.
func (d *decoder) caFile(field, path string) {
	if path == "" {
		return
	}
	if err := AppendCAFile(x509.NewCertPool(), path); err != nil {
		if errors.Is(err, errNoPEM) {
			d.problem(field, "a PEM file of one or more CERTIFICATE blocks", "%v", err)
			return
		}
		d.problem(field, "", "%v", unwrapPathErr(err))
	}
}

var errNoPEM = errors.New("holds no PEM certificate")

// AppendCAFile adds the certificates of a PEM bundle (twilio.ca_file,
// twilio.rest.ca_file) to pool.
func AppendCAFile(pool *x509.CertPool, path string) error {
	pem, err := readFileMax(path, 4<<20) // a whole system bundle is ~200 KiB
	if err != nil {
		return err
	}
	if !pool.AppendCertsFromPEM(pem) {
		return fmt.Errorf("%s %w", path, errNoPEM)
	}
	return nil
}

func isAlnum(s string) bool {
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
			return false
		}
	}
	return true
}

// derivePhones fills HA1 from the password so the registrar has one form of
// credential to check, whichever the file gave.
func (d *decoder) derivePhones(c *Config) {
	for i := range c.Phones {
		p := &c.Phones[i]
		if p.Password != "" {
			sum := md5.Sum([]byte(p.User + ":" + c.SIP.Realm + ":" + p.Password.Value()))
			p.HA1 = Secret(hex.EncodeToString(sum[:]))
		}
	}
}

func (d *decoder) validateAdmin(a Admin) {
	host, _, err := splitHostPort(a.Listen)
	if err != nil {
		d.problem("admin.listen", `e.g. "127.0.0.1:9060"`, "%q: %v", a.Listen, err)
		return
	}
	if !isLoopback(host) && a.Token == "" && !d.bad["admin.token"] && !d.bad["admin.token_file"] {
		d.problem("admin.token", "set token: ${EDGEWISE_ADMIN_TOKEN} or token_file", "required because admin.listen %s is not a loopback address", a.Listen)
	}
}

// MaxMediaWorkers bounds media.workers: each worker is a goroutine with its
// own epoll set that runs on a CPU while it relays, so more than a few per
// CPU only add wake-ups.
const MaxMediaWorkers = 256

func (d *decoder) validateMedia(m Media, sip SIP) {
	r := m.RTPPorts
	switch {
	case r.Min < 1024 || r.Max > 65535:
		d.problem("media.rtp_ports", "", "%s is outside 1024..65535", r)
	case r.Min%2 != 0:
		d.problem("media.rtp_ports", "RTP uses the even port, RTCP the odd one above it", "%s must start on an even port", r)
	case r.Max <= r.Min:
		d.problem("media.rtp_ports", "", "%s: the end must be above the start", r)
	}
	if m.Timeout <= 0 {
		d.problem("media.timeout", "", "must be positive")
	}
	if m.Workers < 0 || m.Workers > MaxMediaWorkers {
		d.problem("media.workers", "0 means one per CPU; more workers than CPUs only add wake-ups", "%d is outside 0..%d", m.Workers, MaxMediaWorkers)
	}
	if t := m.WebRTC.ConnectTimeout; t < time.Second || t > 2*time.Minute {
		d.problem("media.webrtc.connect_timeout", "e.g. 20s", "%s is outside 1s..2m", t)
	}
	if w := m.WebRTC; w.Listen != "" {
		host, port, err := splitHostPort(w.Listen)
		switch {
		case err != nil:
			d.problem("media.webrtc.listen", `e.g. "0.0.0.0:3479"`, "%q: %v", w.Listen, err)
		case port >= m.RTPPorts.Min && port <= m.RTPPorts.Max+1:
			d.problem("media.webrtc.listen", "pick a port outside media.rtp_ports", "port %d is inside media.rtp_ports %s", port, m.RTPPorts)
		default:
			if ip, err := netip.ParseAddr(host); err != nil {
				d.problem("media.webrtc.listen", `e.g. "0.0.0.0:3479"`, "%q: host must be an IP address", w.Listen)
			} else if ip.IsUnspecified() && len(w.Advertise) == 0 && !publicIP(sip) {
				d.problem("media.webrtc.advertise", "list the IPs browsers reach edgewise on", "required when media.webrtc.listen is %s and sip.public_address is not an IP", host)
			}
		}
	}
}

func (d *decoder) validateCalls(c Calls, m Media) {
	pool := m.PoolCalls()
	switch {
	case c.MaxConcurrent < 0:
		d.problem("calls.max_concurrent", "0 means what media.rtp_ports holds", "must not be negative")
	case c.MaxConcurrent > pool && pool > 0:
		d.problem("calls.max_concurrent", fmt.Sprintf("widen media.rtp_ports or set at most %d", pool),
			"%d is more calls than media.rtp_ports %s holds (%d: four ports a call)", c.MaxConcurrent, m.RTPPorts, pool)
	}
	if c.MaxPerUser < 0 {
		d.problem("calls.max_per_user", "0 means no per-user limit", "must not be negative")
	}
}

func (d *decoder) validateShutdown(s Shutdown) {
	if s.DrainTimeout < 0 {
		d.problem("shutdown.drain_timeout", "0s hangs up every call at once", "must not be negative")
	}
	if s.RetryAfter < time.Second || s.RetryAfter > time.Hour {
		d.problem("shutdown.retry_after", "phones and Twilio retry after this; e.g. 30s", "%s is outside 1s..1h", s.RetryAfter)
	}
}

func (d *decoder) validateToken(t *Token) {
	if _, _, err := splitHostPort(t.Listen); err != nil {
		d.problem("token.listen", `e.g. "127.0.0.1:9061"`, "%q: %v", t.Listen, err)
	}
	d.sid("token.account_sid", t.AccountSID, "AC", true)
	if !contains(TwilioRESTRegions, t.Region) {
		d.problem("token.region", "the region of the API keys and TwiML app: "+strings.Join(TwilioRESTRegions, ", "), "unknown region %q", t.Region)
	}
	if len(t.APIKeys) == 0 && !d.bad["token.api_keys"] {
		d.problem("token.api_keys", "[{sid: SK..., secret: ${TWILIO_API_SECRET}}]", "at least one API key is required")
	}
	d.sid("token.twiml_app_sid", t.TwiMLAppSID, "AP", true)
	d.sid("token.push_credential_sid", t.PushCredentialSID, "CR", false)
	if t.TTL < time.Minute || t.TTL > 24*time.Hour {
		d.problem("token.ttl", "", "%s is not in 1m..24h (Twilio's maximum token lifetime is 24h)", fmtDur(t.TTL))
	}
	if t.IdentityHeader != "" {
		if !isHeaderName(t.IdentityHeader) {
			d.problem("token.identity_header", "", "%q is not an HTTP header name", t.IdentityHeader)
		} else if len(t.TrustedProxies) == 0 && !d.bad["token.trusted_proxies"] {
			d.problem("token.identity_header", "list the proxies that set it in token.trusted_proxies", "is never trusted without trusted_proxies")
		}
	}
	if t.RateLimit.PerIdentity < 1 {
		d.problem("token.rate_limit.per_identity", "", "must be at least 1")
	}
	if t.RateLimit.PerAddress < 1 {
		d.problem("token.rate_limit.per_address", "", "must be at least 1")
	}
	if t.RateLimit.Window <= 0 {
		d.problem("token.rate_limit.window", "", "must be positive")
	}
}

func (d *decoder) sid(path, v, prefix string, required bool) {
	switch {
	case v == "" && required:
		d.problem(path, "", "required")
	case v != "" && !isSID(v, prefix):
		d.problem(path, "", "must be %s followed by 32 hex digits", prefix)
	}
}

func (d *decoder) wholeSeconds(path string, v time.Duration) {
	if v%time.Second != 0 {
		d.problem(path, "SIP Expires counts whole seconds", "%s is not a whole number of seconds", fmtDur(v))
	}
}

// fmtDur prints a duration the way people write it in the file: "2h", not "2h0m0s".
func fmtDur(v time.Duration) string {
	s := v.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

func isDNSLabel(s string) bool {
	if s == "" || len(s) > 63 || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
			return false
		}
	}
	return true
}

func isHeaderName(s string) bool {
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("!#$%&'*+-.^_`|~", r)) {
			return false
		}
	}
	return s != ""
}

func isUnspecified(host string) bool {
	a, err := netip.ParseAddr(host)
	return err == nil && a.IsUnspecified()
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.IsLoopback()
}

// validHostOptPort accepts "host", "host:port", "[v6]:port" and a bare IPv6.
func validHostOptPort(s string) bool {
	if strings.ContainsAny(s, " /\t") {
		return false
	}
	if h, p, err := net.SplitHostPort(s); err == nil {
		n, perr := strconv.Atoi(p)
		return h != "" && perr == nil && n >= 1 && n <= 65535
	}
	if strings.Contains(s, ":") {
		_, err := netip.ParseAddr(strings.Trim(s, "[]"))
		return err == nil
	}
	return true
}

// validateListenTLS checks what WebSocket and TLS listeners need:
// WebSocket ones serve browsers, so they cannot be the first address (the
// one Twilio is told to reach), and wss: and tls: need a certificate and key
// that load as a pair.
func (d *decoder) validateListenTLS(s SIP) {
	if len(s.Listen) > 0 && (s.Listen[0].Transport == "ws" || s.Listen[0].Transport == "wss") {
		d.problem("sip.listen[0]", `list a udp or tcp address first, e.g. ["udp:0.0.0.0:5060", "`+s.Listen[0].String()+`"]`,
			"%s cannot come first: the first address is the one Twilio is told to reach", s.Listen[0])
	}
	wss := ""
	for i, l := range s.Listen {
		if l.Transport == "wss" || l.Transport == "tls" {
			wss = l.Transport + ": listener " + index("sip.listen", i)
			break
		}
	}
	if wss == "" {
		return
	}
	if s.TLS.CertFile == "" {
		d.problem("sip.tls.cert_file", "a PEM certificate chain, e.g. /etc/edgewise/tls/fullchain.pem", "required by the %s", wss)
	}
	if s.TLS.KeyFile == "" {
		d.problem("sip.tls.key_file", "the PEM private key of cert_file, e.g. /etc/edgewise/tls/privkey.pem", "required by the %s", wss)
	}
	if s.TLS.CertFile == "" || s.TLS.KeyFile == "" {
		return
	}
	certPEM, err := os.ReadFile(s.TLS.CertFile)
	if err != nil {
		d.problem("sip.tls.cert_file", "", "%v", unwrapPathErr(err))
	}
	keyPEM, kerr := os.ReadFile(s.TLS.KeyFile)
	if kerr != nil {
		d.problem("sip.tls.key_file", "", "%v", unwrapPathErr(kerr))
	}
	if err != nil || kerr != nil {
		return
	}
	if _, err := tls.X509KeyPair(certPEM, keyPEM); err != nil {
		d.problem("sip.tls.cert_file", "cert_file must hold the certificate chain (leaf first) and key_file its private key, both PEM",
			"%s and %s do not load as a certificate and key: %v", s.TLS.CertFile, s.TLS.KeyFile, err)
	}
}

// publicIP reports whether the address advertised to Twilio is a usable IP.
func publicIP(s SIP) bool {
	host, _ := s.Advertise()
	ip, err := netip.ParseAddr(host)
	return err == nil && !ip.IsUnspecified()
}
