package integration

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgewise-sip/edgewise/test/kit"
)

// writeCert writes a self-signed certificate (its own CA) for ip and its
// key into dir, PEM.
func writeCert(t *testing.T, dir, ip string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: ip},
		IPAddresses:           []net.IP{net.ParseIP(ip)},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	writeFile(t, certFile, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})))
	writeFile(t, keyFile, string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})))
	return certFile, keyFile
}

// TestBaresipOverTLS: baresip registers over SIP/TLS (RFC 3261 §26) to
// edgewise's tls: listener, and a call from Twilio (edgesim) reaches it over
// that same TLS connection; it answers and media flows.
func TestBaresipOverTLS(t *testing.T) {
	s := startSim(t)
	var cert string
	d := startDaemon(t, func(ip, dir string) string {
		c, k := writeCert(t, dir, ip)
		cert = c
		cfg := upstreamConfig(s, "")(ip, dir)
		old := fmt.Sprintf(`listen: ["udp:%[1]s:5060", "tcp:%[1]s:5060"]`, ip)
		if !strings.Contains(cfg, old) {
			t.Fatalf("daemonConfig changed its listen line: %s", old)
		}
		cfg = strings.Replace(cfg, old, fmt.Sprintf(`listen: ["udp:%[1]s:5060", "tcp:%[1]s:5060", "tls:%[1]s:5061"]
  tls: {cert_file: %[2]s, key_file: %[3]s}`, ip, c, k), 1)
		return cfg
	})
	client := nextIP(t)
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "config"), fmt.Sprintf(`poll_method epoll
sip_listen %s:5061
sip_cafile %s
audio_player aufile,/dev/null
audio_source ausine,440
ausrc_srate 48000
ausrc_channels 2
auplay_srate 48000
module_path /usr/lib/baresip/modules
module g711.so
module ausine.so
module aufile.so
module menu.so
module_tmp uuid.so
module_tmp account.so
`, client, cert))
	writeFile(t, filepath.Join(dir, "accounts"),
		fmt.Sprintf("<sip:alice@%s:5061;transport=tls>;auth_pass=alice-secret;regint=600;answermode=auto;audio_codecs=PCMU\n", d.ip))
	startProc(t, requireTool(t, "baresip"), "-f", dir)

	// baresip's TLS connection leaves from an ephemeral port (its Contact
	// names client:5061): the binding is found by transport and user agent.
	kit.WaitFor(t, 15*time.Second, "baresip registered over TLS", func() bool {
		for _, c := range browserContacts(t, d, "alice") {
			if c.Transport == "tls" && strings.Contains(c.UserAgent, "baresip") {
				return true
			}
		}
		return false
	})
	kit.WaitFor(t, 10*time.Second, "alice registered upstream", func() bool { return len(s.edgesOf(t, "alice")) > 0 })

	placed := s.placeCall(t, "alice")
	kit.WaitFor(t, 10*time.Second, "the call answered by baresip over TLS", func() bool { return s.call(t, placed.ID).State == "answered" })
	checkRTPFlow(t, d)
	s.hangUp(t, placed.ID)
	s.onlyCall(t, "edgesim to see the call ended", func(c simCall) bool { return c.State == "ended" && c.EndedBy == "edgesim" })
	noCallsLeft(t, d)
}
