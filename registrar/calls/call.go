package calls

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/edgewise-sip/edgewise/media"
	"github.com/edgewise-sip/edgewise/media/sdp"
	"github.com/edgewise-sip/edgewise/registrar/twilio/edge"
)

// direction of a call, as status and metrics name it.
type direction string

const (
	outbound direction = "outbound" // phone → Twilio (or a fallback target)
	inbound  direction = "inbound"  // Twilio → phone
	local    direction = "local"    // phone → phone, connected by edgewise itself
)

// phase of a call.
type phase string

const (
	phaseSetup    phase = "setup"
	phaseRinging  phase = "ringing"
	phaseAnswered phase = "answered"
	phaseEnded    phase = "ended"
)

// call is one bridged call: the caller's dialog (in, where we are the UAS)
// and the callee's (out, where we are the UAC), and their media session.
type call struct {
	b       *B2BUA
	id      string
	dir     direction
	user    string
	st      *state
	started time.Time
	from    string // caller as the caller's side named it
	to      string // dialled number (outbound) or local user (inbound)
	callSid string
	merged  string // merged-request key of the caller's INVITE
	sess    *media.Session
	log     *slog.Logger

	// cancelSetup ends the setup's context: CANCEL from the caller, BYE,
	// shutdown.
	cancelSetup context.CancelCauseFunc
	done        chan struct{} // closed when the call ends

	mu       sync.Mutex
	phase    phase
	answered time.Time
	in       *leg
	out      *leg
	forks    []*fork
	target   edge.Target // outbound: the Twilio IP the call went to
	busy     bool        // a re-INVITE is being relayed (glare → 491)
	endWhy   string
	// route is where the call went (routeTwilio for calls from Twilio);
	// reached the fallback target that answered (ip:port).
	route   route
	reached string

	// callee is the local user a local call rings, counted with user for
	// MaxCallsPerUser; emergency calls are never refused for call limits.
	callee    string
	emergency bool
}

func (b *B2BUA) newCall(dir direction, user string, st *state) *call {
	c := &call{
		b:       b,
		id:      newCallID(),
		dir:     dir,
		user:    user,
		st:      st,
		started: time.Now(),
		phase:   phaseSetup,
		done:    make(chan struct{}),
		route:   routeTwilio,
	}
	c.log = withLazy(b.log, "call", c.id, "direction", string(dir), "user", user)
	return c
}

// peer is the other dialog of l's call, or nil before it exists.
func (c *call) peer(l *leg) *leg {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch l {
	case c.in:
		return c.out
	case c.out:
		return c.in
	}
	return nil
}

func (c *call) setPhase(p phase) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.phase == phaseEnded {
		return
	}
	if p == phaseAnswered {
		c.answered = time.Now()
	}
	c.phase = p
}

// markAnswered records l as the answered far leg (and, outbound, the Twilio
// IP it reached) unless the call already ended — the caller gave up while
// the 2xx was on its way. It reports whether the call is now answered.
func (c *call) markAnswered(l *leg, target *edge.Target) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.phase == phaseEnded {
		return false
	}
	c.out = l
	if target != nil {
		c.target = *target
	}
	c.phase = phaseAnswered
	c.answered = time.Now()
	return true
}

func (c *call) ended() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// admit files a new call: it refuses (482) a merged request — same Call-ID,
// From tag and CSeq as an INVITE already being handled, with another branch
// (RFC 3261 §8.2.2.2) — and an X-Twilio-CallSid already in progress, which
// is how Twilio's fork to both edges' Contacts during a registration move
// reaches us twice. ok false with code 503 means shutting down.
func (b *B2BUA) admit(c *call) *admission {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.stopping || b.drain != nil {
		return &admission{code: 503, reason: "Service Unavailable - Shutting Down", outcome: outShuttingDown}
	}
	if prev := b.merged[c.merged]; prev != nil {
		return &admission{code: 482, reason: "Loop Detected", outcome: outDuplicate}
	}
	if c.callSid != "" {
		if prev := b.sids[c.callSid]; prev != nil {
			return &admission{code: 482, reason: "Loop Detected - Duplicate CallSid", outcome: outDuplicate}
		}
	}
	s := c.st.s
	if s.MaxCalls > 0 && len(b.calls) >= s.MaxCalls && !c.emergency {
		return &admission{code: 503, reason: fmt.Sprintf("Service Unavailable - Call Limit Reached (%d)", s.MaxCalls),
			outcome: outCallLimit, headers: []sip.Header{sip.NewHeader("Retry-After", callLimitRetryAfter)}}
	}
	for _, u := range c.users() {
		if s.MaxCallsPerUser > 0 && b.perUser[u] >= s.MaxCallsPerUser && !c.emergency {
			return &admission{code: 486, reason: fmt.Sprintf("Busy Here - Call Limit For User Reached (%d)", s.MaxCallsPerUser),
				outcome: outUserCallLimit}
		}
	}
	b.calls[c.id] = c
	b.merged[c.merged] = c
	if c.callSid != "" {
		b.sids[c.callSid] = c
	}
	for _, u := range c.users() {
		b.perUser[u]++
	}
	b.metrics.active.WithLabelValues(string(c.dir)).Inc()
	return nil
}

