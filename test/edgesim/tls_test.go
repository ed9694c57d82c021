package edgesim

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"

	"github.com/edgewise-sip/edgewise/test/kit"
)

const ashburnFQDN = testDomain + ".sip.ashburn.twilio.com"

func tlsConfig(n kit.Net) Config {
	cfg := testConfig(n)
	cfg.Transports = []string{"udp", "tcp", "tls"}
	return cfg
}

func caPool(t *testing.T, sim *Sim) *x509.CertPool {
	t.Helper()
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(sim.CAPEM()) {
		t.Fatal("CA PEM does not parse")
	}
	return pool
}

// tlsPeer is a gateway or phone speaking SIP over TLS: a sipgo UA whose
// client trusts edgesim's CA and names ashburn's FQDN, with a TLS
// listener of its own (self-signed: edgesim does not check it).
type tlsPeer struct {
	ip     string
	port   int
	srv    *sipgo.Server
	client *sipgo.Client
	ln     net.Listener
	ua     *sipgo.UserAgent
}

func newTLSPeer(t *testing.T, sim *Sim, ip string) *tlsPeer {
	t.Helper()
	ua, err := sipgo.NewUA(sipgo.WithUserAgent("tls-peer"), sipgo.WithUserAgentHostname(ip),
		sipgo.WithUserAgenTLSConfig(&tls.Config{RootCAs: caPool(t, sim), ServerName: ashburnFQDN, MinVersion: tls.VersionTLS12}))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := sipgo.NewServer(ua)
	if err != nil {
		t.Fatal(err)
	}
	client, err := sipgo.NewClient(ua, sipgo.WithClientHostname(ip), sipgo.WithClientConnectionAddr(ip+":0"))
	if err != nil {
		t.Fatal(err)
	}
	cert, err := selfSigned([]string{"peer.example"})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", ip+":0", &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatal(err)
	}
	return &tlsPeer{ip: ip, port: ln.Addr().(*net.TCPAddr).Port, srv: srv, client: client, ln: ln, ua: ua}
}

func (p *tlsPeer) serve(t *testing.T) {
	var wg sync.WaitGroup
	wg.Go(func() { _ = p.srv.ServeTLS(p.ln) })
	t.Cleanup(func() {
		_ = p.ua.Close()
		_ = p.ln.Close()
		wg.Wait()
	})
}

func (p *tlsPeer) contact(user string) sip.ContactHeader {
	return sip.ContactHeader{Address: sip.Uri{Scheme: "sip", User: user, Host: p.ip, Port: p.port,
		UriParams: sip.HeaderParams{{K: "transport", V: "tls"}}}}
}

func TestTLSRegisterOptionsAndBinding(t *testing.T) {
	t.Parallel()
	n := kit.NewNet(t)
	sim := startSim(t, tlsConfig(n))
	p := newTLSPeer(t, sim, n.Addr(200))
	p.serve(t)
	ip := n.Addr(2)
	addr, err := sim.TLSAddr(ip)
	if err != nil {
		t.Fatal(err)
	}
	sipAddr, _ := sim.SIPAddr(ip)
	if addr == sipAddr {
		t.Fatalf("TLS and SIP share %s", addr)
	}
	c := &sipClient{p.client}
	res, err := c.options(addr, "tls", 5*time.Second)
	if err != nil {
		t.Fatalf("OPTIONS over TLS: %v", err)
	}
	expectStatus(t, res, 200)

	ct := p.contact("alice")
	contact := ct.Address.String()
	expectStatus(t, c.register(t, reg{edge: "ashburn", addr: addr, transport: "tls", user: "alice", pass: alicePass, contact: contact, expires: 600}), 200)
	bs := listBindings(t, sim, "alice")
	_, tlsPort, _ := net.SplitHostPort(addr)
	if len(bs) != 1 || bs[0].Transport != "TLS" || bs[0].IP != ip || fmt.Sprint(bs[0].Port) != tlsPort || bs[0].Contact != contact {
		t.Fatalf("bindings = %+v, want alice over TLS at %s", bs, addr)
	}
	st, err := sim.IP(ip)
	if err != nil {
		t.Fatal(err)
	}
	if st.TLS == nil || st.TLS.Handshakes == 0 || st.TLS.Failed != 0 || st.Authorized != 1 || fmt.Sprint(st.TLSPort) != tlsPort {
		t.Errorf("ip status = %+v tls %+v, want a handshake, no failure, one request with credentials", st, st.TLS)
	}
	resp, err := http.Get("http://" + sim.ControlAddr() + "/v1/ca.pem")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if pem, _ := io.ReadAll(resp.Body); resp.StatusCode != 200 || string(pem) != string(sim.CAPEM()) {
		t.Errorf("GET /v1/ca.pem = %s %q", resp.Status, pem)
	}
}

