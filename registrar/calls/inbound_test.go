package calls

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/edgewise-sip/edgewise/test/kit"
)

// phoneUAS makes a peer behave like a desk phone receiving calls.
type phoneUAS struct {
	*peer
	media    *rtpPeer
	tag      string
	rang     chan struct{} // closed at the first 180
	cancels  atomic.Int32
	reason   atomic.Pointer[string] // Reason of the CANCEL
	answered atomic.Int32
}

// newPhone answers INVITEs per script: "answer" (180, then 200 once
// release is closed, if given), "ring" (180 until cancelled), "busy" (486).
func newPhone(e *env, host int, script string, release <-chan struct{}) *phoneUAS {
	p := &phoneUAS{peer: newPeer(e, "phone-"+script, host), media: newRTP(e, host, true), tag: "ph" + sip.GenerateTagN(8), rang: make(chan struct{})}
	var rangOnce atomic.Bool
	p.on(sip.INVITE, func(req *sip.Request, tx sip.ServerTransaction) {
		if tagOf(req.To().Params) != "" {
			tx.Respond(p.response(req, 200, "OK", offer(p.media.addr, "sendrecv")))
			return
		}
		if script == "busy" {
			tx.Respond(p.response(req, 486, "Busy Here", nil))
			return
		}
		cancelled := make(chan struct{})
		tx.OnCancel(func(c *sip.Request) {
			if h := c.GetHeader("Reason"); h != nil {
				v := h.Value()
				p.reason.Store(&v)
			}
			p.cancels.Add(1)
			close(cancelled)
		})
		tx.Respond(p.response(req, 180, "Ringing", nil))
		if rangOnce.CompareAndSwap(false, true) {
			close(p.rang)
		}
		if script == "ring" {
			select {
			case <-cancelled:
			case <-tx.Done():
			}
			return
		}
		if release != nil {
			select {
			case <-release:
			case <-cancelled:
				return
			case <-tx.Done():
				return
			}
		}
		p.answered.Add(1)
		tx.Respond(p.response(req, 200, "OK", offer(p.media.addr, "sendrecv")))
	})
	return p
}

func (p *phoneUAS) response(req *sip.Request, code int, reason string, body []byte) *sip.Response {
	res := sip.NewResponseFromRequest(req, code, reason, body)
	res.To().Params.Add("tag", p.tag)
	if body != nil {
		res.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
	}
	if code < 300 && code > 100 {
		res.AppendHeader(&sip.ContactHeader{Address: sip.Uri{Scheme: "sip", User: "alice", Host: p.addr.Addr().String(), Port: int(p.addr.Port())}})
	}
	return res
}

// twilioCaller is the Twilio edge placing calls to edgewise.
type twilioCaller struct {
	*peer
	media *rtpPeer
}

func newTwilioCaller(e *env, host int) *twilioCaller {
	return &twilioCaller{peer: newPeer(e, "twilio", host), media: newRTP(e, host, false)}
}

// inviteReq is an INVITE from Twilio to user's Contact at edge.
func (tc *twilioCaller) inviteReq(e *env, user, edgeName, callSid string) *sip.Request {
	ruri := sip.Uri{Scheme: "sip", User: user + "~" + edgeName, Host: e.ip.String(), Port: int(e.udp().Port())}
	req := tc.newInvite(ruri, "+15550001111", e.udp(), offer(tc.media.addr, "sendrecv"))
	if callSid != "" {
		req.AppendHeader(sip.NewHeader("X-Twilio-CallSid", callSid))
	}
	return req
}

// call places a call and waits for the answer.
func (tc *twilioCaller) call(ctx context.Context, e *env, user, callSid string, onResponse func(*sip.Response) error) (*sipgo.DialogClientSession, error) {
	sess, err := tc.dialogUA("twilio").WriteInvite(ctx, tc.inviteReq(e, user, "ashburn", callSid))
	if err != nil {
		return nil, err
	}
	if err := sess.WaitAnswer(ctx, sipgo.AnswerOptions{OnResponse: onResponse}); err != nil {
		return sess, err
	}
	return sess, sess.Ack(ctx)
}

