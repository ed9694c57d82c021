package configs

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/emiago/sipgo/sip"
	"go.yaml.in/yaml/v3"
)

// decode overlays the file onto the defaults already in c. Checks that need
// a list entry's own path (listen addresses, edges, CIDRs) happen here;
// cross-field and range checks are in validate.go. It returns false when the
// file is not a mapping at all, where field-by-field checks would be noise.
func (d *decoder) decode(root *yaml.Node, c *Config) bool {
	top := d.mapping(root, "", "log", "sip", "twilio", "phones", "store", "cluster", "admin", "media", "calls", "token", "shutdown")
	if !top.ok {
		return false
	}
	d.decodeLog(top.node("log"), &c.Log)
	d.decodeSIP(top.node("sip"), &c.SIP)
	d.decodeTwilio(top.node("twilio"), &c.Twilio)
	c.Phones = d.decodePhones(top)
	st := d.mapping(top.node("store"), "store", "path", "backend", "etcd")
	if st.str("path", &c.Store.Path) && c.Store.Path != "" {
		c.Store.Path = d.resolvePath(c.Store.Path)
	}
	st.str("backend", &c.Store.Backend)
	d.decodeEtcd(st.node("etcd"), &c.Store.Etcd)
	cf := d.mapping(top.node("cluster"), "cluster", "node_name", "advertise", "lease_ttl")
	if cf.node("advertise") != nil {
		var adv Secret // ${VAR} expansion, as node_name
		if cf.secret("advertise", &adv) {
			c.Cluster.Advertise = adv.Value()
		}
	}
	cf.dur("lease_ttl", &c.Cluster.LeaseTTL)
	if cf.node("node_name") != nil {
		// A secret's ${VAR} expansion, without hiding the value: one file
		// serves every node, each with its own environment.
		var name Secret
		if cf.secret("node_name", &name) {
			c.Cluster.NodeName = name.Value()
		}
	}
	ad := d.mapping(top.node("admin"), "admin", "listen", "token", "token_file", "allowed_hosts")
	ad.str("listen", &c.Admin.Listen)
	ad.secret("token", &c.Admin.Token)
	if items, ok := ad.strList("allowed_hosts"); ok {
		for _, it := range items {
			if it.Value == "" || strings.ContainsAny(it.Value, ":/ *") {
				d.problem(it.Path, `a host name without port, e.g. "edgewise.corp.example"`, "%q is not a host name", it.Value)
				continue
			}
			c.Admin.AllowedHosts = append(c.Admin.AllowedHosts, it.Value)
		}
	}
	d.decodeMedia(top.node("media"), &c.Media)
	cl := d.mapping(top.node("calls"), "calls", "max_concurrent", "max_per_user", "local", "fallback_targets", "emergency_numbers")
	cl.integer("max_concurrent", &c.Calls.MaxConcurrent)
	cl.integer("max_per_user", &c.Calls.MaxPerUser)
	d.decodeCallRoutes(cl, &c.Calls)
	if top.has("token") {
		c.Token = d.decodeToken(top.node("token"))
	}
	sd := d.mapping(top.node("shutdown"), "shutdown", "drain_timeout", "retry_after")
	sd.dur("drain_timeout", &c.Shutdown.DrainTimeout)
	sd.dur("retry_after", &c.Shutdown.RetryAfter)
	return true
}

func (d *decoder) decodeLog(n *yaml.Node, l *Log) {
	f := d.mapping(n, "log", "level", "format")
	var level string
	if f.str("level", &level) {
		switch strings.ToLower(level) {
		case "debug":
			l.Level = slog.LevelDebug
		case "info":
			l.Level = slog.LevelInfo
		case "warn", "warning":
			l.Level = slog.LevelWarn
		case "error":
			l.Level = slog.LevelError
		default:
			d.problem("log.level", "one of debug, info, warn, error", "unknown level %q", level)
		}
	}
	f.str("format", &l.Format)
}