// users are the local users a call counts for in MaxCallsPerUser: its
// user, and a local call's callee.
func (c *call) users() []string {
	if c.callee == "" || c.callee == c.user {
		return []string{c.user}
	}
	return []string{c.user, c.callee}
}

// admission is why a new call is refused before it starts.
type admission struct {
	code    int
	reason  string
	outcome string // call_setups_total's label
	headers []sip.Header
}

// refuse answers a request admit refused and counts it.
func (b *B2BUA) refuse(c *call, tx sip.ServerTransaction, req *sip.Request, a *admission) {
	hs := a.headers
	if a.code == sip.StatusServiceUnavailable && hs == nil {
		hs = b.refusal(a.code)
	}
	if a.outcome == outCallLimit || a.outcome == outUserCallLimit {
		b.log.Info("call refused: over the call limit", "direction", string(c.dir), "user", c.user, "code", a.code, "reason", a.reason)
	}
	b.metrics.setup(c.dir, a.outcome) // before the answer, so whoever gets it sees the count
	b.reply(tx, req, a.code, a.reason, hs...)
}

// mergedKey identifies a request independently of its branch.
func mergedKey(req *sip.Request) string {
	return string(*req.CallID()) + "\x00" + tagOf(req.From().Params) + "\x00" + strconv.FormatUint(uint64(req.CSeq().SeqNo), 10)
}

// finish ends a call whose legs need no BYE (setup failed or was
// cancelled): indexes dropped, media released.
func (b *B2BUA) finish(c *call, why string) {
	b.end(c, why, nil, false)
}

// hangup ends a call: BYE on every established dialog except from's (the
// one that sent the BYE, if any), then the media is released. During setup
// it cancels the setup, which answers the caller and cancels the callee.
func (b *B2BUA) hangup(c *call, why string, from *leg) {
	b.end(c, why, from, true)
}

func (b *B2BUA) end(c *call, why string, from *leg, bye bool) {
	c.mu.Lock()
	if c.phase == phaseEnded {
		c.mu.Unlock()
		return
	}
	answered := c.phase == phaseAnswered
	c.phase = phaseEnded
	c.endWhy = why
	in, out, sess := c.in, c.out, c.sess
	c.mu.Unlock()
	close(c.done)
	if c.cancelSetup != nil {
		c.cancelSetup(errEnded)
	}

	b.mu.Lock()
	if b.calls[c.id] == c {
		delete(b.calls, c.id)
		for _, u := range c.users() {
			if b.perUser[u]--; b.perUser[u] <= 0 {
				delete(b.perUser, u)
			}
		}
	}
	if b.merged[c.merged] == c {
		delete(b.merged, c.merged)
	}
	if c.callSid != "" && b.sids[c.callSid] == c {
		delete(b.sids, c.callSid)
	}
	for _, l := range []*leg{in, out} {
		if l != nil && b.dialogs[dialogKey{l.callID, l.localTag}] == l {
			delete(b.dialogs, dialogKey{l.callID, l.localTag})
		}
	}
	b.ending++
	b.mu.Unlock()
	b.metrics.active.WithLabelValues(string(c.dir)).Dec()
	defer func() {
		b.mu.Lock()
		b.ending--
		b.checkIdleLocked()
		b.mu.Unlock()
	}()

	// Media first: nothing is relayed for a call that is over, and the
	// ports are back in the pool before the BYEs are answered.
	if sess != nil {
		sess.Close()
	}
	c.closeBrowsers()
	if bye && answered {
		var wg sync.WaitGroup
		for _, l := range []*leg{in, out} {
			if l == nil || l == from {
				continue
			}
			wg.Go(func() { b.sendBye(l, why) })
		}
		wg.Wait()
	}
	c.log.Info("call ended", "reason", why, "duration", time.Since(c.started).Round(time.Millisecond))
}

