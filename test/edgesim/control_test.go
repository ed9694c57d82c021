package edgesim

import (
	"strings"
	"testing"
	"time"

	"github.com/edgewise-sip/edgewise/test/kit"
)

func TestControlAPIErrors(t *testing.T) {
	t.Parallel()
	n := kit.NewNet(t)
	sim := startSim(t, testConfig(n))
	ip := n.Addr(1)

	for _, tc := range []struct {
		method, path, body string
		code               int
		errHas             string
	}{
		{"PUT", "/v1/edges/dublin", `{"mode":"drop"}`, 404, "unknown edge"},
		{"PUT", "/v1/ips/127.0.0.99", `{"mode":"drop"}`, 404, "unknown edge IP"},
		{"PUT", "/v1/ips/not-an-ip", `{"mode":"drop"}`, 404, "unknown edge IP"},
		{"GET", "/v1/edges/dublin", "", 404, "unknown edge"},
		{"GET", "/v1/ips/127.0.0.99", "", 404, "unknown edge IP"},
		{"PUT", "/v1/edges/ashburn", `{"mode":"sideways"}`, 400, "unknown mode"},
		{"PUT", "/v1/edges/ashburn", `{"mode":"inherit"}`, 400, "IPs only"},
		{"PUT", "/v1/edges/ashburn", `{"mode":"drop","delay":"2s"}`, 400, "only valid with mode"},
		{"PUT", "/v1/edges/ashburn", `{"mode":"slow","delay":"soon"}`, 400, "not a duration"},
		{"PUT", "/v1/edges/ashburn", `{"mode":"slow","delay":"-1s"}`, 400, "out of range"},
		{"PUT", "/v1/edges/ashburn", `{"mode":"up","colour":"red"}`, 400, "unknown field"},
		{"PUT", "/v1/edges/ashburn", ``, 400, "empty body"},
		{"PUT", "/v1/edges/ashburn", `{}`, 400, "mode is required"},
		{"PUT", "/v1/ips/" + ip, `{"mode":"sideways"}`, 400, "unknown mode"},
		{"PUT", "/v1/dns", `{"mode":"sideways"}`, 400, "dns mode"},
		{"POST", "/v1/reset", `{"keep":true}`, 400, "unknown field"},
		{"POST", "/v1/reset?keep_bindings=maybe", ``, 400, "not a boolean"},
	} {
		t.Run(tc.method+" "+tc.path+" "+tc.body, func(t *testing.T) {
			var body struct {
				Error string `json:"error"`
			}
			code := api(t, sim, tc.method, tc.path, tc.body, &body)
			if code != tc.code || !strings.Contains(body.Error, tc.errHas) {
				t.Errorf("got %d %q, want %d containing %q", code, body.Error, tc.code, tc.errHas)
			}
		})
	}
	if code := api(t, sim, "DELETE", "/v1/edges/ashburn", "", nil); code != 405 {
		t.Errorf("DELETE: %d, want 405", code)
	}
	// Nothing above changed anything.
	for _, e := range sim.Edges() {
		for _, st := range e.IPs {
			if st.Mode != ModeUp || !st.Open {
				t.Errorf("%s after bad requests: %+v", st.IP, st)
			}
		}
	}
}

