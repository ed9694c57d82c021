package edgesim

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/edgewise-sip/edgewise/test/kit"
)

// Calls edgesim places to registered users (Twilio → phone), with sipgo
// DialogServerSessions as the phones.

func sourceHost(t *testing.T, req *sip.Request) string {
	t.Helper()
	host, _, err := net.SplitHostPort(req.Source())
	if err != nil {
		t.Fatalf("source %q: %v", req.Source(), err)
	}
	return host
}

func TestPlaceCallForksToEveryBinding(t *testing.T) {
	t.Parallel()
	n := kit.NewNet(t)
	sim := startSim(t, testConfig(n))
	c := newSIPClient(t)
	// A registered through ashburn, B through umatilla: each INVITE must
	// come from the IP its binding registered through.
	a := newTestPhone(t, "a", n.Addr(201), 0)
	b := newTestPhone(t, "b", n.Addr(202), 0)
	registerPhone(t, sim, c, a, "alice", alicePass, "ashburn", n.Addr(1))
	registerPhone(t, sim, c, b, "alice", alicePass, "umatilla", n.Addr(11))

	var placed CallStatus
	if code := api(t, sim, "POST", "/v1/calls", `{"to":"alice","from":"+15550001111"}`, &placed); code != 201 {
		t.Fatalf("POST /v1/calls: %d %+v", code, placed)
	}
	if placed.Direction != CallPlaced || placed.To != "alice" || placed.From != "+15550001111" || len(placed.Forks) != 2 {
		t.Errorf("placed = %+v", placed)
	}
	invA := recv(t, a.invites, "INVITE at phone a")
	invB := recv(t, b.invites, "INVITE at phone b")
	for _, tc := range []struct {
		inv     *sip.Request
		ph      *testPhone
		from    string
		contact string
	}{
		{invA, a, n.Addr(1), a.contactURI("alice")},
		{invB, b, n.Addr(11), b.contactURI("alice")},
	} {
		if h := tc.inv.GetHeader("X-Twilio-CallSid"); h == nil || h.Value() != string(placed.ID) {
			t.Errorf("%s: X-Twilio-CallSid = %v, want %s", tc.ph.name, h, placed.ID)
		}
		if got := sourceHost(t, tc.inv); got != tc.from {
			t.Errorf("%s: INVITE from %s, want %s", tc.ph.name, got, tc.from)
		}
		if tc.inv.Recipient.String() != tc.contact || tc.inv.To().Address.User != "alice" || tc.inv.From().Address.User != "+15550001111" {
			t.Errorf("%s: INVITE %s To %s From %s", tc.ph.name, tc.inv.Recipient.String(), tc.inv.To().Value(), tc.inv.From().Value())
		}
		if offer, err := parseSDP(tc.inv.Body()); err != nil || offer.codec != "PCMU" || offer.dtmfPT != 101 || offer.addr.Addr().String() != tc.from {
			t.Errorf("%s: offer %v %+v\n%s", tc.ph.name, err, offer, tc.inv.Body())
		}
	}
	if invA.CallID().Value() == invB.CallID().Value() {
		t.Error("both forks share a Call-ID")
	}

	// Both phones ring; a answers, b must be cancelled.
	waitCall(t, sim, placed.ID, "both forks ringing", func(st CallStatus) bool {
		return st.State == CallRinging && st.Forks[0].State == forkRinging && st.Forks[1].State == forkRinging
	})
	close(a.answer)
	recv(t, b.cancelled, "CANCEL at phone b")
	st := waitCall(t, sim, placed.ID, "answered, b cancelled", func(st CallStatus) bool {
		return st.State == CallAnswered && forkTo(st, b).State == forkCancelled && forkTo(st, b).Code == 487
	})
	if st.AnsweredBy != a.contactURI("alice") || st.SIPCallID != invA.CallID().Value() ||
		st.IP != n.Addr(1) || forkTo(st, a).State != forkAnswered {
		t.Errorf("answered call = %+v", st)
	}

	offer, _ := parseSDP(invA.Body())
	a.rtp.echo(t, offer.addr, 10)
	kit.WaitFor(t, 5*time.Second, "echo counted", func() bool {
		st, _ := sim.Call(placed.ID)
		return st.Media.PacketsEchoed == 10
	})
	st, _ = sim.Call(placed.ID)
	if m := st.Media; m.Local != offer.addr.String() || m.Codec != "PCMA" || m.RemoteSDP == "" || m.PacketsReceived != 10 {
		t.Errorf("media = %+v", m)
	}

	var ended CallStatus
	if code := api(t, sim, "DELETE", "/v1/calls/"+string(placed.ID), "", &ended); code != 200 {
		t.Fatalf("DELETE: %d %+v", code, ended)
	}
	if ended.State != CallEnded || ended.EndedBy != endedByEdgesim || ended.Code != 200 {
		t.Errorf("ended = %+v", ended)
	}
	bye := recv(t, a.byes, "BYE at phone a")
	if got := sourceHost(t, bye); got != n.Addr(1) {
		t.Errorf("BYE from %s, want %s", got, n.Addr(1))
	}
	var list struct {
		Calls []CallStatus `json:"calls"`
	}
	if code := api(t, sim, "GET", "/v1/calls?state=ended&direction=placed", "", &list); code != 200 || len(list.Calls) != 1 || list.Calls[0].ID != placed.ID {
		t.Errorf("GET /v1/calls: %d %+v", code, list)
	}
}