func TestInboundForksAndCancelsTheLoser(t *testing.T) {
	e := newEnv(t)
	tc := newTwilioCaller(e, 2)
	loser := newPhone(e, 4, "ring", nil)
	winner := newPhone(e, 3, "answer", loser.rang) // answers once the other rings
	e.binds.set("alice", e.bindingFor("alice", winner.peer), e.bindingFor("alice", loser.peer))
	ctx := testCtx(t)

	sess, err := tc.call(ctx, e, "alice", "CA0001", nil)
	if err != nil {
		t.Fatalf("call failed: %v", err)
	}
	kit.WaitFor(t, 5*time.Second, "the loser's CANCEL", func() bool { return loser.cancels.Load() == 1 })
	if r := loser.reason.Load(); r == nil || !strings.Contains(*r, "completed elsewhere") {
		t.Errorf("CANCEL Reason = %v, want Call completed elsewhere", r)
	}
	winner.waitRequest(sip.ACK, 1)
	inv := winner.requests(sip.INVITE)[0]
	if inv.GetHeader("X-Twilio-CallSid") == nil {
		t.Error("X-Twilio-CallSid not passed to the phone")
	}
	if inv.From().Address.User != "+15550001111" {
		t.Errorf("phone sees caller %s", inv.From().Address.User)
	}
	phoneSide, _ := mediaOf(t, inv.Body())
	twilioSide, _ := mediaOf(t, sess.InviteResponse.Body())
	if phoneSide.Addr() != e.ip || twilioSide.Addr() != e.ip {
		t.Fatalf("SDP not pointed at edgewise: phone sees %s, Twilio sees %s", phoneSide, twilioSide)
	}
	st := e.onlyCall()
	if st.Direction != "inbound" || st.CallSid != "CA0001" || st.State != "answered" {
		t.Errorf("status = %+v", st)
	}

	// Media: Twilio → edgewise → phone (echo) → edgewise → Twilio.
	tc.media.send(t, twilioSide, 20)
	kit.WaitFor(t, 5*time.Second, "the phone's echo to reach Twilio", func() bool { return tc.media.got.Load() >= 20 })

	if err := sess.Bye(ctx); err != nil {
		t.Fatalf("BYE: %v", err)
	}
	winner.waitRequest(sip.BYE, 1)
	if n := len(loser.requests(sip.BYE)); n != 0 {
		t.Errorf("the cancelled phone got %d BYEs", n)
	}
}

func TestInboundByeFromPhone(t *testing.T) {
	e := newEnv(t)
	tc := newTwilioCaller(e, 2)
	phone := newPhone(e, 3, "answer", nil)
	e.binds.set("alice", e.bindingFor("alice", phone.peer))
	ctx := testCtx(t)
	if _, err := tc.call(ctx, e, "alice", "", nil); err != nil {
		t.Fatalf("call failed: %v", err)
	}
	ack := phone.waitRequest(sip.ACK, 1)
	inv := phone.requests(sip.INVITE)[0]
	// The phone hangs up in its dialog with edgewise.
	bye := sip.NewRequest(sip.BYE, inv.Contact().Address)
	fp := sip.NewParams()
	fp.Add("tag", phone.tag)
	bye.AppendHeader(&sip.FromHeader{Address: inv.To().Address, Params: fp})
	bye.AppendHeader(&sip.ToHeader{Address: inv.From().Address, Params: inv.From().Params.Clone()})
	bye.AppendHeader(sip.HeaderClone(inv.CallID()))
	bye.AppendHeader(&sip.CSeqHeader{SeqNo: 1, MethodName: sip.BYE})
	bye.SetDestination(e.udp().String())
	bye.Laddr = phone.laddr()
	res, err := phone.cl.Do(ctx, bye)
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("BYE from the phone: %v %v", res, err)
	}
	tbye := tc.waitRequest(sip.BYE, 1)
	if tbye.CallID().Value() == ack.CallID().Value() {
		t.Error("Twilio's BYE carries the phone dialog's Call-ID")
	}
}

