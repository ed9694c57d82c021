package registrar

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	icholy "github.com/icholy/digest"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"github.com/edgewise-sip/edgewise/registrar/directory"
	"github.com/edgewise-sip/edgewise/registrar/location"
	"github.com/edgewise-sip/edgewise/registrar/lockout"
)

func TestRegister(t *testing.T) {
	tests := []struct {
		name     string
		settings func(*Settings)
		user, pw string
		run      func(t *testing.T, e *env, p *phone)
	}{
		{
			name: "sha-256 challenge and auth",
			run: func(t *testing.T, e *env, p *phone) {
				first := p.expect(p.build("Contact: "+p.contact(5070), "Expires: 600"), 401)
				chals := first.GetHeaders("WWW-Authenticate")
				if len(chals) != 2 || !strings.Contains(chals[0].Value(), "algorithm=SHA-256") || !strings.Contains(chals[1].Value(), "algorithm=MD5") {
					t.Fatalf("challenges = %v", chals)
				}
				p.algorithm = "SHA-256"
				p.learn(first)
				res := p.expect(p.build("Contact: "+p.contact(5070), "Expires: 600", p.authorization(p.password)), 200)
				if got := contactsOf(res); got[fmt.Sprintf("sip:alice@127.0.0.1:5070;transport=%s", strings.ToLower(p.transport))] != 600 {
					t.Fatalf("contacts = %v", got)
				}
				if _, err := time.Parse(time.RFC1123, res.GetHeader("Date").Value()); err != nil {
					t.Errorf("Date: %v", err)
				}
				b := e.table.Lookup("alice")
				if len(b) != 1 || b[0].Transport != strings.ToLower(p.transport) || b[0].UserAgent != "test-phone/1.0" ||
					b[0].Source.Addr().String() != "127.0.0.1" || b[0].Source.Port() == 0 || b[0].Local != p.server() {
					t.Fatalf("binding = %+v", b)
				}
			},
		},
		{
			name: "md5 auth",
			run: func(t *testing.T, e *env, p *phone) {
				p.algorithm = "MD5"
				p.register(200, "Contact: "+p.contact(5070))
			},
		},
		{
			name: "stored HA1 with md5",
			user: "carol", pw: "s3cret",
			settings: func(s *Settings) { s.Algorithms = nil },
			run: func(t *testing.T, e *env, p *phone) {
				p.algorithm = "MD5"
				p.register(200, "Contact: "+p.contact(5070))
			},
		},
		{
			name: "stale nonce",
			run: func(t *testing.T, e *env, p *phone) {
				p.expect(p.build("Contact: "+p.contact(5070)), 401)
				e.clock.Add(31 * time.Second)
				res := p.expect(p.build("Contact: "+p.contact(5070), p.authorization(p.password)), 401)
				if !p.lastChallenge.Stale {
					t.Fatalf("expected stale=true: %s", res)
				}
				// The fresh nonce works without asking the user again.
				p.registerAgain(200, "Contact: "+p.contact(5070))
			},
		},
		{
			name: "replayed nonce count is refused",
			run: func(t *testing.T, e *env, p *phone) {
				p.register(200, "Contact: "+p.contact(5070))
				p.nc-- // reuse the same nc (and cnonce-derived response) in a new request
				res := p.expect(p.build("Contact: "+p.contact(5071), p.authorization(p.password)), 401)
				if !p.lastChallenge.Stale {
					t.Fatalf("replay not answered with stale=true: %s", res)
				}
				if n := len(e.table.Lookup("alice")); n != 1 {
					t.Fatalf("replayed request changed bindings: %d", n)
				}
			},
		},
		{
			name: "re-register refreshes the binding",
			run: func(t *testing.T, e *env, p *phone) {
				p.register(200, "Contact: "+p.contact(5070), "Expires: 120")
				first := e.table.Lookup("alice")[0].Expires
				e.clock.Add(10 * time.Second)
				res := p.registerAgain(200, "Contact: "+p.contact(5070), "Expires: 300")
				if n := len(contactsOf(res)); n != 1 {
					t.Fatalf("contacts after refresh = %v", contactsOf(res))
				}
				if got := e.table.Lookup("alice")[0].Expires; got.Sub(first) != 190*time.Second {
					t.Fatalf("expiry moved by %s, want 190s", got.Sub(first))
				}
			},
		},
		{
			name: "query lists bindings",
			run: func(t *testing.T, e *env, p *phone) {
				p.register(200, "Contact: "+p.contact(5070), "Expires: 600")
				e.clock.Add(100 * time.Second)
				res := p.register(200)
				for _, exp := range contactsOf(res) {
					if exp != 500 {
						t.Fatalf("query contacts = %v, want expires=500", contactsOf(res))
					}
				}
			},
		},
		{
			name: "unregister one contact",
			run: func(t *testing.T, e *env, p *phone) {
				p.register(200, "Contact: "+p.contact(5070), "Contact: "+p.contact(5071))
				res := p.registerAgain(200, "Contact: "+p.contact(5071)+";expires=0")
				if got := contactsOf(res); len(got) != 1 {
					t.Fatalf("after unregister: %v", got)
				}
			},
		},
		{
			name: "wildcard removes all",
			run: func(t *testing.T, e *env, p *phone) {
				p.register(200, "Contact: "+p.contact(5070), "Contact: "+p.contact(5071))
				p.registerAgain(400, "Contact: *", "Expires: 3600")
				p.registerAgain(400, "Contact: *", "Contact: "+p.contact(5072), "Expires: 0")
				p.registerAgain(400, "Contact: *")
				res := p.registerAgain(200, "Contact: *", "Expires: 0")
				if len(contactsOf(res)) != 0 || e.table.Lookup("alice") != nil {
					t.Fatalf("bindings left: %v", contactsOf(res))
				}
			},
		},
		{
			name: "interval too brief",
			run: func(t *testing.T, e *env, p *phone) {
				res := p.register(423, "Contact: "+p.contact(5070), "Expires: 10")
				if got := res.GetHeader("Min-Expires"); got == nil || got.Value() != "60" {
					t.Fatalf("Min-Expires = %v", got)
				}
				p.registerAgain(423, "Contact: "+p.contact(5070)+";expires=59")
				p.registerAgain(200, "Contact: "+p.contact(5070), "Expires: 60")
				p.registerAgain(200, "Contact: "+p.contact(5070), "Expires: 0")
			},
		},
		{
			name:     "expiry defaults and cap",
			settings: func(s *Settings) { s.DefaultExpires = 1800 * time.Second },
			run: func(t *testing.T, e *env, p *phone) {
				res := p.register(200, "Contact: "+p.contact(5070), "Contact: "+p.contact(5071)+";expires=99999")
				got := contactsOf(res)
				if got[strings.Trim(p.contact(5070), "<>")] != 1800 || got[strings.Trim(p.contact(5071), "<>")] != 3600 {
					t.Fatalf("contacts = %v", got)
				}
			},
		},
		{
			name:     "expires spread",
			settings: func(s *Settings) { s.ExpiresSpread = 20 },
			run: func(t *testing.T, e *env, p *phone) {
				seen := map[int]bool{}
				p.register(200, "Contact: "+p.contact(5070))
				for i := range 20 {
					res := p.registerAgain(200, "Contact: "+p.contact(5070+i), "Expires: 1000")
					exp := contactsOf(res)[strings.Trim(p.contact(5070+i), "<>")]
					if exp < 800 || exp > 1000 {
						t.Fatalf("granted %d outside 800..1000", exp)
					}
					seen[exp] = true
					p.registerAgain(200, "Contact: "+p.contact(5070+i), "Expires: 0")
				}
				if len(seen) < 3 {
					t.Fatalf("spread produced only %v", seen)
				}
			},
		},
		{
			name:     "max contacts",
			settings: func(s *Settings) { s.MaxContacts = 2 },
			run: func(t *testing.T, e *env, p *phone) {
				p.register(200, "Contact: "+p.contact(5070), "Contact: "+p.contact(5071))
				res := p.registerAgain(403, "Contact: "+p.contact(5072))
				if !strings.Contains(res.Reason, "Too Many Contacts") {
					t.Fatalf("reason = %q", res.Reason)
				}
				// Refreshing existing contacts is still fine.
				p.registerAgain(200, "Contact: "+p.contact(5071))
			},
		},
		{
			name: "instance id replaces the old contact",
			run: func(t *testing.T, e *env, p *phone) {
				inst := `;+sip.instance="<urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6>";reg-id=1`
				p.register(200, "Contact: "+p.contact(5070)+inst)
				p.callID += "-rebooted" // a rebooted phone, new port, new Call-ID
				p.cseq = 1
				res := p.registerAgain(200, "Contact: "+p.contact(6000)+inst)
				if got := contactsOf(res); len(got) != 1 || got[strings.Trim(p.contact(6000), "<>")] == 0 {
					t.Fatalf("contacts = %v", got)
				}
				if b := e.table.Lookup("alice")[0]; b.InstanceID() != "<urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6>" || b.RegID() != 1 {
					t.Fatalf("binding params = %+v", b.Params)
				}
			},
		},
		{
			name: "cseq ordering",
			run: func(t *testing.T, e *env, p *phone) {
				p.register(200, "Contact: "+p.contact(5070))
				p.cseq -= 2 // same Call-ID, CSeq not higher than the binding's
				p.registerAgain(500, "Contact: "+p.contact(5070))
				p.cseq += 5
				p.registerAgain(200, "Contact: "+p.contact(5070))
				// A new Call-ID wins whatever its CSeq.
				p.callID += "-new"
				p.cseq = 1
				p.registerAgain(200, "Contact: "+p.contact(5070))
			},
		},
		{
			name: "wrong password gets 401 then 403",
			run: func(t *testing.T, e *env, p *phone) {
				p.expect(p.build("Contact: "+p.contact(5070)), 401)
				p.expect(p.build("Contact: "+p.contact(5070), p.authorization("nope")), 403)
				if e.table.Lookup("alice") != nil {
					t.Fatal("binding created")
				}
			},
		},
		{
			name: "unknown user looks like a wrong password",
			user: "mallory", pw: "x",
			run: func(t *testing.T, e *env, p *phone) {
				p.expect(p.build("Contact: "+p.contact(5070)), 401)
				p.expect(p.build("Contact: "+p.contact(5070), p.authorization("x")), 403)
			},
		},
		{
			name: "credentials of another user",
			run: func(t *testing.T, e *env, p *phone) {
				p.expect(p.build("Contact: "+p.contact(5070)), 401)
				p.user = "bob" // bob's valid credentials for alice's AOR
				auth := p.authorization("builder")
				p.user = "alice"
				p.expect(p.build("Contact: "+p.contact(5070), auth), 403)
			},
		},
		{
			name: "malformed requests",
			run: func(t *testing.T, e *env, p *phone) {
				p.expect(p.build("Contact: "+p.contact(5070), `Authorization: Digest username="alice`), 400)
				p.expect(p.build("Contact: "+p.contact(5070), "Require: gruu"), 420)
				req := p.build("Contact: " + p.contact(5070))
				req.ReplaceHeader(&sip.ToHeader{Address: sip.Uri{Scheme: "sip", Host: "edgewise"}})
				p.expect(req, 400)
				p.expect(p.build("Contact: <tel:+15551234567>"), 401)
				p.registerAgain(400, "Contact: <mailto:alice@example.com>")
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			eachTransport(t, func(t *testing.T, transport string) {
				e := newEnv(t, tt.settings)
				user, pw := cmpOr(tt.user, "alice"), cmpOr(tt.pw, "wonderland")
				tt.run(t, e, newPhone(t, e, transport, user, pw))
			})
		})
	}
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func TestLockout(t *testing.T) {
	eachTransport(t, func(t *testing.T, transport string) {
		e := newEnv(t, nil)
		p := newPhone(t, e, transport, "alice", "wonderland")
		p.expect(p.build("Contact: "+p.contact(5070)), 401)
		for range 10 {
			p.expect(p.build("Contact: "+p.contact(5070), p.authorization("guess")), 403)
		}
		// Locked out now, even with the right password.
		req := p.build("Contact: "+p.contact(5070), p.authorization(p.password))
		if transport == "UDP" {
			if res := p.send(req, 700*time.Millisecond); res != nil {
				t.Fatalf("locked-out UDP source got %d", res.StatusCode)
			}
		} else {
			p.expect(req, 403)
		}
		if n := e.logs.count("source locked out"); n != 1 {
			t.Fatalf("lockout start logged %d times", n)
		}
		if got := e.reg.lockout.Counters().SourceLockouts.Load(); got != 1 {
			t.Errorf("lockouts_total = %v", got)
		}
		if got := testutil.ToFloat64(e.reg.metrics.authFailures); got != 10 {
			t.Errorf("auth_failures_total = %v", got)
		}
		// The locked-out request itself is refused by the front end's guard.
		if got := testutil.ToFloat64(e.reg.metrics.byCode[403]); got != 10 {
			t.Errorf("403 count = %v", got)
		}
		e.clock.Add(5*time.Minute + time.Second)
		e.reg.lockout.Sweep()
		if n := e.logs.count("source lockout ended"); n != 1 {
			t.Fatalf("lockout end logged %d times", n)
		}
		p.register(200, "Contact: "+p.contact(5070))
	})
}

func TestLockoutDisabled(t *testing.T) {
	e := newEnv(t, func(s *Settings) { s.Lockout = lockout.Settings{} })
	p := newPhone(t, e, "UDP", "alice", "wonderland")
	p.expect(p.build(), 401)
	for range 15 {
		p.expect(p.build("Contact: "+p.contact(5070), p.authorization("guess")), 403)
	}
	p.register(200, "Contact: "+p.contact(5070))
}

// TestRetransmission sends the same authenticated REGISTER twice, byte for
// byte, as a phone does when the 200 is lost: both copies get 200 and the
// second changes nothing.
func TestRetransmission(t *testing.T) {
	e := newEnv(t, nil)
	p := newPhone(t, e, "UDP", "alice", "wonderland")
	p.expect(p.build("Contact: "+p.contact(5070)), 401)
	req := p.build("Contact: "+p.contact(5070), "Expires: 300", p.authorization(p.password))

	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	port := conn.LocalAddr().(*net.UDPAddr).Port
	via := &sip.ViaHeader{ProtocolName: "SIP", ProtocolVersion: "2.0", Transport: "UDP", Host: "127.0.0.1", Port: port}
	via.Params.Add("branch", sip.GenerateBranch())
	via.Params.Add("rport", "")
	req.PrependHeader(via)
	raw := []byte(req.String())
	buf := make([]byte, 65536)
	var expires []time.Time
	for i := range 2 {
		if _, err := conn.WriteToUDPAddrPort(raw, e.srv.Addr("udp")); err != nil {
			t.Fatal(err)
		}
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, _, err := conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			t.Fatalf("copy %d: %v", i, err)
		}
		if !strings.HasPrefix(string(buf[:n]), "SIP/2.0 200 ") {
			t.Fatalf("copy %d: %s", i, buf[:n])
		}
		expires = append(expires, e.table.Lookup("alice")[0].Expires)
		e.clock.Add(time.Second)
	}
	if !expires[0].Equal(expires[1]) {
		t.Fatalf("retransmission applied twice: %v", expires)
	}
}

