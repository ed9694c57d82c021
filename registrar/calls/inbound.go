package calls

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/edgewise-sip/edgewise/media"
	"github.com/edgewise-sip/edgewise/registrar/location"
)

// inbound bridges a call from Twilio to the user's phones: only from
// Twilio's signalling ranges, collapsed when it is a duplicate, forked to
// every routable binding in parallel (first 2xx wins, the others are
// cancelled); no binding gives 480 so Twilio's fallback runs.
func (b *B2BUA) inbound(req *sip.Request, tx sip.ServerTransaction, st *state, user, edgeName string) {
	src := sourceOf(req)
	if !st.fromTwilio(src.Addr()) {
		b.metrics.refused.Inc()
		b.log.Info("INVITE from outside the Twilio signalling ranges refused", "source", src.String(), "user", user)
		if sip.IsReliable(req.Transport()) {
			b.reply(tx, req, 403, "Forbidden")
			b.metrics.setup(inbound, outForbidden)
		}
		// UDP: silence; a source that may be forged learns nothing.
		return
	}
	if st.s.TwilioOverTLS && !strings.EqualFold(req.Transport(), "TLS") {
		if b.refusedLog.first(src.Addr(), b.now()) {
			b.log.Warn("INVITE to a TLS Contact over another transport refused (forged? logged once per source a minute)",
				"source", src.String(), "transport", req.Transport(), "contact", req.Recipient.User)
		}
		b.metrics.setup(inbound, outNotTLS)
		if sip.IsReliable(req.Transport()) {
			b.reply(tx, req, 403, "Forbidden - TLS Required")
		}
		return
	}
	if _, ok := st.twilio.Upstream(user); !ok {
		b.reply(tx, req, 404, "Not Found")
		b.metrics.setup(inbound, outUnknownUser)
		return
	}
	if b.contacts != nil && !b.contacts.HasContact(user, edgeName) {
		// From Twilio's ranges, but to a Contact edgewise never
		// registered there (or not for a registration period): over UDP
		// the source may be forged, and Twilio only calls what it holds.
		if b.refusedLog.first(src.Addr(), b.now()) {
			b.log.Warn("INVITE to a Contact edgewise does not hold at Twilio refused (forged? logged once per source a minute)",
				"source", src.String(), "contact", req.Recipient.User)
		}
		b.metrics.setup(inbound, outUnknownContact)
		b.reply(tx, req, 404, "Not Found - No Such Contact")
		return
	}

	c := b.newCall(inbound, user, st)
	c.from, c.to, c.merged = req.From().Address.User, user, mergedKey(req)
	if h := req.GetHeader("X-Twilio-CallSid"); h != nil {
		c.callSid = strings.TrimSpace(h.Value())
	}
	ctx, cancel := context.WithCancelCause(b.life)
	defer cancel(nil)
	c.cancelSetup = cancel
	if c.callSid != "" && b.claims != nil && !b.claims.ClaimCall(ctx, c.callSid) {
		// Twilio forked this call to another node's Contact too (a
		// registration moving between nodes): that node rings the phones.
		b.log.Info("duplicate INVITE collapsed: another node rings", "user", user, "edge", edgeName, "call_sid", c.callSid)
		b.reply(tx, req, 482, "Loop Detected - Duplicate CallSid")
		b.metrics.setup(inbound, outDuplicate)
		return
	}
	if a := b.admit(c); a != nil {
		if a.code == 482 {
			b.log.Info("duplicate INVITE collapsed", "user", user, "edge", edgeName, "call_sid", c.callSid, "call_id", string(*req.CallID()))
		}
		b.refuse(c, tx, req, a)
		return
	}

	tw := b.uasLeg(c, req, media.B)
	if !b.takeCaller(c, tw, tx, cancel) {
		return
	}
	c.log.Info("inbound call", "edge", edgeName, "from", c.from, "call_sid", c.callSid)

	plan := stages(b.throughPeers(user, b.bindings.Routable(user)), c.st.s.Targets[user], randIntN)
	if len(plan) == 0 {
		b.reply(tx, req, 480, "Temporarily Unavailable", reasonHeader(480, "no phone registered for "+user))
		b.metrics.setup(inbound, outNoBinding)
		b.finish(c, "no binding")
		return
	}
	offer, ok := b.openMedia(c, req, tx)
	if !ok {
		b.finish(c, "setup refused")
		return
	}
	b.newRing(c, tw, req, tx, offer, media.A).run(ctx, plan)
}