func TestInboundNoBindingGives480(t *testing.T) {
	e := newEnv(t)
	tc := newTwilioCaller(e, 2)
	_, err := tc.call(testCtx(t), e, "alice", "", nil)
	if code := statusCode(err); code != 480 {
		t.Fatalf("got %v (code %d), want 480", err, code)
	}
}

func TestInboundUnknownUserGives404(t *testing.T) {
	e := newEnv(t)
	tc := newTwilioCaller(e, 2)
	_, err := tc.call(testCtx(t), e, "carol", "", nil)
	if code := statusCode(err); code != 404 {
		t.Fatalf("got %v (code %d), want 404", err, code)
	}
}

func TestInboundBusyPassesThrough(t *testing.T) {
	e := newEnv(t)
	tc := newTwilioCaller(e, 2)
	phone := newPhone(e, 3, "busy", nil)
	e.binds.set("alice", e.bindingFor("alice", phone.peer))
	_, err := tc.call(testCtx(t), e, "alice", "", nil)
	if code := statusCode(err); code != 486 {
		t.Fatalf("got %v (code %d), want 486", err, code)
	}
}

func TestInboundCancelFromTwilio(t *testing.T) {
	e := newEnv(t)
	tc := newTwilioCaller(e, 2)
	phone := newPhone(e, 3, "ring", nil)
	e.binds.set("alice", e.bindingFor("alice", phone.peer))
	ctx, cancel := context.WithCancel(testCtx(t))
	_, err := tc.call(ctx, e, "alice", "", func(res *sip.Response) error {
		if res.StatusCode == 180 {
			cancel()
		}
		return nil
	})
	if err == nil {
		t.Fatal("call connected, want it cancelled")
	}
	kit.WaitFor(t, 5*time.Second, "the phone's CANCEL", func() bool { return phone.cancels.Load() == 1 })
}

func TestInboundSilentPhoneGives480(t *testing.T) {
	e := newEnv(t)
	tc := newTwilioCaller(e, 2)
	dead := newRTP(e, 5, false) // swallows the INVITE
	e.binds.set("alice", e.bindingFor("alice", &peer{addr: dead.addr}))
	_, err := tc.call(testCtx(t), e, "alice", "", nil)
	if code := statusCode(err); code != 480 {
		t.Fatalf("got %v (code %d), want 480", err, code)
	}
}

func TestInboundFromStrangerGetsNoDialog(t *testing.T) {
	e := newEnv(t)
	phone := newPhone(e, 3, "answer", nil)
	e.binds.set("alice", e.bindingFor("alice", phone.peer))
	stranger := newTwilioCaller(e, 9)

	// UDP: silence.
	ctx, cancel := context.WithTimeout(testCtx(t), 2*time.Second)
	defer cancel()
	tx, err := stranger.cl.TransactionRequest(ctx, stranger.inviteReq(e, "alice", "ashburn", ""))
	if err != nil {
		t.Fatal(err)
	}
	kit.WaitFor(t, 5*time.Second, "the refusal to be counted", func() bool { return testutil.ToFloat64(e.b.metrics.refused) == 1 })
	quiet := time.NewTimer(3 * e.b.Settings().Timeout)
	select {
	case res := <-tx.Responses():
		t.Errorf("stranger got %s over UDP, want silence", res.StartLine())
	case <-quiet.C:
	}
	tx.Terminate()

	// TCP: 403.
	req := stranger.inviteReq(e, "alice", "ashburn", "")
	req.SetTransport("TCP")
	req.SetDestination(e.tcp().String())
	req.Laddr = sip.Addr{}
	res, err := stranger.cl.Do(testCtx(t), req)
	if err != nil || res.StatusCode != 403 {
		t.Fatalf("TCP stranger: %v %v, want 403", res, err)
	}
	if n := len(phone.requests(sip.INVITE)); n != 0 {
		t.Errorf("the phone rang %d times for a stranger", n)
	}
}

