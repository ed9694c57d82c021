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
	d, cert := startTLSDaemon(t, upstreamConfig(s, ""))
	startBaresipTLS(t, d, cert, "")
	kit.WaitFor(t, 10*time.Second, "alice registered upstream", func() bool { return len(s.edgesOf(t, "alice")) > 0 })

	placed := s.placeCall(t, "alice")
	kit.WaitFor(t, 10*time.Second, "the call answered by baresip over TLS", func() bool { return s.call(t, placed.ID).State == "answered" })
	checkRTPFlow(t, d)
	s.hangUp(t, placed.ID)
	s.onlyCall(t, "edgesim to see the call ended", func(c simCall) bool { return c.State == "ended" && c.EndedBy == "edgesim" })
	noCallsLeft(t, d)
}

// startTLSDaemon starts edgewise with cfg plus a tls: listener on 5061
// whose self-signed certificate it returns.
func startTLSDaemon(t *testing.T, cfg func(ip, dir string) string) (*daemon, string) {
	t.Helper()
	var cert string
	d := startDaemon(t, func(ip, dir string) string {
		c, k := writeCert(t, dir, ip)
		cert = c
		out := cfg(ip, dir)
		old := fmt.Sprintf(`listen: ["udp:%[1]s:5060", "tcp:%[1]s:5060"]`, ip)
		if !strings.Contains(out, old) {
			t.Fatalf("daemonConfig changed its listen line: %s", old)
		}
		return strings.Replace(out, old, fmt.Sprintf(`listen: ["udp:%[1]s:5060", "tcp:%[1]s:5060", "tls:%[1]s:5061"]
  tls: {cert_file: %[2]s, key_file: %[3]s}`, ip, c, k), 1)
	})
	return d, cert
}

// startBaresipTLS runs baresip as alice over TLS to d, trusting cert,
// answering every call; mediaenc (e.g. srtp-mand) sets its SRTP, and the
// commands of dial (-e) run once it has started. It returns when alice's
// TLS binding is in place.
func startBaresipTLS(t *testing.T, d *daemon, cert, mediaenc string, dial ...string) {
	t.Helper()
	client := nextIP(t)
	dir := t.TempDir()
	modules := "module g711.so\nmodule ausine.so\nmodule aufile.so\nmodule menu.so\n"
	params := ""
	if mediaenc != "" {
		modules += "module srtp.so\n"
		params = ";mediaenc=" + mediaenc
	}
	writeFile(t, filepath.Join(dir, "config"), fmt.Sprintf(`poll_method epoll
sip_listen %s:5061
sip_cafile %s
audio_player aufile,/dev/null
audio_source ausine,440
ausrc_srate 48000
ausrc_channels 2
auplay_srate 48000
module_path /usr/lib/baresip/modules
%smodule_tmp uuid.so
module_tmp account.so
`, client, cert, modules))
	writeFile(t, filepath.Join(dir, "accounts"),
		fmt.Sprintf("<sip:alice@%s:5061;transport=tls>;auth_pass=alice-secret;regint=600;answermode=auto;audio_codecs=PCMU%s\n", d.ip, params))
	args := []string{"-f", dir}
	for _, c := range dial {
		args = append(args, "-e", c)
	}
	startProc(t, requireTool(t, "baresip"), args...)

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
}

// TestBaresipSRTPOverTLS: baresip, over TLS, insists on SRTP (SDES,
// mediaenc=srtp-mand) for a call to a number. edgewise terminates that SRTP
// on the phone's leg and speaks plain RTP to Twilio (Secure Media off):
// edgesim gets and echoes the audio, and the phone's audio decrypts.
func TestBaresipSRTPOverTLS(t *testing.T) {
	s := startSim(t)
	d, cert := startTLSDaemon(t, upstreamConfig(s, ""))
	startBaresipTLS(t, d, cert, "srtp-mand", "/dial 15550001111")
	c := s.onlyCall(t, "baresip's call answered by edgesim", func(c simCall) bool { return c.State == "answered" })
	checkRTPFlow(t, d)
	kit.WaitFor(t, 5*time.Second, "edgesim echoing baresip's audio", func() bool {
		m := s.call(t, c.ID).Media
		return m != nil && m.PacketsReceived > 10 && m.PacketsEchoed > 10
	})
	calls := d.calls()
	if len(calls) != 1 || calls[0].Media == nil {
		t.Fatalf("calls %+v", calls)
	}
	for _, l := range calls[0].Media.Legs {
		want := ""
		if l.Side.String() == "A" {
			want = "AES_CM_128_HMAC_SHA1_80"
		}
		// baresip sends one short RTCP packet that is not SRTCP; what
		// counts is that its audio decrypts.
		if l.SRTP != want || l.RX.Packets < 10 || l.RX.Dropped["srtp"] > l.RX.Packets/10 {
			t.Errorf("leg %s: srtp %q, want %q; dropped %v", l.Side, l.SRTP, want, l.RX.Dropped)
		}
	}
}