// takeCaller makes l, the dialog of the INVITE being set up, the call's
// caller, and has a CANCEL of that INVITE cancel the setup. It reports
// false (and ends the call) when the caller gave up already.
func (b *B2BUA) takeCaller(c *call, l *leg, tx sip.ServerTransaction, cancel context.CancelCauseFunc) bool {
	c.mu.Lock()
	c.in = l
	c.mu.Unlock()
	b.addDialog(l)
	if !tx.OnCancel(func(*sip.Request) { cancel(errCancelled) }) {
		b.finish(c, "caller gone before setup")
		b.metrics.setup(c.dir, outCancelled)
		return false
	}
	return true
}

// ring is the setup of a forked call: from Twilio to the user's phones
// (forks on side A), or from a phone to another local user's phones or to
// the fallback targets (forks on side B).
type ring struct {
	b      *B2BUA
	c      *call
	caller *leg // the dialog of the INVITE being answered: Twilio's, or the calling phone's
	treq   *sip.Request
	ttx    sip.ServerTransaction
	offer  []byte
	side   media.Side // the forks' side of the relay
	// fromUser and toUser name the parties toward the forks ("" keeps the
	// caller's From user, and the call's user); ruriUser replaces the user
	// part of fixed targets' URIs (a fallback target gets the number
	// dialled). noAnswer starts the Reason when nothing answered.
	fromUser, toUser, ruriUser string
	noAnswer                   string
	// One Call-ID, From tag and CSeq for every fork: two bindings of the
	// same phone then see a merged request and ring once (RFC 3261 §8.2.2.2).
	callID  string
	fromTag string
	cseq    uint32

	events chan forkEvent
	stop   chan struct{} // closed when the forks still ringing must be cancelled
	over   chan struct{} // closed when nobody reads events any more

	mu       sync.Mutex
	winner   *fork
	closed   bool
	stopOnce sync.Once
	reason   sip.Header // the CANCEL's Reason for the losers
}

// fork is one INVITE to one binding.
type fork struct {
	r       *ring
	binding location.Binding
	l       *leg
	offer   []byte // r.offer, or its WebRTC form for a browser
	iv      *invite
	sendAck func(body []byte)
}

// forkEvent is a response (or the end) of one fork.
type forkEvent struct {
	f   *fork
	res *sip.Response // 1xx, 2xx (the winner) or a final failure
	err error         // no response, transport failure
}

// run goes through the stages of the search until one answers, the user's
// answer ends it (busy, 6xx), or Twilio cancels; ctx ends when Twilio
// cancels or the call ends.
func (r *ring) run(ctx context.Context, plan []stage) {
	c := r.c
	setup := time.NewTimer(c.st.s.SetupTimeout)
	defer setup.Stop()
	var best *sip.Response
	var failures []string
	for i, s := range plan {
		if i > 0 {
			c.log.Info("trying the next target", "target", s.String(), "failures", strings.Join(failures, "; "))
		}
		bindings, err := s.resolve(ctx, c.st.s.Timeout)
		if err != nil {
			c.log.Warn("target not usable", "error", err)
			failures = append(failures, err.Error())
			continue
		}
		if r.ringStage(ctx, setup.C, bindings, s.target != nil, &best, &failures) {
			return
		}
		if endsSearch(best) || ctx.Err() != nil {
			break
		}
	}
	r.halt(nil)
	r.failed(best, failures)
}

