package calls

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/edgewise-sip/edgewise/media"
	"github.com/edgewise-sip/edgewise/test/kit"
)

// outboundSetup is an env with a Twilio edge answering per script and a
// phone with a media endpoint.
func outboundSetup(t *testing.T, script string) (*env, *twilioEdge, *peer, *rtpPeer) {
	e := newEnv(t)
	tw := newTwilioEdge(e, 2, script)
	e.edges.setPlan(twilioTarget("ashburn", tw.addr))
	phone := newPeer(e, "phone", 3)
	return e, tw, phone, newRTP(e, 3, false)
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestOutboundCallRelaysMediaBothWays(t *testing.T) {
	e, tw, phone, prtp := outboundSetup(t, "answer")
	ctx := testCtx(t)
	sess, err := e.dialOut(ctx, phone, "+15551230000", offer(prtp.addr, "sendrecv"), nil)
	if err != nil {
		t.Fatalf("call failed: %v", err)
	}
	var inv *sip.Request
	select {
	case inv = <-tw.answered:
	case <-ctx.Done():
		t.Fatal("Twilio never answered")
	}
	if inv.Recipient.User != "+15551230000" || inv.Recipient.Host != "example.sip.ashburn.twilio.com" {
		t.Errorf("Request-URI = %s, want sip:+15551230000@example.sip.ashburn.twilio.com", inv.Recipient.String())
	}
	if f := inv.From().Address; f.User != twilioUser || f.Host != "example.sip.twilio.com" {
		t.Errorf("From = %s, want the user's Twilio identity", f.String())
	}
	if dn := inv.From().DisplayName; dn != "Test alice" {
		t.Errorf("From display name = %q, want the phone's", dn)
	}
	twilioSide, _ := mediaOf(t, inv.Body())
	phoneSide, _ := mediaOf(t, sess.InviteResponse.Body())
	if twilioSide.Addr() != e.ip || phoneSide.Addr() != e.ip || twilioSide == phoneSide {
		t.Fatalf("SDP not pointed at edgewise: Twilio sees %s, phone sees %s", twilioSide, phoneSide)
	}
	if reps := e.edges.Reports(); len(reps) == 0 || reps[0].err != nil || reps[0].res.StatusCode != 407 {
		t.Errorf("reports = %+v, want the first response (407) reported", reps)
	}

	prtp.send(t, phoneSide, 20)
	kit.WaitFor(t, 5*time.Second, "the echo to reach the phone", func() bool { return prtp.got.Load() >= 20 })
	if tw.media.got.Load() < 20 {
		t.Errorf("Twilio got %d packets, want 20", tw.media.got.Load())
	}
	st := e.onlyCall()
	if st.State != "answered" || st.Direction != "outbound" || st.Edge != "ashburn" || st.Media == nil {
		t.Fatalf("status = %+v", st)
	}
	for _, l := range st.Media.Legs {
		if l.RX.Packets < 20 || l.TX.Packets < 20 {
			t.Errorf("leg %s: rx %d tx %d packets, want >= 20 each", l.Side, l.RX.Packets, l.TX.Packets)
		}
	}

	if err := sess.Bye(ctx); err != nil {
		t.Fatalf("BYE: %v", err)
	}
	bye := tw.waitRequest(sip.BYE, 1)
	if bye.CallID().Value() != inv.CallID().Value() {
		t.Errorf("BYE Call-ID %s, want the Twilio dialog's %s", bye.CallID().Value(), inv.CallID().Value())
	}
}

func TestOutboundByeFromTwilio(t *testing.T) {
	e, tw, phone, prtp := outboundSetup(t, "answer")
	ctx := testCtx(t)
	if _, err := e.dialOut(ctx, phone, "100", offer(prtp.addr, "sendrecv"), nil); err != nil {
		t.Fatalf("call failed: %v", err)
	}
	inv := <-tw.answered
	kit.WaitFor(t, 5*time.Second, "Twilio's ACK", func() bool { return tw.acks.Load() >= 1 })
	// Twilio hangs up: a BYE in its dialog, to edgewise's Contact.
	st := e.onlyCall()
	bye := sip.NewRequest(sip.BYE, sip.Uri{Scheme: "sip", User: "x", Host: e.ip.String(), Port: int(e.udp().Port())})
	to := inv.From()
	from := inv.To()
	fp := sip.NewParams()
	fp.Add("tag", tw.tag)
	bye.AppendHeader(&sip.FromHeader{Address: from.Address, Params: fp})
	bye.AppendHeader(&sip.ToHeader{Address: to.Address, Params: to.Params.Clone()})
	bye.AppendHeader(sip.HeaderClone(inv.CallID()))
	bye.AppendHeader(&sip.CSeqHeader{SeqNo: 1, MethodName: sip.BYE})
	bye.SetDestination(e.udp().String())
	bye.Laddr = tw.laddr()
	res, err := tw.cl.Do(ctx, bye)
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("BYE from Twilio: %v %v", res, err)
	}
	pbye := phone.waitRequest(sip.BYE, 1)
	if pbye.CallID().Value() != st.Phone.CallID {
		t.Errorf("phone BYE in dialog %s, want %s", pbye.CallID().Value(), st.Phone.CallID)
	}
}

func TestOutboundBusyPassesThrough(t *testing.T) {
	e, _, phone, prtp := outboundSetup(t, "busy")
	_, err := e.dialOut(testCtx(t), phone, "100", offer(prtp.addr, "sendrecv"), nil)
	if code := statusCode(err); code != 486 {
		t.Fatalf("got %v (code %d), want 486", err, code)
	}
}

