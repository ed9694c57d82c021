package calls

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/edgewise-sip/edgewise/test/kit"
)

func TestMediaTimeoutHangsUpBothLegs(t *testing.T) {
	e := newEnv(t, func(c *envConfig) { c.mediaTimeout = 300 * time.Millisecond })
	tw := newTwilioEdge(e, 2, "answer")
	e.edges.setPlan(twilioTarget("ashburn", tw.addr))
	phone := newPeer(e, "phone", 3)
	prtp := newRTP(e, 3, false)
	if _, err := e.dialOut(testCtx(t), phone, "100", offer(prtp.addr, "sendrecv"), nil); err != nil {
		t.Fatalf("call failed: %v", err)
	}
	// Nobody sends media: the relay's timeout ends the call on both sides.
	tw.waitRequest(sip.BYE, 1)
	phone.waitRequest(sip.BYE, 1)
	// Counted once, by the relay.
	reg := prometheus.NewRegistry()
	reg.MustRegister(e.relay)
	want := "# HELP edgewise_media_timeouts_total Calls whose media went silent for media.timeout.\n" +
		"# TYPE edgewise_media_timeouts_total counter\nedgewise_media_timeouts_total 1\n"
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "edgewise_media_timeouts_total"); err != nil {
		t.Error(err)
	}
}

func TestDelayedOffer(t *testing.T) {
	e, tw, phone, prtp := outboundSetup(t, "answer")
	ctx := testCtx(t)
	ruri := sip.Uri{Scheme: "sip", User: "100", Host: e.ip.String(), Port: int(e.udp().Port())}
	sess, err := phone.dialogUA("alice").WriteInvite(ctx, phone.newInvite(ruri, "alice", e.udp(), nil))
	if err != nil {
		t.Fatal(err)
	}
	if err := sess.WaitAnswer(ctx, sipgoAnswer("alice", alicePass)); err != nil {
		t.Fatalf("call failed: %v", err)
	}
	// Twilio's 2xx carried the offer; the phone answers in its ACK.
	theirs, _ := mediaOf(t, sess.InviteResponse.Body())
	if theirs.Addr() != e.ip {
		t.Fatalf("offer to the phone points at %s", theirs)
	}
	ack := sip.NewRequest(sip.ACK, sess.InviteResponse.Contact().Address)
	ack.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
	ack.SetBody(offer(prtp.addr, "sendrecv"))
	if err := sess.WriteAck(ctx, ack); err != nil {
		t.Fatal(err)
	}
	twAck := tw.waitRequest(sip.ACK, 1)
	answer, _ := mediaOf(t, twAck.Body())
	if answer.Addr() != e.ip {
		t.Fatalf("Twilio's ACK carries %s, want edgewise's address", answer)
	}
	prtp.send(t, theirs, 10)
	kit.WaitFor(t, 5*time.Second, "the echo", func() bool { return prtp.got.Load() >= 10 })
	if err := sess.Bye(ctx); err != nil {
		t.Fatal(err)
	}
	tw.waitRequest(sip.BYE, 1)
}

func TestShutdownHangsUpCalls(t *testing.T) {
	e, tw, phone, prtp := outboundSetup(t, "answer")
	if _, err := e.dialOut(testCtx(t), phone, "100", offer(prtp.addr, "sendrecv"), nil); err != nil {
		t.Fatalf("call failed: %v", err)
	}
	e.stopB2BUA()
	tw.waitRequest(sip.BYE, 1)
	phone.waitRequest(sip.BYE, 1)
	if n := len(e.b.Calls()); n != 0 {
		t.Errorf("%d calls left after shutdown", n)
	}
}

func TestDrainRefusesNewCallsAndWaitsForOldOnes(t *testing.T) {
	e, tw, phone, prtp := outboundSetup(t, "answer")
	ctx := testCtx(t)
	sess, err := e.dialOut(ctx, phone, "100", offer(prtp.addr, "sendrecv"), nil)
	if err != nil {
		t.Fatalf("call failed: %v", err)
	}
	theirs, _ := mediaOf(t, sess.InviteResponse.Body())
	idle := e.b.Drain(20 * time.Second)
	if again := e.b.Drain(time.Second); again != idle {
		t.Error("a second Drain returned another channel")
	}
	select {
	case <-idle:
		t.Fatal("idle with a call in progress")
	default:
	}

	var refusal *sip.Response
	_, err = e.dialOut(ctx, phone, "200", offer(prtp.addr, "sendrecv"), func(r *sip.Response) error {
		if r.StatusCode == 503 {
			refusal = r
		}
		return nil
	})
	if code := statusCode(err); code != 503 {
		t.Fatalf("new call while draining: %v (code %d), want 503", err, code)
	}
	if refusal == nil {
		t.Fatal("503 not seen")
	}
	if h := refusal.GetHeader("Retry-After"); h == nil || h.Value() != "20" {
		t.Errorf("Retry-After %v, want 20", h)
	}

	// The call in progress is untouched and ends when its parties say so.
	prtp.send(t, theirs, 10)
	kit.WaitFor(t, 5*time.Second, "the echo", func() bool { return prtp.got.Load() >= 10 })
	if err := sess.Bye(ctx); err != nil {
		t.Fatal(err)
	}
	tw.waitRequest(sip.BYE, 1)
	select {
	case <-idle:
	case <-ctx.Done():
		t.Fatal("not idle after the last call ended")
	}
}

