package configs

import (
	"crypto/x509"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// TestTwilioCAFile covers twilio.ca_file: the CAs trusted for SIP over TLS
// toward Twilio besides the system roots.
func TestTwilioCAFile(t *testing.T) {
	dir := t.TempDir()
	caPath := filepath.Join(dir, "edge-ca.pem")
	must(t, os.WriteFile(caPath, testCAPEM(t), 0o600))
	must(t, os.WriteFile(filepath.Join(dir, "not-pem.txt"), []byte("hello\n"), 0o600))
	must(t, os.Mkdir(filepath.Join(dir, "a-dir"), 0o700))

	const head = "twilio:\n  domain: example\n  transport: tls\n"
	const tail = "store: {path: /x}\n"
	for _, tc := range []struct {
		name, yaml string
		want       []string
	}{
		{"missing", head + "  ca_file: nope.pem\n" + tail, []string{
			`c.yaml:4: twilio.ca_file: ` + filepath.Join(dir, "nope.pem") + `: no such file or directory`,
		}},
		{"not pem", head + "  ca_file: not-pem.txt\n" + tail, []string{
			`c.yaml:4: twilio.ca_file: ` + filepath.Join(dir, "not-pem.txt") + ` holds no PEM certificate (hint: a PEM file of one or more CERTIFICATE blocks)`,
		}},
		{"a directory", head + "  ca_file: a-dir\n" + tail, nil},
		{"not a string", head + "  ca_file: [a, b]\n" + tail, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := Parse(filepath.Join(dir, "c.yaml"), []byte(tc.yaml))
			if cfg != nil {
				t.Fatal("got a config with problems")
			}
			got := problemsOf(t, err)
			for i := range got {
				got[i] = strings.TrimPrefix(got[i], dir+string(filepath.Separator))
			}
			if tc.want == nil {
				// The wording comes from the OS or the YAML decoder: the
				// line and the field are what must be right.
				if len(got) != 1 || !strings.HasPrefix(got[0], "c.yaml:4: twilio.ca_file: ") {
					t.Fatalf("problems %q, want one at c.yaml:4 twilio.ca_file", got)
				}
				return
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("problems:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
		})
	}

	t.Run("default", func(t *testing.T) {
		cfg, err := Parse(filepath.Join(dir, "c.yaml"), []byte(head+tail))
		must(t, err)
		if cfg.Twilio.CAFile != "" {
			t.Errorf("ca_file = %q, want empty (system roots only)", cfg.Twilio.CAFile)
		}
	})
	t.Run("relative to the config file", func(t *testing.T) {
		cfg, err := Parse(filepath.Join(dir, "c.yaml"), []byte(head+"  ca_file: edge-ca.pem\n"+tail))
		must(t, err)
		if cfg.Twilio.CAFile != caPath {
			t.Errorf("ca_file = %q, want %q", cfg.Twilio.CAFile, caPath)
		}
		pool := x509.NewCertPool()
		if err := AppendCAFile(pool, cfg.Twilio.CAFile); err != nil || pool.Equal(x509.NewCertPool()) {
			t.Fatalf("AppendCAFile = %v, pool empty %v", err, pool.Equal(x509.NewCertPool()))
		}
	})
	t.Run("reloadable", func(t *testing.T) {
		a, err := Parse(filepath.Join(dir, "c.yaml"), []byte(head+tail))
		must(t, err)
		b, err := Parse(filepath.Join(dir, "c.yaml"), []byte(head+"  ca_file: edge-ca.pem\n"+tail))
		must(t, err)
		changed := Diff(a, b)
		if !reflect.DeepEqual(changed, []string{"twilio.ca_file"}) || len(NeedsRestart(changed)) != 0 {
			t.Errorf("changed %v, needs restart %v; want twilio.ca_file applied without restart", changed, NeedsRestart(changed))
		}
	})
	t.Run("production example documents it", func(t *testing.T) {
		data, err := os.ReadFile("production.example.yaml")
		must(t, err)
		twilio := string(data)[strings.Index(string(data), "\ntwilio:"):]
		twilio = twilio[:strings.Index(twilio, "\n  rest:")]
		if !strings.Contains(twilio, "\n  ca_file:") {
			t.Error("production.example.yaml does not document twilio.ca_file")
		}
	})
}
