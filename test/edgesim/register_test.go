package edgesim

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/edgewise-sip/edgewise/test/kit"
)

type bindingsBody struct {
	Bindings []Binding `json:"bindings"`
}

func listBindings(t *testing.T, sim *Sim, user string) []Binding {
	t.Helper()
	var body bindingsBody
	if code := api(t, sim, "GET", "/v1/bindings?user="+user, "", &body); code != 200 {
		t.Fatalf("GET /v1/bindings: %d", code)
	}
	return body.Bindings
}

func contactExpires(t *testing.T, res *sip.Response) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, h := range res.GetHeaders("Contact") {
		c, ok := h.(*sip.ContactHeader)
		if !ok {
			t.Fatalf("Contact %q not parsed", h.Value())
		}
		exp, _ := c.Params.Get("expires")
		out[c.Address.String()] = exp
	}
	return out
}

func TestRegisterListsBindingWithEdgeAndIP(t *testing.T) {
	t.Parallel()
	n := kit.NewNet(t)
	sim := startSim(t, testConfig(n))
	c := newSIPClient(t)

	for _, tc := range []struct {
		user, pass, edge, ip, transport string
	}{
		{"alice", alicePass, "ashburn", n.Addr(2), "udp"},
		{"bob", bobPass, "umatilla", n.Addr(13), "tcp"},
	} {
		t.Run(tc.user, func(t *testing.T) {
			addr, err := sim.SIPAddr(tc.ip)
			if err != nil {
				t.Fatal(err)
			}
			contact := "sip:" + tc.user + "@127.0.0.1:5099"
			res := c.register(t, reg{edge: tc.edge, addr: addr, transport: tc.transport, user: tc.user, pass: tc.pass, contact: contact, expires: 600})
			expectStatus(t, res, 200)
			if got := contactExpires(t, res)[contact]; got != "600" {
				t.Errorf("200 OK lists %s with expires=%q, want 600", contact, got)
			}

			bs := listBindings(t, sim, tc.user)
			if len(bs) != 1 {
				t.Fatalf("bindings = %+v, want one", bs)
			}
			b := bs[0]
			if b.User != tc.user || b.Contact != contact || b.Edge != tc.edge || b.IP != tc.ip ||
				!strings.EqualFold(b.Transport, tc.transport) || b.ExpiresIn != 600 || b.CallID == "" || b.CSeq == 0 ||
				!strings.HasPrefix(b.Source, "127.0.0.1:") || b.Port == 0 {
				t.Errorf("binding = %+v", b)
			}
			if got := b.ExpiresAt.Sub(b.RegisteredAt); got != 600*time.Second {
				t.Errorf("expires_at - registered_at = %s, want 600s", got)
			}
		})
	}
}

func TestRegisterExpiryRules(t *testing.T) {
	t.Parallel()
	n := kit.NewNet(t)
	sim := startSim(t, testConfig(n))
	c := newSIPClient(t)
	addr, _ := sim.SIPAddr(n.Addr(1))
	base := reg{edge: "ashburn", addr: addr, user: "alice", pass: alicePass, contact: "sip:alice@127.0.0.1:5001"}

	t.Run("below minimum gets 423 with Min-Expires", func(t *testing.T) {
		r := base
		r.expires = 60
		res := c.register(t, r)
		expectStatus(t, res, sip.StatusIntervalToBrief)
		if h := res.GetHeader("Min-Expires"); h == nil || h.Value() != "600" {
			t.Errorf("Min-Expires = %v, want 600", h)
		}
		if bs := sim.Bindings("alice"); len(bs) != 0 {
			t.Errorf("423 left bindings %+v", bs)
		}
	})
	t.Run("above maximum is cut to 3600", func(t *testing.T) {
		r := base
		r.expires = 7200
		res := c.register(t, r)
		expectStatus(t, res, 200)
		if got := contactExpires(t, res)[r.contact]; got != "3600" {
			t.Errorf("granted expires=%q, want 3600", got)
		}
		if bs := sim.Bindings("alice"); len(bs) != 1 || bs[0].ExpiresIn != 3600 {
			t.Errorf("bindings = %+v, want one with 3600 s", bs)
		}
	})
	t.Run("no expiry given means the maximum", func(t *testing.T) {
		r := base
		r.expires = -1
		expectStatus(t, c.register(t, r), 200)
		if bs := sim.Bindings("alice"); len(bs) != 1 || bs[0].ExpiresIn != 3600 {
			t.Errorf("bindings = %+v, want one with 3600 s", bs)
		}
	})
	t.Run("zero removes the binding", func(t *testing.T) {
		r := base
		r.expires = 0
		res := c.register(t, r)
		expectStatus(t, res, 200)
		if len(res.GetHeaders("Contact")) != 0 {
			t.Errorf("200 OK still lists contacts: %v", res.GetHeaders("Contact"))
		}
		if bs := sim.Bindings("alice"); len(bs) != 0 {
			t.Errorf("bindings after expires 0 = %+v", bs)
		}
	})
}