func (d *decoder) decodeSIP(n *yaml.Node, s *SIP) {
	f := d.mapping(n, "sip", "listen", "public_address", "realm", "min_expires", "max_expires",
		"default_expires", "expires_spread", "max_contacts", "nonce_ttl", "digest_algorithms", "qualify_interval", "lockout", "trusted_proxies", "connections", "tls")
	if f.emptyList("listen") {
		d.problem("sip.listen", `e.g. ["udp:127.0.0.1:5060"]`, "must list at least one address")
	}
	if items, ok := f.strList("listen"); ok {
		s.Listen = nil
		seen := map[Listen]string{}
		for _, it := range items {
			l, err := ParseListen(it.Value)
			if err != nil {
				d.problem(it.Path, `e.g. "udp:127.0.0.1:5060"`, "%v", err)
				continue
			}
			if !contains([]string{"udp", "tcp", "tls", "ws", "wss"}, l.Transport) {
				d.problem(it.Path, "", "transport %q is not one of udp, tcp, tls, ws, wss", l.Transport)
				continue
			}
			if _, err := netip.ParseAddr(l.Host); err != nil {
				d.problem(it.Path, `an IP address of this host, or 0.0.0.0 for every interface, e.g. "udp:0.0.0.0:5060"`, "host %q is not an IP address", l.Host)
				continue
			}
			if first, dup := seen[l]; dup {
				d.problem(it.Path, "", "duplicate of %s", first)
				continue
			}
			seen[l] = it.Path
			s.Listen = append(s.Listen, l)
		}
	}
	f.str("public_address", &s.PublicAddress)
	f.str("realm", &s.Realm)
	f.dur("min_expires", &s.MinExpires)
	f.dur("max_expires", &s.MaxExpires)
	f.dur("default_expires", &s.DefaultExpires)
	f.integer("expires_spread", &s.ExpiresSpread)
	f.integer("max_contacts", &s.MaxContacts)
	f.dur("nonce_ttl", &s.NonceTTL)
	if f.emptyList("digest_algorithms") {
		d.problem("sip.digest_algorithms", "e.g. [MD5, SHA-256]", "must list at least one algorithm")
	}
	if items, ok := f.strList("digest_algorithms"); ok {
		s.DigestAlgorithms = nil
		for _, it := range items {
			alg := strings.ToUpper(it.Value)
			if alg != "MD5" && alg != "SHA-256" {
				d.problem(it.Path, "", "digest algorithm %q is not MD5 or SHA-256", it.Value)
				continue
			}
			if contains(s.DigestAlgorithms, alg) {
				d.problem(it.Path, "", "%s is listed twice", alg)
				continue
			}
			s.DigestAlgorithms = append(s.DigestAlgorithms, alg)
		}
	}
	f.dur("qualify_interval", &s.QualifyInterval)
	lo := d.mapping(f.node("lockout"), "sip.lockout", "failures", "user_failures", "window", "duration", "max_sources")
	lo.integer("failures", &s.Lockout.Failures)
	lo.integer("user_failures", &s.Lockout.UserFailures)
	lo.dur("window", &s.Lockout.Window)
	lo.dur("duration", &s.Lockout.Duration)
	lo.integer("max_sources", &s.Lockout.MaxSources)
	if items, ok := f.strList("trusted_proxies"); ok {
		s.TrustedProxies = d.prefixes(items)
	}
	cn := d.mapping(f.node("connections"), "sip.connections", "max", "max_per_source", "setup_timeout", "idle_timeout")
	cn.integer("max", &s.Connections.Max)
	cn.integer("max_per_source", &s.Connections.MaxPerSource)
	cn.dur("setup_timeout", &s.Connections.SetupTimeout)
	cn.dur("idle_timeout", &s.Connections.IdleTimeout)
	tl := d.mapping(f.node("tls"), "sip.tls", "cert_file", "key_file")
	if tl.str("cert_file", &s.TLS.CertFile) && s.TLS.CertFile != "" {
		s.TLS.CertFile = d.resolvePath(s.TLS.CertFile)
	}
	if tl.str("key_file", &s.TLS.KeyFile) && s.TLS.KeyFile != "" {
		s.TLS.KeyFile = d.resolvePath(s.TLS.KeyFile)
	}
}

