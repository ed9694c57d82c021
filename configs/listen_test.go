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

// writePEMPair writes a self-signed certificate and its key to dir.
func writePEMPair(t *testing.T, dir, name string) (cert, key string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	cert, key = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	os.WriteFile(cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(key, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600)
	return cert, key
}

func TestWebSocketListen(t *testing.T) {
	dir := t.TempDir()
	writePEMPair(t, dir, "a")
	_, otherKey := writePEMPair(t, dir, "b")
	path := filepath.Join(dir, "c.yaml")

	t.Run("ws and wss", func(t *testing.T) {
		src := minimal + `sip:
  listen: ["udp:127.0.0.1:5060", "ws:127.0.0.1:8080", "wss:127.0.0.1:8443"]
  tls: {cert_file: a.crt, key_file: a.key}
`
		cfg, err := Parse(path, []byte(src))
		if err != nil {
			t.Fatal(err)
		}
		want := []Listen{{"udp", "127.0.0.1", 5060}, {"ws", "127.0.0.1", 8080}, {"wss", "127.0.0.1", 8443}}
		if !reflect.DeepEqual(cfg.SIP.Listen, want) {
			t.Errorf("listen %+v", cfg.SIP.Listen)
		}
		// Relative to the config file, like every other file.
		if cfg.SIP.TLS.CertFile != filepath.Join(dir, "a.crt") || cfg.SIP.TLS.KeyFile != filepath.Join(dir, "a.key") {
			t.Errorf("tls %+v", cfg.SIP.TLS)
		}
		old := *cfg
		if _, err := Parse(path, []byte(strings.Replace(src, "a.crt", "b.crt", 1))); err == nil {
			t.Fatal("mismatched pair accepted")
		}
		src3 := strings.Replace(src, "cert_file: a.crt, key_file: a.key", "cert_file: "+filepath.Join(dir, "a.crt")+", key_file: "+filepath.Join(dir, "a.key"), 1)
		cfg3, err := Parse(path, []byte(src3))
		if err != nil {
			t.Fatal(err)
		}
		if d := Diff(&old, cfg3); len(d) != 0 {
			t.Errorf("same files by another name differ: %v", d)
		}
	})

	for _, tc := range []struct {
		name string
		sip  string
		want []string
	}{
		{"wss without certificate", `  listen: ["udp:127.0.0.1:5060", "wss:127.0.0.1:8443"]`, []string{
			path + `:5: sip.tls.cert_file: required by the wss: listener sip.listen[1] (hint: a PEM certificate chain, e.g. /etc/edgewise/tls/fullchain.pem)`,
			path + `:5: sip.tls.key_file: required by the wss: listener sip.listen[1] (hint: the PEM private key of cert_file, e.g. /etc/edgewise/tls/privkey.pem)`,
		}},
		{"tls without certificate", `  listen: ["udp:127.0.0.1:5060", "tls:127.0.0.1:5061"]`, []string{
			path + `:5: sip.tls.cert_file: required by the tls: listener sip.listen[1] (hint: a PEM certificate chain, e.g. /etc/edgewise/tls/fullchain.pem)`,
			path + `:5: sip.tls.key_file: required by the tls: listener sip.listen[1] (hint: the PEM private key of cert_file, e.g. /etc/edgewise/tls/privkey.pem)`,
		}},
		{"missing files", `  listen: ["udp:127.0.0.1:5060", "wss:127.0.0.1:8443"]
  tls:
    cert_file: nope.crt
    key_file: nope.key`, []string{
			path + `:8: sip.tls.cert_file: ` + filepath.Join(dir, "nope.crt") + `: no such file or directory`,
			path + `:9: sip.tls.key_file: ` + filepath.Join(dir, "nope.key") + `: no such file or directory`,
		}},
		{"key of another certificate", `  listen: ["udp:127.0.0.1:5060", "wss:127.0.0.1:8443"]
  tls:
    cert_file: a.crt
    key_file: ` + otherKey, []string{
			path + `:8: sip.tls.cert_file: ` + filepath.Join(dir, "a.crt") + ` and ` + otherKey + ` do not load as a certificate and key: tls: private key does not match public key (hint: cert_file must hold the certificate chain (leaf first) and key_file its private key, both PEM)`,
		}},
		{"websocket first", `  listen: ["ws:127.0.0.1:8080", "udp:127.0.0.1:5060"]`, []string{
			path + `:6: sip.listen[0]: ws:127.0.0.1:8080 cannot come first: the first address is the one Twilio is told to reach (hint: list a udp or tcp address first, e.g. ["udp:0.0.0.0:5060", "ws:127.0.0.1:8080"])`,
		}},
		{"unknown tls key", `  listen: ["udp:127.0.0.1:5060"]
  tls: {cert: a.crt}`, []string{
			path + `:7: sip.tls.cert: unknown key (hint: known keys: cert_file, key_file)`,
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(path, []byte(minimal+"sip:\n"+tc.sip+"\n"))
			if got := problemsOf(t, err); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("problems\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
		})
	}
}

// The listeners' certificate files are re-read (and may move) on reload;
// the listeners themselves need a restart.
func TestTLSCertificateReloads(t *testing.T) {
	if got := NeedsRestart([]string{"sip.tls.cert_file", "sip.tls.key_file", "sip.listen"}); !reflect.DeepEqual(got, []string{"sip.listen"}) {
		t.Errorf("NeedsRestart = %v", got)
	}
}