func TestApplyKeepsCallsOnTheirSnapshot(t *testing.T) {
	e, tw, phone, prtp := outboundSetup(t, "answer")
	ctx := testCtx(t)
	first, err := e.dialOut(ctx, phone, "100", offer(prtp.addr, "sendrecv"), nil)
	if err != nil {
		t.Fatalf("call failed: %v", err)
	}
	s := e.b.Settings()
	bad := s
	bad.Domain = ""
	if err := e.b.Apply(bad, nil, nil); err == nil {
		t.Fatal("Apply accepted an empty domain")
	}
	s.Domain, s.UserAgent = "other", "edgewise-next"
	if err := e.b.Apply(s, e.b.state.Load().phones, e.b.state.Load().twilio); err != nil {
		t.Fatal(err)
	}
	second, err := e.dialOut(ctx, phone, "200", offer(prtp.addr, "sendrecv"), nil)
	if err != nil {
		t.Fatalf("second call failed: %v", err)
	}
	invs := tw.requests(sip.INVITE)
	last := invs[len(invs)-1]
	if h := last.From().Address.Host; h != "other.sip.twilio.com" {
		t.Errorf("new call From host %s, want the reloaded domain", h)
	}
	if err := first.Bye(ctx); err != nil {
		t.Fatal(err)
	}
	bye := tw.waitRequest(sip.BYE, 1)
	if ua := bye.GetHeader("User-Agent"); ua == nil || ua.Value() != "edgewise" {
		t.Errorf("BYE of the first call has User-Agent %v, want the snapshot's", ua)
	}
	if err := second.Bye(ctx); err != nil {
		t.Fatal(err)
	}
	tw.waitRequest(sip.BYE, 2)
}

