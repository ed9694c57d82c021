package calls

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"go.uber.org/goleak"

	"github.com/edgewise-sip/edgewise/registrar/twilio/edge"
	"github.com/edgewise-sip/edgewise/test/edgesim"
	"github.com/edgewise-sip/edgewise/test/kit"
)

// simEnv is edgewise with a real edge monitor in front of edgesim playing
// two Twilio edges: ashburn on .11 and .12, umatilla on .21 (DNS from
// edgesim), phones on .3 and .4.
type simEnv struct {
	*env
	sim *edgesim.Sim
	mon *edge.Monitor
}

func newSimEnv(t *testing.T) *simEnv {
	t.Helper()
	baseline := goleak.IgnoreCurrent()
	n := kit.NewNet(t)
	ip := func(h int) string { return n.IP(h).String() }
	log := kit.Logger(t)
	sim, err := edgesim.New(edgesim.Config{
		Domain: domain,
		Edges: []edgesim.EdgeConfig{
			{Name: "ashburn", IPs: []string{ip(11), ip(12)}},
			{Name: "umatilla", IPs: []string{ip(21)}},
		},
		Transports:  []string{"udp"},
		DNS:         edgesim.DNSConfig{Listen: ip(10) + ":0"},
		Credentials: []edgesim.Credential{{User: twilioUser, Password: twilioPass}},
		Calls:       edgesim.CallsConfig{SlowAnswer: 200 * time.Millisecond},
	}, log.With("component", "edgesim"))
	if err != nil {
		t.Fatal(err)
	}
	stopSim, err := sim.Start(context.Background())
	if err != nil {
		t.Fatalf("edgesim: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	sipAddr, err := sim.SIPAddr(ip(11))
	if err != nil {
		t.Fatal(err)
	}
	port := netip.MustParseAddrPort(sipAddr).Port()
	// No keepalives: the calls' own outcomes are the monitor's signal, and
	// a down edge's probe always succeeds.
	mon, err := edge.New(edge.Settings{
		Domain: domain, Edges: []string{"ashburn", "umatilla"}, DNSServer: sim.DNSAddr(),
		Transport: "udp", Port: int(port), Timeout: 400 * time.Millisecond,
		KeepaliveInterval: time.Second, FailbackHold: time.Hour, KeepaliveMethod: edge.KeepaliveNone,
	}, edge.ProberFunc(func(context.Context, edge.Target) (edge.Result, error) {
		return edge.Result{StatusCode: 200}, nil
	}), log.With("component", "edge"))
	if err != nil {
		t.Fatal(err)
	}
	monDone := make(chan error, 1)
	go func() { monDone <- mon.Run(ctx) }()
	select {
	case <-mon.Ready():
	case <-time.After(5 * time.Second):
		t.Fatal("edge monitor never resolved the edges")
	}
	var cidrs []netip.Prefix
	for _, h := range []int{11, 12, 21} {
		cidrs = append(cidrs, netip.PrefixFrom(n.IP(h), 32))
	}
	e := newEnv(t, func(c *envConfig) {
		c.n, c.edges, c.baseline = n, mon, baseline
		c.settings = Settings{Domain: domain, PublicAddress: n.IP(1).String(), Timeout: 400 * time.Millisecond,
			SignallingCIDRs: cidrs, Realm: "edgewise"}
	})
	e.atEnd(func() {
		cancel()
		<-monDone
		if err := stopSim(); err != nil {
			t.Errorf("edgesim: %v", err)
		}
	})
	return &simEnv{env: e, sim: sim, mon: mon}
}

func (s *simEnv) simAddr(h int) netip.AddrPort {
	a, err := s.sim.SIPAddr(s.n.IP(h).String())
	if err != nil {
		s.t.Fatal(err)
	}
	return netip.MustParseAddrPort(a)
}

// receivedCall is edgesim's record of the one call edgewise placed.
func (s *simEnv) receivedCall() edgesim.CallStatus {
	s.t.Helper()
	var out edgesim.CallStatus
	kit.WaitFor(s.t, 5*time.Second, "edgesim to record the call", func() bool {
		for _, c := range s.sim.Calls() {
			if c.Direction == edgesim.CallReceived {
				out = c
				return true
			}
		}
		return false
	})
	return out
}

func TestEdgesimOutboundCallWithEchoAndHold(t *testing.T) {
	s := newSimEnv(t)
	phone := newPeer(s.env, "phone", 3)
	prtp := newRTP(s.env, 3, false)
	ctx := testCtx(t)
	sess, err := s.dialOut(ctx, phone, "+15551230000", offer(prtp.addr, "sendrecv"), nil)
	if err != nil {
		t.Fatalf("call failed: %v", err)
	}
	dst, _ := mediaOf(t, sess.InviteResponse.Body())
	prtp.send(t, dst, 25)
	kit.WaitFor(t, 5*time.Second, "edgesim's echo at the phone", func() bool { return prtp.got.Load() >= 25 })
	st := s.receivedCall()
	if st.From != twilioUser || st.To != "+15551230000" || st.Edge != "ashburn" {
		t.Errorf("edgesim saw from %q to %q on %q", st.From, st.To, st.Edge)
	}

	// Hold and resume through to edgesim.
	for _, dir := range []string{"sendonly", "sendrecv"} {
		req := sip.NewRequest(sip.INVITE, sess.InviteResponse.Contact().Address)
		req.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
		req.SetBody(offer(prtp.addr, dir))
		res, err := sess.Do(ctx, req)
		if err != nil || res.StatusCode != 200 {
			t.Fatalf("re-INVITE %s: %v %v", dir, res, err)
		}
		ack := sip.NewRequest(sip.ACK, sess.InviteResponse.Contact().Address)
		ack.AppendHeader(&sip.CSeqHeader{SeqNo: req.CSeq().SeqNo, MethodName: sip.ACK})
		if err := sess.WriteRequest(ack); err != nil {
			t.Fatal(err)
		}
	}
	st, err = s.sim.Call(st.ID)
	if err != nil || st.Reinvites != 2 || st.Media == nil || st.Media.Direction != "sendrecv" {
		t.Fatalf("edgesim after hold/resume: %+v %v", st, err)
	}
	if err := sess.Bye(ctx); err != nil {
		t.Fatal(err)
	}
	st, err = s.sim.WaitCall(ctx, st.ID, edgesim.CallStatus.IsOver)
	if err != nil || st.State != edgesim.CallEnded || st.EndedBy != "gateway" {
		t.Fatalf("edgesim call %+v %v, want ended by the gateway", st, err)
	}
	if st.Media.PacketsEchoed < 25 {
		t.Errorf("edgesim echoed %d packets", st.Media.PacketsEchoed)
	}
}

func TestEdgesimBusy(t *testing.T) {
	s := newSimEnv(t)
	phone := newPeer(s.env, "phone", 3)
	prtp := newRTP(s.env, 3, false)
	_, err := s.dialOut(testCtx(t), phone, "busy", offer(prtp.addr, "sendrecv"), nil)
	if code := statusCode(err); code != 486 {
		t.Fatalf("got %v (code %d), want 486", err, code)
	}
}

func TestEdgesimFailoverDuringSetup(t *testing.T) {
	s := newSimEnv(t)
	// The active edge's first IP stops answering.
	first := s.mon.Targets("ashburn")[0]
	if err := s.sim.SetIPMode(first.IP.String(), edgesim.ModeSetting{Mode: edgesim.ModeDrop}); err != nil {
		t.Fatal(err)
	}
	phone := newPeer(s.env, "phone", 3)
	prtp := newRTP(s.env, 3, false)
	start := time.Now()
	sess, err := s.dialOut(testCtx(t), phone, "100", offer(prtp.addr, "sendrecv"), nil)
	if err != nil {
		t.Fatalf("call failed: %v", err)
	}
	if took := time.Since(start); took > 400*time.Millisecond+3*time.Second {
		t.Errorf("failover took %s", took)
	}
	st := s.receivedCall()
	if st.IP == first.IP.String() || st.Edge != "ashburn" {
		t.Errorf("call arrived at %s/%s, want ashburn's other IP", st.Edge, st.IP)
	}
	if err := sess.Bye(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.sim.WaitCall(testCtx(t), st.ID, edgesim.CallStatus.IsOver); err != nil {
		t.Fatal(err)
	}
}

// registerAt registers user's Contact for edgeName at edgesim IP h, as the
// upstream manager does.
func (s *simEnv) registerAt(p *peer, h int, edgeName string) {
	s.t.Helper()
	ctx := testCtx(s.t)
	req := sip.NewRequest(sip.REGISTER, sip.Uri{Scheme: "sip", Host: domain + ".sip." + edgeName + ".twilio.com"})
	aor := sip.Uri{Scheme: "sip", User: twilioUser, Host: domain + ".sip.twilio.com"}
	from := &sip.FromHeader{Address: aor, Params: sip.NewParams()}
	from.Params.Add("tag", sip.GenerateTagN(8))
	req.AppendHeader(from)
	req.AppendHeader(&sip.ToHeader{Address: aor})
	req.AppendHeader(&sip.ContactHeader{Address: sip.Uri{Scheme: "sip", User: "alice~" + edgeName, Host: s.ip.String(), Port: int(s.udp().Port())}})
	exp := sip.ExpiresHeader(600)
	req.AppendHeader(&exp)
	req.SetDestination(s.simAddr(h).String())
	req.Laddr = p.laddr()
	res, err := p.cl.Do(ctx, req)
	if err == nil && res.StatusCode == 401 {
		res, err = p.cl.DoDigestAuth(ctx, req, res, sipgo.DigestAuth{Username: twilioUser, Password: twilioPass})
	}
	if err != nil || res.StatusCode != 200 {
		s.t.Fatalf("REGISTER at %s: %v %v", edgeName, res, err)
	}
}

func TestEdgesimPlacedCallRingsOnceThroughTwoRegistrations(t *testing.T) {
	s := newSimEnv(t)
	// A registration move's overlap: alice is bound through both edges, so
	// Twilio forks the call to both of edgewise's Contacts.
	reg := newPeer(s.env, "upstream", 5)
	s.registerAt(reg, 11, "ashburn")
	s.registerAt(reg, 21, "umatilla")
	loser := newPhone(s.env, 4, "ring", nil)
	winner := newPhone(s.env, 3, "answer", loser.rang)
	winner.media.echo.Store(false)
	s.binds.set("alice", s.bindingFor("alice", winner.peer), s.bindingFor("alice", loser.peer))

	ctx := testCtx(t)
	id, err := s.sim.PlaceCall(ctx, edgesim.CallRequest{To: twilioUser, From: "+15550001111"})
	if err != nil {
		t.Fatal(err)
	}
	// Answered, and the duplicate fork settled too.
	st, err := s.sim.WaitCall(ctx, id, func(st edgesim.CallStatus) bool {
		if st.State == edgesim.CallFailed {
			return true
		}
		if st.State != edgesim.CallAnswered {
			return false
		}
		for _, f := range st.Forks {
			if f.State == "trying" || f.State == "ringing" {
				return false
			}
		}
		return true
	})
	if err != nil || st.State != edgesim.CallAnswered {
		t.Fatalf("placed call: %+v %v", st, err)
	}
	var codes []string
	for _, f := range st.Forks {
		codes = append(codes, fmt.Sprintf("%s:%s:%d", f.Edge, f.State, f.Code))
	}
	if len(st.Forks) != 2 || !strings.Contains(strings.Join(codes, " "), ":482") {
		t.Errorf("forks %v, want one answered and one refused with 482", codes)
	}
	if n := len(winner.requests(sip.INVITE)); n != 1 {
		t.Errorf("answering phone got %d INVITEs, want 1", n)
	}
	if n := len(loser.requests(sip.INVITE)); n != 1 {
		t.Errorf("other phone got %d INVITEs, want 1", n)
	}
	kit.WaitFor(t, 5*time.Second, "the other phone's CANCEL", func() bool { return loser.cancels.Load() == 1 })
	if c := s.onlyCall(); c.CallSid != string(id) {
		t.Errorf("edgewise call sid %q, want %q", c.CallSid, id)
	}

	// Media: phone → edgewise → edgesim (echo) → edgewise → phone.
	inv := winner.requests(sip.INVITE)[0]
	dst, _ := mediaOf(t, inv.Body())
	winner.media.send(t, dst, 20)
	kit.WaitFor(t, 5*time.Second, "edgesim's echo at the phone", func() bool { return winner.media.got.Load() >= 20 })

	// Twilio hangs up.
	if err := s.sim.HangUp(id); err != nil {
		t.Fatal(err)
	}
	winner.waitRequest(sip.BYE, 1)
	if st, err := s.sim.WaitCall(ctx, id, edgesim.CallStatus.IsOver); err != nil || st.State != edgesim.CallEnded {
		t.Fatalf("placed call end: %+v %v", st, err)
	}
}

func TestEdgesimPlacedCallNoBinding(t *testing.T) {
	s := newSimEnv(t)
	reg := newPeer(s.env, "upstream", 5)
	s.registerAt(reg, 11, "ashburn")
	ctx := testCtx(t)
	id, err := s.sim.PlaceCall(ctx, edgesim.CallRequest{To: twilioUser})
	if err != nil {
		t.Fatal(err)
	}
	st, err := s.sim.WaitCall(ctx, id, edgesim.CallStatus.IsOver)
	if err != nil || st.State != edgesim.CallFailed || st.Code != 480 {
		t.Fatalf("placed call: %+v %v, want failed with 480", st, err)
	}
}
