package edgesim

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"

	"github.com/edgewise-sip/edgewise/test/kit"
)

// Calls the gateway sends to edgesim (received calls), with a sipgo
// DialogClientSession as the gateway.

func callCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// inOrder reports whether want appears in got in this order.
func inOrder(got []int, want ...int) bool {
	i := 0
	for _, g := range got {
		if i < len(want) && g == want[i] {
			i++
		}
	}
	return i == len(want)
}

func TestReceivedCallEchoesRTPUntilGatewayBye(t *testing.T) {
	t.Parallel()
	n := kit.NewNet(t)
	sim := startSim(t, testConfig(n))
	gw := newTestGateway(t, n.Addr(200), "udp")
	edgeIP := n.Addr(2)
	addr, _ := sim.SIPAddr(edgeIP)
	ctx := callCtx(t)

	oc, err := gw.invite(ctx, t, inviteOpts{user: "alice", pass: alicePass, dialled: "+15551230000", addr: addr})
	if err != nil {
		t.Fatalf("call not answered: %v (responses %v)", err, oc.codes())
	}
	// 100 and 180 leave right before the 200, and sipgo handles responses
	// on goroutines, so they may arrive after it and be dropped; the
	// slowanswer case checks them.
	if !inOrder(oc.codes(), 407, 200) {
		t.Errorf("responses %v, want 407, then 200", oc.codes())
	}
	chal := oc.responses[slices.Index(oc.codes(), 407)].GetHeader("Proxy-Authenticate")
	if chal == nil || !strings.Contains(chal.Value(), `realm="sip.twilio.com"`) ||
		!strings.Contains(chal.Value(), `qop="auth"`) || !strings.Contains(chal.Value(), "algorithm=MD5") {
		t.Errorf("407 challenge = %v", chal)
	}
	ok := oc.sess.InviteResponse
	if c := ok.Contact(); c == nil || c.Address.Host != edgeIP {
		t.Errorf("200 Contact = %v, want host %s", c, edgeIP)
	}
	a := oc.answer
	if a.codec != "PCMA" || a.pt != 8 || a.dtmfPT != 101 || a.dtmfFM != "0-15" || a.dir != dirSendRecv ||
		a.addr.Addr().String() != edgeIP || a.addr.Port() == 0 {
		t.Errorf("answer = codec %s/%d dtmf %d %q dir %s addr %s\n%s", a.codec, a.pt, a.dtmfPT, a.dtmfFM, a.dir, a.addr, ok.Body())
	}

	st := onlyCall(t, sim)
	if st.State != CallAnswered || st.Direction != CallReceived || st.From != "alice" || st.To != "+15551230000" ||
		st.Edge != "ashburn" || st.IP != edgeIP || st.Code != 200 || st.SIPCallID != oc.sess.InviteRequest.CallID().Value() ||
		!strings.HasPrefix(string(st.ID), "CA") || len(st.ID) != 34 || st.AnsweredAt == nil {
		t.Errorf("call = %+v", st)
	}
	if m := st.Media; m == nil || m.Local != a.addr.String() || m.RemoteSDP != fmt.Sprintf("%s:%d", gw.ip, oc.rtp.port()) ||
		m.Codec != "PCMA" || m.Direction != dirSendRecv {
		t.Errorf("media = %+v", st.Media)
	}

	const packets = 20
	oc.rtp.echo(t, a.addr, packets)
	if _, err := oc.rtp.conn.WriteToUDPAddrPort([]byte("not rtp at all"), a.addr); err != nil {
		t.Fatal(err)
	}
	kit.WaitFor(t, 5*time.Second, "RTP counters", func() bool {
		m, _ := sim.Call(st.ID)
		return m.Media.PacketsReceived == packets && m.Media.PacketsEchoed == packets && m.Media.Invalid == 1
	})
	st, _ = sim.Call(st.ID)
	if m := st.Media; m.BytesReceived != packets*172 || m.BytesEchoed != packets*172 || m.Source != fmt.Sprintf("%s:%d", gw.ip, oc.rtp.port()) {
		t.Errorf("media after echo = %+v", m)
	}

	if err := oc.sess.Bye(ctx); err != nil {
		t.Fatalf("BYE: %v", err)
	}
	st = waitCall(t, sim, st.ID, "call ended", inState(CallEnded))
	if st.Code != 200 || st.EndedBy != endedByGateway || st.EndedAt == nil || st.Media.PacketsEchoed != packets {
		t.Errorf("ended call = %+v", st)
	}
	// The RTP ports went back to the system.
	for _, p := range []uint16{a.addr.Port(), a.addr.Port() + 1} {
		conn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(a.addr.Addr(), p)))
		if err != nil {
			t.Errorf("port %d still bound after the call: %v", p, err)
			continue
		}
		conn.Close()
	}
}