func TestInboundMergedRequestGets482(t *testing.T) {
	e := newEnv(t)
	tc := newTwilioCaller(e, 2)
	phone := newPhone(e, 3, "ring", nil)
	e.binds.set("alice", e.bindingFor("alice", phone.peer))
	ctx, cancel := context.WithCancel(testCtx(t))
	first, err := tc.dialogUA("twilio").WriteInvite(ctx, tc.inviteReq(e, "alice", "ashburn", "CA1"))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- first.WaitAnswer(ctx, sipgo.AnswerOptions{}) }()
	<-phone.rang

	// The same request again through the other edge's Contact: same
	// Call-ID, From tag and CSeq, a new branch.
	dup := first.InviteRequest.Clone()
	dup.RemoveHeader("Via")
	dup.Recipient.User = "alice~umatilla"
	res, err := tc.cl.Do(testCtx(t), dup, sipgo.ClientRequestAddVia)
	if err != nil || res.StatusCode != 482 {
		t.Fatalf("merged request: %v %v, want 482", res, err)
	}
	// Another Call-ID carrying the CallSid of the ringing call.
	res, err = tc.cl.Do(testCtx(t), tc.inviteReq(e, "alice", "umatilla", "CA1"))
	if err != nil || res.StatusCode != 482 {
		t.Fatalf("duplicate CallSid: %v %v, want 482", res, err)
	}
	if n := len(phone.requests(sip.INVITE)); n != 1 {
		t.Errorf("the phone rang %d times, want once", n)
	}
	cancel()
	<-done
	kit.WaitFor(t, 5*time.Second, "the phone's CANCEL", func() bool { return phone.cancels.Load() == 1 })
}

func TestInboundHoldFromTwilio(t *testing.T) {
	e := newEnv(t)
	tc := newTwilioCaller(e, 2)
	phone := newPhone(e, 3, "answer", nil)
	e.binds.set("alice", e.bindingFor("alice", phone.peer))
	ctx := testCtx(t)
	sess, err := tc.call(ctx, e, "alice", "", nil)
	if err != nil {
		t.Fatalf("call failed: %v", err)
	}
	phone.waitRequest(sip.ACK, 1)
	req := sip.NewRequest(sip.INVITE, sess.InviteResponse.Contact().Address)
	req.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
	req.SetBody(offer(tc.media.addr, "inactive"))
	res, err := sess.Do(ctx, req)
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("re-INVITE: %v %v", res, err)
	}
	ack := sip.NewRequest(sip.ACK, sess.InviteResponse.Contact().Address)
	ack.AppendHeader(&sip.CSeqHeader{SeqNo: req.CSeq().SeqNo, MethodName: sip.ACK})
	if err := sess.WriteRequest(ack); err != nil {
		t.Fatal(err)
	}
	got := phone.waitRequest(sip.INVITE, 2)
	if !hasLine(got.Body(), "a=inactive") {
		t.Errorf("phone's re-INVITE lacks a=inactive:\n%s", got.Body())
	}
	if st := e.onlyCall(); !st.Media.Hold {
		t.Error("media not on hold")
	}
	// INFO (DTMF) passes through with its body.
	info := sip.NewRequest(sip.INFO, sess.InviteResponse.Contact().Address)
	info.AppendHeader(sip.NewHeader("Content-Type", "application/dtmf-relay"))
	info.SetBody([]byte("Signal=5\r\nDuration=160\r\n"))
	if res, err := sess.Do(ctx, info); err != nil || res.StatusCode != 200 {
		t.Fatalf("INFO: %v %v", res, err)
	}
	pinfo := phone.waitRequest(sip.INFO, 1)
	if !strings.Contains(string(pinfo.Body()), "Signal=5") {
		t.Errorf("INFO body = %q", pinfo.Body())
	}
	// In-dialog OPTIONS reaches the phone too (the front end hands OPTIONS over
	// statelessly; the relay runs on the B2BUA's goroutine).
	opt := sip.NewRequest(sip.OPTIONS, sess.InviteResponse.Contact().Address)
	if res, err := sess.Do(ctx, opt); err != nil || res.StatusCode != 200 {
		t.Fatalf("in-dialog OPTIONS: %v %v", res, err)
	}
	phone.waitRequest(sip.OPTIONS, 1)
	// UPDATE with SDP resumes.
	upd := sip.NewRequest(sip.UPDATE, sess.InviteResponse.Contact().Address)
	upd.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
	upd.SetBody(offer(tc.media.addr, "sendrecv"))
	if res, err := sess.Do(ctx, upd); err != nil || res.StatusCode != 200 {
		t.Fatalf("UPDATE: %v %v", res, err)
	}
	if pu := phone.waitRequest(sip.UPDATE, 1); !hasLine(pu.Body(), "a=sendrecv") {
		t.Errorf("phone's UPDATE:\n%s", pu.Body())
	}
	if st := e.onlyCall(); st.Media.Hold {
		t.Error("media still on hold after UPDATE sendrecv")
	}
	if err := sess.Bye(ctx); err != nil {
		t.Fatal(err)
	}
	phone.waitRequest(sip.BYE, 1)
}

