package edgesim

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"
)

// scriptKind is what edgesim does with an INVITE from the gateway.
type scriptKind int

const (
	scriptAnswer     scriptKind = iota // 100, 180, 200 at once
	scriptReject                       // 100, then a final failure
	scriptNoAnswer                     // 100, 180, rings until CANCEL
	scriptSlowAnswer                   // 100, 180, 200 after calls.slow_answer
	scriptEarlyMedia                   // 100, 183 with SDP (echo starts), 200 after calls.slow_answer
)

type script struct {
	kind   scriptKind
	code   int
	reason string
	delay  time.Duration
}

// scriptFor picks the outcome of an INVITE by the dialled number (the
// Request-URI user), so tests can script the far end. Matching ignores case.
//
//	busy         486 Busy Here
//	decline      603 Decline
//	unavailable  480 Temporarily Unavailable
//	status-NNN   NNN (400–699) with its usual reason
//	noanswer     rings until cancelled
//	slowanswer   rings calls.slow_answer, then answers
//	earlymedia   183 with SDP and echo, answers after calls.slow_answer
//	anything else answers at once
func (s *Sim) scriptFor(user string) script {
	u := strings.ToLower(user)
	switch u {
	case "busy":
		return rejectWith(sip.StatusBusyHere)
	case "decline":
		return rejectWith(sip.StatusGlobalDecline)
	case "unavailable":
		return rejectWith(sip.StatusTemporarilyUnavailable)
	case "noanswer":
		return script{kind: scriptNoAnswer}
	case "slowanswer":
		return script{kind: scriptSlowAnswer, delay: s.cfg.Calls.SlowAnswer}
	case "earlymedia":
		return script{kind: scriptEarlyMedia, delay: s.cfg.Calls.SlowAnswer}
	}
	if v, ok := strings.CutPrefix(u, "status-"); ok {
		if code, err := strconv.Atoi(v); err == nil && code >= 400 && code <= 699 {
			return rejectWith(code)
		}
	}
	return script{kind: scriptAnswer}
}

func rejectWith(code int) script {
	return script{kind: scriptReject, code: code, reason: reasonPhrase(code)}
}

// reasonPhrase is the RFC 3261 reason of the failure codes edgesim sends.
func reasonPhrase(code int) string {
	switch code {
	case 400:
		return "Bad Request"
	case 403:
		return "Forbidden"
	case 404:
		return "Not Found"
	case 408:
		return "Request Timeout"
	case 480:
		return "Temporarily Unavailable"
	case 481:
		return "Call/Transaction Does Not Exist"
	case 484:
		return "Address Incomplete"
	case 486:
		return "Busy Here"
	case 487:
		return "Request Terminated"
	case 488:
		return "Not Acceptable Here"
	case 500:
		return "Server Internal Error"
	case 502:
		return "Bad Gateway"
	case 503:
		return "Service Unavailable"
	case 504:
		return "Server Time-out"
	case 600:
		return "Busy Everywhere"
	case 603:
		return "Decline"
	case 604:
		return "Does Not Exist Anywhere"
	}
	return "Scripted Failure"
}

// allowHeader lists what edgesim handles in a dialog.
const allowHeader = "INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, INFO"

