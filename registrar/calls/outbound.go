package calls

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/edgewise-sip/edgewise/media"
	"github.com/edgewise-sip/edgewise/registrar/directory"
	"github.com/edgewise-sip/edgewise/registrar/twilio/edge"
)

// outbound bridges a phone's call: authenticate the phone, then (routeFor)
// ring another local user's phones, try the fallback targets, or INVITE
// sip:<dialled>@<domain>.sip.<edge>.twilio.com as the user's Twilio
// identity, walking the edge monitor's plan (every IP of the active edge,
// then the other edges) while no IP answers at all. Only an authenticated
// phone ever reaches a local phone or a fallback target this way.
func (b *B2BUA) outbound(req *sip.Request, tx sip.ServerTransaction, st *state) {
	user, ok := b.authenticate(req, tx, st)
	if !ok {
		return
	}
	dialled := req.Recipient.User
	if dialled == "" {
		b.reply(tx, req, 484, "Address Incomplete")
		b.metrics.setup(outbound, outRejected)
		return
	}
	rt := b.routeFor(st, dialled)
	creds, ok := st.twilio.Upstream(user)
	if rt.first == routeTwilio && (!ok || creds.User == "") {
		if rt.then == "" {
			b.reply(tx, req, 403, "Forbidden - No Twilio Identity")
			b.metrics.setup(outbound, outForbidden)
			return
		}
		rt.first, rt.then = rt.then, ""
	}

	dir := outbound
	if rt.first == routeLocal {
		dir = local
	}
	c := b.newCall(dir, user, st)
	c.from, c.to, c.merged = user, dialled, mergedKey(req)
	c.route, c.emergency = rt.first, rt.emergency
	if rt.first == routeLocal {
		c.callee, c.to = rt.callee, rt.callee
	}
	ctx, cancel := context.WithCancelCause(b.life)
	defer cancel(nil)
	c.cancelSetup = cancel
	if a := b.admit(c); a != nil {
		b.refuse(c, tx, req, a)
		return
	}

	a := b.uasLeg(c, req, media.A)
	if !b.takeCaller(c, a, tx, cancel) {
		return
	}
	c.log.Info("outbound call", "dialled", dialled, "route", string(rt.first), "emergency", rt.emergency, "source", req.Source())

	offer, ok := b.openMedia(c, req, tx)
	if !ok {
		b.finish(c, "setup refused")
		return
	}
	c.trustPhones(a)
	other := func(ctx context.Context, r route) {
		switch r {
		case routeLocal:
			b.ringLocal(ctx, c, a, req, tx, offer, rt.callee)
		case routeFallback:
			b.ringFallback(ctx, c, a, req, tx, offer, dialled)
		}
	}
	if rt.first != routeTwilio {
		other(ctx, rt.first)
		return
	}
	d := &dial{
		b: b, c: c, phone: a, preq: req, ptx: tx, offer: offer, dialled: dialled,
		creds: creds, callID: newCallID(), fromTag: newTag(), cseq: initialCSeq(),
		auth: &twilioAuth{user: creds.User, password: creds.Password},
	}
	if rt.then != "" {
		d.then = func(ctx context.Context) {
			c.log.Warn("every Twilio address failed; trying the call without Twilio", "route", string(rt.then), "reason", d.lastErr)
			c.switchRoute(rt.then)
			if c.st.s.TwilioSRTP && len(offer) > 0 {
				// The offer made for Twilio carries SRTP; the new route
				// gets the caller's offer carried across afresh.
				c.sess.SetSRTP(media.B, media.SRTPFollow)
				again, err := c.fromLeg(a, media.Offer, req.Body())
				if err != nil {
					c.log.Info("caller's offer unusable for the route without Twilio", "error", err)
				} else {
					offer = again
				}
			}
			other(ctx, rt.then)
		}
	}
	d.run(ctx)
}

// dial is the setup of one outbound call.
type dial struct {
	b       *B2BUA
	c       *call
	phone   *leg
	preq    *sip.Request
	ptx     sip.ServerTransaction
	offer   []byte
	dialled string
	creds   directory.TwilioUser
	callID  string
	fromTag string
	cseq    uint32
	auth    *twilioAuth

	tried, silent int // targets tried, and those that said nothing at all
	lastErr       string
	// then, when set, takes the call on once every Twilio address failed
	// (the local callee's phones, the fallback targets).
	then func(ctx context.Context)
}

// attempt outcomes.
type step int

const (
	stepNext  step = iota // nothing useful from this IP: try the next
	stepRetry             // answer the challenge at the same IP
	stepDone              // the call is answered, failed or cancelled
)

