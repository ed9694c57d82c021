package frontend

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/expfmt"

	"github.com/edgewise-sip/edgewise/test/kit"
)

// testPair is a self-signed certificate for 127.0.0.1 named cn, PEM.
func testPair(t *testing.T, cn string) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn}, DNSNames: []string{cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:    x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
}

// replaceFile writes data to path by rename, as renewal tools do.
func replaceFile(t *testing.T, path string, data []byte) {
	t.Helper()
	tmp := path + ".new"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// servedName is the name in the certificate a new TLS handshake with addr
// gets.
func servedName(t *testing.T, addr string) string {
	t.Helper()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, &tls.Config{InsecureSkipVerify: true}) // names, not trust
	if err != nil {
		t.Fatalf("TLS handshake with %s: %v", addr, err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].Subject.CommonName
}

type certEvents struct {
	mu  sync.Mutex
	evs []CertEvent
}

func (e *certEvents) add(ev CertEvent) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.evs = append(e.evs, ev)
}

func (e *certEvents) list() []CertEvent {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]CertEvent(nil), e.evs...)
}

// TestTLSCertificateReload: the tls and wss listeners' certificate is
// replaced when its files change, for new handshakes only (a connection
// made before keeps its certificate and keeps working); a pair that does
// not load is refused, counted, reported once, and the current one stays;
// a config reload can point at new files, whose directory is then watched.
func TestTLSCertificateReload(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "fullchain.pem"), filepath.Join(dir, "privkey.pem")
	c, k := testPair(t, "first.example")
	replaceFile(t, certFile, c)
	replaceFile(t, keyFile, k)
	logs := &syncLog{}
	s, err := New(Settings{
		Listen:      []Listen{{Transport: "udp", Host: "127.0.0.1"}, {Transport: "tls", Host: "127.0.0.1"}, {Transport: "wss", Host: "127.0.0.1"}},
		UserAgent:   "edgewise-test",
		TLSCertFile: certFile, TLSKeyFile: keyFile,
	}, slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	events := &certEvents{}
	s.OnTLSCertificate(events.add)
	prometheus.NewRegistry().MustRegister(s.Collector()) // the names and labels are consistent
	runServer(t, s)
	tlsAddr, wssAddr := s.Addr("tls").String(), s.Addr("wss").String()
	if got := servedName(t, tlsAddr); got != "first.example" {
		t.Fatalf("tls serves %q", got)
	}

	old := tlsPeer(t, s)
	old.send(old.request("OPTIONS", ""))
	old.expect(200)

	// Renewal: both files replaced by rename.
	c, k = testPair(t, "second.example")
	replaceFile(t, keyFile, k)
	replaceFile(t, certFile, c)
	kit.WaitFor(t, 10*time.Second, "new handshakes to get the renewed certificate", func() bool {
		return servedName(t, tlsAddr) == "second.example" && servedName(t, wssAddr) == "second.example"
	})
	old.send(old.request("OPTIONS", ""))
	old.expect(200)
	if got := old.tcp.(*tls.Conn).ConnectionState().PeerCertificates[0].Subject.CommonName; got != "first.example" {
		t.Errorf("the open connection's certificate is %q, want still first.example", got)
	}

	// A broken renewal: a certificate without its key. Refused, the
	// renewed certificate stays, said once however often the files move.
	// (A renewal step above may have been read half-written on a slow
	// machine and refused too: counts are taken from here.)
	refusedBefore := s.certs.refused.Load()
	c3, _ := testPair(t, "third.example")
	replaceFile(t, certFile, c3)
	kit.WaitFor(t, 10*time.Second, "the mismatched pair refused", func() bool {
		return s.certs.refused.Load() >= refusedBefore+1
	})
	replaceFile(t, certFile, c3) // again: counted, not logged again
	kit.WaitFor(t, 10*time.Second, "the second refusal counted", func() bool {
		return s.certs.refused.Load() >= refusedBefore+2
	})
	if got := servedName(t, tlsAddr); got != "second.example" {
		t.Fatalf("after a broken renewal tls serves %q, want second.example", got)
	}
	if n := strings.Count(logs.String(), "still serving second.example"); n != 1 {
		t.Errorf("refusal logged %d times, want once:\n%s", n, logs)
	}

	// A config reload naming files elsewhere: applied, and that directory
	// is watched from then on.
	dir2 := t.TempDir()
	cert2, key2 := filepath.Join(dir2, "cert.pem"), filepath.Join(dir2, "key.pem")
	c, k = testPair(t, "fourth.example")
	replaceFile(t, cert2, c)
	replaceFile(t, key2, k)
	if _, err := s.PrepareTLS(cert2, keyFile); err == nil {
		t.Fatal("PrepareTLS with a key of another certificate succeeded")
	}
	commit, err := s.PrepareTLS(cert2, key2)
	if err != nil {
		t.Fatal(err)
	}
	commit()
	if got := servedName(t, tlsAddr); got != "fourth.example" {
		t.Fatalf("after the config reload tls serves %q", got)
	}
	c, k = testPair(t, "fifth.example")
	replaceFile(t, key2, k)
	replaceFile(t, cert2, c)
	kit.WaitFor(t, 10*time.Second, "a change in the new directory to be picked up", func() bool {
		return servedName(t, tlsAddr) == "fifth.example"
	})

	evs := events.list()
	var applied, refused int
	for _, ev := range evs {
		if ev.Applied {
			applied++
		} else {
			refused++
			if !strings.Contains(ev.Text, "still serving ") || !strings.Contains(ev.Text, "do not load") {
				t.Errorf("refusal event %q does not say what is still served", ev.Text)
			}
		}
	}
	if applied != 3 || refused < 1 {
		t.Errorf("events %+v, want 3 applied (renewal, reload, renewal) and the refusal", evs)
	}
	body, err := testutil.CollectAndFormat(s.Collector(), expfmt.TypeTextPlain, "edgewise_sip_tls_certificate_reloads_total", "edgewise_sip_tls_certificate_not_after_timestamp_seconds")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`edgewise_sip_tls_certificate_reloads_total{result="applied"} 3`, `edgewise_sip_tls_certificate_reloads_total{result="refused"} `, "edgewise_sip_tls_certificate_not_after_timestamp_seconds "} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %q:\n%s", want, body)
		}
	}
}

// syncLog collects log output across goroutines.
type syncLog struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *syncLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *syncLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