// forkTo finds the fork that went to phone ph.
func forkTo(st CallStatus, ph *testPhone) ForkStatus {
	for _, f := range st.Forks {
		if strings.Contains(f.Contact, "@"+ph.ip+":") {
			return f
		}
	}
	return ForkStatus{}
}

func TestPlaceCallOutcomes(t *testing.T) {
	t.Parallel()
	n := kit.NewNet(t)
	sim := startSim(t, testConfig(n))
	c := newSIPClient(t)
	ctx := context.Background()

	t.Run("no binding gives 480", func(t *testing.T) {
		var st CallStatus
		if code := api(t, sim, "POST", "/v1/calls", `{"to":"nobody"}`, &st); code != 201 {
			t.Fatalf("POST: %d", code)
		}
		if st.State != CallFailed || st.Code != 480 || st.From != DefaultCaller || len(st.Forks) != 0 {
			t.Errorf("call = %+v", st)
		}
	})
	t.Run("busy phone", func(t *testing.T) {
		ph := newTestPhone(t, "busy", n.Addr(201), sip.StatusBusyHere)
		registerPhone(t, sim, c, ph, "bob", bobPass, "ashburn", n.Addr(2))
		id, err := sim.PlaceCall(ctx, CallRequest{To: "bob"})
		if err != nil {
			t.Fatal(err)
		}
		st := waitCall(t, sim, id, "call failed", inState(CallFailed))
		if st.Code != 486 || st.EndedBy != endedByGateway || st.Forks[0].State != forkFailed {
			t.Errorf("call = %+v", st)
		}
		unregisterAll(t, sim, c, "bob", bobPass)
	})
	t.Run("hang up while ringing sends CANCEL", func(t *testing.T) {
		ph := newTestPhone(t, "ring", n.Addr(202), 0)
		registerPhone(t, sim, c, ph, "bob", bobPass, "ashburn", n.Addr(2))
		id, err := sim.PlaceCall(ctx, CallRequest{To: "bob", From: "+15550002222"})
		if err != nil {
			t.Fatal(err)
		}
		recv(t, ph.invites, "INVITE")
		waitCall(t, sim, id, "ringing", inState(CallRinging))
		if err := sim.HangUp(id); err != nil {
			t.Fatal(err)
		}
		recv(t, ph.cancelled, "CANCEL")
		st := waitCall(t, sim, id, "fork cancelled", func(st CallStatus) bool {
			return st.State == CallFailed && st.Forks[0].State == forkCancelled && st.Forks[0].Code == 487
		})
		if st.Code != 487 || st.EndedBy != endedByEdgesim {
			t.Errorf("call = %+v", st)
		}
		unregisterAll(t, sim, c, "bob", bobPass)
	})
	t.Run("ring timeout cancels", func(t *testing.T) {
		ph := newTestPhone(t, "slow", n.Addr(203), 0)
		registerPhone(t, sim, c, ph, "bob", bobPass, "ashburn", n.Addr(2))
		id, err := sim.PlaceCall(ctx, CallRequest{To: "bob", Timeout: 300 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		recv(t, ph.cancelled, "CANCEL")
		st := waitCall(t, sim, id, "call failed", inState(CallFailed))
		if st.Code != 487 || !strings.Contains(st.Reason, "no answer") {
			t.Errorf("call = %+v", st)
		}
		unregisterAll(t, sim, c, "bob", bobPass)
	})
	t.Run("over TCP", func(t *testing.T) {
		ph := newTestPhone(t, "tcp", n.Addr(205), 0)
		close(ph.answer)
		addr, _ := sim.SIPAddr(n.Addr(13))
		expectStatus(t, c.register(t, reg{edge: "umatilla", addr: addr, transport: "tcp", user: "bob", pass: bobPass,
			contact: ph.contactURI("bob", "tcp"), expires: 600}), 200)
		id, err := sim.PlaceCall(ctx, CallRequest{To: "bob"})
		if err != nil {
			t.Fatal(err)
		}
		inv := recv(t, ph.invites, "INVITE")
		if inv.Transport() != "TCP" || sourceHost(t, inv) != n.Addr(13) {
			t.Errorf("INVITE over %s from %s, want TCP from %s", inv.Transport(), inv.Source(), n.Addr(13))
		}
		offer, _ := parseSDP(inv.Body())
		st := waitCall(t, sim, id, "answered", inState(CallAnswered))
		if st.Transport != "TCP" || st.IP != n.Addr(13) {
			t.Errorf("call = %+v", st)
		}
		ph.rtp.echo(t, offer.addr, 2)
		if err := sim.HangUp(id); err != nil {
			t.Fatal(err)
		}
		if bye := recv(t, ph.byes, "BYE"); bye.Transport() != "TCP" {
			t.Errorf("BYE over %s", bye.Transport())
		}
		waitCall(t, sim, id, "ended", inState(CallEnded))
		unregisterAll(t, sim, c, "bob", bobPass)
	})
	t.Run("phone hangs up", func(t *testing.T) {
		ph := newTestPhone(t, "bye", n.Addr(204), 0)
		close(ph.answer)
		registerPhone(t, sim, c, ph, "bob", bobPass, "ashburn", n.Addr(2))
		id, err := sim.PlaceCall(ctx, CallRequest{To: "bob"})
		if err != nil {
			t.Fatal(err)
		}
		recv(t, ph.invites, "INVITE")
		waitCall(t, sim, id, "answered", inState(CallAnswered))
		sess := onlyServerSession(t, ph)
		byeCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if err := sess.Bye(byeCtx); err != nil {
			t.Fatalf("BYE from phone: %v", err)
		}
		st := waitCall(t, sim, id, "ended", inState(CallEnded))
		if st.EndedBy != endedByGateway || st.Code != 200 {
			t.Errorf("call = %+v", st)
		}
		unregisterAll(t, sim, c, "bob", bobPass)
	})
}

func TestPlaceCallEgress(t *testing.T) {
	t.Parallel()
	n := kit.NewNet(t)
	sim := startSim(t, testConfig(n))
	c := newSIPClient(t)
	ph := newTestPhone(t, "ph", n.Addr(201), sip.StatusTemporarilyUnavailable)
	registerPhone(t, sim, c, ph, "alice", alicePass, "ashburn", n.Addr(1))

	for _, tc := range []struct {
		name, edge string
		breakIP    string
		want       string
	}{
		{"registered IP", "", "", n.Addr(1)},
		{"registered IP dropping: another IP of its edge", "", n.Addr(1), n.Addr(2)},
		{"edge named in the request", "umatilla", "", n.Addr(11)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.breakIP != "" {
				if err := sim.SetIPMode(tc.breakIP, ModeSetting{Mode: ModeDrop}); err != nil {
					t.Fatal(err)
				}
				defer func() { _ = sim.SetIPMode(tc.breakIP, ModeSetting{Mode: ModeInherit}) }()
			}
			id, err := sim.PlaceCall(context.Background(), CallRequest{To: "alice", Edge: tc.edge})
			if err != nil {
				t.Fatal(err)
			}
			inv := recv(t, ph.invites, "INVITE")
			if got := sourceHost(t, inv); got != tc.want {
				t.Errorf("INVITE from %s, want %s", got, tc.want)
			}
			st := waitCall(t, sim, id, "call failed", inState(CallFailed))
			if st.Code != 480 || st.Forks[0].IP != tc.want {
				t.Errorf("call = %+v", st)
			}
		})
	}
}

func TestCallAPIErrors(t *testing.T) {
	t.Parallel()
	n := kit.NewNet(t)
	sim := startSim(t, testConfig(n))
	for _, tc := range []struct {
		method, path, body string
		code               int
		errHas             string
	}{
		{"POST", "/v1/calls", `{}`, 400, "to"},
		{"POST", "/v1/calls", `{"to":"alice","edge":"dublin"}`, 400, "unknown edge"},
		{"POST", "/v1/calls", `{"to":"alice","timeout":"soon"}`, 400, "not a duration"},
		{"POST", "/v1/calls", `{"to":"alice","timeout":"1h"}`, 400, "out of range"},
		{"POST", "/v1/calls", `{"to":"alice","colour":"red"}`, 400, "unknown field"},
		{"POST", "/v1/calls", `{"to":"a b"}`, 400, "not a SIP user"},
		{"GET", "/v1/calls/CA00", "", 404, "unknown call"},
		{"DELETE", "/v1/calls/CA00", "", 404, "unknown call"},
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
	var failed CallStatus
	api(t, sim, "POST", "/v1/calls", `{"to":"alice"}`, &failed)
	if code := api(t, sim, "DELETE", "/v1/calls/"+string(failed.ID), "", nil); code != 409 {
		t.Errorf("DELETE of a failed call: %d, want 409", code)
	}
	if code := api(t, sim, "POST", "/v1/reset", "", nil); code != 200 || len(sim.Calls()) != 0 {
		t.Errorf("reset kept finished calls: %+v", sim.Calls())
	}
	if _, err := sim.PlaceCall(context.Background(), CallRequest{To: "alice", Timeout: -time.Second}); err == nil {
		t.Error("negative timeout accepted")
	}
}

// unregisterAll removes every binding of user so the next subtest starts
// with none.
func unregisterAll(t *testing.T, sim *Sim, c *sipClient, user, pass string) {
	t.Helper()
	for _, b := range sim.Bindings(user) {
		addr, _ := sim.SIPAddr(b.IP)
		expectStatus(t, c.register(t, reg{edge: b.Edge, addr: addr, user: user, pass: pass, contact: b.Contact, expires: 0}), 200)
	}
}