// handleInvite takes INVITEs from the gateway as a Twilio edge does: a 407
// digest challenge first, then 100, 180 and 200 with an SDP answer, and the
// call's RTP echoed. In-dialog INVITEs are re-INVITEs.
func (s *Sim) handleInvite(ctx context.Context, in *inbound) {
	req := in.req
	to, from := req.To(), req.From()
	if to == nil || from == nil || req.CallID() == nil || req.CSeq() == nil {
		in.reply(sip.StatusBadRequest, "Bad Request", nil)
		return
	}
	if to.Params.Has("tag") {
		s.handleReInvite(ctx, in)
		return
	}
	if !s.knownDomain(req.Recipient.Host) {
		in.reply(sip.StatusNotFound, "Domain Not Found", nil)
		return
	}
	if !s.authorize(in, from.Address.User, s.clock(), proxyDigest) {
		return
	}
	if req.Contact() == nil {
		in.reply(sip.StatusBadRequest, "Missing Contact", nil)
		return
	}
	var offer *sdpInfo
	if len(req.Body()) > 0 {
		info, err := parseSDP(req.Body())
		if err == nil {
			err = s.mediaPolicy(&info)
		}
		if err != nil {
			s.log.Info("invite refused: sdp", "edge", in.ip.edge.name, "call_id", callID(req), "error", err)
			in.reply(sip.StatusNotAcceptableHere, "Not Acceptable Here", func(res *sip.Response) {
				res.AppendHeader(sip.NewHeader("Warning", fmt.Sprintf("399 edgesim %q", err.Error())))
			})
			return
		}
		offer = &info
	}
	c, err := s.calls.newCall(CallReceived, from.Address.User, req.Recipient.User)
	if err != nil {
		s.log.Warn("invite refused", "edge", in.ip.edge.name, "call_id", callID(req), "error", err)
		in.reply(sip.StatusServiceUnavailable, "Service Unavailable", nil)
		return
	}
	c.update(func(st *CallStatus) {
		st.Edge, st.IP, st.Transport, st.SIPCallID = in.ip.edge.name, in.ip.addr.String(), req.Transport(), callID(req)
	})
	s.log.Debug("call received", "call", c.id, "edge", in.ip.edge.name, "ip", in.ip.addr.String(),
		"from", from.Address.User, "to", req.Recipient.User, "call_id", callID(req))
	c.serveInvite(ctx, in, offer, s.scriptFor(req.Recipient.User))
}

// serveInvite plays the far end of a received call; it runs on the
// request's handler goroutine until the call is answered and ACKed or over.
func (c *call) serveInvite(ctx context.Context, in *inbound, offer *sdpInfo, sc script) {
	tx := in.tx
	inv := in.req.Clone()
	// Every response but 100 carries the same To tag: edgesim's half of
	// the dialog ID.
	inv.To().Params.Add("tag", sip.GenerateTagN(16))

	cancelled := make(chan struct{})
	var once sync.Once
	if !tx.OnCancel(func(*sip.Request) { once.Do(func() { close(cancelled) }) }) {
		c.finish(CallFailed, sip.StatusRequestTerminated, "cancelled by gateway", endedByGateway)
		return
	}
	in.reply(sip.StatusTrying, "Trying", nil)
	if sc.kind == scriptReject {
		_, _ = c.respond(in, inv, sc.code, sc.reason, nil)
		c.finish(CallFailed, sc.code, "scripted "+strings.ToLower(sc.reason), endedByEdgesim)
		return
	}

	var body []byte
	prepared := false
	prepare := func() error {
		if prepared {
			return nil
		}
		b, err := c.openAnswerMedia(in.ip, offer)
		body, prepared = b, err == nil
		return err
	}
	if sc.kind == scriptEarlyMedia {
		if err := prepare(); err != nil {
			c.failSetup(in, inv, err)
			return
		}
		_, _ = c.respond(in, inv, sip.StatusSessionInProgress, "Session Progress", body)
		c.update(func(st *CallStatus) { st.State = CallRinging })
	} else {
		_, _ = c.respond(in, inv, sip.StatusRinging, "Ringing", nil)
		c.update(func(st *CallStatus) { st.State = CallRinging })
	}

	var answerNow <-chan time.Time
	switch sc.kind {
	case scriptNoAnswer:
	case scriptSlowAnswer, scriptEarlyMedia:
		t := time.NewTimer(sc.delay)
		defer t.Stop()
		answerNow = t.C
	default:
		now := make(chan time.Time, 1)
		now <- time.Time{}
		answerNow = now
	}
	select {
	case <-answerNow:
	case <-cancelled:
		c.finish(CallFailed, sip.StatusRequestTerminated, "cancelled by gateway", endedByGateway)
		return
	case <-c.hangup:
		_, _ = c.respond(in, inv, sip.StatusTemporarilyUnavailable, "Temporarily Unavailable", nil)
		c.finish(CallFailed, sip.StatusTemporarilyUnavailable, c.hangupReason, endedByEdgesim)
		return
	case <-tx.Done():
		c.finish(CallFailed, sip.StatusRequestTimeout, fmt.Sprintf("INVITE transaction ended: %v", tx.Err()), endedByGateway)
		return
	case <-ctx.Done():
		c.finish(CallFailed, sip.StatusServiceUnavailable, "edge IP stopped serving", endedByEdgesim)
		return
	}

	if err := prepare(); err != nil {
		c.failSetup(in, inv, err)
		return
	}
	d, err := uasDialog(in.ip, inv)
	if err != nil {
		c.failSetup(in, inv, err)
		return
	}
	seq := inv.CSeq().SeqNo
	acked := c.expectAck(seq)
	// Answered before the 200 leaves: the gateway may ACK and hang up
	// before Respond returns.
	c.setDialog(d)
	c.answered(d, nil)
	res, err := c.respond(in, inv, sip.StatusOK, "OK", body)
	if err != nil {
		code, reason, by := sip.StatusInternalServerError, fmt.Sprintf("200 OK not sent: %v", err), endedByEdgesim
		if errors.Is(err, sip.ErrTransactionCanceled) {
			code, reason, by = sip.StatusRequestTerminated, "cancelled by gateway", endedByGateway
		}
		c.finish(CallFailed, code, reason, by)
		return
	}
	c.m.sim.log.Debug("call answered", "call", c.id, "direction", CallReceived, "call_id", d.callID)
	switch c.waitAck(ctx, tx, res, acked, seq) {
	case ackOK:
	case ackMissing:
		// RFC 3261 §13.3.1.4: no ACK within 64*T1 ends the session.
		c.requestHangUp("no ACK for 200 OK")
	case ackAbandoned:
		c.finish(CallEnded, 0, "edge IP stopped serving", endedByEdgesim)
		return
	}
	if !c.m.spawn(c.superviseAnswered) {
		c.finish(CallEnded, 0, "edgesim stopped", endedByEdgesim)
	}
}