func TestRegisterMaxBindingsPerAOR(t *testing.T) {
	t.Parallel()
	n := kit.NewNet(t)
	sim := startSim(t, testConfig(n))
	c := newSIPClient(t)
	addr, _ := sim.SIPAddr(n.Addr(1))
	contact := func(i int) string { return fmt.Sprintf("sip:alice@127.0.0.1:%d", 6000+i) }
	r := func(i, expires int) reg {
		return reg{edge: "ashburn", addr: addr, user: "alice", pass: alicePass, contact: contact(i), expires: expires}
	}

	for i := range 10 {
		expectStatus(t, c.register(t, r(i, 600)), 200)
	}
	res := c.register(t, r(10, 600))
	expectStatus(t, res, sip.StatusForbidden)
	if got := len(sim.Bindings("alice")); got != 10 {
		t.Fatalf("after the refused 11th: %d bindings, want 10", got)
	}
	// At the limit an AOR may still refresh, and a freed slot can be reused.
	expectStatus(t, c.register(t, r(3, 1200)), 200)
	expectStatus(t, c.register(t, r(4, 0)), 200)
	expectStatus(t, c.register(t, r(10, 600)), 200)
	if got := len(sim.Bindings("alice")); got != 10 {
		t.Fatalf("%d bindings, want 10", got)
	}
	// The limit is per AOR.
	expectStatus(t, c.register(t, reg{edge: "ashburn", addr: addr, user: "bob", pass: bobPass, contact: "sip:bob@127.0.0.1:7000", expires: 600}), 200)
}