func TestOutboundCancelBeforeAnswer(t *testing.T) {
	e, tw, phone, prtp := outboundSetup(t, "ring")
	ctx, cancel := context.WithCancel(testCtx(t))
	_, err := e.dialOut(ctx, phone, "100", offer(prtp.addr, "sendrecv"), func(res *sip.Response) error {
		if res.StatusCode == 180 {
			cancel() // the phone hangs up while Twilio rings
		}
		return nil
	})
	if err == nil {
		t.Fatal("call connected, want it cancelled")
	}
	kit.WaitFor(t, 5*time.Second, "Twilio to see the CANCEL", func() bool { return tw.cancels.Load() == 1 })
}

func TestOutboundBadSDP(t *testing.T) {
	e, tw, phone, _ := outboundSetup(t, "answer")
	_, err := e.dialOut(testCtx(t), phone, "100", []byte("this is not a session description"), nil)
	if code := statusCode(err); code != 488 {
		t.Fatalf("got %v (code %d), want 488", err, code)
	}
	if n := len(tw.requests(sip.INVITE)); n != 0 {
		t.Errorf("Twilio got %d INVITEs for a call refused at the phone's side", n)
	}
}

func TestOutboundWrongPassword(t *testing.T) {
	e, tw, phone, prtp := outboundSetup(t, "answer")
	ruri := sip.Uri{Scheme: "sip", User: "100", Host: e.ip.String(), Port: int(e.udp().Port())}
	req := phone.newInvite(ruri, "alice", e.udp(), offer(prtp.addr, "sendrecv"))
	sess, err := phone.dialogUA("alice").WriteInvite(testCtx(t), req)
	if err != nil {
		t.Fatal(err)
	}
	err = sess.WaitAnswer(testCtx(t), sipgoAnswer("alice", "wrong"))
	if code := statusCode(err); code != 403 {
		t.Fatalf("got %v (code %d), want 403", err, code)
	}
	if n := len(tw.requests(sip.INVITE)); n != 0 {
		t.Errorf("Twilio got %d INVITEs", n)
	}
	// The failure counts toward the source's lockout, as a REGISTER's would.
	want := []string{phone.addr.Addr().String() + " alice"}
	if got := e.lockout.reported(); !slices.Equal(got, want) {
		t.Errorf("lockout heard %q, want %q", got, want)
	}
}

func TestOutboundFailoverToNextIP(t *testing.T) {
	e, tw, phone, prtp := outboundSetup(t, "answer")
	silent := newRTP(e, 5, false) // a socket that swallows everything
	dead := twilioTarget("ashburn", silent.addr)
	e.edges.setPlan(dead, twilioTarget("ashburn", tw.addr))
	start := time.Now()
	sess, err := e.dialOut(testCtx(t), phone, "100", offer(prtp.addr, "sendrecv"), nil)
	if err != nil {
		t.Fatalf("call failed: %v", err)
	}
	took := time.Since(start)
	timeout := e.b.Settings().Timeout
	if took < timeout || took > timeout+3*time.Second {
		t.Errorf("answered after %s, want a little over the %s per-IP timeout", took, timeout)
	}
	reps := e.edges.Reports()
	if len(reps) < 2 || reps[0].t != dead || reps[0].err == nil || reps[1].t.IP != tw.addr.Addr() {
		t.Errorf("reports = %+v, want the silent IP reported failed, then the next", reps)
	}
	if st := e.onlyCall(); st.Target != tw.addr.String() {
		t.Errorf("status says the call went to %s, want %s", st.Target, tw.addr)
	}
	if err := sess.Bye(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	tw.waitRequest(sip.BYE, 1)
}

func TestOutboundEveryIPSilentGives408(t *testing.T) {
	e, _, phone, prtp := outboundSetup(t, "answer")
	s1, s2 := newRTP(e, 5, false), newRTP(e, 6, false)
	e.edges.setPlan(twilioTarget("ashburn", s1.addr), twilioTarget("umatilla", s2.addr))
	_, err := e.dialOut(testCtx(t), phone, "100", offer(prtp.addr, "sendrecv"), nil)
	if code := statusCode(err); code != 408 {
		t.Fatalf("got %v (code %d), want 408", err, code)
	}
}

func TestOutboundHoldAndResume(t *testing.T) {
	e, tw, phone, prtp := outboundSetup(t, "answer")
	ctx := testCtx(t)
	sess, err := e.dialOut(ctx, phone, "100", offer(prtp.addr, "sendrecv"), nil)
	if err != nil {
		t.Fatalf("call failed: %v", err)
	}
	<-tw.answered
	for i, dir := range []string{"sendonly", "sendrecv"} {
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
		got := tw.waitRequest(sip.INVITE, 3+i) // 407, the call, then the re-INVITEs
		if !hasLine(got.Body(), "a="+dir) {
			t.Errorf("Twilio's re-INVITE lacks a=%s:\n%s", dir, got.Body())
		}
		_, answerDir := mediaOf(t, res.Body())
		wantHold := dir == "sendonly"
		if (answerDir.String() == "recvonly") != wantHold {
			t.Errorf("answer direction %s after %s", answerDir, dir)
		}
		if st := e.onlyCall(); st.Media.Hold != wantHold {
			t.Errorf("after %s: media hold = %v", dir, st.Media.Hold)
		}
	}
	if err := sess.Bye(ctx); err != nil {
		t.Fatal(err)
	}
	tw.waitRequest(sip.BYE, 1)
}

func TestOutboundNoEdge(t *testing.T) {
	e, _, phone, prtp := outboundSetup(t, "answer")
	e.edges.setPlan()
	_, err := e.dialOut(testCtx(t), phone, "100", offer(prtp.addr, "sendrecv"), nil)
	if code := statusCode(err); code != 503 {
		t.Fatalf("got %v (code %d), want 503", err, code)
	}
}

var _ = media.A
