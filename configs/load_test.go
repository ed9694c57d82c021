package configs

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// minimal is the smallest valid file; cases below extend it.
const minimal = `twilio:
  domain: example
store:
  path: /var/lib/edgewise/e.db
`

func problemsOf(t *testing.T, err error) []string {
	t.Helper()
	if err == nil {
		t.Fatal("no error, want problems")
	}
	var ps Problems
	if !errors.As(err, &ps) {
		t.Fatalf("error %T %q is not Problems", err, err)
	}
	if got := strings.Join(ps.Strings(), "\n"); got != err.Error() {
		t.Fatalf("Error() %q != joined Strings() %q", err.Error(), got)
	}
	return ps.Strings()
}

func TestParseProblems(t *testing.T) {
	t.Setenv("EMPTY_SECRET", "")
	tests := []struct {
		name string
		yaml string
		want []string
	}{
		{"empty file", ``, []string{
			`c.yaml:1: twilio.domain: required (hint: the first label of <domain>.sip.twilio.com)`,
			`c.yaml:1: store.path: required (hint: e.g. /var/lib/edgewise/edgewise.db)`,
		}},
		{"not a mapping", "- a\n- b\n", []string{
			`c.yaml:1: must be a mapping, not a list`,
		}},
		{"syntax error", "twilio:\n  domain: [x\nstore: {}\n", []string{
			`c.yaml:2: invalid YAML: did not find expected ',' or ']'`,
		}},
		{"syntax error indentation", "twilio:\n  domain: x\n   edges: [a]\n", []string{
			`c.yaml:3: invalid YAML: mapping values are not allowed in this context`,
		}},
		{"syntax error block seq", "a: 1\nb:\n  - x\n  c: 2\n", []string{
			`c.yaml:3: invalid YAML: did not find expected '-' indicator`,
		}},
		{"syntax error at end", "v: [A,", []string{
			`c.yaml:1: invalid YAML: did not find expected node content`,
		}},
		{"unknown anchor", "twilio: *nope\n", []string{
			`c.yaml:1: invalid YAML: unknown anchor 'nope' referenced`,
		}},
		{"two documents", minimal + "---\nlog: {}\n", []string{
			`c.yaml:5: only one YAML document is allowed`,
		}},
		{"unknown top-level key", minimal + "phone: []\n", []string{
			`c.yaml:5: phone: unknown key (hint: did you mean "phones"?)`,
		}},
		{"unknown key far from any", minimal + "zzzzzzzz: 1\n", []string{
			`c.yaml:5: zzzzzzzz: unknown key (hint: known keys: log, sip, twilio, phones, store, cluster, admin, media, calls, token, shutdown)`,
		}},
		{"targets", minimal + `phones:
  - user: alice
    password: p
    twilio_password: t
    targets:
      - uri: sip:pbx@192.0.2.20:5060;transport=tcp
        priority: 5
      - uri: sips:pbx@192.0.2.21
      - uri: sip:pbx@192.0.2.22;transport=ws
        weight: 70000
      - priority: 1
      - uri: "not a uri"
`, []string{
			`c.yaml:12: phones[0].targets[1].uri: "sips:pbx@192.0.2.21": scheme "sips": only sip: targets are supported (hint: e.g. sip:alice@192.0.2.20:5060;transport=tcp)`,
			`c.yaml:13: phones[0].targets[2].uri: "sip:pbx@192.0.2.22;transport=ws": transport "ws": use udp or tcp (hint: e.g. sip:alice@192.0.2.20:5060;transport=tcp)`,
			`c.yaml:14: phones[0].targets[2].weight: 70000 is outside 0..65535`,
			`c.yaml:15: phones[0].targets[3].uri: required (hint: e.g. sip:alice@192.0.2.20:5060;transport=tcp)`,
			`c.yaml:16: phones[0].targets[4].uri: "not a uri": invalid uri scheme (hint: e.g. sip:alice@192.0.2.20:5060;transport=tcp)`,
		}},
		{"webrtc", minimal + `media:
  rtp_ports: 20000-20999
  webrtc:
    listen: 0.0.0.0:20500
    advertise: [0.0.0.0, nope]
`, []string{
			`c.yaml:8: media.webrtc.listen: port 20500 is inside media.rtp_ports 20000-20999 (hint: pick a port outside media.rtp_ports)`,
			`c.yaml:9: media.webrtc.advertise[0]: "0.0.0.0" is not a usable IP address (hint: an IP address browsers can reach, e.g. 203.0.113.10)`,
			`c.yaml:9: media.webrtc.advertise[1]: "nope" is not a usable IP address (hint: an IP address browsers can reach, e.g. 203.0.113.10)`,
		}},
		{"webrtc on every interface needs addresses", minimal + `sip:
  listen: ["udp:0.0.0.0:5060"]
  public_address: sip.example.com
media:
  webrtc: {listen: "0.0.0.0:3479"}
`, []string{
			`c.yaml:7: sip.public_address: must be an IP address when the first listen address is 0.0.0.0: it goes into SDP (hint: the IP address phones and Twilio send RTP to, e.g. 203.0.113.10)`,
			`c.yaml:9: media.webrtc.advertise: required when media.webrtc.listen is 0.0.0.0 and sip.public_address is not an IP (hint: list the IPs browsers reach edgewise on)`,
		}},
		{"unknown nested key", "twilio:\n  domain: example\n  edgse: [ashburn]\nstore: {path: /x}\n", []string{
			`c.yaml:3: twilio.edgse: unknown key (hint: did you mean "edges"?)`,
		}},
		{"merge key", "d: &d {domain: example}\ntwilio:\n  <<: *d\nstore: {path: /x}\n", []string{
			`c.yaml:1: d: unknown key (hint: known keys: log, sip, twilio, phones, store, cluster, admin, media, calls, token, shutdown)`,
			`c.yaml:2: twilio.domain: required (hint: the first label of <domain>.sip.twilio.com)`,
			`c.yaml:3: twilio.<<: YAML merge keys are not supported (hint: repeat the fields instead)`,
		}},
		{"alias reported where used", "m: &m {a: 1}\ntwilio:\n  domain: example\nstore:\n  path: *m\n", []string{
			`c.yaml:1: m: unknown key (hint: known keys: log, sip, twilio, phones, store, cluster, admin, media, calls, token, shutdown)`,
			`c.yaml:5: store.path: must be a string, not a mapping`,
		}},
		{"duplicate key", "twilio:\n  domain: example\n  domain: other\nstore: {path: /x}\n", []string{
			`c.yaml:3: twilio.domain: duplicate key (first at line 2)`,
		}},
		{"missing twilio section", "store:\n  path: /x\n", []string{
			`c.yaml:1: twilio.domain: required (hint: the first label of <domain>.sip.twilio.com)`,
		}},
		{"missing domain points at section", "log:\n  level: info\ntwilio:\n  edges: [dublin]\nstore: {path: /x}\n", []string{
			`c.yaml:3: twilio.domain: required (hint: the first label of <domain>.sip.twilio.com)`,
		}},
		{"domain with dots", "twilio:\n  domain: example.sip.twilio.com\nstore: {path: /x}\n", []string{
			`c.yaml:2: twilio.domain: "example.sip.twilio.com" is not a single DNS label (hint: give only the first label: for example.sip.twilio.com write example)`,
		}},
		{"domain bad label", "twilio:\n  domain: -bad_\nstore: {path: /x}\n", []string{
			`c.yaml:2: twilio.domain: "-bad_" is not a valid DNS label (letters, digits, inner hyphens, at most 63)`,
		}},
		{"unknown edge hint", "twilio:\n  domain: example\n  edges: [ashburn, ashbrun]\nstore: {path: /x}\n", []string{
			`c.yaml:3: twilio.edges[1]: unknown edge "ashbrun" (hint: did you mean "ashburn"?)`,
		}},
		{"edges block list", "twilio:\n  domain: example\n  edges:\n    - dublin\n    - frankfrut\n    - dublin\nstore: {path: /x}\n", []string{
			`c.yaml:5: twilio.edges[1]: unknown edge "frankfrut" (hint: did you mean "frankfurt"?)`,
			`c.yaml:6: twilio.edges[2]: duplicate edge "dublin" (also twilio.edges[0]) (hint: each edge may appear once)`,
		}},
		{"roaming edge", "twilio:\n  domain: example\n  edges: [roaming]\nstore: {path: /x}\n", []string{
			`c.yaml:3: twilio.edges[0]: "roaming" is not available for SIP Domains (hint: list edges explicitly in order of preference, e.g. [ashburn, umatilla])`,
		}},
		{"empty edges", "twilio:\n  domain: example\n  edges: []\nstore: {path: /x}\n", []string{
			`c.yaml:3: twilio.edges: must list at least one edge (hint: list edges in order of preference, e.g. [ashburn, umatilla])`,
		}},
		{"edges scalar", "twilio:\n  domain: example\n  edges: ashburn\nstore: {path: /x}\n", []string{
			`c.yaml:3: twilio.edges: must be a list, not a value (hint: write a list, e.g. [ashburn])`,
		}},
		{"register_expires too low", "twilio:\n  domain: example\n  register_expires: 300s\nstore: {path: /x}\n", []string{
			`c.yaml:3: twilio.register_expires: 5m is outside Twilio's limits 600s..3600s (less gets 423 Interval Too Brief, more is cut to 3600s)`,
		}},
		{"timeout too long and no unit", "twilio:\n  domain: example\n  timeout: 40s\n  failback_hold: 60\nstore: {path: /x}\n", []string{
			`c.yaml:3: twilio.timeout: 40s must be above 0 and below 32s (SIP timer B) (hint: Twilio's own guidance is 4s)`,
			`c.yaml:4: twilio.failback_hold: "60" is not a duration (hint: add a unit, e.g. 60s)`,
		}},
		{"keepalive, transport, dns, move", "twilio:\n  domain: example\n  transport: sctp\n  dns_server: 127.0.0.1\n  keepalive: {method: ping}\n  move: {rate: 0, concurrency: x}\nstore: {path: /x}\n", []string{
			`c.yaml:3: twilio.transport: "sctp" is not one of udp, tcp, tls`,
			`c.yaml:4: twilio.dns_server: "127.0.0.1": not host:port (hint: e.g. "127.0.0.1:53")`,
			`c.yaml:5: twilio.keepalive.method: "ping" is not one of options, register, none`,
			`c.yaml:6: twilio.move.concurrency: "x" is not an integer`,
			`c.yaml:6: twilio.move.rate: must be at least 1 per second`,
		}},
		{"standby interval", "twilio:\n  domain: example\n  keepalive:\n    method: options\n    standby_interval: 200ms\nstore: {path: /x}\n", []string{
			`c.yaml:5: twilio.keepalive.standby_interval: 200ms is below 1s: every standby IP would be probed that often (hint: default 30s)`,
		}},
		{"interconnect edge without ranges", "twilio:\n  domain: example\n  edges: [ashburn-ix, umatilla]\nstore: {path: /x}\n", []string{
			`c.yaml:3: twilio.edges[0]: ashburn-ix is an Interconnect edge: Twilio publishes no address ranges for it, so the default twilio.signalling_cidrs would refuse every call it brings (hint: set twilio.signalling_cidrs (and media_cidrs) to your Interconnect's ranges, or use the public edge)`,
		}},
		{"signalling cidrs", "twilio:\n  domain: example\n  signalling_cidrs: [10.0.0.1/8, 10.1.2.3, nonsense]\nstore: {path: /x}\n", []string{
			`c.yaml:3: twilio.signalling_cidrs[0]: 10.0.0.1/8 has host bits set (hint: did you mean 10.0.0.0/8?)`,
			`c.yaml:3: twilio.signalling_cidrs[1]: "10.1.2.3" is not a CIDR (hint: for one address write 10.1.2.3/32)`,
			`c.yaml:3: twilio.signalling_cidrs[2]: "nonsense" is not a CIDR`,
		}},
		{"sip listen", minimal + "sip:\n  listen:\n    - udp:127.0.0.1:5060\n    - sctp:127.0.0.1:5060\n    - udp:127.0.0.1:70000\n    - udp:127.0.0.1:5060\n    - 127.0.0.1\n", []string{
			`c.yaml:8: sip.listen[1]: transport "sctp" is not one of udp, tcp, tls, ws, wss`,
			`c.yaml:9: sip.listen[2]: "udp:127.0.0.1:70000": port "70000" is not in 1..65535 (hint: e.g. "udp:127.0.0.1:5060")`,
			`c.yaml:10: sip.listen[3]: duplicate of sip.listen[0]`,
			`c.yaml:11: sip.listen[4]: "127.0.0.1" is not transport:host:port (hint: e.g. "udp:127.0.0.1:5060")`,
		}},
		{"sip empty listen and realm", minimal + "sip:\n  listen: []\n  realm: \"\"\n", []string{
			`c.yaml:6: sip.listen: must list at least one address (hint: e.g. ["udp:127.0.0.1:5060"])`,
			`c.yaml:7: sip.realm: must not be empty`,
		}},
		{"sip expires", minimal + "sip:\n  min_expires: 120s\n  default_expires: 60s\n  expires_spread: 60\n  max_contacts: 0\n  nonce_ttl: 0s\n", []string{
			`c.yaml:7: sip.default_expires: 1m is not between min_expires 2m and max_expires 1h`,
			`c.yaml:8: sip.expires_spread: 60 is not in 0..50 (hint: a percentage)`,
			`c.yaml:9: sip.max_contacts: must be at least 1`,
			`c.yaml:10: sip.nonce_ttl: must be positive`,
		}},
		{"sip min above max", minimal + "sip:\n  min_expires: 7200s\n  max_expires: 1.5s\n", []string{
			`c.yaml:6: sip.min_expires: 2h is above max_expires 1.5s`,
			`c.yaml:7: sip.max_expires: 1.5s is not a whole number of seconds (hint: SIP Expires counts whole seconds)`,
		}},
		{"sip lockout", minimal + "sip:\n  lockout:\n    failures: 3\n    window: 0s\n", []string{
			`c.yaml:8: sip.lockout.window: must be positive when lockout is enabled`,
		}},
		{"sip lockout user failures", minimal + "sip:\n  lockout:\n    user_failures: -1\n", []string{
			`c.yaml:7: sip.lockout.user_failures: must not be negative (hint: 0 disables the per-user rule)`,
		}},
		{"sip lockout table bound", minimal + "sip:\n  lockout:\n    max_sources: 10\n", []string{
			`c.yaml:7: sip.lockout.max_sources: must be at least 100 (hint: e.g. 100000 (about 150 bytes each))`,
		}},
		{"sip trusted proxies", minimal + "sip:\n  trusted_proxies: [10.0.0.0/8, not-a-cidr]\n", []string{
			`c.yaml:6: sip.trusted_proxies[1]: "not-a-cidr" is not a CIDR`,
		}},
		{"admin allowed hosts", minimal + "admin:\n  allowed_hosts: [\"ok.example\", \"evil.example:9060\"]\n", []string{
			`c.yaml:6: admin.allowed_hosts[1]: "evil.example:9060" is not a host name (hint: a host name without port, e.g. "edgewise.corp.example")`,
		}},
		{"sip connections", minimal + "sip:\n  connections: {max: 0, max_per_source: 0, setup_timeout: 10m, idle_timeout: 1s}\n", []string{
			`c.yaml:6: sip.connections.max: must be at least 1 (hint: e.g. 10000)`,
			`c.yaml:6: sip.connections.max_per_source: must be at least 1 (hint: phones behind one NAT share a source; e.g. 256)`,
			`c.yaml:6: sip.connections.setup_timeout: 10m is outside 1s..5m (hint: e.g. 20s)`,
			`c.yaml:6: sip.connections.idle_timeout: 1s is below 10s (hint: longer than a registration (max_expires), unless phones send keepalives)`,
		}},
		{"media bind", minimal + "media:\n  bind: relay.example.com\n", []string{
			`c.yaml:6: media.bind: "relay.example.com" is not an IP address (hint: an IP address of this host, e.g. 192.0.2.10, or 0.0.0.0 for every interface)`,
		}},
		{"sip public address", minimal + "sip:\n  public_address: \"1.2.3.4:99999\"\n", []string{
			`c.yaml:6: sip.public_address: "1.2.3.4:99999" is not host[:port] (hint: host or host:port, e.g. "203.0.113.10" or "sip.example.com:5060")`,
		}},
		{"sip listen on all interfaces needs public address", minimal + "sip:\n  listen: [\"udp:0.0.0.0:5060\"]\n", []string{
			`c.yaml:5: sip.public_address: required when the first listen address is 0.0.0.0 (hint: set the address Twilio can reach)`,
		}},
		{"log", minimal + "log:\n  level: loud\n  format: xml\n", []string{
			`c.yaml:6: log.level: unknown level "loud" (hint: one of debug, info, warn, error)`,
			`c.yaml:7: log.format: "xml" is not one of text, json`,
		}},
		{"section wrong kind", minimal + "sip: 5\n", []string{
			`c.yaml:5: sip: must be a mapping, not a value`,
		}},
		{"phones", minimal + `phones:
  - user: alice
    password: a
    twilio_password: b
  - user: alice
    password: a
    ha1: 0123456789abcdef0123456789abcdef
    twilio_password: b
  - user: bad user
    twilio_user: "x y"
  - user: dave
    ha1: abc
    twilio_password: ${EMPTY_SECRET}
  - password: p
    twilio_password: t
  - just a string
`, []string{
			`c.yaml:9: phones[1].user: duplicate user "alice" (also phones[0])`,
			`c.yaml:11: phones[1].ha1: give only one of password, password_file or ha1`,
			`c.yaml:13: phones[2].user: "bad user" may only contain [A-Za-z0-9._-]`,
			`c.yaml:13: phones[2].password: one of password, password_file or ha1 is required`,
			`c.yaml:13: phones[2].twilio_password: required (or twilio_password_file)`,
			`c.yaml:14: phones[2].twilio_user: "x y" may only contain [A-Za-z0-9._-]`,
			`c.yaml:16: phones[3].ha1: must be 32 hex digits (hint: hex MD5 of user:realm:password)`,
			`c.yaml:17: phones[3].twilio_password: environment variable EMPTY_SECRET is empty`,
			`c.yaml:18: phones[4].user: required`,
			`c.yaml:20: phones[5]: must be a mapping, not a value`,
		}},
		{"phone secrets", minimal + `phones:
  - user: alice
    password: ${UNSET_EDGEWISE_TEST_VAR}
    twilio_password: pre-${X}
  - user: bob
    password: x
    password_file: /nope
    twilio_password_file: /definitely/not/here
`, []string{
			`c.yaml:7: phones[0].password: environment variable UNSET_EDGEWISE_TEST_VAR is not set (hint: export it or use password_file)`,
			`c.yaml:8: phones[0].twilio_password: ${...} is only expanded when it is the whole value (hint: write the reference as the whole value, e.g. "${ALICE_PASSWORD}")`,
			`c.yaml:11: phones[1].password_file: give either password or password_file, not both`,
			`c.yaml:12: phones[1].twilio_password_file: cannot read: /definitely/not/here: no such file or directory`,
		}},
		{"admin not loopback", minimal + "admin:\n  listen: 0.0.0.0:9060\n", []string{
			`c.yaml:5: admin.token: required because admin.listen 0.0.0.0:9060 is not a loopback address (hint: set token: ${EDGEWISE_ADMIN_TOKEN} or token_file)`,
		}},
		{"admin bad listen", minimal + "admin:\n  listen: 9060\n", []string{
			`c.yaml:6: admin.listen: "9060": not host:port (hint: e.g. "127.0.0.1:9060")`,
		}},
		{"media", minimal + "media:\n  rtp_ports: 20001-20999\n  timeout: -1s\n", []string{
			`c.yaml:6: media.rtp_ports: 20001-20999 must start on an even port (hint: RTP uses the even port, RTCP the odd one above it)`,
			`c.yaml:7: media.timeout: must be positive`,
		}},
		{"media workers negative", minimal + "media:\n  workers: -1\n", []string{
			`c.yaml:6: media.workers: -1 is outside 0..256 (hint: 0 means one per CPU; more workers than CPUs only add wake-ups)`,
		}},
		{"media workers too many", minimal + "media:\n  workers: 1000\n", []string{
			`c.yaml:6: media.workers: 1000 is outside 0..256 (hint: 0 means one per CPU; more workers than CPUs only add wake-ups)`,
		}},
		{"media range", minimal + "media:\n  rtp_ports: 1000-70000\n", []string{
			`c.yaml:6: media.rtp_ports: 1000-70000 is outside 1024..65535`,
		}},
		{"media reversed and garbage", minimal + "media:\n  rtp_ports: 30000-20000\n", []string{
			`c.yaml:6: media.rtp_ports: 30000-20000: the end must be above the start`,
		}},
		{"media not a range", minimal + "media:\n  rtp_ports: lots\n", []string{
			`c.yaml:6: media.rtp_ports: "lots" is not a port range A-B (hint: e.g. "20000-29999")`,
		}},
		{"token", minimal + `token:
  listen: nowhere
  account_sid: AC123
  api_keys:
    - sid: SK0123456789abcdef0123456789abcdef
    - sid: SK0123456789abcdef0123456789abcdef
      secret: s
  twiml_app_sid: AX0123456789abcdef0123456789abcdef
  push_credential_sid: CR01
  ttl: 25h
  append_roaming: yes
  cors_origins: ["https://ok.example", "ftp://x", "https://x/path", "*"]
  identity_header: X-Forwarded-User
  rate_limit: {per_identity: 0}
`, []string{
			`c.yaml:6: token.listen: "nowhere": not host:port (hint: e.g. "127.0.0.1:9061")`,
			`c.yaml:7: token.account_sid: must be AC followed by 32 hex digits`,
			`c.yaml:9: token.api_keys[0].secret: required (or secret_file)`,
			`c.yaml:10: token.api_keys[1].sid: duplicate key SK0123456789abcdef0123456789abcdef (also token.api_keys[0])`,
			`c.yaml:12: token.twiml_app_sid: must be AP followed by 32 hex digits`,
			`c.yaml:13: token.push_credential_sid: must be CR followed by 32 hex digits`,
			`c.yaml:14: token.ttl: 25h is not in 1m..24h (Twilio's maximum token lifetime is 24h)`,
			`c.yaml:15: token.append_roaming: "yes" is not true or false`,
			`c.yaml:16: token.cors_origins[1]: "ftp://x" is not an origin (hint: scheme://host[:port], e.g. "https://app.example.com")`,
			`c.yaml:16: token.cors_origins[2]: "https://x/path" is not an origin (hint: scheme://host[:port], e.g. "https://app.example.com")`,
			`c.yaml:16: token.cors_origins[3]: "*" is not allowed: tokens are credentials (hint: list each page's origin, e.g. "https://phones.example.com")`,
			`c.yaml:17: token.identity_header: is never trusted without trusted_proxies (hint: list the proxies that set it in token.trusted_proxies)`,
			`c.yaml:18: token.rate_limit.per_identity: must be at least 1`,
		}},
		{"token region and identities", minimal + `token:
  account_sid: AC0123456789abcdef0123456789abcdef
  region: eu1
  api_keys: [{sid: SK0123456789abcdef0123456789abcdef, secret: s}]
  twiml_app_sid: AP0123456789abcdef0123456789abcdef
phones:
  - {user: anna.lee, password: a, twilio_password: t}
  - {user: anna-lee, password: b, twilio_password: t}
  - {user: anna_2E_lee, password: c, twilio_password: t}
`, []string{
			`c.yaml:7: token.region: unknown region "eu1" (hint: the region of the API keys and TwiML app: us1, ie1, au1)`,
			`c.yaml:13: phones[2].user: "anna_2E_lee" and "anna.lee" (line 11) would share the browser identity anna_2E_lee (hint: rename one of them)`,
		}},
		{"token empty mapping", minimal + "token: {}\n", []string{
			`c.yaml:5: token.account_sid: required`,
			`c.yaml:5: token.api_keys: at least one API key is required (hint: [{sid: SK..., secret: ${TWILIO_API_SECRET}}])`,
			`c.yaml:5: token.twiml_app_sid: required`,
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := Parse("c.yaml", []byte(tc.yaml))
			if cfg != nil {
				t.Errorf("got a config with problems")
			}
			got := problemsOf(t, err)
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("problems:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
		})
	}
}

func TestParseDefaults(t *testing.T) {
	cfg, err := Parse("c.yaml", []byte(minimal+"token: {account_sid: AC0123456789abcdef0123456789abcdef, twiml_app_sid: AP0123456789abcdef0123456789abcdef, api_keys: [{sid: SK0123456789abcdef0123456789abcdef, secret: s}]}\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := defaults()
	want.Path, want.Hash, want.Version = cfg.Path, cfg.Hash, cfg.Version
	want.Twilio.Domain = "example"
	want.Twilio.SignallingCIDRs = AllSignallingRanges()
	want.Twilio.MediaCIDRs = []netip.Prefix{netip.MustParsePrefix("168.86.128.0/18")}
	want.Store.Path = "/var/lib/edgewise/e.db"
	want.Token = tokenDefaults()
	want.Token.AccountSID = "AC0123456789abcdef0123456789abcdef"
	want.Token.TwiMLAppSID = "AP0123456789abcdef0123456789abcdef"
	want.Token.APIKeys = []APIKey{{SID: "SK0123456789abcdef0123456789abcdef", Secret: "s"}}
	want.Token.Region = "us1" // twilio.rest.region's default
	if d := Diff(want, cfg); len(d) != 0 {
		t.Errorf("differs from defaults in %v", d)
	}
	// Spot-check the documented values so a wrong defaults() cannot pass by itself.
	if cfg.Twilio.Timeout != 4*time.Second || cfg.Twilio.RegisterExpires != 600*time.Second ||
		cfg.SIP.ExpiresSpread != 10 || cfg.SIP.Lockout.Duration != 5*time.Minute ||
		cfg.Log.Level != slog.LevelInfo || cfg.Media.RTPPorts != (PortRange{20000, 29999}) ||
		cfg.Token.TTL != time.Hour || cfg.Admin.Listen != "127.0.0.1:9060" ||
		!reflect.DeepEqual(cfg.Twilio.Edges, []string{"ashburn", "umatilla"}) ||
		cfg.SIP.Listen[0].String() != "udp:127.0.0.1:5060" || cfg.SIP.Listen[1].String() != "tcp:127.0.0.1:5060" {
		t.Errorf("defaults: %+v", cfg)
	}
	if len(cfg.Twilio.SignallingCIDRs) != 8 {
		t.Errorf("signalling cidrs = %v, want every edge's range", cfg.Twilio.SignallingCIDRs)
	}
	if len(cfg.Hash) != 64 || cfg.Version != cfg.Hash[:12] {
		t.Errorf("hash %q version %q", cfg.Hash, cfg.Version)
	}
}

func TestParseNullKeepsDefaultsAndTokenAbsent(t *testing.T) {
	cfg, err := Parse("c.yaml", []byte(minimal+"sip:\n  realm:\ntoken:\n"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.SIP.Realm != "edgewise" || cfg.Token != nil {
		t.Errorf("realm %q token %v", cfg.SIP.Realm, cfg.Token)
	}
}

func TestParseValues(t *testing.T) {
	src := "store: {path: /x}\n" + `log: {level: warn, format: json}
sip:
  listen: ["udp:[::1]:5070", "ws:0.0.0.0:8080"]
  public_address: sip.example.com:5080
  lockout: {failures: 0}
twilio:
  domain: acme
  edges: [sydney, singapore-ix, au1]
  dns_server: 127.0.0.1:5353
  signalling_cidrs: [127.0.1.0/24]
phones:
  - user: alice
    ha1: 0123456789ABCDEF0123456789ABCDEF
    twilio_user: "+alice"
    twilio_password: t
`
	if _, err := Parse("c.yaml", []byte(src)); err == nil {
		t.Fatal(`twilio_user "+alice" accepted`)
	}
	src = strings.Replace(src, `"+alice"`, "alice.t", 1)
	cfg, err := Parse("c.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Log.Level != slog.LevelWarn || cfg.Log.Format != "json" {
		t.Errorf("log %+v", cfg.Log)
	}
	if got := cfg.SIP.Listen[0]; got != (Listen{"udp", "::1", 5070}) || got.String() != "udp:[::1]:5070" {
		t.Errorf("listen %+v %s", got, got)
	}
	if h, p := cfg.SIP.Advertise(); h != "sip.example.com" || p != 5080 {
		t.Errorf("advertise %s %d", h, p)
	}
	if lo := cfg.SIP.Lockout; lo.Failures != 0 || lo.UserFailures != 20 || !lo.Enabled() {
		t.Errorf("lockout %+v: failures 0 turns off only the per-source rule", lo)
	}
	if !reflect.DeepEqual(cfg.Twilio.Edges, []string{"sydney", "singapore-ix", "au1"}) {
		t.Errorf("edges %v", cfg.Twilio.Edges)
	}
	if got := cfg.Twilio.Host("sydney"); got != "acme.sip.sydney.twilio.com" {
		t.Errorf("host %s", got)
	}
	if !reflect.DeepEqual(cfg.Twilio.SignallingCIDRs, []netip.Prefix{netip.MustParsePrefix("127.0.1.0/24")}) {
		t.Errorf("cidrs %v", cfg.Twilio.SignallingCIDRs)
	}
	p, _ := cfg.Phone("alice")
	if p.HA1.Value() != "0123456789abcdef0123456789abcdef" || p.Password.IsSet() || p.TwilioUser != "alice.t" {
		t.Errorf("phone %#v", p)
	}
}

func TestSecrets(t *testing.T) {
	dir := t.TempDir()
	must(t, os.MkdirAll(filepath.Join(dir, "secrets"), 0o700))
	must(t, os.WriteFile(filepath.Join(dir, "secrets", "bob"), []byte("bob-from-file\n"), 0o600))
	must(t, os.WriteFile(filepath.Join(dir, "secrets", "bob-twilio"), []byte("BobTwilio1234\r\n"), 0o600))
	must(t, os.WriteFile(filepath.Join(dir, "admin"), []byte("admintok"), 0o600))
	must(t, os.WriteFile(filepath.Join(dir, "empty"), []byte("\n"), 0o600))
	t.Setenv("EW_ALICE", "alice-from-env")
	t.Setenv("EW_ALICE_T", "AliceTwilio123")
	src := `twilio: {domain: example}
sip: {realm: r}
store: {path: run/e.db}
admin: {listen: "0.0.0.0:9060", token_file: admin}
phones:
  - user: alice
    password: ${EW_ALICE}
    twilio_password: ${EW_ALICE_T}
  - user: bob
    password_file: secrets/bob
    twilio_password_file: ` + filepath.Join(dir, "secrets", "bob-twilio") + `
`
	path := filepath.Join(dir, "edgewise.yaml")
	must(t, os.WriteFile(path, []byte(src), 0o600))
	cfg, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := cfg.Phone("alice")
	b, _ := cfg.Phone("bob")
	if a.Password.Value() != "alice-from-env" || a.TwilioPassword.Value() != "AliceTwilio123" {
		t.Errorf("alice secrets not from env")
	}
	if b.Password.Value() != "bob-from-file" || b.TwilioPassword.Value() != "BobTwilio1234" {
		t.Errorf("bob secrets not from files (newline trimmed)")
	}
	if a.HA1.Value() != "2ab6107b210a007d5c4f554e4ba026e3" { // md5("alice:r:alice-from-env")
		t.Errorf("alice ha1 %s", a.HA1.Value())
	}
	if cfg.Admin.Token.Value() != "admintok" {
		t.Error("admin token_file not read")
	}
	if want := filepath.Join(dir, "run", "e.db"); cfg.Store.Path != want {
		t.Errorf("store path %q, want %q (relative to the config file)", cfg.Store.Path, want)
	}

	// No secret value may show up in String, %v, %#v, JSON or slog.
	var logBuf strings.Builder
	slog.New(slog.NewJSONHandler(&logBuf, nil)).Info("x", "phone", a, "cfg", cfg)
	slog.New(slog.NewTextHandler(&logBuf, nil)).Info("x", "phone", a, "token", cfg.Admin.Token)
	out := fmt.Sprintf("%v %+v %#v %s %v %s", cfg, *cfg, a, a.Password, b, cfg.String()) + logBuf.String()
	for _, secret := range []string{"alice-from-env", "AliceTwilio123", "bob-from-file", "BobTwilio1234", "admintok", a.HA1.Value()} {
		if strings.Contains(out, secret) {
			t.Errorf("secret %q leaked in output", secret)
		}
	}

	// An empty secret file and an unset variable are problems naming the file and the variable, not values.
	bad := strings.Replace(src, "token_file: admin", "token_file: empty", 1)
	bad = strings.Replace(bad, "${EW_ALICE}", "${EW_NOT_SET_ANYWHERE}", 1)
	_, err = Parse(path, []byte(bad))
	got := problemsOf(t, err)
	want := []string{
		path + `:4: admin.token_file: file empty is empty`,
		path + `:7: phones[0].password: environment variable EW_NOT_SET_ANYWHERE is not set (hint: export it or use password_file)`,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestMultipleProblemsAllReported(t *testing.T) {
	src := `sip:
  realm: ""
twilio:
  domain: ""
  edges: [ashburn, tokio, roaming]
  register_expires: 7200s
phones:
  - user: a
store: {}
media: {rtp_ports: 3-2}
`
	_, err := Parse("m.yaml", []byte(src))
	got := problemsOf(t, err)
	want := []string{
		`m.yaml:2: sip.realm: must not be empty`,
		`m.yaml:4: twilio.domain: required (hint: the first label of <domain>.sip.twilio.com)`,
		`m.yaml:5: twilio.edges[1]: unknown edge "tokio" (hint: did you mean "tokyo"?)`,
		`m.yaml:5: twilio.edges[2]: "roaming" is not available for SIP Domains (hint: list edges explicitly in order of preference, e.g. [ashburn, umatilla])`,
		`m.yaml:6: twilio.register_expires: 2h is outside Twilio's limits 600s..3600s (less gets 423 Interval Too Brief, more is cut to 3600s)`,
		`m.yaml:8: phones[0].password: one of password, password_file or ha1 is required`,
		`m.yaml:8: phones[0].twilio_password: required (or twilio_password_file)`,
		`m.yaml:9: store.path: required (hint: e.g. /var/lib/edgewise/edgewise.db)`,
		`m.yaml:10: media.rtp_ports: 3-2 is outside 1024..65535`,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestAnchorsAndAliases(t *testing.T) {
	src := `twilio:
  domain: example
  edges: &e [dublin, frankfurt]
store: {path: /x}
token:
  account_sid: AC0123456789abcdef0123456789abcdef
  twiml_app_sid: AP0123456789abcdef0123456789abcdef
  api_keys: [{sid: SK0123456789abcdef0123456789abcdef, secret: s}]
  cors_origins: *e
`
	_, err := Parse("a.yaml", []byte(src))
	got := problemsOf(t, err)
	want := []string{
		`a.yaml:3: token.cors_origins[0]: "dublin" is not an origin (hint: scheme://host[:port], e.g. "https://app.example.com")`,
		`a.yaml:3: token.cors_origins[1]: "frankfurt" is not an origin (hint: scheme://host[:port], e.g. "https://app.example.com")`,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "nope.yaml"))
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("err %v, want ErrNotExist", err)
	}
}

func TestExampleFiles(t *testing.T) {
	demo, err := Load("demo.yaml")
	if err != nil {
		t.Fatalf("demo.yaml: %v", err)
	}
	if demo.Twilio.Domain != "demo" || !reflect.DeepEqual(demo.Twilio.Edges, []string{"ashburn", "umatilla"}) ||
		demo.Twilio.DNSServer != "127.0.0.1:5353" || demo.SIP.Realm != "edgewise.demo" ||
		len(demo.Phones) != 3 || demo.Token == nil || demo.Media.RTPPorts != (PortRange{20000, 20999}) {
		t.Errorf("demo.yaml: %v", demo)
	}
	abs, _ := filepath.Abs(filepath.Join("..", "run", "edgewise.db"))
	if demo.Store.Path != abs {
		t.Errorf("demo store %q, want %q", demo.Store.Path, abs)
	}
	for _, p := range demo.Phones {
		if !p.TwilioPassword.IsSet() || !p.HA1.IsSet() {
			t.Errorf("demo phone %s lacks credentials", p.User)
		}
	}

	// The production example reads relative secret files: give it a
	// directory of its own with them, and the variables it names.
	data, err := os.ReadFile("production.example.yaml")
	must(t, err)
	dir := t.TempDir()
	must(t, os.MkdirAll(filepath.Join(dir, "secrets"), 0o700))
	for _, f := range []string{"bob.password", "bob.twilio-password", "twilio-api-key-old.secret"} {
		must(t, os.WriteFile(filepath.Join(dir, "secrets", f), []byte("x-"+f+"\n"), 0o600))
	}
	must(t, os.MkdirAll(filepath.Join(dir, "tls"), 0o700))
	cert, key := writePEMPair(t, filepath.Join(dir, "tls"), "edgewise")
	must(t, os.Rename(cert, filepath.Join(dir, "tls", "fullchain.pem")))
	must(t, os.Rename(key, filepath.Join(dir, "tls", "privkey.pem")))
	for _, v := range []string{"ALICE_PASSWORD", "ALICE_TWILIO_PASSWORD", "EDGEWISE_ADMIN_TOKEN", "TWILIO_API_KEY_SECRET"} {
		t.Setenv(v, "value-of-"+v)
	}
	t.Setenv("TWILIO_AUTH_TOKEN", "0123456789abcdef0123456789abcdef") // token.twiml: 32 hex digits
	prod, err := Parse(filepath.Join(dir, "production.example.yaml"), data)
	if err != nil {
		t.Fatalf("production.example.yaml: %v", err)
	}
	if len(prod.Token.APIKeys) != 2 || prod.Token.APIKeys[1].Secret.Value() != "x-twilio-api-key-old.secret" {
		t.Errorf("prod api keys %+v", prod.Token.APIKeys)
	}
	// Every key the schema knows appears in the production example.
	for _, key := range []string{"level", "format", "listen", "public_address", "realm", "min_expires", "max_expires",
		"default_expires", "expires_spread", "max_contacts", "nonce_ttl", "digest_algorithms", "qualify_interval", "failures", "window",
		"duration", "domain", "edges", "dns_server", "transport", "timeout", "register_expires", "failback_hold",
		"method", "interval", "rate", "concurrency", "signalling_cidrs", "user", "password", "password_file",
		"ha1", "twilio_user", "twilio_password", "twilio_password_file", "path", "token", "rtp_ports",
		"account_sid", "api_keys", "sid", "secret", "secret_file", "twiml_app_sid", "push_credential_sid", "ttl",
		"append_roaming", "cors_origins", "identity_header", "trusted_proxies", "rate_limit", "per_identity", "per_address",
		"user_failures", "max_sources", "bind", "calls", "max_concurrent", "max_per_user", "allowed_hosts",
		"connections", "max", "max_per_source", "setup_timeout", "idle_timeout", "workers"} {
		if !strings.Contains(string(data), key+":") {
			t.Errorf("production.example.yaml does not mention %s", key)
		}
	}
}

func TestListenAndPortRange(t *testing.T) {
	for _, s := range []string{"udp:127.0.0.1:5060", "tcp:[::1]:5061", "wss:localhost:443"} {
		l, err := ParseListen(s)
		if err != nil || l.String() != s {
			t.Errorf("ParseListen(%q) = %v, %v", s, l, err)
		}
	}
	for _, s := range []string{"", "udp", "udp:127.0.0.1", ":1.2.3.4:5", "udp::5060", "udp:1.2.3.4:0"} {
		if _, err := ParseListen(s); err == nil {
			t.Errorf("ParseListen(%q) accepted", s)
		}
	}
	if got := (PortRange{20000, 29999}).String(); got != "20000-29999" {
		t.Error(got)
	}
}

func TestLevenshteinAndHints(t *testing.T) {
	cases := []struct {
		a, b string
		d    int
	}{{"", "", 0}, {"a", "", 1}, {"ashbrun", "ashburn", 2}, {"kitten", "sitting", 3}}
	for _, c := range cases {
		if got := levenshtein(c.a, c.b); got != c.d {
			t.Errorf("levenshtein(%q,%q)=%d want %d", c.a, c.b, got, c.d)
		}
	}
	if _, h := checkEdge("Dublin"); h != `did you mean "dublin"?` {
		t.Errorf("hint %q", h)
	}
	if m, _ := checkEdge("sao-paulo-ix"); m != "" {
		t.Errorf("sao-paulo-ix refused: %s", m)
	}
	if len(KnownEdges) != 24 || !IsKnownEdge("us1") || IsKnownEdge("roaming") {
		t.Errorf("known edges %v", KnownEdges)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
