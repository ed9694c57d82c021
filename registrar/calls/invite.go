package calls

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/edgewise-sip/edgewise/registrar/directory"
)

// Causes of a setup context's end.
var (
	errCancelled = errors.New("cancelled by the caller")
	errEnded     = errors.New("call ended")
)

// serveInvite handles every INVITE: a re-INVITE inside a dialog (To tag),
// a call from Twilio (the Request-URI is a Contact edgewise registered
// upstream), or a call from a phone.
func (b *B2BUA) serveInvite(req *sip.Request, tx sip.ServerTransaction) {
	if mf := req.MaxForwards(); mf != nil && mf.Val() == 0 {
		b.reply(tx, req, 483, "Too Many Hops")
		return
	}
	if tagOf(req.To().Params) != "" {
		b.reinvite(req, tx)
		return
	}
	if h := req.GetHeader("Require"); h != nil {
		// No extension (100rel, timer …) is supported end to end: the far
		// side would be asked for what edgewise cannot relay (RFC 3261 §8.2.2.3).
		b.reply(tx, req, 420, "Bad Extension", sip.NewHeader("Unsupported", h.Value()))
		return
	}
	st := b.state.Load()
	if b.peers != nil && req.GetHeader(PeerHeader) != nil {
		b.fromPeer(req, tx, st)
		return
	}
	if user, edgeName, ok := directory.ParseContactURI(req.Recipient); ok {
		b.inbound(req, tx, st, user, edgeName)
		return
	}
	b.outbound(req, tx, st)
}

// answerCaller sends the 2xx to the caller's INVITE and, on UDP, repeats it
// (T1 doubling to T2) until the ACK comes, for at most 64*T1 (RFC 3261
// §13.3.1.4; sipgo leaves 2xx retransmission to the TU, RFC 6026).
func (b *B2BUA) answerCaller(c *call, l *leg, tx sip.ServerTransaction, res *sip.Response) (*sip.Request, bool) {
	n := res.CSeq().SeqNo
	ch := l.expectAck(n)
	defer l.dropAck(n)
	if err := b.send(tx, res); err != nil {
		return nil, false
	}
	interval := sip.T1
	resend := time.NewTimer(interval)
	defer resend.Stop()
	if l.transport != "UDP" {
		resend.Stop()
	}
	deadline := time.NewTimer(64 * sip.T1)
	defer deadline.Stop()
	for {
		select {
		case ack := <-ch:
			return ack, true
		case ack := <-tx.Acks():
			// An ACK reusing the INVITE's branch reaches the transaction.
			return ack, true
		case <-resend.C:
			if err := tx.Respond(res); err != nil {
				return nil, false
			}
			interval = min(2*interval, sip.T2)
			resend.Reset(interval)
		case <-deadline.C:
			return nil, false
		case <-c.done:
			return nil, false
		}
	}
}

// invite is one INVITE client transaction we sent, on leg l.
type invite struct {
	l           *leg
	req         *sip.Request
	tx          sip.ClientTransaction
	provisional bool // any 1xx arrived: it may be cancelled (RFC 3261 §9.1)
}

// cancel gives up an INVITE nobody answered yet: CANCEL once a provisional
// response allows it (waiting at most Timeout for one), then wait, bounded,
// for the final response; a 2xx that crosses the CANCEL is ACKed and hung up.
func (b *B2BUA) cancel(iv *invite, why string, reason sip.Header) {
	timeout := max(iv.l.c.st.s.Timeout, time.Second)
	if !iv.provisional {
		t := time.NewTimer(timeout)
	wait:
		for {
			select {
			case res := <-iv.tx.Responses():
				if res.IsProvisional() {
					iv.provisional = true
					break wait
				}
				t.Stop()
				b.settleCancelled(iv, res, why)
				return
			case <-iv.tx.Done():
				t.Stop()
				return
			case <-t.C:
				iv.tx.Terminate()
				return
			}
		}
		t.Stop()
	}
	creq := cancelRequest(iv.req)
	if reason != nil {
		creq.AppendHeader(reason)
	}
	ctx, stop := context.WithTimeout(b.life, timeout)
	defer stop()
	if tx, err := iv.l.send(ctx, creq); err == nil {
		defer tx.Terminate()
	} else {
		iv.l.c.log.Debug("sending CANCEL failed", "error", err)
	}
	// The final answer (487) should follow at once; a peer that never
	// sends it must not hold us for Timer B.
	t := time.NewTimer(8 * time.Second)
	defer t.Stop()
	for {
		select {
		case res := <-iv.tx.Responses():
			if res.IsProvisional() {
				continue
			}
			b.settleCancelled(iv, res, why)
			return
		case <-iv.tx.Done():
			return
		case <-t.C:
			iv.tx.Terminate()
			return
		}
	}
}

