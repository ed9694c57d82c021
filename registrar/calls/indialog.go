package calls

import (
	"context"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/edgewise-sip/edgewise/media"
)

// relayTimeout bounds a request relayed inside a dialog: Timer F (64*T1),
// after which the requester gets 408.
func relayTimeout() time.Duration { return 64 * sip.T1 }

// dialogOf finds the dialog a request belongs to, by Call-ID and our tag
// (its To tag).
func (b *B2BUA) dialogOf(req *sip.Request) *leg {
	tag := tagOf(req.To().Params)
	if tag == "" {
		return nil
	}
	return b.findLeg(string(*req.CallID()), tag)
}

// serveAck delivers the ACK of a 2xx we sent to whoever waits for it.
// Retransmitted ACKs (and strays) find nobody and are dropped.
func (b *B2BUA) serveAck(req *sip.Request, tx sip.ServerTransaction) {
	if l := b.dialogOf(req); l != nil {
		l.deliverAck(req)
	}
}

// serveCancel answers a CANCEL that matched no INVITE transaction (sipgo
// answers the ones that do, with 200 and a 487 for the INVITE).
func (b *B2BUA) serveCancel(req *sip.Request, tx sip.ServerTransaction) {
	b.reply(tx, req, 481, "Call/Transaction Does Not Exist")
}

// serveBye ends the call: 200 to the sender, BYE on the other dialog, the
// media released.
func (b *B2BUA) serveBye(req *sip.Request, tx sip.ServerTransaction) {
	l := b.dialogOf(req)
	if l == nil {
		b.reply(tx, req, 481, "Call/Transaction Does Not Exist")
		return
	}
	if !l.checkRemoteCSeq(req.CSeq().SeqNo) {
		b.reply(tx, req, 500, "Server Internal Error - CSeq Out Of Order")
		return
	}
	b.reply(tx, req, 200, "OK")
	b.metrics.relayed.WithLabelValues(string(sip.BYE)).Inc()
	b.hangup(l.c, "BYE from "+l.c.sideName(l.side), l)
}

// serveOptions answers OPTIONS, which the front end hands over statelessly on
// its reading goroutine. Out of a dialog it is a keepalive or a capability
// query, answered at once; inside one it is relayed to the other party like
// any other request, on a goroutine of ours (the stateless stand-in lets us
// answer after returning). A retransmission arriving while the relay is
// under way is dropped; one arriving later is relayed again, which is
// harmless for OPTIONS.
func (b *B2BUA) serveOptions(req *sip.Request, tx sip.ServerTransaction) {
	if tagOf(req.To().Params) == "" {
		res := sip.NewResponseFromRequest(req, 200, "OK", nil)
		res.AppendHeader(sip.NewHeader("Allow", allowed+", REGISTER"))
		res.AppendHeader(sip.NewHeader("Accept", "application/sdp"))
		b.send(tx, res)
		return
	}
	branch, _ := req.Via().Params.Get("branch")
	key := string(*req.CallID()) + "\x00" + branch
	b.mu.Lock()
	if _, busy := b.options[key]; busy {
		b.mu.Unlock()
		return
	}
	b.options[key] = struct{}{}
	b.mu.Unlock()
	relay := func() {
		defer func() {
			b.mu.Lock()
			delete(b.options, key)
			b.mu.Unlock()
		}()
		b.serveInDialog(req, tx)
	}
	if !b.spawn(relay) {
		b.mu.Lock()
		delete(b.options, key)
		b.mu.Unlock()
		b.reply(tx, req, 503, "Service Unavailable - Shutting Down")
	}
}

// reinvite relays a re-INVITE (hold, resume, a new address, a session
// refresh).
func (b *B2BUA) reinvite(req *sip.Request, tx sip.ServerTransaction) { b.serveInDialog(req, tx) }

