package edgesim

import (
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"
)

// repoFile finds a file relative to the repository root.
func repoFile(t *testing.T, rel string) string {
	t.Helper()
	_, here, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(here), "..", "..", rel)
}

func TestDemoConfig(t *testing.T) {
	t.Parallel()
	cfg, err := LoadConfig(repoFile(t, "configs/edgesim.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		Domain: "demo",
		Edges: []EdgeConfig{
			{Name: "ashburn", IPs: []string{"127.0.1.1", "127.0.1.2", "127.0.1.3"}, Port: 5060, TLSPort: 5061},
			{Name: "umatilla", IPs: []string{"127.0.2.1", "127.0.2.2", "127.0.2.3"}, Port: 5060, TLSPort: 5061},
		},
		Transports: []string{"udp", "tcp"},
		DNS:        DNSConfig{Listen: "127.0.0.1:5353", TTL: 600},
		Control:    ControlConfig{Listen: "127.0.0.1:9070"},
		Credentials: []Credential{
			{User: "alice", Password: "AliceTwilio123"},
			{User: "bob", Password: "BobTwilio1234"},
			{User: "carol", Password: "CarolTwilio123"},
		},
		Rules:     Rules{MinExpires: 600, MaxExpires: 3600, MaxRegistrations: 10, RegisterRate: 5},
		SlowDelay: 5 * time.Second,
		Calls:     CallsConfig{SlowAnswer: 3 * time.Second, RingTimeout: 60 * time.Second, MaxCalls: 1000, History: 1000},
	}
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("demo config =\n%+v\nwant\n%+v", cfg, want)
	}
}

func TestParseConfigDefaults(t *testing.T) {
	t.Parallel()
	cfg, err := ParseConfig([]byte("domain: acme\nedges: [{name: ashburn, ips: [127.0.0.5]}]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(cfg.Rules, Rules{600, 3600, 10, 5}) || cfg.DNS.TTL != 600 ||
		cfg.SlowDelay != 5*time.Second || !reflect.DeepEqual(cfg.Transports, []string{"udp", "tcp"}) {
		t.Errorf("defaults: %+v", cfg)
	}
}

func TestParseConfigErrors(t *testing.T) {
	t.Parallel()
	const ok = "domain: demo\nedges: [{name: ashburn, ips: [127.0.0.5]}]\n"
	for _, tc := range []struct {
		name, yaml string
		errHas     []string
	}{
		{"empty", "", []string{"config is empty"}},
		{"unknown key", ok + "edgez: []\n", []string{"line 3", "field edgez not found"}},
		{"unknown nested key", "domain: demo\nedges: [{name: ashburn, ips: [127.0.0.5], weight: 3}]\n", []string{"field weight not found"}},
		{"duration as number", ok + "slow_delay: 5\n", []string{"line 3", "into time.Duration"}},
		{"two documents", ok + "---\n" + ok, []string{"more than one YAML document"}},
		{"everything wrong", `
domain: Demo.Com
edges:
  - {name: ashburn, ips: [127.0.0.5, 10.0.0.1, nope], port: 70000}
  - {name: ashburn, ips: [127.0.0.5]}
  - {name: umatilla}
transports: [udp, sctp]
dns: {listen: "0.0.0.0:53", ttl: -1}
control: {listen: "localhost"}
credentials:
  - {user: alice, password: short}
  - {user: alice, password: alllowercase123}
  - {user: "", password: NoDigitsHereAtAll}
rules: {min_expires: 700, max_expires: 600, max_registrations: -1, register_rate: -2}
slow_delay: -1s
calls: {slow_answer: -1s, ring_timeout: 11m, max_calls: -1, history: -5}
`, []string{
			`domain: "Demo.Com" is not a DNS label`,
			`edges[0].ips[1]: 10.0.0.1 is not a loopback address`,
			`edges[0].ips[2]: "nope" is not an IP address`,
			`edges[0].port: 70000 is out of range`,
			`edges[1].name: duplicate edge "ashburn"`,
			`edges[1].ips[0]: 127.0.0.5 is already used by edge "ashburn"`,
			`edges[2].ips: at least one IP is required`,
			`transports[1]: "sctp" is not supported (udp, tcp, tls)`,
			`dns.listen: "0.0.0.0:53": host must be a loopback address`,
			`dns.ttl: -1 must not be negative`,
			`control.listen: "localhost" is not host:port`,
			`credentials[0].password: needs at least 12 characters, upper and lower case`,
			`credentials[1].user: duplicate user "alice"`,
			`credentials[1].password: needs upper and lower case`,
			`credentials[2].user: "" is empty`,
			`credentials[2].password: needs a digit`,
			`rules.max_expires: 600 is below min_expires 700`,
			`rules.max_registrations: -1 must be at least 1`,
			`rules.register_rate: -2 must be at least 1`,
			`slow_delay: -1s must be positive`,
			`calls.slow_answer: -1s is out of range`,
			`calls.ring_timeout: 11m0s is out of range`,
			`calls.max_calls: -1 must be at least 1`,
			`calls.history: -5 must be at least 1`,
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseConfig([]byte(tc.yaml))
			if err == nil {
				t.Fatal("no error")
			}
			for _, want := range tc.errHas {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error lacks %q:\n%v", want, err)
				}
			}
		})
	}
}

func TestLoadConfigNamesFile(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "sim.yaml")
	if err := os.WriteFile(path, []byte("domain: demo\nbogus: 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := LoadConfig(path)
	if err == nil || !strings.HasPrefix(err.Error(), path+": ") {
		t.Errorf("error %v does not start with the file name", err)
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	t.Parallel()
	if _, err := New(Config{Domain: "demo"}, nil); err == nil || !strings.Contains(err.Error(), "at least one edge") {
		t.Errorf("New with no edges: %v", err)
	}
}