// settleCancelled handles the final response to an INVITE we gave up: a 2xx
// established a dialog nobody wants, so it is ACKed and ended at once.
func (b *B2BUA) settleCancelled(iv *invite, res *sip.Response, why string) {
	if !res.IsSuccess() {
		return
	}
	stray := iv.l.strayCopy(res)
	if err := stray.write(stray.ackFor(iv.req.CSeq().SeqNo, nil, "")); err != nil {
		iv.l.c.log.Debug("ACK of an unwanted 2xx failed", "error", err)
	}
	b.sendBye(stray, why)
}

// strayCopy is a throwaway leg for another dialog the same INVITE created
// (a 2xx after CANCEL, or a second 2xx from a forking far end).
func (l *leg) strayCopy(res *sip.Response) *leg {
	l.mu.Lock()
	cp := &leg{
		c: l.c, side: l.side, callID: l.callID, localTag: l.localTag, local: l.local, remote: l.remote,
		client: l.client, transport: l.transport, dest: l.dest, laddr: l.laddr, sentBy: l.sentBy,
		contact: l.contact, target: l.target, cseq: l.cseq,
	}
	l.mu.Unlock()
	cp.setPeer(res)
	return cp
}

// cancelRequest builds the CANCEL for an INVITE (RFC 3261 §9.1): same
// Request-URI, top Via, From, To, Call-ID, CSeq number and Route set.
func cancelRequest(inv *sip.Request) *sip.Request {
	req := sip.NewRequest(sip.CANCEL, *inv.Recipient.Clone())
	req.AppendHeader(inv.Via().Clone())
	maxFwd := sip.MaxForwardsHeader(70)
	req.AppendHeader(&maxFwd)
	for _, h := range inv.GetHeaders("Route") {
		req.AppendHeader(sip.NewHeader("Route", h.Value()))
	}
	req.AppendHeader(sip.HeaderClone(inv.From()))
	req.AppendHeader(sip.HeaderClone(inv.To()))
	req.AppendHeader(sip.HeaderClone(inv.CallID()))
	req.AppendHeader(&sip.CSeqHeader{SeqNo: inv.CSeq().SeqNo, MethodName: sip.CANCEL})
	req.SetTransport(inv.Transport())
	req.SetDestination(inv.Destination())
	req.Laddr = inv.Laddr
	req.SetBody(nil)
	return req
}

// acker re-sends the ACK of a 2xx each time the far end repeats the 2xx
// (our ACK was lost), and ends any other dialog the INVITE created.
type acker struct {
	mu  sync.Mutex
	ack *sip.Request
}

func (a *acker) set(ack *sip.Request) {
	a.mu.Lock()
	a.ack = ack
	a.mu.Unlock()
}

// acknowledger arms the ACK machinery for a 2xx to iv (its peer is set) and
// returns the function that sends the ACK, with the answer SDP of a delayed
// offer if there is one.
func (b *B2BUA) acknowledger(iv *invite) func(body []byte) {
	acks := b.watch2xx(iv)
	return func(body []byte) {
		ack := iv.l.ackFor(iv.req.CSeq().SeqNo, body, "application/sdp")
		acks.set(ack.Clone())
		if err := iv.l.write(ack); err != nil {
			iv.l.c.log.Warn("sending ACK failed", "side", iv.l.c.sideName(iv.l.side), "error", err)
		}
	}
}

func (b *B2BUA) watch2xx(iv *invite) *acker {
	a := &acker{}
	l := iv.l
	iv.tx.OnRetransmission(func(res *sip.Response) {
		if !res.IsSuccess() {
			return
		}
		l.mu.Lock()
		tag := l.remoteTag
		l.mu.Unlock()
		if tagOf(res.To().Params) != tag {
			b.spawn(func() { b.settleCancelled(iv, res, "second answer to one INVITE") })
			return
		}
		a.mu.Lock()
		ack := a.ack
		a.mu.Unlock()
		if ack != nil {
			if err := l.write(ack.Clone()); err != nil {
				l.c.log.Debug("ACK retransmission failed", "error", err)
			}
		}
	})
	return a
}