// ringStage rings bindings (fixed: a fixed target's) in parallel. It
// returns true when the call was settled here (answered, cancelled, timed
// out: the caller has its answer) and false when every fork failed, with
// best and failures updated.
func (r *ring) ringStage(ctx context.Context, setup <-chan time.Time, bindings []location.Binding, fixed bool, best **sip.Response, failures *[]string) bool {
	b, c := r.b, r.c
	var forks []*fork
	for _, bnd := range bindings {
		l, err := r.forkLeg(bnd, fixed)
		if err != nil {
			c.log.Warn("binding not usable", "contact", bnd.Contact, "error", err)
			*failures = append(*failures, fmt.Sprintf("%s: %v", bnd.Contact, err))
			continue
		}
		f := &fork{r: r, binding: bnd, l: l}
		if f.offer, err = r.forkOffer(l, bnd); err != nil {
			c.log.Warn("binding not rung", "contact", bnd.Contact, "error", err)
			*failures = append(*failures, fmt.Sprintf("%s: %v", bnd.Contact, err))
			if br := l.bridge(); br != nil {
				br.Close()
			}
			continue
		}
		forks = append(forks, f)
	}
	c.mu.Lock()
	c.forks = append(c.forks, forks...)
	c.mu.Unlock()
	// Early media may come from any phone that rings, from nobody else.
	ringing := make([]*leg, len(forks))
	for i, f := range forks {
		ringing[i] = f.l
	}
	c.trust(r.side, ringing...)
	pending := 0
	for _, f := range forks {
		if b.spawn(f.run) {
			pending++
		}
	}
	for pending > 0 {
		select {
		case ev := <-r.events:
			switch {
			case ev.res != nil && ev.res.IsProvisional():
				r.relayProvisional(ev.f, ev.res)
			case ev.res != nil && ev.res.IsSuccess():
				r.halt(completedElsewhere)
				r.answered(ev.f, ev.res)
				return true
			default:
				pending--
				if ev.res != nil {
					*best = better(*best, ev.res)
					*failures = append(*failures, fmt.Sprintf("%s: %d", ev.f.binding.Contact, ev.res.StatusCode))
				} else {
					*failures = append(*failures, fmt.Sprintf("%s: %v", ev.f.binding.Contact, ev.err))
				}
				if *best != nil && (*best).StatusCode >= 600 {
					// A 6xx ends the search (RFC 3261 §16.7 step 5).
					pending = 0
				}
			}
		case <-ctx.Done():
			r.halt(nil)
			cause := context.Cause(ctx)
			if errors.Is(cause, errCancelled) {
				b.metrics.setup(c.dir, outCancelled)
				b.finish(c, "cancelled by the caller")
			} else {
				b.reply(r.ttx, r.treq, 503, "Service Unavailable", reasonHeader(503, cause.Error()))
				b.metrics.setup(c.dir, outShuttingDown)
				b.finish(c, cause.Error())
			}
			return true
		case <-setup:
			r.halt(nil)
			b.reply(r.ttx, r.treq, 480, "Temporarily Unavailable", reasonHeader(480, "not answered within "+c.st.s.SetupTimeout.String()))
			b.metrics.setup(c.dir, outNoAnswer)
			b.finish(c, "not answered in time")
			return true
		}
	}
	return false
}

// completedElsewhere tells the phones that lost the race not to log a
// missed call (RFC 3326).
var completedElsewhere = sip.NewHeader("Reason", `SIP;cause=200;text="Call completed elsewhere"`)

// halt stops listening to the forks and makes those still ringing cancel.
func (r *ring) halt(reason sip.Header) {
	r.stopOnce.Do(func() {
		r.mu.Lock()
		r.closed = true
		r.reason = reason
		r.mu.Unlock()
		close(r.stop)
		close(r.over)
	})
}

// claim makes f the answering fork, once, while the setup still listens.
func (r *ring) claim(f *fork) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.winner != nil || r.closed {
		return false
	}
	r.winner = f
	return true
}

// emit hands an event to the setup unless it stopped listening.
func (r *ring) emit(ev forkEvent) bool {
	select {
	case r.events <- ev:
		return true
	case <-r.over:
		return false
	}
}