// run walks the plan; ctx ends when the phone cancels or the call ends.
func (d *dial) run(ctx context.Context) {
	b, c := d.b, d.c
	plan := b.edges.Plan()
	if len(plan) == 0 {
		if d.then != nil {
			d.lastErr = "no Twilio edge has an address"
			d.then(ctx)
			return
		}
		d.fail(503, "Service Unavailable", "no Twilio edge has an address", outUnavailable)
		return
	}
	setup := time.NewTimer(c.st.s.SetupTimeout)
	defer setup.Stop()
	for i, retry := 0, false; i < len(plan); {
		t := plan[i]
		if !retry {
			d.tried++
		}
		s := d.attempt(ctx, t, setup.C)
		retry = s == stepRetry
		switch s {
		case stepDone:
			return
		case stepRetry:
			continue
		}
		i++
		if i < len(plan) {
			c.log.Info("INVITE failing over", "from", t.String(), "to", plan[i].String(), "reason", d.lastErr)
		}
	}
	if d.then != nil && ctx.Err() == nil {
		d.then(ctx)
		return
	}
	switch {
	case d.silent == d.tried:
		d.fail(408, "Request Timeout", fmt.Sprintf("no response from Twilio (%d addresses, %s each)", d.tried, c.st.s.Timeout), outNoAnswer)
	default:
		d.fail(503, "Service Unavailable", "every Twilio address failed: "+d.lastErr, outUnavailable)
	}
}

// fail answers the phone with a made-up final response and ends the call.
func (d *dial) fail(code int, reason, why, outcome string) {
	d.b.reply(d.ptx, d.preq, code, reason, reasonHeader(code, why))
	d.b.metrics.setup(outbound, outcome)
	d.b.finish(d.c, why)
}

// twilioLeg is the Twilio-side dialog for one target.
func (d *dial) twilioLeg(t edge.Target) (*leg, error) {
	b, c := d.b, d.c
	client := b.sip.Client()
	tp := strings.ToUpper(t.Transport)
	if tp == "" {
		tp = "UDP"
	}
	if tp == "TLS" {
		if b.tls == nil {
			return nil, fmt.Errorf("tls to %s needs Options.TLS", t.FQDN)
		}
		cl, err := b.tls(t.FQDN)
		if err != nil {
			return nil, fmt.Errorf("tls client for %s: %w", t.FQDN, err)
		}
		client = cl
	}
	sock := b.sip.Addr(strings.ToLower(tp))
	if tp == "TLS" {
		sock = b.sip.Addr("tcp")
	}
	domain := c.st.s.Domain + ".sip.twilio.com"
	name := ""
	if f := d.preq.From(); f != nil {
		name = f.DisplayName
	}
	l := &leg{
		c:         c,
		side:      media.B,
		callID:    d.callID,
		localTag:  d.fromTag,
		local:     nameAddr{name: name, uri: sip.Uri{Scheme: "sip", User: d.creds.User, Host: domain}},
		remote:    nameAddr{uri: sip.Uri{Scheme: "sip", User: d.dialled, Host: domain}},
		client:    client,
		transport: tp,
		dest:      t.Addr(),
		sentBy:    advertise(c.st.public, sock),
		target:    t.URI(d.dialled),
		cseq:      d.cseq,
	}
	if tp == "UDP" {
		l.laddr = sipAddr(sock)
	}
	l.contact = contactHeader(directory.ContactUser(c.user, t.Edge), l.sentBy, tp)
	return l, nil
}

// buildInvite is the INVITE toward Twilio (RFC 3261 §8.1.1).
func (d *dial) buildInvite(l *leg, t edge.Target) *sip.Request {
	d.cseq++
	l.mu.Lock()
	l.cseq = d.cseq
	l.mu.Unlock()
	return l.newInvite(t.URI(d.dialled), d.cseq, d.c.st.s.UserAgent, d.preq, d.offer)
}

// allowed is what edgewise accepts inside a bridged dialog.
const allowed = "INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, INFO"