// TestTLSCertificateModes: each certificate mode makes a verifying client
// fail for its own reason, counts the failed handshake, and leaves UDP
// answering; mode up presents a certificate that verifies for every name
// of the edge.
func TestTLSCertificateModes(t *testing.T) {
	t.Parallel()
	n := kit.NewNet(t)
	sim := startSim(t, tlsConfig(n))
	pool := caPool(t, sim)
	dial := func(ip, name string) error {
		addr, err := sim.TLSAddr(ip)
		if err != nil {
			t.Fatal(err)
		}
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, &tls.Config{RootCAs: pool, ServerName: name, MinVersion: tls.VersionTLS12})
		if err == nil {
			_ = conn.Close()
		}
		return err
	}
	for _, name := range []string{ashburnFQDN, "sip.ashburn.twilio.com", testDomain + ".sip.twilio.com"} {
		if err := dial(n.Addr(1), name); err != nil {
			t.Errorf("up, %s: %v", name, err)
		}
	}
	if err := dial(n.Addr(11), ashburnFQDN); err == nil {
		t.Error("umatilla's certificate verified for ashburn's name")
	}

	// A connection made with the good certificate is closed when the IP
	// changes certificate, so its client meets the new one.
	addr2, _ := sim.TLSAddr(n.Addr(2))
	open, err := tls.Dial("tcp", addr2, &tls.Config{RootCAs: pool, ServerName: ashburnFQDN, MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatal(err)
	}
	defer open.Close()
	if err := sim.SetIPMode(n.Addr(2), ModeSetting{Mode: ModeExpiredCert}); err != nil {
		t.Fatal(err)
	}
	_ = open.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := open.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read on a connection made before the certificate changed: %v, want it closed", err)
	}

	c := newSIPClient(t)
	for _, tc := range []struct {
		mode  Mode
		check func(error) bool
	}{
		{ModeExpiredCert, func(err error) bool {
			var e x509.CertificateInvalidError
			return errors.As(err, &e) && e.Reason == x509.Expired
		}},
		{ModeWrongNameCert, func(err error) bool {
			var e x509.HostnameError
			return errors.As(err, &e) && strings.Contains(e.Error(), WrongCertName)
		}},
		{ModeSelfSignedCert, func(err error) bool {
			var e x509.UnknownAuthorityError
			return errors.As(err, &e)
		}},
	} {
		t.Run(string(tc.mode), func(t *testing.T) {
			ip := n.Addr(2)
			if err := sim.SetIPMode(ip, ModeSetting{Mode: tc.mode}); err != nil {
				t.Fatal(err)
			}
			before, _ := sim.IP(ip)
			if err := dial(ip, ashburnFQDN); !tc.check(err) {
				t.Fatalf("handshake error = %v (%T)", err, errors.Unwrap(err))
			}
			kit.WaitFor(t, 5*time.Second, "the failed handshake counted", func() bool {
				st, _ := sim.IP(ip)
				return st.TLS.Failed == before.TLS.Failed+1 && st.TLS.LastError != ""
			})
			addr, _ := sim.SIPAddr(ip)
			res, err := c.options(addr, "udp", 5*time.Second)
			if err != nil || res.StatusCode != 200 {
				t.Fatalf("OPTIONS over UDP in %s: %v %v", tc.mode, res, err)
			}
		})
	}
	if err := sim.SetIPMode(n.Addr(2), ModeSetting{Mode: ModeInherit}); err != nil {
		t.Fatal(err)
	}
	if err := dial(n.Addr(2), ashburnFQDN); err != nil {
		t.Errorf("back to up: %v", err)
	}
}