// openAnswerMedia binds the call's RTP port on ip and returns edgesim's
// SDP: the answer to offer, or an offer when the INVITE had none (the
// answer then comes in the ACK).
func (c *call) openAnswerMedia(ip *edgeIP, offer *sdpInfo) ([]byte, error) {
	ms, err := openMedia(ip.addr)
	if err != nil {
		return nil, err
	}
	dir, codec, remote := dirSendRecv, "", ""
	if offer != nil {
		dir, codec = answerDirection(offer.dir), offer.codec
		if offer.addr.IsValid() {
			remote = offer.addr.String()
		}
	}
	body := c.buildSDP(func(ss *sdpSession) []byte {
		if offer != nil {
			return ss.answer(*offer, ip.addr, int(ms.local.Port()), dir)
		}
		return ss.offer(ip.addr, int(ms.local.Port()), dir)
	})
	if c.m.sim.cfg.Calls.SecureMedia {
		// Answer the offer's line with edgesim's own key, or offer one.
		sec := ms.secure(1, sdesOffered)
		if k, ok := answerKey(offer); ok {
			sec = ms.secure(k.tag, k.suite)
			if err := sec.setPeer(k); err != nil {
				ms.close()
				return nil, err
			}
		}
		body = withCrypto(body, sec.local)
	}
	c.setMedia(ms, codec, remote, dir)
	return body, nil
}

// failSetup refuses the INVITE with 500 when edgesim itself cannot go on
// (no free RTP port, no Contact to build a dialog on).
func (c *call) failSetup(in *inbound, inv *sip.Request, err error) {
	c.m.sim.log.Error("call setup failed", "call", c.id, "error", err)
	_, _ = c.respond(in, inv, sip.StatusInternalServerError, "Server Internal Error", nil)
	c.finish(CallFailed, sip.StatusInternalServerError, err.Error(), endedByEdgesim)
}