// attempt sends the INVITE to one target and follows it until it is worth
// trying the next target, answering a challenge, or the call is settled.
func (d *dial) attempt(ctx context.Context, t edge.Target, setup <-chan time.Time) step {
	b, c := d.b, d.c
	l, err := d.twilioLeg(t)
	if err != nil {
		d.lastErr = err.Error()
		b.metrics.failovers.WithLabelValues("transport").Inc()
		return stepNext
	}
	req := d.buildInvite(l, t)
	if err := d.auth.apply(req); err != nil {
		d.fail(500, "Server Internal Error", err.Error(), outError)
		return stepDone
	}
	start := time.Now()
	tx, err := l.send(ctx, req)
	if err != nil {
		if ctx.Err() != nil {
			d.cancelled(ctx, nil)
			return stepDone
		}
		b.edges.Report(t, edge.Result{RTT: time.Since(start)}, err)
		d.lastErr = fmt.Sprintf("%s: %v", t, err)
		b.metrics.failovers.WithLabelValues("transport").Inc()
		return stepNext
	}
	iv := &invite{l: l, req: req, tx: tx}
	silence := time.NewTimer(c.st.s.Timeout)
	defer silence.Stop()
	answered := false
	for {
		select {
		case res := <-tx.Responses():
			if !answered {
				answered = true
				silence.Stop()
				b.edges.Report(t, edge.ResultOf(res, time.Since(start)), nil)
			}
			switch code := res.StatusCode; {
			case res.IsProvisional():
				iv.provisional = true
				if code > 100 {
					d.relayProvisional(res)
				}
			case res.IsSuccess():
				d.answered(iv, t, res)
				return stepDone
			case code == sip.StatusUnauthorized || code == sip.StatusProxyAuthRequired:
				if err := d.auth.learn(res); err != nil {
					c.log.Warn("Twilio refused the user's credentials", "twilio_user", d.creds.User, "error", err)
					d.fail(403, "Forbidden", "Twilio refused the credentials of "+d.creds.User, outForbidden)
					return stepDone
				}
				return stepRetry
			case !iv.provisional && (code == sip.StatusRequestTimeout || code >= 500 && code < 600):
				d.lastErr = fmt.Sprintf("%s answered %d %s", t, code, res.Reason)
				b.metrics.failovers.WithLabelValues("error_response").Inc()
				return stepNext
			default:
				d.rejected(res)
				return stepDone
			}
		case <-silence.C:
			if answered {
				continue
			}
			b.edges.Report(t, edge.Result{RTT: time.Since(start)}, fmt.Errorf("%w within %s", edge.ErrNoResponse, c.st.s.Timeout))
			// A slow IP may still take the INVITE up: cancel it (or hang
			// up its 2xx) in the background, so Twilio never sees the call
			// twice, while the next IP is tried at once.
			if !b.spawn(func() { b.cancel(iv, "failed over to another Twilio address", nil) }) {
				tx.Terminate()
			}
			d.silent++
			d.lastErr = fmt.Sprintf("%s: no response within %s", t, c.st.s.Timeout)
			b.metrics.failovers.WithLabelValues("timeout").Inc()
			return stepNext
		case <-tx.Done():
			err := tx.Err()
			if iv.provisional {
				d.fail(408, "Request Timeout", fmt.Sprintf("%s stopped answering: %v", t, err), outNoAnswer)
				return stepDone
			}
			if !answered {
				b.edges.Report(t, edge.Result{RTT: time.Since(start)}, err)
			}
			d.lastErr = fmt.Sprintf("%s: %v", t, err)
			b.metrics.failovers.WithLabelValues("transport").Inc()
			return stepNext
		case <-setup:
			c.log.Info("no answer within the setup timeout", "timeout", c.st.s.SetupTimeout)
			b.reply(d.ptx, d.preq, 408, "Request Timeout", reasonHeader(408, "not answered within "+c.st.s.SetupTimeout.String()))
			b.metrics.setup(outbound, outNoAnswer)
			b.cancel(iv, "not answered in time", nil)
			b.finish(c, "not answered in time")
			return stepDone
		case <-ctx.Done():
			d.cancelled(ctx, iv)
			return stepDone
		}
	}
}

// cancelled settles a setup the caller (or a shutdown) gave up.
func (d *dial) cancelled(ctx context.Context, iv *invite) {
	b, c := d.b, d.c
	cause := context.Cause(ctx)
	why := "cancelled by the phone"
	outcome := outCancelled
	if !errors.Is(cause, errCancelled) {
		// sipgo answered a CANCEL with 487 already; anything else needs an answer.
		why, outcome = "setup aborted: "+cause.Error(), outShuttingDown
		b.reply(d.ptx, d.preq, 503, "Service Unavailable", reasonHeader(503, why))
	}
	b.metrics.setup(outbound, outcome)
	if iv != nil {
		b.cancel(iv, why, nil)
	}
	b.finish(c, why)
}

// relayProvisional passes a ringing or early-media response to the phone.
func (d *dial) relayProvisional(res *sip.Response) {
	c := d.c
	var body []byte
	// A browser gets its answer in the 2xx only: WebRTC has no early media
	// without an answer that sticks, and the 2xx repeats the same SDP.
	if isSDP(res) && d.phone.bridge() == nil {
		out, err := c.sess.Translate(media.B, kindAfter(len(d.offer) > 0), res.Body())
		if err != nil {
			c.log.Info("unusable early-media SDP from Twilio", "error", err)
		} else {
			body = out
		}
	}
	p := d.phone.response(d.preq, res.StatusCode, res.Reason, body)
	if body != nil {
		p.AppendHeader(sdpHeader())
	}
	copyHeaders(p, res)
	c.setPhase(phaseRinging)
	d.b.send(d.ptx, p)
}

