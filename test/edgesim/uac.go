package edgesim

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/emiago/sipgo/sip"
)

// DefaultCaller is the caller ID of placed calls whose request names none.
const DefaultCaller = "+15550001111"

// maxRingTimeout bounds a placed call's ring timeout.
const maxRingTimeout = 10 * time.Minute

// cancelTimeout bounds a CANCEL edgesim sends.
const cancelTimeout = 32 * time.Second

// CallRequest asks edgesim to call a registered user, as Twilio does when a
// call is dialled to user@<domain>.sip.twilio.com.
type CallRequest struct {
	// To is the user (AOR user part) to call. Required.
	To string `json:"to"`
	// From is the caller ID; DefaultCaller when empty.
	From string `json:"from,omitempty"`
	// Edge, when set, sends every fork from that edge (its first IP that
	// is up). Empty sends each fork from the edge IP its binding registered
	// through, or, when that IP is broken, another IP of that edge, then of
	// the other edges (README "Twilio facts" 2: calls egress from another edge when
	// the registered one is down).
	Edge string `json:"edge,omitempty"`
	// Timeout is how long the call rings before edgesim cancels it; zero
	// means calls.ring_timeout.
	Timeout time.Duration `json:"-"`
}

// fork is one INVITE of a placed call: one per live binding of the user.
type fork struct {
	idx       int
	contact   string
	ip        *edgeIP
	transport string
	inv       *sip.Request
	media     *mediaStream
	tx        sip.ClientTransaction // set by the fork goroutine before its first event

	// Owned by the call's coordinator goroutine.
	provisional bool // a 1xx arrived, so CANCEL may be sent (RFC 3261 §9.1)
	wantCancel  bool
	cancelSent  bool
	done        bool // final response or transaction error seen
}

type forkEvent struct {
	f   *fork
	res *sip.Response
	err error
}

// PlaceCall calls a registered user like Twilio does: an INVITE to every
// live binding of the user on every edge, in parallel, each from the edge
// IP the binding registered through, each with a far-end SDP offer (PCMU,
// PCMA, telephone-event 101) and the same X-Twilio-CallSid. The first 2xx
// wins and is ACKed; the other forks are cancelled. With no binding the
// call fails at once with 480. The answered call's RTP is echoed.
//
// PlaceCall returns once the call is set going; follow it with Call,
// WaitCall or Calls. ctx only bounds PlaceCall itself: the call lives until
// it is over or the simulator stops.
func (s *Sim) PlaceCall(ctx context.Context, r CallRequest) (CallID, error) {
	if err := ctx.Err(); err != nil {
		return "", err
	}
	if r.To == "" || !userRE.MatchString(r.To) {
		return "", fmt.Errorf("%w: to %q is not a SIP user", ErrInvalidCall, r.To)
	}
	if r.From == "" {
		r.From = DefaultCaller
	}
	if !userRE.MatchString(r.From) {
		return "", fmt.Errorf("%w: from %q is not a SIP user", ErrInvalidCall, r.From)
	}
	if r.Edge != "" {
		if _, ok := s.byName[r.Edge]; !ok {
			return "", fmt.Errorf("%w: %w %q", ErrInvalidCall, ErrUnknownEdge, r.Edge)
		}
	}
	if r.Timeout < 0 || r.Timeout > maxRingTimeout {
		return "", fmt.Errorf("%w: timeout %s is out of range 0..%s", ErrInvalidCall, r.Timeout, maxRingTimeout)
	}
	if r.Timeout == 0 {
		r.Timeout = s.cfg.Calls.RingTimeout
	}

	c, err := s.calls.newCall(CallPlaced, r.From, r.To)
	if err != nil {
		return "", err
	}
	bindings := s.loc.list(r.To, s.clock())
	s.log.Info("placing call", "call", c.id, "from", r.From, "to", r.To, "edge", r.Edge, "bindings", len(bindings))
	if len(bindings) == 0 {
		c.finish(CallFailed, sip.StatusTemporarilyUnavailable, "no registered contact", endedByEdgesim)
		return c.id, nil
	}
	forks := make([]*fork, 0, len(bindings))
	statuses := make([]ForkStatus, 0, len(bindings))
	for i, b := range bindings {
		f, st := c.newFork(i, b, r)
		forks = append(forks, f)
		statuses = append(statuses, st)
	}
	c.update(func(st *CallStatus) { st.Forks = statuses })
	if !s.calls.spawn(func() { c.runPlaced(forks, r.Timeout) }) {
		for _, f := range forks {
			if f.media != nil {
				f.media.close()
			}
		}
		c.finish(CallFailed, 0, "edgesim stopped", endedByEdgesim)
	}
	return c.id, nil
}