// better picks the response to relay when every fork failed (RFC 3261
// §16.7 step 6, simplified): 6xx first, then busy, then the lowest other
// 4xx/5xx, with "no answer" (408, 480, 487) last, since a phone that was
// merely not picked up says least.
func better(a, b *sip.Response) *sip.Response {
	if a == nil {
		return b
	}
	rank := func(r *sip.Response) int {
		switch c := r.StatusCode; {
		case c >= 600:
			return 0
		case c == sip.StatusBusyHere:
			return 1
		case c == 408 || c == 480 || c == 487:
			return 4
		case c >= 500:
			return 3
		default:
			return 2
		}
	}
	if rank(b) < rank(a) {
		return b
	}
	return a
}

// failed answers the caller when no phone took the call. Nothing that says
// "busy" or "declined" becomes 480, so Twilio's fallback (voicemail, <Dial
// action>) runs.
func (r *ring) failed(best *sip.Response, failures []string) {
	b, c := r.b, r.c
	why := r.noAnswer + ": " + strings.Join(failures, "; ")
	code, reason := 480, "Temporarily Unavailable"
	outcome := outNoAnswer
	if best != nil {
		switch s := best.StatusCode; {
		case s == sip.StatusBusyHere || s == 600:
			code, reason, outcome = s, best.Reason, outBusy
		case s >= 600 || s == 403 || s == 404 || s == 488:
			code, reason, outcome = s, best.Reason, outRejected
		}
	}
	b.reply(r.ttx, r.treq, code, reason, reasonHeader(code, why))
	b.metrics.setup(c.dir, outcome)
	b.finish(c, why)
}

// relayProvisional tells the caller a phone rings (180) or plays early
// media (183 with SDP; the relay latches to whichever phone sends first).
func (r *ring) relayProvisional(f *fork, res *sip.Response) {
	c := r.c
	var body []byte
	if isSDP(res) && f.l.bridge() == nil && r.caller.bridge() == nil { // browsers: no early media (see outbound)
		out, err := c.sess.Translate(f.l.side, kindAfter(len(r.offer) > 0), res.Body())
		if err != nil {
			c.log.Info("unusable early-media SDP from a phone", "contact", f.binding.Contact, "error", err)
		} else {
			body = out
		}
	}
	p := r.caller.response(r.treq, res.StatusCode, res.Reason, body)
	if body != nil {
		p.AppendHeader(sdpHeader())
	}
	c.setPhase(phaseRinging)
	r.b.send(r.ttx, p)
}

// answered bridges the winning fork to the caller.
func (r *ring) answered(f *fork, res *sip.Response) {
	b, c := r.b, r.c
	l := f.l
	delayed := len(r.offer) == 0
	answer, err := c.translateBody(l, kindAfter(!delayed), res)
	if err == nil && answer != nil {
		answer, err = c.toLeg(r.caller, answer)
	}
	if err != nil || answer == nil {
		c.log.Info("unusable SDP in the phone's answer", "contact", f.binding.Contact, "error", err)
		if delayed {
			f.sendAck(nil)
		}
		b.sendBye(l, "unusable SDP")
		b.reply(r.ttx, r.treq, 488, "Not Acceptable Here", reasonHeader(488, "the phone's answer has no usable SDP"))
		b.metrics.setup(c.dir, outBadSDP)
		b.finish(c, "unusable SDP in the answer")
		return
	}
	if !c.markAnswered(l, nil) {
		if delayed {
			f.sendAck(nil)
		}
		b.sendBye(l, "cancelled by the caller")
		return
	}
	b.addDialog(l)
	c.trust(r.side, l) // from now on, media only from the phone that answered
	b.startMedia(c)
	r.closeLosingBrowsers(f)
	b.answeredWithoutTwilio(c, f)

	p := r.caller.response(r.treq, res.StatusCode, res.Reason, answer)
	p.AppendHeader(sdpHeader())
	p.AppendHeader(sip.NewHeader("Allow", allowed))
	ack, ok := b.answerCaller(c, r.caller, r.ttx, p)
	if !ok && c.ended() {
		// The caller hung up (or we shut down) before its ACK was
		// processed: the call was answered all the same.
		if delayed {
			f.sendAck(nil)
		}
		b.metrics.setup(c.dir, outAnswered)
		return
	}
	if !ok {
		if delayed {
			f.sendAck(nil)
		}
		b.metrics.setup(c.dir, outError)
		b.hangup(c, "the caller did not acknowledge the answer", nil)
		return
	}
	if delayed {
		body, err := c.translateBody(r.caller, media.Answer, ack)
		if err == nil {
			body, err = c.toLeg(l, body)
		}
		if err != nil || body == nil {
			f.sendAck(nil)
			b.metrics.setup(c.dir, outBadSDP)
			b.hangup(c, "no usable SDP answer in the caller's ACK", nil)
			return
		}
		f.sendAck(body)
	}
	b.metrics.setup(c.dir, outAnswered)
	c.log.Info("call answered", "contact", f.binding.Contact, "source", f.binding.Source.String())
}