// rejected relays Twilio's final failure (486 stays 486) to the phone.
func (d *dial) rejected(res *sip.Response) {
	outcome := outRejected
	if res.StatusCode == sip.StatusBusyHere || res.StatusCode == 600 {
		outcome = outBusy
	}
	p := sip.NewResponseFromRequest(d.preq, res.StatusCode, res.Reason, nil)
	if to := p.To(); to != nil {
		to.Params.Add("tag", d.phone.localTag)
	}
	copyHeaders(p, res, "Reason", "Retry-After", "Warning")
	d.b.send(d.ptx, p)
	d.b.metrics.setup(outbound, outcome)
	d.b.finish(d.c, fmt.Sprintf("Twilio answered %d %s", res.StatusCode, res.Reason))
}

// answered bridges the call once Twilio's 2xx arrived: ACK Twilio, answer
// the phone, wait for its ACK. With a delayed offer (the phone's INVITE had
// no SDP) Twilio's 2xx carries the offer and the phone's ACK the answer,
// which our ACK then carries to Twilio.
func (d *dial) answered(iv *invite, t edge.Target, res *sip.Response) {
	b, c := d.b, d.c
	l := iv.l
	l.setPeer(res)
	sendAck := b.acknowledger(iv)
	delayed := len(d.offer) == 0
	if !delayed {
		sendAck(nil)
	}
	var answer []byte
	if isSDP(res) {
		out, err := c.fromLeg(l, kindAfter(!delayed), res.Body())
		if err == nil {
			out, err = c.toLeg(d.phone, out)
		}
		if err != nil {
			c.log.Info("unusable SDP in Twilio's answer", "error", err)
		}
		answer = out
	}
	if answer == nil {
		if delayed {
			sendAck(nil)
		}
		b.sendBye(l, "unusable SDP")
		b.reply(d.ptx, d.preq, 488, "Not Acceptable Here", reasonHeader(488, "Twilio's answer has no usable SDP"))
		b.metrics.setup(outbound, outBadSDP)
		b.finish(c, "unusable SDP in the answer")
		return
	}

	if !c.markAnswered(l, &t) {
		// The phone gave up while the 2xx was on its way.
		if delayed {
			sendAck(nil)
		}
		b.sendBye(l, "cancelled by the phone")
		return
	}
	b.addDialog(l)
	b.startMedia(c)

	p := d.phone.response(d.preq, res.StatusCode, res.Reason, answer)
	p.AppendHeader(sdpHeader())
	p.AppendHeader(sip.NewHeader("Allow", allowed))
	copyHeaders(p, res)
	ack, ok := b.answerCaller(c, d.phone, d.ptx, p)
	if !ok && c.ended() {
		// The caller hung up (or we shut down) before its ACK was
		// processed: the call was answered all the same.
		if delayed {
			sendAck(nil)
		}
		b.metrics.setup(outbound, outAnswered)
		return
	}
	if !ok {
		if delayed {
			sendAck(nil)
		}
		b.metrics.setup(outbound, outError)
		b.hangup(c, "the phone did not acknowledge the answer", nil)
		return
	}
	if delayed {
		body, err := c.translateBody(d.phone, media.Answer, ack)
		if err != nil || body == nil {
			sendAck(nil)
			b.metrics.setup(outbound, outBadSDP)
			b.hangup(c, "no usable SDP answer in the phone's ACK", nil)
			return
		}
		sendAck(body)
	}
	b.metrics.setup(outbound, outAnswered)
	c.log.Info("call answered", "edge", t.Edge, "twilio", t.Addr())
}

// startMedia starts the inactivity clock and hangs up on silence.
func (b *B2BUA) startMedia(c *call) {
	c.sess.Answered()
	c.sess.OnTimeout(func(side media.Side) {
		b.spawn(func() { b.hangup(c, "media timeout on the "+c.sideName(side)+" side", nil) })
	})
}

// sideName names a side of c for logs and Reasons: the phone's (A) and
// Twilio's (B), or for a call without Twilio the caller's and the callee's.
func (c *call) sideName(s media.Side) string {
	c.mu.Lock()
	rt := c.route
	c.mu.Unlock()
	switch {
	case rt != routeTwilio && s == media.A:
		return "caller"
	case rt != routeTwilio:
		return "callee"
	case s == media.A:
		return "phone"
	}
	return "Twilio"
}