// newFork prepares the INVITE to one binding. A fork that cannot be sent
// (no usable edge IP, unparsable contact, no free RTP port) comes back done
// and failed.
func (c *call) newFork(i int, b Binding, r CallRequest) (*fork, ForkStatus) {
	s := c.m.sim
	f := &fork{idx: i, contact: b.Contact}
	st := ForkStatus{Contact: b.Contact, State: forkTrying}
	fail := func(code int, reason string) (*fork, ForkStatus) {
		f.done = true
		st.State, st.Code, st.Reason = forkFailed, code, reason
		s.log.Warn("fork not sent", "call", c.id, "contact", b.Contact, "reason", reason)
		return f, st
	}
	var target sip.Uri
	if err := sip.ParseUri(b.Contact, &target); err != nil {
		return fail(sip.StatusBadRequest, fmt.Sprintf("contact %q: %v", b.Contact, err))
	}
	f.transport = strings.ToUpper(b.Transport)
	if t, ok := target.UriParams.Get("transport"); ok && t != "" {
		f.transport = strings.ToUpper(t)
	}
	if f.transport == "" {
		f.transport = "UDP"
	}
	ip := s.egressIP(b, r.Edge)
	if ip == nil {
		return fail(sip.StatusServiceUnavailable, "no edge IP is open to send from")
	}
	f.ip = ip
	st.Edge, st.IP, st.Transport = ip.edge.name, ip.addr.String(), f.transport
	ms, err := openMedia(ip.addr)
	if err != nil {
		return fail(sip.StatusInternalServerError, err.Error())
	}
	f.media = ms

	domain := s.cfg.Domain + ".sip.twilio.com"
	inv := sip.NewRequest(sip.INVITE, target)
	inv.SetTransport(f.transport)
	from := &sip.FromHeader{DisplayName: r.From, Address: sip.Uri{Scheme: "sip", User: r.From, Host: domain}}
	from.Params.Add("tag", sip.GenerateTagN(16))
	to := &sip.ToHeader{Address: sip.Uri{Scheme: "sip", User: r.To, Host: domain}}
	// Each fork is its own dialog with its own Call-ID, as a B2BUA's legs
	// are; a shared Call-ID would make two contacts on one gateway look
	// like a merged request (RFC 3261 §8.2.2.2).
	cid := sip.CallIDHeader(randomHex(16) + "@" + ip.addr.String())
	maxFwd := sip.MaxForwardsHeader(70)
	ct := sip.ContentTypeHeader("application/sdp")
	inv.AppendHeader(from)
	inv.AppendHeader(to)
	inv.AppendHeader(&cid)
	inv.AppendHeader(&sip.CSeqHeader{SeqNo: 1, MethodName: sip.INVITE})
	inv.AppendHeader(&maxFwd)
	inv.AppendHeader(ip.contact(f.transport))
	inv.AppendHeader(sip.NewHeader("Allow", allowHeader))
	inv.AppendHeader(sip.NewHeader("User-Agent", "edgesim "+ip.edge.name))
	inv.AppendHeader(sip.NewHeader("X-Twilio-CallSid", string(c.id)))
	inv.AppendHeader(&ct)
	offer := c.buildSDP(func(ss *sdpSession) []byte {
		return ss.offer(ip.addr, int(ms.local.Port()), dirSendRecv)
	})
	if s.cfg.Calls.SecureMedia {
		offer = withCrypto(offer, ms.secure(1, sdesOffered).local)
	}
	inv.SetBody(offer)
	f.inv = inv
	st.SIPCallID = string(cid)
	return f, st
}