func (d *decoder) decodeTwilio(n *yaml.Node, t *Twilio) {
	f := d.mapping(n, "twilio", "domain", "edges", "dns_server", "transport", "timeout",
		"register_expires", "failback_hold", "keepalive", "move", "signalling_cidrs", "media_cidrs",
		"media_encryption", "rest", "ca_file")
	f.str("domain", &t.Domain)
	if f.emptyList("edges") {
		d.problem("twilio.edges", "list edges in order of preference, e.g. [ashburn, umatilla]", "must list at least one edge")
	}
	if items, ok := f.strList("edges"); ok {
		t.Edges = nil
		seen := map[string]string{}
		for _, it := range items {
			if msg, hint := checkEdge(it.Value); msg != "" {
				d.problem(it.Path, hint, "%s", msg)
				continue
			}
			if first, dup := seen[it.Value]; dup {
				d.problem(it.Path, "each edge may appear once", "duplicate edge %q (also %s)", it.Value, first)
				continue
			}
			seen[it.Value] = it.Path
			t.Edges = append(t.Edges, it.Value)
		}
	}
	f.str("dns_server", &t.DNSServer)
	f.str("transport", &t.Transport)
	if f.str("ca_file", &t.CAFile) && t.CAFile != "" {
		t.CAFile = d.resolvePath(t.CAFile)
	}
	f.dur("timeout", &t.Timeout)
	f.dur("register_expires", &t.RegisterExpires)
	f.dur("failback_hold", &t.FailbackHold)
	ka := d.mapping(f.node("keepalive"), "twilio.keepalive", "method", "interval", "standby_interval")
	ka.str("method", &t.Keepalive.Method)
	ka.dur("interval", &t.Keepalive.Interval)
	ka.dur("standby_interval", &t.Keepalive.StandbyInterval)
	mv := d.mapping(f.node("move"), "twilio.move", "rate", "concurrency")
	mv.integer("rate", &t.Move.Rate)
	mv.integer("concurrency", &t.Move.Concurrency)
	if items, ok := f.strList("signalling_cidrs"); ok {
		t.SignallingCIDRs = d.prefixes(items)
	}
	if len(t.SignallingCIDRs) == 0 {
		// Interconnect edges reach Twilio over a private link whose
		// addresses Twilio does not publish: with the default ranges,
		// every call they carry in would be refused as not from Twilio.
		for i, e := range t.Edges {
			if slices.Contains(InterconnectEdges, e) {
				d.problem(fmt.Sprintf("twilio.edges[%d]", i), "set twilio.signalling_cidrs (and media_cidrs) to your Interconnect's ranges, or use the public edge",
					"%s is an Interconnect edge: Twilio publishes no address ranges for it, so the default twilio.signalling_cidrs would refuse every call it brings", e)
				break
			}
		}
		// Twilio may egress from any edge (e.g. Oregon while Virginia is
		// down), so the safe default allows every edge's ranges.
		t.SignallingCIDRs = AllSignallingRanges()
	}
	if items, ok := f.strList("media_cidrs"); ok {
		t.MediaCIDRs = d.prefixes(items)
	}
	if len(t.MediaCIDRs) == 0 {
		t.MediaCIDRs = []netip.Prefix{MediaRange}
	}
	f.str("media_encryption", &t.MediaEncryption)
	d.decodeTwilioREST(f.node("rest"), &t.REST)
}

// decodeTwilioREST reads twilio.rest, the REST API access of the twilio
// commands.
func (d *decoder) decodeTwilioREST(n *yaml.Node, r *TwilioREST) {
	f := d.mapping(n, "twilio.rest", "account_sid", "api_key_sid", "api_key_secret", "api_key_secret_file", "region", "ca_file")
	r.Line = d.lineOf("twilio.rest")
	f.str("account_sid", &r.AccountSID)
	f.str("api_key_sid", &r.APIKeySID)
	f.secret("api_key_secret", &r.APIKeySecret)
	f.str("region", &r.Region)
	if f.str("ca_file", &r.CAFile) && r.CAFile != "" {
		r.CAFile = d.resolvePath(r.CAFile)
	}
}

