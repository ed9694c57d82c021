package edge

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"log/slog"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// certAuthority is a test CA that issues leaf certificates on demand.
type certAuthority struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newCertAuthority(t testing.TB, name string) *certAuthority {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &certAuthority{cert: cert, key: key, pool: pool}
}

// issue makes a leaf for names valid from nb to na.
func (ca *certAuthority) issue(t testing.TB, names []string, nb, na time.Time) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: names[0]}, DNSNames: names,
		NotBefore: nb, NotAfter: na,
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func peerState(t *testing.T, c tls.Certificate) tls.ConnectionState {
	t.Helper()
	var cs tls.ConnectionState
	for _, der := range c.Certificate {
		x, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		cs.PeerCertificates = append(cs.PeerCertificates, x)
	}
	return cs
}

// TestVerifyEdgeExplains: each way a certificate fails reads as what is
// wrong with it, naming the FQDN edgewise asked for.
func TestVerifyEdgeExplains(t *testing.T) {
	ca := newCertAuthority(t, "test CA")
	other := newCertAuthority(t, "mallory CA")
	// The CA is valid ±1h around now: leaves are placed relative to it.
	now := time.Now()
	for _, tc := range []struct {
		name string
		cert tls.Certificate
		want string // "" = verifies
	}{
		{"good", ca.issue(t, []string{ashburnFQDN}, now.Add(-time.Minute), now.Add(time.Minute)), ""},
		{"expired", ca.issue(t, []string{ashburnFQDN}, now.Add(-2*time.Minute), now.Add(-time.Minute)),
			"tls: certificate for " + ashburnFQDN + " expired at " + utc(now.Add(-time.Minute))},
		{"not yet valid", ca.issue(t, []string{ashburnFQDN}, now.Add(time.Minute), now.Add(2*time.Minute)),
			"tls: certificate for " + ashburnFQDN + " is not valid before " + utc(now.Add(time.Minute))},
		{"wrong name", ca.issue(t, []string{"other.example", "sip.other.example"}, now.Add(-time.Minute), now.Add(time.Minute)),
			"tls: certificate is for other.example, sip.other.example, not " + ashburnFQDN},
		{"a name chosen to break a log line", ca.issue(t, []string{"evil.example\nlevel=INFO msg=forged"}, now.Add(-time.Minute), now.Add(time.Minute)),
			`tls: certificate is for "evil.example\nlevel=INFO msg=forged", not ` + ashburnFQDN},
		{"unknown authority", other.issue(t, []string{ashburnFQDN}, now.Add(-time.Minute), now.Add(time.Minute)),
			"tls: certificate for " + ashburnFQDN + ` is signed by an unknown authority (issuer "mallory CA"): not in the system roots or twilio.ca_file`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := verifyEdge(peerState(t, tc.cert), ashburnFQDN, ca.pool, now)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("verify = %v", err)
				}
				return
			}
			var ce *CertError
			if !errors.As(err, &ce) || err.Error() != tc.want || ce.FQDN != ashburnFQDN || ce.Err == nil {
				t.Fatalf("verify = %v, want %q", err, tc.want)
			}
			if out := classify(Result{}, err, 4*time.Second); out.ok || out.class != classTLS || out.detail != err.Error() {
				t.Fatalf("classify = %+v, want class tls", out)
			}
		})
	}
	if err := verifyEdge(tls.ConnectionState{}, ashburnFQDN, ca.pool, now); err == nil || !strings.Contains(err.Error(), "presented no certificate") {
		t.Fatalf("no certificate: %v", err)
	}
}

// TestTLSClientsRoots: a pool that does not trust the edge's CA refuses
// it with a CertError naming the unknown authority; SetRoots makes the
// same client (no new UA) accept it; the connection so made stays in use
// after the roots change again, and only a new handshake meets the new
// roots.
func TestTLSClientsRoots(t *testing.T) {
	ca := newCertAuthority(t, "edge CA")
	good := ca.issue(t, []string{ashburnFQDN}, time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
	u := startUAS(t, "tls", 200, "", &tls.Config{Certificates: []tls.Certificate{good}, MinVersion: tls.VersionTLS12})
	other := startUAS(t, "tls", 200, "", &tls.Config{Certificates: []tls.Certificate{good}, MinVersion: tls.VersionTLS12})
	clients := NewTLSClients(nil, []sipgo.UserAgentOption{sipgo.WithUserAgent("edgewise-test")},
		sipgo.WithClientHostname("127.0.0.1"), sipgo.WithClientLogger(slog.New(slog.DiscardHandler)))
	t.Cleanup(func() { _ = clients.Close() })
	clients.SetRoots(x509.NewCertPool()) // trusts nothing
	p := NewSIPProber(newClient(t), WithTLSClients(clients.Client))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	start := time.Now()
	_, err := p.Probe(ctx, loopTarget(u.port, "tls"))
	var ce *CertError
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), "unknown authority") {
		t.Fatalf("probe with untrusted CA = %v, want a CertError about the unknown authority", err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("refusal took %s: a bad certificate must not wait for a timeout", took)
	}

	clients.SetRoots(ca.pool)
	if res, err := p.Probe(ctx, loopTarget(u.port, "tls")); err != nil || res.StatusCode != 200 {
		t.Fatalf("probe after SetRoots = %+v, %v", res, err)
	}
	clients.SetRoots(x509.NewCertPool())
	if res, err := p.Probe(ctx, loopTarget(u.port, "tls")); err != nil || res.StatusCode != 200 {
		t.Fatalf("probe over the open connection after the roots changed = %+v, %v; want it kept", res, err)
	}
	if _, err := p.Probe(ctx, loopTarget(other.port, "tls")); !errors.As(err, &ce) {
		t.Fatalf("new handshake after the roots changed = %v, want a CertError", err)
	}

	// A base config's RootCAs are the first roots.
	byBase := NewTLSClients(&tls.Config{RootCAs: ca.pool}, nil, sipgo.WithClientHostname("127.0.0.1"))
	t.Cleanup(func() { _ = byBase.Close() })
	if res, err := NewSIPProber(newClient(t), WithTLSClients(byBase.Client)).Probe(ctx, loopTarget(other.port, "tls")); err != nil || res.StatusCode != 200 {
		t.Fatalf("probe with base RootCAs = %+v, %v", res, err)
	}
}