// sendBye ends one dialog, waiting a bounded time for the answer.
func (b *B2BUA) sendBye(l *leg, why string) {
	req := l.request(sip.BYE, 0)
	if why != "" {
		req.AppendHeader(reasonHeader(200, why))
	}
	ctx, cancel := context.WithTimeout(b.life, byeTimeout(l))
	defer cancel()
	tx, err := l.send(ctx, req)
	if err != nil {
		l.c.log.Debug("sending BYE failed", "side", l.side.String(), "error", err)
		return
	}
	defer tx.Terminate()
	for {
		select {
		case res := <-tx.Responses():
			if res.IsProvisional() {
				continue
			}
			return
		case <-tx.Done():
			return
		case <-ctx.Done():
			l.c.log.Debug("BYE unanswered", "side", l.side.String())
			return
		}
	}
}

// byeTimeout bounds a BYE: the per-IP timeout, at least a second, so that
// hanging up never waits out Timer F (32 s) for a dead peer.
func byeTimeout(l *leg) time.Duration {
	return max(l.c.st.s.Timeout, time.Second)
}

// openMedia allocates the call's media session and carries the caller's
// offer (if any) across. It answers the caller itself on failure.
func (b *B2BUA) openMedia(c *call, req *sip.Request, tx sip.ServerTransaction) ([]byte, bool) {
	if len(req.Body()) > 0 && !isSDP(req) {
		b.reply(tx, req, 415, "Unsupported Media Type", sip.NewHeader("Accept", "application/sdp"))
		b.metrics.setup(c.dir, outBadSDP)
		return nil, false
	}
	sess, err := b.relay.NewSession(c.id)
	if err != nil {
		code, reason, outcome := 500, "Server Internal Error", outError
		switch {
		case errors.Is(err, media.ErrNoPorts):
			code, reason, outcome = 503, "Service Unavailable - No Media Ports", outNoPorts
		case errors.Is(err, media.ErrClosed):
			code, reason, outcome = 503, "Service Unavailable - Shutting Down", outShuttingDown
		}
		c.log.Warn("no media session", "error", err)
		b.reply(tx, req, code, reason)
		b.metrics.setup(c.dir, outcome)
		return nil, false
	}
	c.mu.Lock()
	toTwilio := c.route == routeTwilio
	c.mu.Unlock()
	if c.st.s.TwilioSRTP && toTwilio {
		// Only Twilio's side: a local callee or a fallback target on
		// side B speaks what it offers.
		sess.SetSRTP(media.B, media.SRTPRequired)
	}
	c.mu.Lock()
	ended := c.phase == phaseEnded
	if !ended {
		c.sess = sess
	}
	c.mu.Unlock()
	if ended {
		sess.Close()
		b.reply(tx, req, 503, "Service Unavailable - Shutting Down")
		b.metrics.setup(c.dir, outShuttingDown)
		return nil, false
	}
	offer := req.Body()
	if len(offer) == 0 {
		return nil, true // delayed offer: the callee's 2xx offers, the caller's ACK answers
	}
	caller := c.in
	if caller.phone && sdp.IsWebRTC(offer) {
		if _, err := b.attachBrowser(c, caller); err != nil {
			c.log.Info("browser media refused", "error", err)
			if errors.Is(err, sdp.ErrInvalid) {
				b.reply(tx, req, 488, "Not Acceptable Here", warningHeader("WebRTC media is not enabled"))
				b.metrics.setup(c.dir, outBadSDP)
			} else {
				b.reply(tx, req, 500, "Server Internal Error")
				b.metrics.setup(c.dir, outError)
			}
			return nil, false
		}
	}
	out, err := c.fromLeg(caller, media.Offer, offer)
	if err != nil {
		c.log.Info("unusable SDP offer", "error", err)
		if errors.Is(err, sdp.ErrInvalid) {
			b.reply(tx, req, 488, "Not Acceptable Here", warningHeader(err.Error()))
			b.metrics.setup(c.dir, outBadSDP)
		} else {
			b.reply(tx, req, 500, "Server Internal Error")
			b.metrics.setup(c.dir, outError)
		}
		return nil, false
	}
	return out, true
}