// serveInDialog relays a request inside a dialog (re-INVITE, UPDATE, INFO,
// OPTIONS) to the other dialog of the call, and its final response back.
// SDP is carried across the relay; other bodies (DTMF INFO) pass unchanged.
func (b *B2BUA) serveInDialog(req *sip.Request, tx sip.ServerTransaction) {
	l, to, done, ok := b.admitInDialog(req, tx)
	if !ok {
		return
	}
	defer done()
	c := l.c
	b.metrics.relayed.WithLabelValues(string(req.Method)).Inc()

	out, offered, heldByOffer, err := c.relayRequest(l, to, req)
	if err != nil {
		c.log.Info("unusable SDP in a relayed request", "method", string(req.Method), "error", err)
		b.reply(tx, req, 488, "Not Acceptable Here")
		return
	}
	if req.IsInvite() || req.Method == sip.UPDATE {
		l.refreshTarget(req.Contact())
	}

	ctx, cancel := context.WithTimeout(b.life, relayTimeout())
	defer cancel()
	otx, err := to.send(ctx, out)
	if err != nil {
		c.log.Info("relaying failed", "method", string(req.Method), "error", err)
		b.reply(tx, req, 503, "Service Unavailable", reasonHeader(503, "the other party is unreachable"))
		return
	}
	res := awaitFinal(ctx, c, otx)
	if !req.IsInvite() {
		otx.Terminate()
	}
	if res == nil {
		b.reply(tx, req, 408, "Request Timeout", reasonHeader(408, "no answer from the other party"))
		return
	}
	if offered && !res.IsSuccess() {
		rollback(l, to) // the offer was refused: the bridges forget it
	}
	if res.IsSuccess() && (req.IsInvite() || req.Method == sip.UPDATE) {
		to.refreshTarget(res.Contact())
	}
	back := c.relayResponse(l, to, req, res, offered, heldByOffer)
	if !req.IsInvite() || !res.IsSuccess() {
		b.send(tx, back)
		return
	}
	b.completeReinvite(&invite{l: to, req: out, tx: otx}, l, tx, back, offered, done)
}

// admitInDialog finds the dialog req belongs to and decides whether it can
// be relayed now, answering it when not: 481 for an unknown dialog, 500 for
// a CSeq out of order or a call not yet answered, 491 for a re-INVITE that
// crosses one in progress (RFC 3261 §14.2). A re-INVITE admitted marks the
// call busy until done is called (done may be called more than once).
func (b *B2BUA) admitInDialog(req *sip.Request, tx sip.ServerTransaction) (from, to *leg, done func(), ok bool) {
	l := b.dialogOf(req)
	if l == nil {
		b.reply(tx, req, 481, "Call/Transaction Does Not Exist")
		return nil, nil, nil, false
	}
	c := l.c
	if !l.checkRemoteCSeq(req.CSeq().SeqNo) {
		b.reply(tx, req, 500, "Server Internal Error - CSeq Out Of Order")
		return nil, nil, nil, false
	}
	c.mu.Lock()
	answered := c.phase == phaseAnswered
	glare := req.IsInvite() && c.busy
	busy := answered && req.IsInvite() && !glare
	if busy {
		c.busy = true
	}
	c.mu.Unlock()
	if !answered {
		b.reply(tx, req, 500, "Server Internal Error - Call Not Established", sip.NewHeader("Retry-After", "1"))
		return nil, nil, nil, false
	}
	if glare {
		// Both parties changed the session at once.
		b.reply(tx, req, 491, "Request Pending")
		return nil, nil, nil, false
	}
	var once sync.Once
	done = func() {
		if busy {
			once.Do(func() {
				c.mu.Lock()
				c.busy = false
				c.mu.Unlock()
			})
		}
	}
	to = c.peer(l)
	if to == nil {
		done()
		b.reply(tx, req, 481, "Call/Transaction Does Not Exist")
		return nil, nil, nil, false
	}
	return l, to, done, true
}

