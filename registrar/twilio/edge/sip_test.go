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
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

const ashburnFQDN = "example.sip.ashburn.twilio.com"

func TestMain(m *testing.M) {
	// sipgo logs through a package default (e.g. "UDP ref went negative"
	// when a UA closes); keep test output to our own messages.
	sip.SetDefaultLogger(slog.New(slog.DiscardHandler))
	os.Exit(m.Run())
}

// uas is a sipgo server on loopback that answers with a fixed status and
// remembers what it was sent.
type uas struct {
	port int

	mu   sync.Mutex
	reqs []*sip.Request
	sni  []string
}

func (u *uas) handler(status int, retryAfter string) sipgo.RequestHandler {
	return func(req *sip.Request, tx sip.ServerTransaction) {
		u.mu.Lock()
		u.reqs = append(u.reqs, req.Clone())
		u.mu.Unlock()
		res := sip.NewResponseFromRequest(req, status, "", nil)
		if retryAfter != "" {
			res.AppendHeader(sip.NewHeader("Retry-After", retryAfter))
		}
		_ = tx.Respond(res)
	}
}

func (u *uas) last(t *testing.T) *sip.Request {
	t.Helper()
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.reqs) == 0 {
		t.Fatal("the UAS got no request")
	}
	return u.reqs[len(u.reqs)-1]
}

// startUAS serves network ("udp", "tcp" or "tls") on 127.0.0.1:0.
func startUAS(t *testing.T, network string, status int, retryAfter string, tlsConf *tls.Config) *uas {
	t.Helper()
	ua, err := sipgo.NewUA(sipgo.WithUserAgent("test-edge"))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := sipgo.NewServer(ua, sipgo.WithServerLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	u := &uas{}
	srv.OnOptions(u.handler(status, retryAfter))
	srv.OnRegister(u.handler(status, retryAfter))

	served := make(chan error, 1)
	var closer func() error
	switch network {
	case "udp":
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		u.port = pc.LocalAddr().(*net.UDPAddr).Port
		closer = pc.Close
		go func() { served <- srv.ServeUDP(pc) }()
	default:
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		u.port = l.Addr().(*net.TCPAddr).Port
		closer = l.Close
		if network == "tls" {
			conf := tlsConf.Clone()
			conf.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
				u.mu.Lock()
				u.sni = append(u.sni, hello.ServerName)
				u.mu.Unlock()
				return nil, nil
			}
			l = tls.NewListener(l, conf)
			go func() { served <- srv.ServeTLS(l) }()
		} else {
			go func() { served <- srv.ServeTCP(l) }()
		}
	}
	t.Cleanup(func() {
		_ = ua.Close()
		_ = closer()
		<-served
	})
	return u
}

func newClient(t *testing.T) *sipgo.Client {
	t.Helper()
	ua, err := sipgo.NewUA(sipgo.WithUserAgent("edgewise-test"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ua.Close() })
	c, err := sipgo.NewClient(ua, sipgo.WithClientHostname("127.0.0.1"), sipgo.WithClientLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func loopTarget(port int, transport string) Target {
	return Target{Edge: "ashburn", FQDN: ashburnFQDN, IP: netip.MustParseAddr("127.0.0.1"), Port: port, Transport: transport}
}

func TestSIPProberAnswers(t *testing.T) {
	tests := []struct {
		network    string
		status     int
		retryAfter string
		want       Result
	}{
		{"udp", 200, "", Result{StatusCode: 200}},
		{"udp", 405, "", Result{StatusCode: 405}},
		{"udp", 503, "30;duration=600", Result{StatusCode: 503, RetryAfter: 30 * time.Second}},
		{"tcp", 200, "", Result{StatusCode: 200}},
	}
	for _, tc := range tests {
		t.Run(tc.network+"/"+strconv.Itoa(tc.status), func(t *testing.T) {
			u := startUAS(t, tc.network, tc.status, tc.retryAfter, nil)
			p := NewSIPProber(newClient(t))
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			res, err := p.Probe(ctx, loopTarget(u.port, tc.network))
			if err != nil {
				t.Fatal(err)
			}
			if res.StatusCode != tc.want.StatusCode || res.RetryAfter != tc.want.RetryAfter || res.RTT <= 0 {
				t.Fatalf("result = %+v, want %+v", res, tc.want)
			}
			req := u.last(t)
			if req.Method != sip.OPTIONS || req.Recipient.Host != ashburnFQDN {
				t.Fatalf("UAS got %s %s, want OPTIONS to the FQDN (sent to the IP)", req.Method, req.Recipient.String())
			}
		})
	}
}

// A silent edge costs Settings.Timeout, not Timer F's 32 s.
func TestSIPProberSilent(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0") // reads nothing, answers nothing
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pc.Close() })
	p := NewSIPProber(newClient(t))
	const timeout = 300 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	start := time.Now()
	res, err := p.Probe(ctx, loopTarget(pc.LocalAddr().(*net.UDPAddr).Port, "udp"))
	took := time.Since(start)
	if !errors.Is(err, ErrNoResponse) || res.StatusCode != 0 {
		t.Fatalf("probe = %+v, %v; want ErrNoResponse", res, err)
	}
	if took < timeout || took > timeout+2*time.Second {
		t.Fatalf("probe took %s, want about %s", took, timeout)
	}
	if out := classify(res, err, timeout); out.class != classTimeout {
		t.Fatalf("classified as %q, want timeout", out.class)
	}
}