// prefixes parses CIDRs, refusing ones with host bits set: "10.0.0.1/8"
// is more likely a typo than a wish to allow 10/8.
func (d *decoder) prefixes(items []item) []netip.Prefix {
	var out []netip.Prefix
	for _, it := range items {
		p, err := netip.ParsePrefix(it.Value)
		if err != nil {
			hint := ""
			if a, aerr := netip.ParseAddr(it.Value); aerr == nil {
				hint = fmt.Sprintf("for one address write %s/%d", a, a.BitLen())
			}
			d.problem(it.Path, hint, "%q is not a CIDR", it.Value)
			continue
		}
		if p.Masked() != p {
			d.problem(it.Path, fmt.Sprintf("did you mean %s?", p.Masked()), "%s has host bits set", p)
			continue
		}
		out = append(out, p)
	}
	return out
}

const userChars = "[A-Za-z0-9._-]"

func validUser(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			return false
		}
	}
	return true
}

func (d *decoder) decodePhones(top *fields) []Phone {
	items, _ := top.list("phones")
	var out []Phone
	seen := map[string]string{}
	for _, it := range items {
		f := d.mapping(it.Node, it.Path, "user", "password", "password_file", "ha1",
			"twilio_user", "twilio_password", "twilio_password_file", "targets", "extension")
		if !f.ok {
			continue
		}
		var p Phone
		f.str("user", &p.User)
		up := f.sub("user")
		switch {
		case !f.has("user") || p.User == "":
			d.problem(up, "", "required")
		case !validUser(p.User):
			d.problem(up, "", "%q may only contain %s", p.User, userChars)
		default:
			if first, dup := seen[p.User]; dup {
				d.problem(up, "", "duplicate user %q (also %s)", p.User, first)
			}
			seen[p.User] = it.Path
		}

		hasPw := f.secret("password", &p.Password)
		var ha1 string
		hasHA1 := f.str("ha1", &ha1)
		switch {
		case hasPw && hasHA1:
			d.problem(f.sub("ha1"), "", "give only one of password, password_file or ha1")
		case !hasPw && !hasHA1:
			d.problem(f.sub("password"), "", "one of password, password_file or ha1 is required")
		case hasHA1:
			if v, ok := d.expand(f.sub("ha1"), ha1); ok {
				if !isHex(v, 32) {
					d.problem(f.sub("ha1"), "hex MD5 of user:realm:password", "must be 32 hex digits")
				} else {
					p.HA1 = Secret(strings.ToLower(v))
				}
			}
		}

		p.TwilioUser = p.User
		if f.str("twilio_user", &p.TwilioUser) && !validUser(p.TwilioUser) {
			d.problem(f.sub("twilio_user"), "", "%q may only contain %s", p.TwilioUser, userChars)
		}
		if !f.secret("twilio_password", &p.TwilioPassword) {
			d.problem(f.sub("twilio_password"), "", "required (or twilio_password_file)")
		}
		p.Targets = d.decodeTargets(f, "targets")
		d.decodeExtension(f, &p)
		p.Line = d.lineOf(it.Path)
		out = append(out, p)
	}
	return out
}

// decodeTargets reads a list of call targets: a phone's fixed targets, the
// calls' fallback targets.
func (d *decoder) decodeTargets(parent *fields, key string) []Target {
	items, _ := parent.list(key)
	var out []Target
	for _, it := range items {
		f := d.mapping(it.Node, it.Path, "uri", "priority", "weight")
		if !f.ok {
			continue
		}
		t := Target{Priority: 10, Weight: 10}
		if !f.str("uri", &t.URI) || t.URI == "" {
			d.problem(f.sub("uri"), "e.g. sip:alice@192.0.2.20:5060;transport=tcp", "required")
		} else if err := checkTargetURI(t.URI); err != nil {
			d.problem(f.sub("uri"), "e.g. sip:alice@192.0.2.20:5060;transport=tcp", "%q: %v", t.URI, err)
		}
		for _, n := range []struct {
			key string
			dst *int
		}{{"priority", &t.Priority}, {"weight", &t.Weight}} {
			if f.integer(n.key, n.dst) && (*n.dst < 0 || *n.dst > 65535) {
				d.problem(f.sub(n.key), "", "%d is outside 0..65535", *n.dst)
			}
		}
		out = append(out, t)
	}
	return out
}

