package configs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// TestTwilioRESTAndMediaEncryption covers twilio.rest (the REST access of
// `edgewise twilio check|sync`) and twilio.media_encryption.
func TestTwilioRESTAndMediaEncryption(t *testing.T) {
	t.Setenv("REST_SECRET", "abcDEF0123456789abcdef0123456789")
	t.Setenv("BAD_SECRET", "has-dashes_and spaces")
	dir := t.TempDir()
	caPath := filepath.Join(dir, "proxy-ca.pem")
	must(t, os.WriteFile(caPath, testCAPEM(t), 0o600))
	must(t, os.WriteFile(filepath.Join(dir, "not-pem.txt"), []byte("hello\n"), 0o600))
	must(t, os.WriteFile(filepath.Join(dir, "secret.txt"), []byte("abcDEF0123456789abcdef0123456789\n"), 0o600))

	const head = "twilio:\n  domain: example\n"
	const tail = "store: {path: /x}\n"
	problems := []struct {
		name, yaml string
		want       []string
	}{
		{"media_encryption unknown", head + "  media_encryption: aes\n" + tail, []string{
			`c.yaml:3: twilio.media_encryption: "aes" is not one of none, srtp`,
		}},
		{"media_encryption srtp over udp", head + "  media_encryption: srtp\n" + tail, []string{
			`c.yaml:3: twilio.media_encryption: srtp needs TLS signalling: its keys travel in the SDP, and Twilio refuses Secure Media calls over udp (hint: set twilio.transport: tls (and a tls: entry in sip.listen))`,
		}},
		{"rest sids and region", head + "  rest:\n    account_sid: AC12\n    api_key_sid: AK0123456789abcdef0123456789abcdef\n    api_key_secret: ${REST_SECRET}\n    region: us-1\n" + tail, []string{
			`c.yaml:4: twilio.rest.account_sid: must be AC followed by 32 hex digits`,
			`c.yaml:5: twilio.rest.api_key_sid: must be SK followed by 32 hex digits`,
			`c.yaml:7: twilio.rest.region: unknown region "us-1" (hint: did you mean "us1"?)`,
		}},
		{"rest key without secret", head + "  rest:\n    api_key_sid: SK0123456789abcdef0123456789abcdef\n" + tail, []string{
			`c.yaml:3: twilio.rest.api_key_secret: required with api_key_sid (hint: api_key_secret: ${TWILIO_API_KEY_SECRET} or api_key_secret_file)`,
		}},
		{"rest secret without key", head + "  rest:\n    api_key_secret: ${REST_SECRET}\n" + tail, []string{
			`c.yaml:3: twilio.rest.api_key_sid: required with api_key_secret (hint: the SK... SID of the key whose secret this is)`,
		}},
		{"rest secret with illegal characters", head + "  rest:\n    api_key_sid: SK0123456789abcdef0123456789abcdef\n    api_key_secret: ${BAD_SECRET}\n" + tail, []string{
			`c.yaml:5: twilio.rest.api_key_secret: must be letters and digits only (hint: copy the secret exactly as Twilio showed it)`,
		}},
		{"rest secret unset variable", head + "  rest:\n    api_key_sid: SK0123456789abcdef0123456789abcdef\n    api_key_secret: ${UNSET_EDGEWISE_REST_SECRET}\n" + tail, []string{
			`c.yaml:5: twilio.rest.api_key_secret: environment variable UNSET_EDGEWISE_REST_SECRET is not set (hint: export it or use api_key_secret_file)`,
		}},
		{"rest ca_file missing and not pem", head + "  rest:\n    ca_file: nope.pem\n" + tail, []string{
			`c.yaml:4: twilio.rest.ca_file: ` + filepath.Join(dir, "nope.pem") + `: no such file or directory`,
		}},
		{"rest ca_file not pem", head + "  rest:\n    ca_file: not-pem.txt\n" + tail, []string{
			`c.yaml:4: twilio.rest.ca_file: ` + filepath.Join(dir, "not-pem.txt") + ` holds no PEM certificate (hint: a PEM file of one or more CERTIFICATE blocks)`,
		}},
		{"rest unknown key", head + "  rest:\n    edge: dublin\n" + tail, []string{
			`c.yaml:4: twilio.rest.edge: unknown key (hint: known keys: account_sid, api_key_sid, api_key_secret, api_key_secret_file, region, ca_file)`,
		}},
	}
	for _, tc := range problems {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := Parse(filepath.Join(dir, "c.yaml"), []byte(tc.yaml))
			if cfg != nil {
				t.Fatal("got a config with problems")
			}
			got := problemsOf(t, err)
			for i := range got {
				got[i] = strings.TrimPrefix(got[i], dir+string(filepath.Separator))
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("problems:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
		})
	}

	t.Run("defaults", func(t *testing.T) {
		cfg, err := Parse(filepath.Join(dir, "c.yaml"), []byte("log: {level: info}\n"+head+tail))
		must(t, err)
		want := TwilioREST{Region: "us1", Line: 2}
		if cfg.Twilio.REST != want || cfg.Twilio.MediaEncryption != "none" {
			t.Errorf("rest %+v media_encryption %q, want %+v and none", cfg.Twilio.REST, cfg.Twilio.MediaEncryption, want)
		}
	})
	t.Run("values", func(t *testing.T) {
		y := head + "  media_encryption: none\n  rest:\n    account_sid: AC0123456789abcdef0123456789abcdef\n" +
			"    api_key_sid: SK0123456789abcdef0123456789abcdef\n    api_key_secret_file: secret.txt\n" +
			"    region: ie1\n    ca_file: proxy-ca.pem\n" + tail
		cfg, err := Parse(filepath.Join(dir, "c.yaml"), []byte(y))
		must(t, err)
		want := TwilioREST{
			AccountSID: "AC0123456789abcdef0123456789abcdef", APIKeySID: "SK0123456789abcdef0123456789abcdef",
			APIKeySecret: "abcDEF0123456789abcdef0123456789", Region: "ie1", CAFile: caPath, Line: 4,
		}
		if cfg.Twilio.REST != want {
			t.Errorf("rest %+v, want %+v", cfg.Twilio.REST, want)
		}
		if strings.Contains(cfg.String(), "abcDEF") {
			t.Errorf("config summary shows the secret: %s", cfg)
		}
	})
	t.Run("phones know their line", func(t *testing.T) {
		y := head + tail + "phones:\n  - user: alice\n    password: a\n    twilio_password: t\n\n  - {user: bob, password: b, twilio_password: t}\n"
		cfg, err := Parse(filepath.Join(dir, "c.yaml"), []byte(y))
		must(t, err)
		if cfg.Phones[0].Line != 5 || cfg.Phones[1].Line != 9 {
			t.Errorf("phone lines %d, %d; want 5, 9", cfg.Phones[0].Line, cfg.Phones[1].Line)
		}
	})
	t.Run("production example documents every key", func(t *testing.T) {
		data, err := os.ReadFile("production.example.yaml")
		must(t, err)
		for _, key := range []string{"media_encryption", "rest", "account_sid", "api_key_sid", "api_key_secret", "region", "ca_file"} {
			if !strings.Contains(string(data), key+":") {
				t.Errorf("production.example.yaml does not mention %s", key)
			}
		}
	})
}

// testCAPEM is a throwaway self-signed CA certificate in PEM.
func testCAPEM(t *testing.T) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "proxy CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	must(t, err)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}