func TestReceivedCallEdgesimHangsUpOverTCP(t *testing.T) {
	t.Parallel()
	n := kit.NewNet(t)
	sim := startSim(t, testConfig(n))
	gw := newTestGateway(t, n.Addr(200), "tcp")
	edgeIP := n.Addr(12)
	addr, _ := sim.SIPAddr(edgeIP)
	ctx := callCtx(t)

	oc, err := gw.invite(ctx, t, inviteOpts{user: "bob", pass: bobPass, dialled: "+15551230001", edge: "umatilla", addr: addr})
	if err != nil {
		t.Fatalf("call not answered: %v", err)
	}
	if c := oc.sess.InviteResponse.Contact(); c == nil || c.Address.UriParams.GetOr("transport", "") != "tcp" {
		t.Errorf("200 Contact = %v, want transport=tcp", c)
	}
	st := onlyCall(t, sim)
	if st.Transport != "TCP" || st.Edge != "umatilla" {
		t.Errorf("call = %+v", st)
	}
	oc.rtp.echo(t, oc.answer.addr, 3)

	var body CallStatus
	if code := api(t, sim, "DELETE", "/v1/calls/"+string(st.ID), "", &body); code != 200 {
		t.Fatalf("DELETE: %d %+v", code, body)
	}
	if body.State != CallEnded || body.EndedBy != endedByEdgesim || body.Code != 200 || body.Media.PacketsEchoed != 3 {
		t.Errorf("hung-up call = %+v", body)
	}
	bye := recv(t, gw.byes, "BYE from edgesim")
	if host, _, _ := net.SplitHostPort(bye.Source()); host != edgeIP || bye.Transport() != "TCP" {
		t.Errorf("BYE came from %s over %s, want %s over TCP", bye.Source(), bye.Transport(), edgeIP)
	}
	if code := api(t, sim, "DELETE", "/v1/calls/"+string(st.ID), "", nil); code != 409 {
		t.Errorf("second DELETE: %d, want 409", code)
	}
}

func TestReceivedCallCancelledBeforeAnswer(t *testing.T) {
	t.Parallel()
	n := kit.NewNet(t)
	sim := startSim(t, testConfig(n))
	gw := newTestGateway(t, n.Addr(200), "udp")
	addr, _ := sim.SIPAddr(n.Addr(1))
	ctx, cancel := context.WithCancel(callCtx(t))
	oc, err := gw.invite(ctx, t, inviteOpts{user: "alice", pass: alicePass, dialled: "noanswer", addr: addr, ipURI: true,
		onResponse: func(res *sip.Response) {
			if res.StatusCode == sip.StatusRinging {
				cancel() // WaitAnswer sends CANCEL and waits for the 487
			}
		}})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("WaitAnswer: %v, want context.Canceled", err)
	}
	if got := oc.sess.InviteResponse.StatusCode; got != sip.StatusRequestTerminated {
		t.Errorf("INVITE final response %d, want 487", got)
	}
	st := waitCall(t, sim, onlyCall(t, sim).ID, "call failed", inState(CallFailed))
	if st.Code != 487 || st.EndedBy != endedByGateway || st.AnsweredAt != nil {
		t.Errorf("cancelled call = %+v", st)
	}
}