// checkTargetURI accepts the SIP URIs the B2BUA can call: sip: with a host,
// over UDP or TCP.
func checkTargetURI(s string) error {
	var u sip.Uri
	if err := sip.ParseUri(s, &u); err != nil {
		return err
	}
	switch {
	case u.Scheme != "sip":
		return fmt.Errorf("scheme %q: only sip: targets are supported", u.Scheme)
	case u.Host == "":
		return errors.New("no host")
	}
	if tp, ok := u.UriParams.Get("transport"); ok {
		if tp = strings.ToLower(tp); tp != "udp" && tp != "tcp" {
			return fmt.Errorf("transport %q: use udp or tcp", tp)
		}
	}
	return nil
}

func (d *decoder) decodeMedia(n *yaml.Node, m *Media) {
	f := d.mapping(n, "media", "rtp_ports", "timeout", "bind", "webrtc", "workers")
	f.integer("workers", &m.Workers)
	var ports string
	if f.str("rtp_ports", &ports) {
		if r, ok := parsePortRange(ports); ok {
			m.RTPPorts = r
		} else {
			d.problem("media.rtp_ports", `e.g. "20000-29999"`, "%q is not a port range A-B", ports)
		}
	}
	f.dur("timeout", &m.Timeout)
	var bind string
	if f.str("bind", &bind) && bind != "" {
		if a, err := netip.ParseAddr(bind); err == nil {
			m.Bind = a.Unmap()
		} else {
			d.problem("media.bind", "an IP address of this host, e.g. 192.0.2.10, or 0.0.0.0 for every interface", "%q is not an IP address", bind)
		}
	}
	w := d.mapping(f.node("webrtc"), "media.webrtc", "listen", "advertise", "connect_timeout")
	w.str("listen", &m.WebRTC.Listen)
	w.dur("connect_timeout", &m.WebRTC.ConnectTimeout)
	if items, ok := w.strList("advertise"); ok {
		for _, it := range items {
			a, err := netip.ParseAddr(it.Value)
			if err != nil || a.IsUnspecified() {
				d.problem(it.Path, "an IP address browsers can reach, e.g. 203.0.113.10", "%q is not a usable IP address", it.Value)
				continue
			}
			m.WebRTC.Advertise = append(m.WebRTC.Advertise, a)
		}
	}
}

func parsePortRange(s string) (PortRange, bool) {
	a, b, ok := strings.Cut(strings.TrimSpace(s), "-")
	if !ok {
		return PortRange{}, false
	}
	lo, err1 := strconv.Atoi(strings.TrimSpace(a))
	hi, err2 := strconv.Atoi(strings.TrimSpace(b))
	if err1 != nil || err2 != nil {
		return PortRange{}, false
	}
	return PortRange{Min: lo, Max: hi}, true
}