// respond answers req (the INVITE clone with edgesim's To tag, or an
// in-dialog request) with edgesim's Contact on dialog-creating responses
// and, when body is set, SDP.
func (c *call) respond(in *inbound, req *sip.Request, code int, reason string, body []byte) (*sip.Response, error) {
	res := sip.NewResponseFromRequest(req, code, reason, body)
	res.AppendHeader(sip.NewHeader("Server", "edgesim "+in.ip.edge.name))
	if code > 100 && code < 300 {
		res.AppendHeader(in.ip.contact(req.Transport()))
		res.AppendHeader(sip.NewHeader("Allow", allowHeader))
	}
	if body != nil {
		ct := sip.ContentTypeHeader("application/sdp")
		res.AppendHeader(&ct)
	}
	return res, in.tx.Respond(res)
}

type ackOutcome int

const (
	ackOK        ackOutcome = iota // ACK arrived (or the call ended meanwhile)
	ackMissing                     // none within 64*T1
	ackAbandoned                   // the edge IP stopped serving
)

// waitAck waits for the ACK of a 2xx edgesim sent, retransmitting the 2xx
// over UDP at T1, doubling up to T2 (RFC 3261 §13.3.1.4).
func (c *call) waitAck(ctx context.Context, tx sip.ServerTransaction, res *sip.Response, acked <-chan struct{}, seq uint32) ackOutcome {
	defer c.forgetAck(seq)
	giveUp := time.NewTimer(64 * sip.T1)
	defer giveUp.Stop()
	interval := sip.T1
	retransmit := time.NewTimer(interval)
	defer retransmit.Stop()
	if sip.IsReliable(res.Transport()) {
		retransmit.Stop()
	}
	for {
		select {
		case <-acked:
			return ackOK
		case <-tx.Acks():
			// An ACK that reused the INVITE's branch; not RFC 3261, but
			// it is an ACK.
			return ackOK
		case <-c.ended:
			return ackOK
		case <-ctx.Done():
			return ackAbandoned
		case <-giveUp.C:
			return ackMissing
		case <-retransmit.C:
			// Fails once the transaction is gone (Timer L); then only
			// the wait goes on.
			if err := tx.Respond(res); err == nil {
				interval = min(2*interval, sip.T2)
				retransmit.Reset(interval)
			}
		}
	}
}

// inDialog finds the call of an in-dialog request and checks its CSeq; it
// answers 481 or 500 itself and returns nil when the request cannot go on.
func (s *Sim) inDialog(in *inbound) (*call, *dialog) {
	c := s.calls.lookupDialog(in.req)
	var d *dialog
	if c != nil {
		d = c.dialog()
	}
	if d == nil {
		in.reply(sip.StatusCallTransactionDoesNotExists, "Call/Transaction Does Not Exist", nil)
		return nil, nil
	}
	if cs := in.req.CSeq(); cs == nil || !d.acceptRemoteCSeq(cs.SeqNo) {
		in.reply(sip.StatusInternalServerError, "CSeq Out Of Order", nil)
		return nil, nil
	}
	return c, d
}

// handleReInvite answers a re-INVITE (hold, resume, new address) with a
// matching direction: sendonly → recvonly, inactive → inactive.
func (s *Sim) handleReInvite(ctx context.Context, in *inbound) {
	c, _ := s.inDialog(in)
	if c == nil {
		return
	}
	body, ok := c.renegotiate(in)
	if !ok {
		return
	}
	seq := in.req.CSeq().SeqNo
	acked := c.expectAck(seq)
	res, err := c.respond(in, in.req, sip.StatusOK, "OK", body)
	if err != nil {
		c.forgetAck(seq)
		s.log.Warn("re-INVITE answer not sent", "call", c.id, "error", err)
		return
	}
	if c.waitAck(ctx, in.tx, res, acked, seq) == ackMissing {
		s.log.Warn("no ACK for re-INVITE 200", "call", c.id)
	}
}