// egressIP picks the edge IP a fork leaves from; nil when none is open.
func (s *Sim) egressIP(b Binding, edgeName string) *edgeIP {
	healthy := func(ip *edgeIP) bool {
		m := s.effective(ip).Mode
		return ip.isOpen() && m.answers()
	}
	firstOf := func(ips []*edgeIP, ok func(*edgeIP) bool) *edgeIP {
		for _, ip := range ips {
			if ok(ip) {
				return ip
			}
		}
		return nil
	}
	if edgeName != "" {
		e := s.byName[edgeName]
		if ip := firstOf(e.ips, healthy); ip != nil {
			return ip
		}
		// Asked for this edge: use it even broken, so the test sees
		// what a broken edge does to a call.
		return firstOf(e.ips, (*edgeIP).isOpen)
	}
	if a, err := netip.ParseAddr(b.IP); err == nil {
		if ip := s.byIP[a.Unmap()]; ip != nil && healthy(ip) {
			return ip
		}
	}
	if e := s.byName[b.Edge]; e != nil {
		if ip := firstOf(e.ips, healthy); ip != nil {
			return ip
		}
	}
	for _, e := range s.edges {
		if ip := firstOf(e.ips, healthy); ip != nil {
			return ip
		}
	}
	return nil
}

// runPlaced drives a placed call on its own goroutine: it sends the
// forks, follows their responses, picks the first 2xx, cancels the rest,
// and after the answer waits for the hang-up.
func (c *call) runPlaced(forks []*fork, timeout time.Duration) {
	s := c.m.sim
	events := make(chan forkEvent)
	pending := 0
	for _, f := range forks {
		if f.done {
			continue
		}
		if !c.m.spawn(func() { c.runFork(f, events) }) {
			f.done = true
			f.media.close()
			continue
		}
		pending++
	}
	ring := time.NewTimer(timeout)
	defer ring.Stop()
	hangup := c.hangup
	var winner *fork
	over := false // the call has finished; the loop only cleans up forks

	cancelRest := func() {
		for _, f := range forks {
			if f.done || f == winner || f.wantCancel {
				continue
			}
			f.wantCancel = true
			if f.provisional {
				c.sendCancel(f)
			}
		}
	}
	for pending > 0 || (!over && winner == nil) {
		if pending == 0 {
			// Every fork failed.
			best := bestFailure(c.forkStatuses())
			reason := best.Reason
			if len(forks) > 1 {
				reason = fmt.Sprintf("every fork failed; %s: %d %s", best.Contact, best.Code, best.Reason)
			}
			c.finish(CallFailed, best.Code, reason, endedByGateway)
			over = true
			break
		}
		select {
		case ev := <-events:
			if done := c.forkEvent(ev, &winner, over); done {
				pending--
			}
			if winner != nil {
				cancelRest()
			}
		case <-ring.C:
			if winner == nil && !over {
				cancelRest()
				c.finish(CallFailed, sip.StatusRequestTerminated, fmt.Sprintf("no answer within %s", timeout), endedByEdgesim)
				over = true
			}
		case <-hangup:
			hangup = nil
			switch {
			case winner != nil:
				// Answered while other forks still finish: hang up now.
				if !c.m.spawn(func() { c.bye(c.hangupReason) }) {
					c.finish(CallEnded, 0, c.hangupReason, endedByEdgesim)
				}
			case !over:
				cancelRest()
				c.finish(CallFailed, sip.StatusRequestTerminated, "cancelled: "+c.hangupReason, endedByEdgesim)
				over = true
			}
		case <-c.m.quit:
			for _, f := range forks {
				if f.media != nil && f != winner {
					f.media.close()
				}
			}
			return
		}
	}
	if winner == nil {
		return
	}
	s.log.Debug("placed call forks settled", "call", c.id)
	if hangup == nil {
		// The hang-up was already handled above.
		<-c.ended
		return
	}
	c.superviseAnswered()
}