// The silent case through a running Monitor: Settings.Timeout bounds each probe.
func TestMonitorWithSIPProber(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pc.Close() })
	silentPort := pc.LocalAddr().(*net.UDPAddr).Port
	d := startDNS(t)
	d.set(ashburnFQDN, 600, "127.0.0.1")
	s := Settings{Domain: "example", Edges: []string{"ashburn"}, DNSServer: d.addr, Port: silentPort,
		Timeout: 250 * time.Millisecond, KeepaliveInterval: time.Hour}
	ua, err := sipgo.NewUA()
	if err != nil {
		t.Fatal(err)
	}
	client, err := sipgo.NewClient(ua, sipgo.WithClientHostname("127.0.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	m, changes := newRunning(t, s, NewSIPProber(client), func() { _ = ua.Close() })
	start := time.Now()
	c := nextChange(t, changes, 5*time.Second)
	if c.Kind != ChangeUnavailable || c.Reason != "every edge is down; edge ashburn down: 1/1 IPs timed out after 250ms" {
		t.Fatalf("change = %+v", c)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Fatalf("silence detected after %s with a 250ms timeout", took)
	}
	if st := edgeStatus(t, m, "ashburn"); st.IPs[0].LastError != "no response within 250ms" {
		t.Fatalf("ip status = %+v", st.IPs[0])
	}
}

func TestSIPProberRegister(t *testing.T) {
	u := startUAS(t, "udp", 401, "", nil)
	p := NewSIPProber(newClient(t), WithRegisterProbe("edgewise-probe"))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	res, err := p.Probe(ctx, loopTarget(u.port, "udp"))
	if err != nil || res.StatusCode != 401 {
		t.Fatalf("probe = %+v, %v", res, err)
	}
	if classify(res, err, time.Second).class != "" {
		t.Fatal("a 401 to a REGISTER probe must count as alive")
	}
	req := u.last(t)
	if req.Method != sip.REGISTER || req.Contact() != nil || req.To().Address.User != "edgewise-probe" || req.To().Address.Host != ashburnFQDN {
		t.Fatalf("UAS got %s", req.String())
	}
}

func TestSIPProberTLSUsesFQDN(t *testing.T) {
	pool, serverConf := testPKI(t, ashburnFQDN)
	u := startUAS(t, "tls", 200, "", serverConf)
	clients := NewTLSClients(&tls.Config{RootCAs: pool}, []sipgo.UserAgentOption{sipgo.WithUserAgent("edgewise-test")},
		sipgo.WithClientHostname("127.0.0.1"), sipgo.WithClientLogger(slog.New(slog.DiscardHandler)))
	t.Cleanup(func() { _ = clients.Close() })
	p := NewSIPProber(newClient(t), WithTLSClients(clients.Client))

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	res, err := p.Probe(ctx, loopTarget(u.port, "tls"))
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("probe = %+v, %v", res, err)
	}
	u.mu.Lock()
	sni := append([]string(nil), u.sni...)
	u.mu.Unlock()
	if len(sni) == 0 || sni[0] != ashburnFQDN {
		t.Fatalf("SNI = %q, want %q", sni, ashburnFQDN)
	}
	if req := u.last(t); req.Recipient.Host != ashburnFQDN || req.Recipient.String() != "sip:"+ashburnFQDN+";transport=tls" {
		t.Fatalf("Request-URI = %s", req.Recipient.String())
	}

	// The same IP presenting ashburn's certificate is not umatilla.
	wrong := loopTarget(u.port, "tls")
	wrong.FQDN = "example.sip.umatilla.twilio.com"
	res, err = p.Probe(ctx, wrong)
	if err == nil || errors.Is(err, ErrNoResponse) {
		t.Fatalf("probe with a mismatched certificate = %+v, %v; want a transport error", res, err)
	}

	// Without a per-FQDN client a TLS probe refuses rather than send the IP as SNI.
	if _, err := NewSIPProber(newClient(t)).Probe(ctx, loopTarget(u.port, "tls")); err == nil {
		t.Fatal("TLS probe without WithTLSClients succeeded")
	}
}

func TestParseRetryAfter(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"120": 2 * time.Minute, "18000;duration=3600": time.Hour, "5 (back soon)": 5 * time.Second,
		"": 0, "soon": 0, "0": 0,
	} {
		if got := parseRetryAfter(in); got != want {
			t.Errorf("parseRetryAfter(%q) = %s, want %s", in, got, want)
		}
	}
}

// testPKI makes a CA and a server certificate for name.
func testPKI(t *testing.T, name string) (*x509.CertPool, *tls.Config) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return pool, &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}, MinVersion: tls.VersionTLS12}
}