func TestRegisterRateLimitPerAOR(t *testing.T) {
	t.Parallel()
	n := kit.NewNet(t)
	cfg := testConfig(n)
	cfg.Rules.RegisterRate = 0 // Twilio's 5/s
	clock := newFakeClock()
	sim := startSim(t, cfg, withClock(clock))
	c := newSIPClient(t)
	addr, _ := sim.SIPAddr(n.Addr(1))
	other, _ := sim.SIPAddr(n.Addr(12)) // the limit holds across edges

	attempt := func(user, edge, to string) *sip.Response {
		t.Helper()
		res, err := c.do(reg{edge: edge, addr: to, transport: "udp", user: user, contact: "sip:" + user + "@127.0.0.1:5000", expires: 600}.request(), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	// The clock stands still, so all attempts fall in one second. Every
	// attempt counts, the challenged ones too.
	for i := range 5 {
		edge, to := "ashburn", addr
		if i%2 == 1 {
			edge, to = "umatilla", other
		}
		expectStatus(t, attempt("alice", edge, to), sip.StatusUnauthorized)
	}
	res := attempt("alice", "ashburn", addr)
	expectStatus(t, res, sip.StatusServiceUnavailable)
	if h := res.GetHeader("Retry-After"); h == nil || h.Value() != "1" {
		t.Errorf("Retry-After = %v, want 1", h)
	}
	if h := res.GetHeader("Warning"); h == nil || !strings.Contains(h.Value(), "32008") {
		t.Errorf("Warning = %v, want one naming 32008", h)
	}
	expectStatus(t, attempt("bob", "ashburn", addr), sip.StatusUnauthorized)

	clock.Advance(time.Second + time.Millisecond)
	expectStatus(t, attempt("alice", "ashburn", addr), sip.StatusUnauthorized)
}

func TestRegisterAuthFailures(t *testing.T) {
	t.Parallel()
	n := kit.NewNet(t)
	sim := startSim(t, testConfig(n))
	c := newSIPClient(t)
	addr, _ := sim.SIPAddr(n.Addr(1))

	for _, tc := range []struct {
		name string
		r    reg
		want int
	}{
		{"wrong password", reg{user: "alice", pass: "WrongPassword1"}, sip.StatusForbidden},
		{"unknown user", reg{user: "mallory", pass: alicePass}, sip.StatusForbidden},
		{"user name case differs", reg{user: "Alice", pass: alicePass}, sip.StatusForbidden},
		{"digest user is not the AOR", reg{user: "alice", authUser: "bob", pass: bobPass}, sip.StatusForbidden},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.r.edge, tc.r.addr, tc.r.contact, tc.r.expires = "ashburn", addr, "sip:x@127.0.0.1:5000", 600
			expectStatus(t, c.register(t, tc.r), tc.want)
		})
	}
	if bs := sim.Bindings(""); len(bs) != 0 {
		t.Errorf("failed registrations left bindings %+v", bs)
	}

	t.Run("unknown domain", func(t *testing.T) {
		req := reg{edge: "ashburn", addr: addr, user: "alice", contact: "sip:x@127.0.0.1:5000", expires: 600}.request()
		req.Recipient.Host = "other.sip.ashburn.twilio.com"
		res, err := c.do(req, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		expectStatus(t, res, sip.StatusNotFound)
	})
}

func TestBindingsSharedAcrossEdges(t *testing.T) {
	t.Parallel()
	n := kit.NewNet(t)
	sim := startSim(t, testConfig(n))
	c := newSIPClient(t)
	ash, _ := sim.SIPAddr(n.Addr(1))
	uma, _ := sim.SIPAddr(n.Addr(11))
	desk := "sip:alice@127.0.0.1:5010"
	soft := "sip:alice@127.0.0.1:5011"

	expectStatus(t, c.register(t, reg{edge: "ashburn", addr: ash, user: "alice", pass: alicePass, contact: desk, expires: 600}), 200)
	// The same contact through another edge moves the binding; it does not
	// add a second one.
	res := c.register(t, reg{edge: "umatilla", addr: uma, transport: "tcp", user: "alice", pass: alicePass, contact: desk, expires: 900})
	expectStatus(t, res, 200)
	bs := listBindings(t, sim, "alice")
	if len(bs) != 1 || bs[0].Edge != "umatilla" || bs[0].IP != n.Addr(11) || bs[0].ExpiresIn != 900 || bs[0].Transport != "TCP" {
		t.Fatalf("bindings = %+v, want one on umatilla", bs)
	}
	// A registrar on any edge sees bindings made on the others.
	res = c.register(t, reg{edge: "ashburn", addr: ash, user: "alice", pass: alicePass, contact: soft, expires: 600})
	expectStatus(t, res, 200)
	got := contactExpires(t, res)
	if got[desk] != "900" || got[soft] != "600" {
		t.Errorf("ashburn's 200 OK lists %v, want both contacts", got)
	}
	edges := map[string]string{}
	for _, b := range listBindings(t, sim, "alice") {
		edges[b.Contact] = b.Edge
	}
	if edges[desk] != "umatilla" || edges[soft] != "ashburn" {
		t.Errorf("binding edges = %v", edges)
	}

	// Contact: * with Expires: 0 through either edge removes them all.
	req := reg{edge: "umatilla", addr: uma, user: "alice", expires: 0}.request()
	req.AppendHeader(sip.NewHeader("Contact", "*"))
	res, err := c.do(req, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	res, err = c.DoDigestAuth(t.Context(), req, res, digestAuth("alice", alicePass))
	if err != nil {
		t.Fatal(err)
	}
	expectStatus(t, res, 200)
	if bs := sim.Bindings("alice"); len(bs) != 0 {
		t.Errorf("bindings after Contact: * = %+v", bs)
	}
}

func TestBindingsExpireAndAreSwept(t *testing.T) {
	t.Parallel()
	n := kit.NewNet(t)
	clock := newFakeClock()
	sim := startSim(t, testConfig(n), withClock(clock))
	c := newSIPClient(t)
	addr, _ := sim.SIPAddr(n.Addr(1))
	expectStatus(t, c.register(t, reg{edge: "ashburn", addr: addr, user: "alice", pass: alicePass, contact: "sip:alice@127.0.0.1:5000", expires: 600}), 200)
	expectStatus(t, c.register(t, reg{edge: "ashburn", addr: addr, user: "bob", pass: bobPass, contact: "sip:bob@127.0.0.1:5000", expires: 1200}), 200)

	clock.Advance(599 * time.Second)
	if bs := listBindings(t, sim, ""); len(bs) != 2 || bs[0].ExpiresIn != 1 {
		t.Fatalf("after 599 s: %+v", bs)
	}
	clock.Advance(time.Second)
	bs := listBindings(t, sim, "")
	if len(bs) != 1 || bs[0].User != "bob" || bs[0].ExpiresIn != 600 {
		t.Fatalf("after 600 s: %+v, want only bob", bs)
	}
	// Listing hides expired bindings; the sweep drops them from the table.
	sim.sweep()
	sim.loc.mu.Lock()
	_, aliceKept := sim.loc.users["alice"]
	sim.loc.mu.Unlock()
	if aliceKept {
		t.Error("sweep kept alice's expired binding")
	}
}

func TestOtherMethodsNotImplemented(t *testing.T) {
	t.Parallel()
	n := kit.NewNet(t)
	sim := startSim(t, testConfig(n))
	c := newSIPClient(t)
	addr, _ := sim.SIPAddr(n.Addr(1))
	for _, m := range []sip.RequestMethod{sip.MESSAGE, sip.SUBSCRIBE, sip.NOTIFY} {
		res, err := c.do(newRequest(m, "ashburn", addr, "udp"), 5*time.Second)
		if err != nil {
			t.Fatalf("%s: %v", m, err)
		}
		expectStatus(t, res, sip.StatusNotImplemented)
	}
	res, err := c.options(addr, "tcp", 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	expectStatus(t, res, 200)
	if h := res.GetHeader("Allow"); h == nil || !strings.Contains(h.Value(), "REGISTER") || !strings.Contains(h.Value(), "INVITE") {
		t.Errorf("Allow = %v", h)
	}
}