// forkEvent handles one response or error of a fork and reports whether
// the fork is done.
func (c *call) forkEvent(ev forkEvent, winner **fork, over bool) bool {
	f := ev.f
	s := c.m.sim
	if ev.err != nil {
		code := sip.StatusServiceUnavailable
		if errors.Is(ev.err, sip.ErrTransactionTimeout) {
			code = sip.StatusRequestTimeout
		}
		state := forkFailed
		if f.wantCancel {
			state = forkCancelled
		}
		c.setFork(f.idx, state, code, ev.err.Error())
		f.done = true
		f.media.close()
		return true
	}
	res := ev.res
	switch {
	case res.IsProvisional():
		f.provisional = true
		if res.StatusCode > sip.StatusTrying {
			c.setFork(f.idx, forkRinging, res.StatusCode, res.Reason)
			if *winner == nil && !over {
				c.update(func(st *CallStatus) { st.State = CallRinging })
			}
		}
		if f.wantCancel && !f.cancelSent {
			c.sendCancel(f)
		}
		return false
	case res.IsSuccess():
		f.done = true
		if *winner != nil || over {
			// A second answer, or one that crossed the CANCEL: take
			// it and hang it up at once (RFC 3261 §13.2.2.4).
			c.setFork(f.idx, forkCancelled, res.StatusCode, "answered after the call was decided; BYE sent")
			c.ackAndBye(f, res)
			return true
		}
		*winner = f
		c.answerFork(f, res)
		return true
	default:
		f.done = true
		state := forkFailed
		if f.wantCancel {
			state = forkCancelled
		}
		c.setFork(f.idx, state, res.StatusCode, res.Reason)
		f.media.close()
		s.log.Debug("fork failed", "call", c.id, "contact", f.contact, "code", res.StatusCode)
		return true
	}
}

// runFork sends one fork's INVITE and passes its responses to the
// coordinator until the final one.
func (c *call) runFork(f *fork, events chan<- forkEvent) {
	send := func(ev forkEvent) bool {
		select {
		case events <- ev:
			return true
		case <-c.m.quit:
			return false
		}
	}
	tx, err := f.ip.request(doneContext(c.m.quit), f.inv)
	if err != nil {
		send(forkEvent{f: f, err: err})
		return
	}
	f.tx = tx
	for {
		select {
		case res := <-tx.Responses():
			if !send(forkEvent{f: f, res: res}) || !res.IsProvisional() {
				return
			}
		case <-tx.Done():
			err := tx.Err()
			if err == nil {
				err = errors.New("INVITE transaction ended without a final response")
			}
			send(forkEvent{f: f, err: err})
			return
		case <-c.m.quit:
			tx.Terminate()
			return
		}
	}
}

// answerFork makes f the call's dialog: ACK, echo on its media stream.
func (c *call) answerFork(f *fork, res *sip.Response) {
	s := c.m.sim
	d := uacDialog(f.ip, f.inv, res)
	codec, remote, dir := "", "", dirSendRecv
	if info, err := parseSDP(res.Body()); err == nil {
		codec, dir = info.codec, answerDirection(info.dir)
		if info.addr.IsValid() {
			remote = info.addr.String()
		}
		if err := s.mediaPolicy(&info); err != nil {
			// Twilio would tear such a call down; edgesim says so and
			// echoes nothing (the gateway's media cannot decrypt).
			s.log.Warn("answer sdp refused", "call", c.id, "contact", f.contact, "error", err)
		} else if sec := f.media.sec.Load(); sec != nil {
			if k, ok := matchKey(&info, sec.local); !ok || sec.setPeer(k) != nil {
				s.log.Warn("answer has no a=crypto for edgesim's offer", "call", c.id, "contact", f.contact)
			}
		}
	} else {
		s.log.Warn("answer sdp unusable", "call", c.id, "contact", f.contact, "error", err)
	}
	c.setMedia(f.media, codec, remote, dir)
	c.setFork(f.idx, forkAnswered, res.StatusCode, res.Reason)
	// Answered before the ACK leaves: the phone may hang up right behind it.
	c.setDialog(d)
	c.answered(d, func(st *CallStatus) {
		st.AnsweredBy, st.Edge, st.IP, st.Transport = f.contact, f.ip.edge.name, f.ip.addr.String(), f.transport
	})
	c.ack(f, d, res)
	s.log.Debug("call answered", "call", c.id, "direction", CallPlaced, "contact", f.contact, "call_id", d.callID)
}

