package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgewise-sip/edgewise/configs"
)

func TestRunDispatch(t *testing.T) {
	cases := []struct {
		args     []string
		wantCode int
		wantOut  string
	}{
		{nil, 2, "usage"},
		{[]string{"frobnicate"}, 2, `unknown command "frobnicate"`},
		{[]string{"version"}, 0, "edgewise dev"},
		{[]string{"help"}, 0, "token serve"},
		{[]string{"token"}, 2, "usage: edgewise token serve"},
		{[]string{"check", "-c", "/nonexistent/edgewise.yaml"}, 1, "/nonexistent/edgewise.yaml"},
		{[]string{"check", "-bogus"}, 2, "flag provided but not defined"},
	}
	for _, tc := range cases {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			var out bytes.Buffer
			if code := run(tc.args, &out, &out); code != tc.wantCode {
				t.Fatalf("exit %d, want %d; output:\n%s", code, tc.wantCode, out.String())
			}
			if !strings.Contains(out.String(), tc.wantOut) {
				t.Fatalf("output lacks %q:\n%s", tc.wantOut, out.String())
			}
		})
	}
}

// parse builds a config from the demo file with edits applied.
func parse(t *testing.T, edit func(string) string) *configs.Config {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "..", "configs", "demo.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "edgewise.yaml")
	cfg, err := configs.Parse(path, []byte(edit(string(data))))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestPhoneDirectory(t *testing.T) {
	cfg := parse(t, func(s string) string {
		// carol keeps only her HA1: MD5("carol:edgewise.demo:carol-secret").
		return strings.Replace(s, "    password: carol-secret\n", "    ha1: 2552ad82ba993899cfe44fdd900e2fbb\n", 1)
	})
	dir := phoneDirectory{cfg}
	cases := []struct {
		user, password string
		want           bool
	}{
		{"alice", "alice-secret", true},
		{"alice", "alice-secret ", false},
		{"alice", "", false},
		{"mallory", "alice-secret", false},
		{"carol", "carol-secret", true},
		{"carol", "carol-secre", false},
	}
	for _, tc := range cases {
		if got := dir.CheckPassword(tc.user, tc.password); got != tc.want {
			t.Errorf("CheckPassword(%q, %q) = %v, want %v", tc.user, tc.password, got, tc.want)
		}
	}
}

func TestSettingsFromConfig(t *testing.T) {
	cfg := parse(t, func(s string) string {
		s = strings.Replace(s, `listen: ["udp:127.0.0.1:5060", "tcp:127.0.0.1:5060", "ws:127.0.0.1:8080"]`, `listen: ["udp:0.0.0.0:5060"]`, 1)
		return strings.Replace(s, "public_address: 127.0.0.1", "public_address: 192.0.2.10:5080", 1)
	})
	m := mediaSettings(cfg)
	if m.LocalIP.String() != "192.0.2.10" || m.PublicIP.String() != "192.0.2.10" {
		t.Errorf("media on a wildcard listener: local %v public %v, want the public address for both", m.LocalIP, m.PublicIP)
	}
	// The demo's edgesim answers media from its edge IPs: only those reach
	// leg B before it latches.
	if fmt.Sprint(m.AllowB) != "[127.0.1.0/24 127.0.2.0/24]" {
		t.Errorf("media from Twilio allowed from %v, want the demo's media_cidrs", m.AllowB)
	}
	if m.Ports.Min != cfg.Media.RTPPorts.Min || m.Ports.Max != cfg.Media.RTPPorts.Max {
		t.Errorf("media ports %+v, want %v", m.Ports, cfg.Media.RTPPorts)
	}
	if u := upstreamSettings(cfg); u.PublicAddress != "192.0.2.10:5080" || u.ContactTransport != "udp" {
		t.Errorf("upstream contact %s over %s", u.PublicAddress, u.ContactTransport)
	}
	ts := tokenSettings(cfg)
	if strings.Join(ts.Edges, ",") != strings.Join(cfg.Twilio.Edges, ",") || len(ts.Keys) != len(cfg.Token.APIKeys) {
		t.Errorf("token settings do not follow the config: edges %v keys %d", ts.Edges, len(ts.Keys))
	}
	for _, p := range cfg.Phones {
		c := phoneCredentials(cfg)[p.User]
		if c.Password == "" && c.HA1 == "" {
			t.Errorf("phone %s has no credential for the registrar", p.User)
		}
	}
}

// TestMediaBind: the relay binds the SIP listener's address, or media.bind,
// and every interface only when SIP listens on every interface.
func TestMediaBind(t *testing.T) {
	tests := []struct {
		name     string
		old, new string
		wantBind string
	}{
		{"the SIP listener's address", "", "", "127.0.0.1"},
		{"media.bind", "media:\n", "media:\n  bind: 127.0.0.9\n", "127.0.0.9"},
		{"SIP on every interface", `listen: ["udp:127.0.0.1:5060", "tcp:127.0.0.1:5060", "ws:127.0.0.1:8080"]`, `listen: ["udp:0.0.0.0:5060"]`, "0.0.0.0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := parse(t, func(s string) string { return strings.Replace(s, tt.old, tt.new, 1) })
			if got := mediaSettings(cfg).BindIP.String(); got != tt.wantBind {
				t.Fatalf("relay binds %s, want %s", got, tt.wantBind)
			}
		})
	}
}

// TestCheckRefusesWhatServeRefuses: configs that `serve` used to refuse only
// once it started (a listen host that is a name, an SDP address that is a
// name, a wildcard token origin) are refused by `check` with FILE:LINE, and
// by `serve` the same way before it opens anything.
func TestCheckRefusesWhatServeRefuses(t *testing.T) {
	tests := []struct {
		name, old, new, want string
	}{
		{"listen host is a name", `"udp:127.0.0.1:5060"`, `"udp:localhost:5060"`,
			`:12: sip.listen[0]: host "localhost" is not an IP address`},
		{"SDP address is a name", `listen: ["udp:127.0.0.1:5060", "tcp:127.0.0.1:5060", "ws:127.0.0.1:8080"]
  public_address: 127.0.0.1`, `listen: ["udp:0.0.0.0:5060"]
  public_address: sip.example.com`, `:13: sip.public_address: must be an IP address when the first listen address is 0.0.0.0`},
		{"wildcard token origin", "token:\n", "token:\n  cors_origins: [\"*\"]\n", `token.cors_origins[0]: "*" is not allowed`},
		{"relay bound to a name", "media:\n", "media:\n  bind: relay.example.com\n", `media.bind: "relay.example.com" is not an IP address`},
	}
	data, err := os.ReadFile(filepath.Join("..", "..", "configs", "demo.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := strings.Replace(string(data), tt.old, tt.new, 1)
			if src == string(data) {
				t.Fatalf("%q not in demo.yaml", tt.old)
			}
			path := filepath.Join(t.TempDir(), "edgewise.yaml")
			if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
				t.Fatal(err)
			}
			for _, cmd := range []string{"check", "serve"} {
				var out bytes.Buffer
				if code := run([]string{cmd, "-c", path}, &out, &out); code != 1 {
					t.Fatalf("%s exited %d, want 1:\n%s", cmd, code, out.String())
				}
				if !strings.Contains(out.String(), path) || !strings.Contains(out.String(), tt.want) {
					t.Fatalf("%s output lacks FILE:LINE %q:\n%s", cmd, tt.want, out.String())
				}
			}
		})
	}
}