func TestByeForUnknownDialogGets481(t *testing.T) {
	e := newEnv(t)
	p := newPeer(e, "stranger", 9)
	bye := sip.NewRequest(sip.BYE, sip.Uri{Scheme: "sip", User: "x", Host: e.ip.String(), Port: int(e.udp().Port())})
	tp := sip.NewParams()
	tp.Add("tag", "nosuchdialog")
	bye.AppendHeader(&sip.ToHeader{Address: sip.Uri{Scheme: "sip", User: "x", Host: e.ip.String()}, Params: tp})
	bye.SetDestination(e.udp().String())
	bye.Laddr = p.laddr()
	res, err := p.cl.Do(testCtx(t), bye)
	if err != nil || res.StatusCode != 481 {
		t.Fatalf("BYE: %v %v, want 481", res, err)
	}
	opt := sip.NewRequest(sip.OPTIONS, sip.Uri{Scheme: "sip", Host: e.ip.String(), Port: int(e.udp().Port())})
	opt.SetDestination(e.udp().String())
	opt.Laddr = p.laddr()
	res, err = p.cl.Do(testCtx(t), opt)
	if err != nil || res.StatusCode != 200 || res.GetHeader("Allow") == nil {
		t.Fatalf("OPTIONS keepalive: %v %v", res, err)
	}
	_ = fmt.Sprint
}

// claimsOf is a cluster's call claims: CallSids another node rang.
type claimsOf map[string]bool

func (c claimsOf) ClaimCall(_ context.Context, callSid string) bool { return !c[callSid] }

// TestInboundForkClaimedElsewhere: Twilio forked a call to another node's
// Contact as well, and that node claimed its CallSid: this node refuses
// its fork (482) and rings nobody; another call rings as usual.
func TestInboundForkClaimedElsewhere(t *testing.T) {
	e := newEnv(t, func(c *envConfig) { c.claims = claimsOf{"CA-elsewhere": true} })
	tc := newTwilioCaller(e, 2)
	ph := newPhone(e, 3, "answer", nil)
	e.binds.set("alice", e.bindingFor("alice", ph.peer))
	ctx := testCtx(t)
	_, err := tc.call(ctx, e, "alice", "CA-elsewhere", nil)
	if code := statusCode(err); code != 482 {
		t.Fatalf("fork claimed elsewhere: %v (code %d), want 482", err, code)
	}
	if n := len(ph.requests(sip.INVITE)); n != 0 {
		t.Fatalf("the phone rang %d times for a call another node rings", n)
	}
	sess, err := tc.call(ctx, e, "alice", "CA-here", nil)
	if err != nil {
		t.Fatalf("a call claimed here: %v", err)
	}
	if err := sess.Bye(ctx); err != nil {
		t.Fatal(err)
	}
}