// ack sends the ACK for a fork's 2xx and again for every retransmission of
// that 2xx, which sipgo hands to the transaction's hook.
func (c *call) ack(f *fork, d *dialog, res *sip.Response) {
	seq := f.inv.CSeq().SeqNo
	send := func() {
		if err := f.ip.write(d.requestWithCSeq(sip.ACK, seq)); err != nil {
			c.m.sim.log.Warn("ACK not sent", "call", c.id, "contact", f.contact, "error", err)
		}
	}
	send()
	if f.tx != nil {
		f.tx.OnRetransmission(func(r *sip.Response) {
			if r.IsSuccess() {
				send()
			}
		})
	}
}

// ackAndBye completes and at once ends a fork that answered too late.
func (c *call) ackAndBye(f *fork, res *sip.Response) {
	d := uacDialog(f.ip, f.inv, res)
	c.ack(f, d, res)
	f.media.close()
	c.m.spawn(func() {
		ctx, cancel := context.WithTimeout(doneContext(c.m.quit), byeTimeout)
		defer cancel()
		if _, err := d.do(ctx, d.newRequest(sip.BYE)); err != nil {
			c.m.sim.log.Warn("BYE to late answer failed", "call", c.id, "contact", f.contact, "error", err)
		}
	})
}

// sendCancel cancels a fork's INVITE (RFC 3261 §9.1): same Request-URI,
// Call-ID, From, To, CSeq number and top Via as the INVITE.
func (c *call) sendCancel(f *fork) {
	f.cancelSent = true
	inv := f.inv
	req := sip.NewRequest(sip.CANCEL, *inv.Recipient.Clone())
	req.SetTransport(inv.Transport())
	if via := inv.Via(); via != nil {
		req.AppendHeader(via.Clone())
	}
	req.AppendHeader(sip.HeaderClone(inv.From()))
	req.AppendHeader(sip.HeaderClone(inv.To()))
	req.AppendHeader(sip.HeaderClone(inv.CallID()))
	req.AppendHeader(&sip.CSeqHeader{SeqNo: inv.CSeq().SeqNo, MethodName: sip.CANCEL})
	maxFwd := sip.MaxForwardsHeader(70)
	req.AppendHeader(&maxFwd)
	sip.CopyHeaders("Route", inv, req)
	c.m.spawn(func() {
		ctx, cancel := context.WithTimeout(doneContext(c.m.quit), cancelTimeout)
		defer cancel()
		res, err := f.ip.do(ctx, req)
		if err != nil {
			c.m.sim.log.Warn("CANCEL failed", "call", c.id, "contact", f.contact, "error", err)
			return
		}
		c.m.sim.log.Debug("CANCEL answered", "call", c.id, "contact", f.contact, "code", res.StatusCode)
	})
}

func (c *call) setFork(i int, state string, code int, reason string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if i < 0 || i >= len(c.st.Forks) {
		return
	}
	fs := &c.st.Forks[i]
	fs.State, fs.Code, fs.Reason = state, code, reason
	c.notifyLocked()
}

func (c *call) forkStatuses() []ForkStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.st.Forks)
}

// bestFailure picks the final response of a call whose forks all failed,
// as a forking proxy does (RFC 3261 §16.7 step 6): a 6xx if any, else 486
// (a busy phone says more than an unreachable one), else the lowest class.
// Forks that got no response at all count as 408.
func bestFailure(forks []ForkStatus) ForkStatus {
	rank := func(code int) int {
		switch {
		case code >= 600:
			return 0
		case code == sip.StatusBusyHere:
			return 1
		default:
			return 2 + code/100
		}
	}
	var best ForkStatus
	for _, f := range forks {
		if f.Code < 300 {
			f.Code = sip.StatusRequestTimeout
		}
		if best.Code == 0 || rank(f.Code) < rank(best.Code) {
			best = f
		}
	}
	if best.Code == 0 {
		best.Code, best.Reason = sip.StatusTemporarilyUnavailable, "no fork"
	}
	return best
}