// forkLeg is the dialog toward one binding (fixed: a fixed target's):
// requests go to where its REGISTER came from (NAT), over its transport,
// from the socket that received it.
func (r *ring) forkLeg(bnd location.Binding, fixed bool) (*leg, error) {
	b, c := r.b, r.c
	var target sip.Uri
	if err := sip.ParseUri(bnd.Contact, &target); err != nil {
		return nil, fmt.Errorf("contact %q: %w", bnd.Contact, err)
	}
	if fixed && r.ruriUser != "" {
		target.User = r.ruriUser
	}
	if !bnd.Source.IsValid() {
		return nil, errors.New("binding has no source address")
	}
	if bnd.ConnectionBound() && !b.sip.Connected(bnd.Transport, bnd.Source) {
		// Closed a moment ago; its binding is on its way out.
		return nil, errors.New("the browser's WebSocket connection is closed")
	}
	tp := strings.ToUpper(bnd.Transport)
	if tp == "" {
		tp = "UDP"
	}
	sock := bnd.Local
	if !sock.IsValid() {
		sock = b.sip.Addr(strings.ToLower(tp))
	}
	// On side B a registered phone, or a fixed target on the phones'
	// network, is reached at edgewise's local address like any phone; a
	// fixed target beyond it (a carrier's SBC) at the public one.
	faceLocal := r.side == media.B && (!fixed || onPhonesNetwork(bnd.Source.Addr()))
	sentBy := c.st.towardPhones(sock)
	if r.side == media.B && !faceLocal {
		sentBy = advertise(c.st.public, sock)
	}
	from := r.treq.From()
	fromUser, toUser := from.Address.User, c.user
	if r.fromUser != "" {
		fromUser = r.fromUser
	}
	if r.toUser != "" {
		toUser = r.toUser
	}
	to := sip.Uri{Scheme: "sip", User: toUser, Host: sentBy.host}
	if fixed && r.ruriUser != "" {
		to = sip.Uri{Scheme: "sip", User: toUser, Host: target.Host, Port: target.Port}
	}
	viaNode := ""
	if b.peers != nil && bnd.Node != "" && bnd.Node != b.peers.Self() {
		viaNode = bnd.Node
	}
	l := &leg{
		c:         c,
		side:      r.side,
		callID:    r.callID,
		localTag:  r.fromTag,
		local:     nameAddr{name: from.DisplayName, uri: sip.Uri{Scheme: "sip", User: fromUser, Host: sentBy.host}},
		remote:    nameAddr{uri: to},
		client:    b.sip.Client(),
		transport: tp,
		dest:      bnd.Source.String(),
		sentBy:    sentBy,
		target:    target,
		cseq:      r.cseq,
		phone:     !fixed,
		faceLocal: faceLocal,
		viaNode:   viaNode,
	}
	if tp == "UDP" {
		l.laddr = sipAddr(sock)
	}
	l.contact = contactHeader("edgewise", sentBy, tp)
	return l, nil
}