// handleUpdate answers an UPDATE (RFC 3311) like a re-INVITE without ACK.
func (s *Sim) handleUpdate(_ context.Context, in *inbound) {
	c, _ := s.inDialog(in)
	if c == nil {
		return
	}
	body, ok := c.renegotiate(in)
	if !ok {
		return
	}
	_, _ = c.respond(in, in.req, sip.StatusOK, "OK", body)
}

// renegotiate reads the offer in an in-dialog request and returns
// edgesim's SDP for the 200: the answer, or a new offer when there was
// none (its answer then comes in the ACK). It answers 488 itself on bad SDP.
func (c *call) renegotiate(in *inbound) ([]byte, bool) {
	c.mu.Lock()
	ms, dir := c.media, c.mst.Direction
	c.mu.Unlock()
	if ms == nil {
		in.reply(sip.StatusInternalServerError, "No Media Stream", nil)
		return nil, false
	}
	ip, port := ms.local.Addr(), int(ms.local.Port())
	if len(in.req.Body()) == 0 {
		if dir == "" || dir == dirInactive {
			dir = dirSendRecv
		}
		c.renegotiated(nil, dir, true)
		return c.buildSDP(func(ss *sdpSession) []byte { return ss.offer(ip, port, dir) }), true
	}
	info, err := parseSDP(in.req.Body())
	if err == nil {
		err = c.m.sim.mediaPolicy(&info)
	}
	if err != nil {
		in.reply(sip.StatusNotAcceptableHere, "Not Acceptable Here", func(res *sip.Response) {
			res.AppendHeader(sip.NewHeader("Warning", fmt.Sprintf("399 edgesim %q", err.Error())))
		})
		return nil, false
	}
	dir = answerDirection(info.dir)
	c.renegotiated(&info, dir, true)
	c.m.sim.log.Info("call renegotiated", "call", c.id, "method", in.req.Method, "offered", info.dir, "answered", dir)
	body := c.buildSDP(func(ss *sdpSession) []byte { return ss.answer(info, ip, port, dir) })
	if sec := ms.sec.Load(); sec != nil {
		k, _ := answerKey(&info)
		if k.tag != sec.local.tag || k.suite != sec.local.suite {
			// The gateway chose another line this time: key it afresh.
			sec = ms.secure(k.tag, k.suite)
		}
		if err := sec.setPeer(k); err != nil {
			in.reply(sip.StatusNotAcceptableHere, "Not Acceptable Here", nil)
			return nil, false
		}
		body = withCrypto(body, sec.local)
	}
	return body, true
}

// handleAck matches ACKs for 2xx to their call; one with SDP carries the
// answer to an offer edgesim made in its 2xx.
func (s *Sim) handleAck(_ context.Context, in *inbound) {
	c := s.calls.lookupDialog(in.req)
	if c == nil || in.req.CSeq() == nil {
		return
	}
	c.ackReceived(in.req.CSeq().SeqNo)
	if len(in.req.Body()) == 0 {
		return
	}
	if info, err := parseSDP(in.req.Body()); err == nil {
		c.renegotiated(&info, answerDirection(info.dir), false)
		c.keyAnswer(&info)
	}
}

// handleBye ends a call the gateway hangs up.
func (s *Sim) handleBye(_ context.Context, in *inbound) {
	c, _ := s.inDialog(in)
	if c == nil {
		return
	}
	in.reply(sip.StatusOK, "OK", nil)
	c.finish(CallEnded, 0, "hung up by gateway", endedByGateway)
}

// handleInfo accepts INFO (SIP INFO DTMF and the like) in a dialog.
func (s *Sim) handleInfo(_ context.Context, in *inbound) {
	c, _ := s.inDialog(in)
	if c == nil {
		return
	}
	c.update(func(st *CallStatus) { st.Infos++ })
	in.reply(sip.StatusOK, "OK", nil)
}