func TestStatusAndMetrics(t *testing.T) {
	e, tw, phone, prtp := outboundSetup(t, "answer")
	ctx := testCtx(t)
	sess, err := e.dialOut(ctx, phone, "100", offer(prtp.addr, "sendrecv"), nil)
	if err != nil {
		t.Fatalf("call failed: %v", err)
	}
	<-tw.answered
	js, err := json.Marshal(e.b.Calls())
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"direction":"outbound"`, `"state":"answered"`, `"edge":"ashburn"`, `"legs":[`, `"rx":{`, `"phone":{`, `"twilio_leg":{`} {
		if !strings.Contains(string(js), want) {
			t.Errorf("status lacks %s: %s", want, js)
		}
	}
	if got := testutil.ToFloat64(e.b.metrics.active.WithLabelValues("outbound")); got != 1 {
		t.Errorf("calls_active = %v, want 1", got)
	}
	if err := sess.Bye(ctx); err != nil {
		t.Fatal(err)
	}
	tw.waitRequest(sip.BYE, 1)
	kit.WaitFor(t, 5*time.Second, "the call to end", func() bool { return len(e.b.Calls()) == 0 })
	// The setup counts its outcome once the phone's ACK is in, which may
	// be after the BYE was relayed.
	kit.WaitFor(t, 5*time.Second, "the answered setup to be counted", func() bool {
		return testutil.ToFloat64(e.b.metrics.setups.WithLabelValues("outbound", outAnswered)) == 1
	})
	kit.WaitFor(t, 5*time.Second, "calls_active to drop", func() bool {
		return testutil.ToFloat64(e.b.metrics.active.WithLabelValues("outbound")) == 0
	})
	// The B2BUA registers as one collector under edgewise_b2bua_.
	reg := prometheus.NewRegistry()
	reg.MustRegister(e.b)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, mf := range mfs {
		names[mf.GetName()] = true
	}
	for _, n := range []string{"edgewise_b2bua_calls_active", "edgewise_b2bua_call_setups_total", "edgewise_b2bua_invite_responses_total"} {
		if !names[n] {
			t.Errorf("metric %s missing (have %v)", n, names)
		}
	}
}

func TestRequireIsRefused(t *testing.T) {
	e, _, phone, prtp := outboundSetup(t, "answer")
	ruri := sip.Uri{Scheme: "sip", User: "100", Host: e.ip.String(), Port: int(e.udp().Port())}
	req := phone.newInvite(ruri, "alice", e.udp(), offer(prtp.addr, "sendrecv"))
	req.AppendHeader(sip.NewHeader("Require", "100rel"))
	sess, err := phone.dialogUA("alice").WriteInvite(testCtx(t), req)
	if err != nil {
		t.Fatal(err)
	}
	err = sess.WaitAnswer(testCtx(t), sipgo.AnswerOptions{})
	if code := statusCode(err); code != 420 {
		t.Fatalf("got %v (code %d), want 420", err, code)
	}
}

func TestPhoneOverTCP(t *testing.T) {
	e, tw, phone, prtp := outboundSetup(t, "answer")
	ctx := testCtx(t)
	ruri := sip.Uri{Scheme: "sip", User: "100", Host: e.ip.String(), Port: int(e.tcp().Port())}
	req := phone.newInvite(ruri, "alice", e.tcp(), offer(prtp.addr, "sendrecv"))
	req.SetTransport("TCP")
	req.Laddr = sip.Addr{}
	ua := phone.dialogUA("alice")
	ua.ContactHDR.Address.UriParams = sip.NewParams()
	ua.ContactHDR.Address.UriParams.Add("transport", "tcp")
	sess, err := ua.WriteInvite(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if err := sess.WaitAnswer(ctx, sipgoAnswer("alice", alicePass)); err != nil {
		t.Fatalf("call failed: %v", err)
	}
	if err := sess.Ack(ctx); err != nil {
		t.Fatal(err)
	}
	inv := <-tw.answered
	kit.WaitFor(t, 5*time.Second, "Twilio's ACK", func() bool { return tw.acks.Load() >= 1 })
	if st := e.onlyCall(); st.Phone == nil || st.Phone.Transport != "tcp" {
		t.Fatalf("phone leg = %+v, want tcp", st.Phone)
	}
	// Twilio hangs up; the BYE reaches the phone over its TCP connection.
	bye := sip.NewRequest(sip.BYE, sip.Uri{Scheme: "sip", Host: e.ip.String(), Port: int(e.udp().Port())})
	fp := sip.NewParams()
	fp.Add("tag", tw.tag)
	bye.AppendHeader(&sip.FromHeader{Address: inv.To().Address, Params: fp})
	bye.AppendHeader(&sip.ToHeader{Address: inv.From().Address, Params: inv.From().Params.Clone()})
	bye.AppendHeader(sip.HeaderClone(inv.CallID()))
	bye.AppendHeader(&sip.CSeqHeader{SeqNo: 1, MethodName: sip.BYE})
	bye.SetDestination(e.udp().String())
	bye.Laddr = tw.laddr()
	if res, err := tw.cl.Do(ctx, bye); err != nil || res.StatusCode != 200 {
		t.Fatalf("BYE from Twilio: %v %v", res, err)
	}
	pbye := phone.waitRequest(sip.BYE, 1)
	if !strings.EqualFold(pbye.Transport(), "TCP") {
		t.Errorf("BYE reached the phone over %s", pbye.Transport())
	}
}

func TestManyConcurrentCalls(t *testing.T) {
	const calls = 100
	// 100 INVITEs at once on a small machine under -race: give the fake
	// Twilio more than the usual 400 ms to answer each.
	e := newEnv(t, func(c *envConfig) {
		c.settings = Settings{Domain: domain, Timeout: 3 * time.Second, Realm: "edgewise"}
	})
	tw := newTwilioEdge(e, 2, "answer")
	e.edges.setPlan(twilioTarget("ashburn", tw.addr))
	phone := newPeer(e, "phone", 3)
	ctx := testCtx(t)
	media := make([]*rtpPeer, calls)
	for i := range media {
		media[i] = newRTP(e, 3, false)
	}
	errs := make(chan error, calls)
	var wg sync.WaitGroup
	for i := range calls {
		wg.Go(func() {
			sess, err := e.dialOut(ctx, phone, fmt.Sprintf("+1555000%04d", i), offer(media[i].addr, "sendrecv"), nil)
			if err != nil {
				if sess != nil && sess.InviteResponse != nil {
					if h := sess.InviteResponse.GetHeader("Reason"); h != nil {
						err = fmt.Errorf("%w (%s)", err, h.Value())
					}
				}
				errs <- fmt.Errorf("call %d: %w", i, err)
				return
			}
			dst, _ := mediaOf(t, sess.InviteResponse.Body())
			media[i].send(t, dst, 10)
			deadline := time.Now().Add(5 * time.Second)
			for media[i].got.Load() < 10 && time.Now().Before(deadline) {
				time.Sleep(5 * time.Millisecond)
			}
			if got := media[i].got.Load(); got < 10 {
				var legs []string
				for _, c := range e.b.Calls() {
					if c.To == fmt.Sprintf("+1555000%04d", i) && c.Media != nil {
						for _, l := range c.Media.Legs {
							legs = append(legs, fmt.Sprintf("%s rx=%d tx=%d rxdrop=%v txdrop=%v remote=%s", l.Side, l.RX.Packets, l.TX.Packets, l.RX.Dropped, l.TX.Dropped, l.Remote))
						}
					}
				}
				errs <- fmt.Errorf("call %d: %d of 10 packets echoed (Twilio got %d in all) %v", i, got, tw.media.got.Load(), legs)
			}
			if err := sess.Bye(ctx); err != nil {
				errs <- fmt.Errorf("call %d: BYE: %w", i, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	tw.waitRequest(sip.BYE, calls)
	kit.WaitFor(t, 5*time.Second, "every call to end", func() bool { return len(e.b.Calls()) == 0 })
	kit.WaitFor(t, 5*time.Second, "the media pool to be whole", func() bool { return e.relay.Pool().InUse == 0 })
}