// TestMonitorCertificateDown: a refused certificate takes the IP down at
// once with the certificate's reason in its last_error and in the edge's
// reason, logs one warning per IP and reason however often it is seen,
// and counts as tls in the metrics.
func TestMonitorCertificateDown(t *testing.T) {
	m, _, logs := newClocked(t, testSettings())
	resolve(t, m, "ashburn", "10.0.0.1", "10.0.0.2")
	resolve(t, m, "umatilla", "10.0.1.1")
	expired := &CertError{FQDN: "example.sip.ashburn.twilio.com", Reason: "certificate for example.sip.ashburn.twilio.com expired at 2026-01-01T00:00:00Z"}
	for range 3 {
		m.Report(target(t, m, "ashburn", "10.0.0.1"), Result{}, errors.Join(errors.New("TLS handshake error"), expired))
	}
	st := edgeStatus(t, m, "ashburn")
	if st.IPs[0].State != StateDown || st.IPs[0].LastError != expired.Error() {
		t.Fatalf("ip = %+v, want down with %q", st.IPs[0], expired.Error())
	}
	if n := strings.Count(logs.String(), "refused: tls: certificate for"); n != 1 {
		t.Fatalf("%d warnings for one IP and reason, want 1:\n%s", n, logs)
	}
	wrong := &CertError{FQDN: "example.sip.ashburn.twilio.com", Reason: "certificate is for other.example, not example.sip.ashburn.twilio.com"}
	m.Report(target(t, m, "ashburn", "10.0.0.2"), Result{}, wrong)
	if edge, _ := m.Active(); edge != "umatilla" {
		t.Fatalf("active = %s, want umatilla once both IPs refused", edge)
	}
	st = edgeStatus(t, m, "ashburn")
	for _, want := range []string{"1/2 IPs failed the certificate check: " + expired.Reason, "1/2 IPs failed the certificate check: " + wrong.Reason} {
		if !strings.Contains(st.Reason, want) {
			t.Errorf("edge reason %q lacks %q", st.Reason, want)
		}
	}
	if n := strings.Count(logs.String(), "refused: tls:"); n != 2 {
		t.Fatalf("%d warnings, want one per IP:\n%s", n, logs)
	}
	ch := drain(m)
	if len(ch) != 1 || ch[0].Kind != ChangeFailover {
		t.Fatalf("changes = %+v", ch)
	}
	if got := testutil.ToFloat64(m.metrics.results.WithLabelValues("ashburn", "report", classTLS)); got != 4 {
		t.Errorf("results{outcome=tls} = %v, want 4", got)
	}
	if got := testutil.ToFloat64(m.metrics.failovers.WithLabelValues(classTLS)); got != 1 {
		t.Errorf("failovers{reason=tls} = %v, want 1", got)
	}
}

// FuzzVerifyEdge: whatever certificate an edge IP presents, verification
// refuses it without panicking, and the reason is one line of bounded
// length (it goes into the log and /v1/status).
func FuzzVerifyEdge(f *testing.F) {
	ca := newCertAuthority(f, "fuzz CA")
	for _, names := range [][]string{{ashburnFQDN}, {"other.example"}, {"line\nbreak.example", strings.Repeat("x", 300)}} {
		c := ca.issue(f, names, time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
		f.Add(c.Certificate[0])
	}
	f.Add([]byte{0x30, 0x03, 0x02, 0x01, 0x00})
	now := time.Now()
	f.Fuzz(func(t *testing.T, der []byte) {
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			return // crypto/tls would not get this far
		}
		err = verifyEdge(tls.ConnectionState{PeerCertificates: []*x509.Certificate{cert}}, ashburnFQDN, x509.NewCertPool(), now)
		if err == nil {
			t.Fatal("a certificate verified against an empty pool")
		}
		// Each way of explaining puts other parts of the certificate in
		// the reason.
		for _, err := range []error{
			err,
			explainCert(ashburnFQDN, cert, x509.HostnameError{Certificate: cert, Host: ashburnFQDN}, now),
			explainCert(ashburnFQDN, cert, x509.CertificateInvalidError{Cert: cert, Reason: x509.Expired}, now),
			explainCert(ashburnFQDN, cert, x509.UnknownAuthorityError{Cert: cert}, now),
		} {
			msg := err.Error()
			if strings.ContainsAny(msg, "\r\n") {
				t.Fatalf("reason spans lines: %q", msg)
			}
			if len(msg) > 2000 {
				t.Fatalf("reason is %d bytes long", len(msg))
			}
		}
	})
}