func (d *decoder) decodeToken(n *yaml.Node) *Token {
	t := tokenDefaults()
	f := d.mapping(n, "token", "listen", "account_sid", "region", "api_keys", "twiml_app_sid", "push_credential_sid",
		"ttl", "append_roaming", "cors_origins", "identity_header", "trusted_proxies", "rate_limit", "twiml")
	if !f.ok {
		return nil
	}
	f.str("listen", &t.Listen)
	f.str("account_sid", &t.AccountSID)
	f.str("region", &t.Region)
	items, _ := f.list("api_keys")
	seen := map[string]string{}
	for _, it := range items {
		kf := d.mapping(it.Node, it.Path, "sid", "secret", "secret_file")
		if !kf.ok {
			continue
		}
		var k APIKey
		kf.str("sid", &k.SID)
		switch {
		case k.SID == "":
			d.problem(kf.sub("sid"), "", "required")
		case !isSID(k.SID, "SK"):
			d.problem(kf.sub("sid"), "", "must be SK followed by 32 hex digits")
		default:
			if first, dup := seen[k.SID]; dup {
				d.problem(kf.sub("sid"), "", "duplicate key %s (also %s)", k.SID, first)
			}
			seen[k.SID] = it.Path
		}
		if !kf.secret("secret", &k.Secret) {
			d.problem(kf.sub("secret"), "", "required (or secret_file)")
		}
		t.APIKeys = append(t.APIKeys, k)
	}
	f.str("twiml_app_sid", &t.TwiMLAppSID)
	f.str("push_credential_sid", &t.PushCredentialSID)
	f.dur("ttl", &t.TTL)
	f.boolean("append_roaming", &t.AppendRoaming)
	if origins, ok := f.strList("cors_origins"); ok {
		for _, it := range origins {
			if it.Value == "*" {
				// Tokens are credentials: any page on the web could fetch
				// one with a user's cookies or Basic credentials.
				d.problem(it.Path, `list each page's origin, e.g. "https://phones.example.com"`, `"*" is not allowed: tokens are credentials`)
				continue
			}
			if !validOrigin(it.Value) {
				d.problem(it.Path, `scheme://host[:port], e.g. "https://app.example.com"`, "%q is not an origin", it.Value)
				continue
			}
			t.CORSOrigins = append(t.CORSOrigins, it.Value)
		}
	}
	f.str("identity_header", &t.IdentityHeader)
	if items, ok := f.strList("trusted_proxies"); ok {
		t.TrustedProxies = d.prefixes(items)
	}
	rl := d.mapping(f.node("rate_limit"), "token.rate_limit", "per_identity", "per_address", "window")
	rl.integer("per_identity", &t.RateLimit.PerIdentity)
	rl.integer("per_address", &t.RateLimit.PerAddress)
	rl.dur("window", &t.RateLimit.Window)
	t.TwiML = d.decodeTwiML(f)
	return t
}

func (d *decoder) decodeEtcd(n *yaml.Node, e *Etcd) {
	f := d.mapping(n, "store.etcd", "endpoints", "prefix", "username", "password", "password_file",
		"ca_file", "cert_file", "key_file", "request_timeout")
	if !f.ok {
		return
	}
	if items, ok := f.strList("endpoints"); ok {
		e.Endpoints = nil
		for _, it := range items {
			u, err := url.Parse(it.Value)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") {
				d.problem(it.Path, `a client URL, e.g. "https://10.0.0.5:2379"`, "%q is not http(s)://host:port", it.Value)
				d.bad["store.etcd.endpoints"] = true
				continue
			}
			e.Endpoints = append(e.Endpoints, it.Value)
		}
	}
	f.str("prefix", &e.Prefix)
	f.str("username", &e.Username)
	f.secret("password", &e.Password)
	for _, k := range []struct {
		key string
		dst *string
	}{{"ca_file", &e.CAFile}, {"cert_file", &e.CertFile}, {"key_file", &e.KeyFile}} {
		if f.str(k.key, k.dst) && *k.dst != "" {
			*k.dst = d.resolvePath(*k.dst)
		}
	}
	f.dur("request_timeout", &e.RequestTimeout)
}

// validOrigin accepts a browser Origin: scheme://host[:port], no path.
func validOrigin(s string) bool {
	scheme, rest, ok := strings.Cut(s, "://")
	if !ok || (scheme != "http" && scheme != "https") || rest == "" {
		return false
	}
	return !strings.ContainsAny(rest, "/?# ")
}

func isHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for _, r := range s {
		if !(r >= '0' && r <= '9' || r >= 'a' && r <= 'f' || r >= 'A' && r <= 'F') {
			return false
		}
	}
	return true
}

// isSID checks a Twilio SID: two-letter prefix plus 32 hex digits.
func isSID(s, prefix string) bool {
	return strings.HasPrefix(s, prefix) && isHex(s[len(prefix):], 32)
}