func (f *fork) invite() *sip.Request {
	r, l := f.r, f.l
	req := l.newInvite(*l.target.Clone(), r.cseq, r.c.st.s.UserAgent, r.treq, f.offer)
	if l.viaNode != "" {
		req.AppendHeader(sip.NewHeader(PeerHeader, r.b.peers.Sign(peerFields(req)...)))
	}
	return req
}

// run rings one phone until it answers, fails, stays silent for Timeout, or
// the setup tells it to stop.
func (f *fork) run() {
	r, b, c := f.r, f.r.b, f.r.c
	req := f.invite()
	ctx, stop := context.WithTimeout(b.life, max(c.st.s.Timeout, time.Second))
	tx, err := f.l.send(ctx, req)
	stop()
	if err != nil {
		r.emit(forkEvent{f: f, err: err})
		return
	}
	iv := &invite{l: f.l, req: req, tx: tx}
	f.iv = iv
	silence := time.NewTimer(c.st.s.Timeout)
	defer silence.Stop()
	heard := false
	for {
		select {
		case res := <-tx.Responses():
			if !heard {
				heard = true
				silence.Stop()
			}
			switch {
			case res.IsProvisional():
				iv.provisional = true
				if res.StatusCode > 100 {
					r.emit(forkEvent{f: f, res: res})
				}
			case res.IsSuccess():
				if !r.claim(f) {
					b.settleCancelled(iv, res, "answered elsewhere")
					return
				}
				f.l.setPeer(res)
				f.sendAck = b.acknowledger(iv)
				if len(r.offer) > 0 {
					f.sendAck(nil)
				}
				if !r.emit(forkEvent{f: f, res: res}) {
					// The setup ended between the claim and now.
					if len(r.offer) == 0 {
						f.sendAck(nil)
					}
					b.sendBye(f.l, "call setup ended")
				}
				return
			default:
				r.emit(forkEvent{f: f, res: res})
				return
			}
		case <-silence.C:
			if heard {
				continue
			}
			r.emit(forkEvent{f: f, err: fmt.Errorf("no response within %s", c.st.s.Timeout)})
			// A phone that wakes up late must not ring (or answer) alone.
			b.cancel(iv, "no response in time", nil)
			return
		case <-tx.Done():
			r.emit(forkEvent{f: f, err: fmt.Errorf("transaction ended: %v", tx.Err())})
			return
		case <-r.stop:
			r.mu.Lock()
			reason := r.reason
			r.mu.Unlock()
			why := "cancelled"
			if reason != nil {
				why = "answered elsewhere"
				reason = sip.HeaderClone(reason)
			}
			b.cancel(iv, why, reason)
			return
		}
	}
}

// translateBody carries the SDP (if any) of a message from's peer sent
// across the relay.
func (c *call) translateBody(from *leg, kind media.Kind, m message) ([]byte, error) {
	if !isSDP(m) {
		return nil, nil
	}
	return c.fromLeg(from, kind, m.Body())
}

// kindAfter is the kind of SDP in a response to an INVITE: the answer to
// the INVITE's offer, or the offer itself when the INVITE had none
// (RFC 3261 §13.2.1, delayed offer).
func kindAfter(invitedWithOffer bool) media.Kind {
	if invitedWithOffer {
		return media.Answer
	}
	return media.Offer
}

// closeLosingBrowsers frees the WebRTC media of the forks that lost.
func (r *ring) closeLosingBrowsers(winner *fork) {
	r.c.mu.Lock()
	forks := slices.Clone(r.c.forks)
	r.c.mu.Unlock()
	for _, f := range forks {
		if br := f.l.bridge(); f != winner && br != nil {
			br.Close()
		}
	}
}

// forkOffer is the offer for one fork: the relay's, pointed at the
// address l's peer reaches, and for a browser turned into ICE/DTLS-SRTP by
// a bridge of its own.
func (r *ring) forkOffer(l *leg, bnd location.Binding) ([]byte, error) {
	if bnd.ConnectionBound() {
		if len(r.offer) == 0 {
			return nil, errNoBrowserOffer
		}
		if _, err := r.b.attachBrowser(r.c, l); err != nil {
			return nil, err
		}
	}
	return r.c.toLeg(l, r.offer)
}