func TestReceivedCallScriptedNumbers(t *testing.T) {
	t.Parallel()
	n := kit.NewNet(t)
	cfg := testConfig(n)
	cfg.Calls.SlowAnswer = 200 * time.Millisecond
	sim := startSim(t, cfg)
	addr, _ := sim.SIPAddr(n.Addr(3))

	for i, tc := range []struct {
		dialled string
		code    int
	}{
		{"busy", 486}, {"Decline", 603}, {"unavailable", 480}, {"status-503", 503}, {"status-404", 404},
	} {
		t.Run(tc.dialled, func(t *testing.T) {
			t.Parallel()
			gw := newTestGateway(t, n.Addr(200+i), "udp")
			oc, err := gw.invite(callCtx(t), t, inviteOpts{user: "alice", pass: alicePass, dialled: tc.dialled, addr: addr})
			var dr *sipgo.ErrDialogResponse
			if !errors.As(err, &dr) || dr.Res.StatusCode != tc.code {
				t.Fatalf("got %v, want %d", err, tc.code)
			}
			st := waitCall(t, sim, findCall(t, sim, oc.sess.InviteRequest.CallID().Value()), "call failed", inState(CallFailed))
			if st.Code != tc.code || st.EndedBy != endedByEdgesim {
				t.Errorf("call = %+v", st)
			}
		})
	}
	for i, dialled := range []string{"slowanswer", "earlymedia"} {
		t.Run(dialled, func(t *testing.T) {
			t.Parallel()
			gw := newTestGateway(t, n.Addr(210+i), "udp")
			var early *sip.Response
			start := time.Now()
			oc, err := gw.invite(callCtx(t), t, inviteOpts{user: "alice", pass: alicePass, dialled: dialled, addr: addr,
				onResponse: func(res *sip.Response) {
					if res.StatusCode == sip.StatusSessionInProgress {
						early = res
					}
				}})
			if err != nil {
				t.Fatalf("not answered: %v", err)
			}
			if took := time.Since(start); took < cfg.Calls.SlowAnswer {
				t.Errorf("answered after %s, want at least %s", took, cfg.Calls.SlowAnswer)
			}
			if dialled == "earlymedia" {
				if early == nil {
					t.Fatalf("no 183; responses %v", oc.codes())
				}
				info, err := parseSDP(early.Body())
				if err != nil || info.addr != oc.answer.addr {
					t.Errorf("183 SDP %v at %s, 200 SDP at %s", err, info.addr, oc.answer.addr)
				}
			} else if !inOrder(oc.codes(), 407, 180, 200) || !slices.Contains(oc.codes(), 100) {
				t.Errorf("responses %v, want 407, 100, 180, 200", oc.codes())
			}
			oc.rtp.echo(t, oc.answer.addr, 2)
			if err := oc.sess.Bye(callCtx(t)); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// findCall finds a call by its SIP Call-ID.
func findCall(t *testing.T, sim *Sim, sipCallID string) CallID {
	t.Helper()
	for _, st := range sim.Calls() {
		if st.SIPCallID == sipCallID {
			return st.ID
		}
	}
	t.Fatalf("no call with Call-ID %s in %+v", sipCallID, sim.Calls())
	return ""
}

func TestReceivedCallHoldAndResume(t *testing.T) {
	t.Parallel()
	n := kit.NewNet(t)
	sim := startSim(t, testConfig(n))
	gw := newTestGateway(t, n.Addr(200), "udp")
	addr, _ := sim.SIPAddr(n.Addr(1))
	ctx := callCtx(t)
	oc, err := gw.invite(ctx, t, inviteOpts{user: "alice", pass: alicePass, dialled: "+15551230002", addr: addr})
	if err != nil {
		t.Fatal(err)
	}
	id := onlyCall(t, sim).ID
	oc.rtp.echo(t, oc.answer.addr, 2)

	received := func() (uint64, uint64) {
		st, _ := sim.Call(id)
		return st.Media.PacketsReceived, st.Media.PacketsEchoed
	}
	for i, step := range []struct{ offer, answer string }{
		{dirSendOnly, dirRecvOnly},
		{dirInactive, dirInactive},
	} {
		got := oc.reinvite(ctx, t, gw.ip, step.offer)
		if got.dir != step.answer || got.addr != oc.answer.addr || got.codec != "PCMA" {
			t.Errorf("offer %s answered %s at %s, want %s at %s", step.offer, got.dir, got.addr, step.answer, oc.answer.addr)
		}
		st, _ := sim.Call(id)
		if st.Media.Direction != step.answer || st.Reinvites != i+1 || st.State != CallAnswered {
			t.Errorf("after %s: %+v", step.offer, st)
		}
		// Held: packets are counted, nothing is echoed.
		in, out := received()
		oc.rtp.send(t, oc.answer.addr, 5)
		kit.WaitFor(t, 5*time.Second, "held packets counted", func() bool { r, _ := received(); return r == in+5 })
		if _, o := received(); o != out {
			t.Errorf("echoed %d packets while held (%s)", o-out, step.answer)
		}
	}
	if got := oc.reinvite(ctx, t, gw.ip, dirSendRecv); got.dir != dirSendRecv {
		t.Errorf("resume answered %s", got.dir)
	}
	oc.rtp.echo(t, oc.answer.addr, 3)
	if err := oc.sess.Bye(ctx); err != nil {
		t.Fatal(err)
	}
	st := waitCall(t, sim, id, "call ended", inState(CallEnded))
	if st.Reinvites != 3 || st.Media.PacketsEchoed != 5 || st.Media.PacketsReceived != 15 {
		t.Errorf("call = %+v", st)
	}
}

func TestReceivedCallRefused(t *testing.T) {
	t.Parallel()
	n := kit.NewNet(t)
	sim := startSim(t, testConfig(n))
	addr, _ := sim.SIPAddr(n.Addr(1))
	for i, tc := range []struct {
		name, user, pass, from string
		code                   int
	}{
		{"wrong password", "alice", "AliceWrong1234", "alice", 403},
		{"digest user is not the From user", "bob", bobPass, "alice", 403},
		{"unknown user", "mallory", "MalloryPass123", "mallory", 403},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			gw := newTestGateway(t, n.Addr(200+i), "udp")
			o := inviteOpts{user: tc.user, pass: tc.pass, from: tc.from, dialled: "+15551230003", addr: addr}
			_, err := gw.invite(callCtx(t), t, o)
			var dr *sipgo.ErrDialogResponse
			if !errors.As(err, &dr) || dr.Res.StatusCode != tc.code {
				t.Fatalf("got %v, want %d", err, tc.code)
			}
		})
	}
	t.Run("bad sdp", func(t *testing.T) {
		t.Parallel()
		gw := newTestGateway(t, n.Addr(210), "udp")
		_, err := gw.invite(callCtx(t), t, inviteOpts{user: "alice", pass: alicePass, dialled: "x", addr: addr, body: []byte("this is not sdp")})
		var dr *sipgo.ErrDialogResponse
		if !errors.As(err, &dr) || dr.Res.StatusCode != sip.StatusNotAcceptableHere {
			t.Fatalf("got %v, want 488", err)
		}
	})
	t.Run("edge IP in reject mode", func(t *testing.T) {
		t.Parallel()
		ip := n.Addr(2)
		if err := sim.SetIPMode(ip, ModeSetting{Mode: ModeReject}); err != nil {
			t.Fatal(err)
		}
		rejAddr, _ := sim.SIPAddr(ip)
		gw := newTestGateway(t, n.Addr(211), "udp")
		_, err := gw.invite(callCtx(t), t, inviteOpts{user: "alice", pass: alicePass, dialled: "x", addr: rejAddr})
		var dr *sipgo.ErrDialogResponse
		if !errors.As(err, &dr) || dr.Res.StatusCode != sip.StatusServiceUnavailable {
			t.Fatalf("got %v, want 503", err)
		}
	})
	t.Run("edge IP in drop mode", func(t *testing.T) {
		t.Parallel()
		ip := n.Addr(3)
		if err := sim.SetIPMode(ip, ModeSetting{Mode: ModeDrop}); err != nil {
			t.Fatal(err)
		}
		dropAddr, _ := sim.SIPAddr(ip)
		gw := newTestGateway(t, n.Addr(212), "udp")
		// Force WaitAnswer out without a CANCEL: there is nothing to cancel.
		ctx, cancel := context.WithCancelCause(callCtx(t))
		timer := time.AfterFunc(silenceAfter, func() { cancel(sipgo.WaitAnswerForceCancelErr) })
		defer timer.Stop()
		oc, err := gw.invite(ctx, t, inviteOpts{user: "alice", pass: alicePass, dialled: "x", addr: dropAddr})
		if !errors.Is(err, context.Canceled) || len(oc.responses) != 0 {
			t.Fatalf("got %v and responses %v, want silence", err, oc.codes())
		}
		st, _ := sim.IP(ip)
		if st.Requests["INVITE"] == 0 {
			t.Errorf("dropped INVITE not counted: %+v", st.Requests)
		}
	})
}