// relayRequest builds the copy of req for the other dialog. An SDP body is
// carried through the relay (offered is then true, and heldByOffer says
// whether the offer holds the call); on an unusable one the media sessions
// are rolled back and the error returned. Other bodies pass unchanged.
func (c *call) relayRequest(l, to *leg, req *sip.Request) (out *sip.Request, offered, heldByOffer bool, err error) {
	out = to.request(req.Method, 0)
	switch {
	case isSDP(req):
		body, err := c.fromLeg(l, media.Offer, req.Body())
		if err == nil {
			body, err = c.toLeg(to, body)
		}
		if err != nil {
			rollback(l, to)
			return nil, false, false, err
		}
		out.AppendHeader(sdpHeader())
		out.SetBody(body)
		offered, heldByOffer = true, c.sess.Hold()
	case len(req.Body()) > 0:
		if ct := req.GetHeader("Content-Type"); ct != nil {
			out.AppendHeader(sip.NewHeader("Content-Type", ct.Value()))
		}
		out.SetBody(req.Body())
	}
	copyHeaders(out, req, "Content-Disposition", "Info-Package", "Event", "Reason", "Accept")
	return out, offered, heldByOffer, nil
}

// awaitFinal waits for the final response of a relayed request; nil when
// none came before ctx ended, the transaction ended or the call did.
func awaitFinal(ctx context.Context, c *call, otx sip.ClientTransaction) *sip.Response {
	for {
		select {
		case r := <-otx.Responses():
			if r.IsProvisional() {
				continue
			}
			return r
		case <-otx.Done():
			return nil
		case <-ctx.Done():
			otx.Terminate()
			return nil
		case <-c.done:
			otx.Terminate()
			return nil
		}
	}
}

// relayResponse builds the answer to req on l from the other dialog's
// response res, carrying its SDP through the relay: the answer to req's
// offer, or an offer when req had none.
func (c *call) relayResponse(l, to *leg, req *sip.Request, res *sip.Response, offered, heldByOffer bool) *sip.Response {
	back := l.response(req, res.StatusCode, res.Reason, nil)
	switch {
	case isSDP(res):
		body, err := c.fromLeg(to, kindAfter(offered), res.Body())
		if err == nil {
			body, err = c.toLeg(l, body)
		}
		if err != nil {
			c.log.Info("unusable SDP in a relayed response", "method", string(req.Method), "error", err)
		} else {
			back.AppendHeader(sdpHeader())
			back.SetBody(body)
		}
		if heldByOffer && !c.sess.Hold() {
			// A sendrecv answer to a hold offer does not resume the call
			// (RFC 3264 §6.1); the offerer's direction decides.
			c.sess.SetHold(true)
		}
	case len(res.Body()) > 0:
		if ct := res.GetHeader("Content-Type"); ct != nil {
			back.AppendHeader(sip.NewHeader("Content-Type", ct.Value()))
		}
		back.SetBody(res.Body())
	}
	copyHeaders(back, res, "Reason", "Retry-After", "Warning", "Allow", "Accept")
	return back
}

// completeReinvite finishes a re-INVITE the other party accepted (iv is the
// relayed one): ACK it, pass the 2xx back on l and wait for its ACK. With
// an offer in the re-INVITE our ACK goes at once; without one (RFC 3264
// §5: the 2xx offers) the requester's ACK carries the answer, which our ACK
// then relays. A 2xx the requester never acknowledges ends the call.
func (b *B2BUA) completeReinvite(iv *invite, l *leg, tx sip.ServerTransaction, back *sip.Response, offered bool, done func()) {
	c, to := l.c, iv.l
	sendAck := b.acknowledger(iv)
	if offered {
		sendAck(nil)
		// The offer/answer exchange is complete once the 2xx leaves: a new
		// re-INVITE from the requester implies it sent its ACK, which may
		// simply be processed after it.
		done()
	}
	ack, ok := b.answerCaller(c, l, tx, back)
	if !offered {
		var body []byte
		if ok {
			var err error
			if body, err = c.translateBody(l, media.Answer, ack); err == nil {
				body, err = c.toLeg(to, body)
			}
			if err != nil {
				c.log.Info("unusable SDP in a re-INVITE's ACK", "error", err)
			}
		}
		sendAck(body)
	}
	if !ok {
		b.hangup(c, "re-INVITE answer not acknowledged by the "+l.c.sideName(l.side), nil)
	}
}