func TestControlAPIStatusAndReset(t *testing.T) {
	t.Parallel()
	n := kit.NewNet(t)
	sim := startSim(t, testConfig(n))
	c := newSIPClient(t)
	a1, a2 := n.Addr(1), n.Addr(2)

	var health map[string]string
	if code := api(t, sim, "GET", "/healthz", "", &health); code != 200 || health["status"] != "ok" {
		t.Fatalf("healthz: %d %v", code, health)
	}

	addr1, _ := sim.SIPAddr(a1)
	expectStatus(t, c.register(t, reg{edge: "ashburn", addr: addr1, user: "alice", pass: alicePass, contact: "sip:alice@127.0.0.1:5000", expires: 600}), 200)
	expectAnswer(t, c, addr1, "udp", 200, 0)

	// An IP mode overrides its edge's, in both directions.
	putMode(t, sim, "/v1/edges/ashburn", `{"mode":"slow","delay":"2s"}`)
	var ipSt IPStatus
	if code := api(t, sim, "PUT", "/v1/ips/"+a2, `{"mode":"up"}`, &ipSt); code != 200 {
		t.Fatalf("PUT ip: %d", code)
	}
	if ipSt.Mode != ModeUp || ipSt.Override != ModeUp {
		t.Errorf("ip with own mode up under a slow edge: %+v", ipSt)
	}
	var edges struct {
		Edges []EdgeStatus `json:"edges"`
	}
	if code := api(t, sim, "GET", "/v1/edges", "", &edges); code != 200 {
		t.Fatalf("GET /v1/edges: %d", code)
	}
	ash := edges.Edges[0]
	if ash.Name != "ashburn" || ash.Mode != ModeSlow || ash.Delay != "2s" || len(ash.FQDNs) != 2 || ash.FQDNs[0] != "demo.sip.ashburn.twilio.com" {
		t.Errorf("ashburn = %+v", ash)
	}
	if st := ash.IPs[0]; st.IP != a1 || st.Mode != ModeSlow || st.Delay != "2s" || st.Override != "" ||
		st.Requests["REGISTER"] != 2 || st.Requests["OPTIONS"] != 1 || st.Port == 0 {
		t.Errorf("ashburn ip 1 = %+v", st)
	}
	if st := ash.IPs[1]; st.Mode != ModeUp || st.Override != ModeUp {
		t.Errorf("ashburn ip 2 = %+v", st)
	}
	if um := edges.Edges[1]; um.Mode != ModeUp || um.IPs[0].Mode != ModeUp {
		t.Errorf("umatilla = %+v", um)
	}

	// Reset keeping bindings: modes and counters back, bindings stay.
	var afterReset struct {
		Edges []EdgeStatus `json:"edges"`
	}
	if code := api(t, sim, "POST", "/v1/reset", `{"keep_bindings":true}`, &afterReset); code != 200 {
		t.Fatalf("reset: %d", code)
	}
	for _, e := range afterReset.Edges {
		if e.Mode != ModeUp {
			t.Errorf("%s after reset: %s", e.Name, e.Mode)
		}
		for _, st := range e.IPs {
			if st.Mode != ModeUp || st.Override != "" || len(st.Requests) != 0 {
				t.Errorf("%s after reset: %+v", st.IP, st)
			}
		}
	}
	if bs := listBindings(t, sim, "alice"); len(bs) != 1 {
		t.Errorf("bindings after reset keeping them: %+v", bs)
	}
	start := time.Now()
	expectAnswer(t, c, addr1, "udp", 200, 0)
	if took := time.Since(start); took >= 2*time.Second {
		t.Errorf("still slow after reset: %s", took)
	}

	// Plain reset empties the table.
	if code := api(t, sim, "POST", "/v1/reset", "", nil); code != 200 {
		t.Fatalf("reset: %d", code)
	}
	if bs := listBindings(t, sim, ""); len(bs) != 0 {
		t.Errorf("bindings after reset: %+v", bs)
	}
}

func TestRefuseAndReopenKeepsPort(t *testing.T) {
	t.Parallel()
	n := kit.NewNet(t)
	sim := startSim(t, testConfig(n))
	ip := n.Addr(3)
	before, _ := sim.SIPAddr(ip)
	for range 3 {
		putMode(t, sim, "/v1/ips/"+ip, `{"mode":"refuse"}`)
		if st, _ := sim.IP(ip); st.Open {
			t.Fatalf("open in refuse mode: %+v", st)
		}
		putMode(t, sim, "/v1/ips/"+ip, `{"mode":"up"}`)
	}
	after, _ := sim.SIPAddr(ip)
	if before != after {
		t.Errorf("address changed across refuse: %s → %s", before, after)
	}
	expectAnswer(t, newSIPClient(t), after, "tcp", 200, 0)
	// All IPs configured with port 0 share one port, as 5060 at Twilio.
	for _, e := range sim.Edges() {
		for _, st := range e.IPs {
			if st.Port != sim.Edges()[0].IPs[0].Port {
				t.Errorf("%s on port %d, others on %d", st.IP, st.Port, sim.Edges()[0].IPs[0].Port)
			}
		}
	}
}