func TestPersistenceAcrossRestart(t *testing.T) {
	e := newEnv(t, nil)
	p := newPhone(t, e, "UDP", "alice", "wonderland")
	p.register(200, "Contact: "+p.contact(5070), "Contact: "+p.contact(5071)+";expires=60", "Expires: 600")
	if err := e.table.Close(); err != nil {
		t.Fatal(err)
	}
	e.clock.Add(2 * time.Minute) // the 60 s contact lapses while we are down
	table, err := location.Open(e.path, nil, location.Settings{Now: e.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer table.Close()
	got := table.Lookup("alice")
	if len(got) != 1 || got[0].Contact != strings.Trim(p.contact(5070), "<>") {
		t.Fatalf("after restart: %+v", got)
	}
	if got[0].Source.Port() == 0 || got[0].Transport != "udp" {
		t.Fatalf("source not persisted: %+v", got[0])
	}
}

func TestApply(t *testing.T) {
	e := newEnv(t, nil)
	p := newPhone(t, e, "UDP", "alice", "wonderland")
	p.register(200, "Contact: "+p.contact(5070))

	s := defaultSettings()
	s.Realm = "office"
	if err := e.reg.Apply(s, directory.PhoneMap{"alice": {User: "alice", Password: "new-password"}}); err != nil {
		t.Fatal(err)
	}
	res := p.expect(p.build("Contact: "+p.contact(5070)), 401)
	if c, _ := icholy.ParseChallenge(res.GetHeader("WWW-Authenticate").Value()); c.Realm != "office" {
		t.Fatalf("realm after reload = %q", c.Realm)
	}
	p.expect(p.build("Contact: "+p.contact(5070), p.authorization("wonderland")), 403)
	p.expect(p.build("Contact: "+p.contact(5070)), 401)
	p.expect(p.build("Contact: "+p.contact(5070), p.authorization("new-password")), 200)

	bad := defaultSettings()
	bad.MinExpires = 0
	if err := e.reg.Apply(bad, nil); err == nil {
		t.Fatal("invalid settings applied")
	}
	if e.reg.Settings().Realm != "office" {
		t.Fatal("failed Apply changed the settings")
	}
}

func TestSettingsValidate(t *testing.T) {
	for name, mutate := range map[string]func(*Settings){
		"empty realm":        func(s *Settings) { s.Realm = "" },
		"fractional min":     func(s *Settings) { s.MinExpires = 1500 * time.Millisecond },
		"max below min":      func(s *Settings) { s.MaxExpires = 30 * time.Second },
		"default above max":  func(s *Settings) { s.DefaultExpires = 7200 * time.Second },
		"spread":             func(s *Settings) { s.ExpiresSpread = 51 },
		"max contacts":       func(s *Settings) { s.MaxContacts = 0 },
		"lockout window":     func(s *Settings) { s.Lockout.Window = 0 },
		"negative qualify":   func(s *Settings) { s.QualifyInterval = -time.Second },
		"negative failures":  func(s *Settings) { s.Lockout.Failures = -1 },
		"negative nonce ttl": func(s *Settings) { s.NonceTTL = -time.Second },
	} {
		s := defaultSettings()
		mutate(&s)
		if err := s.Validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if err := defaultSettings().Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestQualify(t *testing.T) {
	e := newEnv(t, func(s *Settings) { s.QualifyInterval = 200 * time.Millisecond })
	// Two contacts behind the same phone socket: the phone answers OPTIONS
	// for one URI and ignores the other.
	phoneConn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer phoneConn.Close()
	port := phoneConn.LocalAddr().(*net.UDPAddr).Port
	answering := fmt.Sprintf("sip:alice@127.0.0.1:%d", port)
	silent := fmt.Sprintf("sip:alice@127.0.0.1:%d;silent", port)
	now := e.clock.Now()
	for _, c := range []string{answering, silent} {
		b := location.Binding{Contact: c, Transport: "udp", Source: phoneConn.LocalAddr().(*net.UDPAddr).AddrPort(),
			Local: e.srv.Addr("udp"), Expires: now.Add(time.Hour), CallID: c}
		if _, err := e.table.Update("alice", func(cur []location.Binding) ([]location.Binding, error) { return append(cur, b), nil }); err != nil {
			t.Fatal(err)
		}
	}
	go func() {
		buf := make([]byte, 65536)
		for {
			n, from, err := phoneConn.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			msg, err := sip.ParseMessage(buf[:n])
			if err != nil {
				continue
			}
			req, ok := msg.(*sip.Request)
			if !ok || req.Recipient.UriParams.Has("silent") {
				continue
			}
			if from != e.srv.Addr("udp") {
				t.Errorf("OPTIONS from %s, not the listening socket", from)
			}
			res := sip.NewResponseFromRequest(req, 200, "OK", nil)
			phoneConn.WriteToUDPAddrPort([]byte(res.String()), from)
		}
	}()
	deadline := time.Now().Add(15 * time.Second)
	for {
		state := map[string]location.Reachability{}
		for _, b := range e.table.Lookup("alice") {
			state[b.Contact] = b.Reachable
		}
		if state[answering] == location.Reachable && state[silent] == location.Unreachable {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("qualify state = %v", state)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if r := e.table.Routable("alice"); len(r) != 1 || r[0].Contact != answering {
		t.Fatalf("Routable = %+v", r)
	}
	if len(e.table.Lookup("alice")) != 2 {
		t.Fatal("unreachable contact removed")
	}
}

// TestMetricsExposition checks the collector registers cleanly and exposes
// the documented names.
func TestMetricsExposition(t *testing.T) {
	e := newEnv(t, nil)
	p := newPhone(t, e, "UDP", "alice", "wonderland")
	p.register(200, "Contact: "+p.contact(5070))
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(e.reg.Collector()); err != nil {
		t.Fatal(err)
	}
	n, err := testutil.GatherAndCount(reg,
		"edgewise_registrar_responses_total", "edgewise_registrar_bindings", "edgewise_registrar_auth_failures_total",
		"edgewise_registrar_lockouts_total", "edgewise_registrar_locked_sources")
	if err != nil {
		t.Fatal(err)
	}
	if n < 6 { // two request codes (401, 200) + four single series
		t.Fatalf("%d series", n)
	}
	if got := testutil.ToFloat64(e.reg.metrics.byCode[200]); got != 1 {
		t.Fatalf("200 count = %v", got)
	}
}

// TestStackStopsCleanly runs the SIP front end, registrar and location together,
// registers over both transports, stops everything and checks that no
// goroutine is left behind.
func TestStackStopsCleanly(t *testing.T) {
	leaks := goleak.IgnoreCurrent()
	t.Run("run", func(t *testing.T) {
		e := newEnv(t, func(s *Settings) { s.QualifyInterval = 100 * time.Millisecond })
		for _, tp := range []string{"UDP", "TCP"} {
			p := newPhone(t, e, tp, "alice", "wonderland")
			p.register(200, "Contact: "+p.contact(5070))
		}
	})
	goleak.VerifyNone(t, leaks)
}