// TestTLSCallsBothWays: a gateway calls through edgesim over TLS, and
// edgesim calls a Contact registered with transport=tls over TLS; both
// are answered and hung up.
func TestTLSCallsBothWays(t *testing.T) {
	t.Parallel()
	n := kit.NewNet(t)
	sim := startSim(t, tlsConfig(n))
	ip := n.Addr(1)
	addr, _ := sim.TLSAddr(ip)
	ctx := callCtx(t)

	t.Run("received", func(t *testing.T) {
		gw := newTLSPeer(t, sim, n.Addr(200))
		byes := make(chan *sip.Request, 1)
		dc := sipgo.NewDialogClientCache(gw.client, gw.contact("gw"))
		gw.srv.OnBye(func(req *sip.Request, tx sip.ServerTransaction) {
			if err := dc.ReadBye(req, tx); err == nil {
				byes <- req
			}
		})
		gw.serve(t)
		rp := newRTPPeer(t, gw.ip)
		req := sip.NewRequest(sip.INVITE, sip.Uri{Scheme: "sip", User: "+15551230000", Host: ashburnFQDN, UriParams: sip.HeaderParams{{K: "transport", V: "tls"}}})
		req.SetDestination(addr)
		req.SetTransport("TLS")
		from := &sip.FromHeader{Address: sip.Uri{Scheme: "sip", User: "alice", Host: ashburnFQDN}}
		from.Params.Add("tag", sip.GenerateTagN(8))
		req.AppendHeader(from)
		ct := sip.ContentTypeHeader("application/sdp")
		req.AppendHeader(&ct)
		req.SetBody(testOffer(gw.ip, rp.port(), ""))
		sess, err := dc.WriteInvite(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		if err := sess.WaitAnswer(ctx, sipgo.AnswerOptions{Username: "alice", Password: alicePass}); err != nil {
			t.Fatalf("INVITE over TLS: %v", err)
		}
		if err := sess.Ack(ctx); err != nil {
			t.Fatal(err)
		}
		answer, err := parseSDP(sess.InviteResponse.Body())
		if err != nil {
			t.Fatal(err)
		}
		if c := sess.InviteResponse.Contact(); c == nil || !strings.Contains(c.Address.String(), "transport=tls") {
			t.Errorf("200 Contact = %v, want transport=tls", c)
		}
		rp.echo(t, answer.addr, 3)
		st := onlyCall(t, sim)
		if st.Transport != "TLS" || st.State != CallAnswered {
			t.Fatalf("call = %+v", st)
		}
		// edgesim hangs up: its BYE reaches the gateway's TLS Contact.
		if err := sim.HangUp(st.ID); err != nil {
			t.Fatal(err)
		}
		recv(t, byes, "BYE over TLS at the gateway")
		waitCall(t, sim, st.ID, "ended by edgesim", inState(CallEnded))
	})

	t.Run("placed", func(t *testing.T) {
		ph := newTLSPeer(t, sim, n.Addr(201))
		ds := sipgo.NewDialogServerCache(ph.client, ph.contact("bob"))
		rp := newRTPPeer(t, ph.ip)
		invites := make(chan *sip.Request, 1)
		byes := make(chan *sip.Request, 1)
		ph.srv.OnInvite(func(req *sip.Request, tx sip.ServerTransaction) {
			sess, err := ds.ReadInvite(req, tx)
			if err != nil {
				return
			}
			invites <- req
			_ = sess.RespondSDP(testOffer(ph.ip, rp.port(), ""))
		})
		ph.srv.OnAck(func(req *sip.Request, tx sip.ServerTransaction) { _ = ds.ReadAck(req, tx) })
		ph.srv.OnBye(func(req *sip.Request, tx sip.ServerTransaction) {
			if err := ds.ReadBye(req, tx); err == nil {
				byes <- req
			}
		})
		ph.serve(t)
		c := &sipClient{ph.client}
		ct := ph.contact("bob")
		contact := ct.Address.String()
		expectStatus(t, c.register(t, reg{edge: "ashburn", addr: addr, transport: "tls", user: "bob", pass: bobPass, contact: contact, expires: 600}), 200)

		id, err := sim.PlaceCall(ctx, CallRequest{To: "bob"})
		if err != nil {
			t.Fatal(err)
		}
		inv := recv(t, invites, "INVITE over TLS at the phone")
		if inv.Transport() != "TLS" || sourceHost(t, inv) != ip {
			t.Errorf("INVITE over %s from %s, want TLS from %s", inv.Transport(), inv.Source(), ip)
		}
		st := waitCall(t, sim, id, "answered", inState(CallAnswered))
		if st.Transport != "TLS" || st.Forks[0].Transport != "TLS" {
			t.Errorf("call = %+v", st)
		}
		if err := sim.HangUp(id); err != nil {
			t.Fatal(err)
		}
		recv(t, byes, "BYE over TLS at the phone")
		waitCall(t, sim, id, "ended", inState(CallEnded))
	})
}

func TestTLSConfig(t *testing.T) {
	t.Parallel()
	n := kit.NewNet(t)
	cfg := tlsConfig(n)
	cfg.Edges[0].Port, cfg.Edges[0].TLSPort = 5070, 5070
	cfg.Transports = []string{"udp", "tcp", "tls", "sctp"}
	err := cfg.WithDefaults().Validate()
	for _, want := range []string{
		"edges[0].tls_port: 5070 is the SIP port too",
		`transports[3]: "sctp" is not supported (udp, tcp, tls)`,
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %v, want %q", err, want)
		}
	}
	sim, err := New(testConfig(n), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sim.TLSAddr(n.Addr(1)); err == nil {
		t.Error("TLSAddr without tls in transports succeeded")
	}
}
