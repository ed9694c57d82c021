package upstream

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/edgewise-sip/edgewise/registrar/sip/digest"
	"github.com/emiago/sipgo/sip"

	"github.com/edgewise-sip/edgewise/registrar/twilio/edge"
)

// outcome is how one exchange with one IP ended, from the caller's view.
type outcome int

const (
	outOK        outcome = iota + 1
	outEdge              // silence, transport error, 408, 5xx: try the next IP
	outUser              // 403, 404, other 4xx/6xx, rejected credentials: the user's problem
	outLimited           // Twilio's per-AOR REGISTER rate limit: wait, not the edge's fault
	outAborted           // shutting down
	outAbandoned         // the monitor declared the edge down meanwhile: go to the next one
)

// errEdgeDown is the cause given to requests in flight to an edge the
// monitor has just declared down: waiting out their timeout would only
// delay the move.
var errEdgeDown = errors.New("edge declared down while waiting")

// Request outcomes for the requests_total metric (bounded).
const (
	resOK         = "ok"
	resChallenged = "challenged"
	resTimeout    = "timeout"
	resTransport  = "transport"
	resError      = "error_response"
	resRejected   = "rejected"
	resLimited    = "rate_limited"
	resTooMany    = "too_many_registrations"
	resTooBrief   = "interval_too_brief"
	resAbandoned  = "abandoned"
)

type exchangeResult struct {
	res        *sip.Response
	out        outcome
	err        error
	retryAfter time.Duration
	expires    int // seconds asked for in the last request (a 423 raises it)
}

// exchange runs one REGISTER with one IP to its end: it answers digest
// challenges (401/407) and 423 Interval Too Brief itself, each with a new
// transaction and CSeq, keeps within the per-AOR rate, bounds every
// transaction by timeout (cancelling it, so Timer F's 32 s never applies),
// and reports every outcome to the edge monitor.
func (m *Manager) exchange(ctx context.Context, r *reg, kind string, timeout time.Duration, t edge.Target,
	id ident, contact sip.Uri, expires int) exchangeResult {
	challenges, briefs := 0, 0
	for {
		if err := m.limit(ctx, r); err != nil {
			return exchangeResult{out: outAborted, err: err, expires: expires}
		}
		req := m.buildRegister(t, id, m.nextCSeq(r), contact, expires)
		usedNonce, err := m.authorize(r, req, t.Edge, id)
		if err != nil {
			return exchangeResult{out: outUser, err: err, expires: expires}
		}
		m.noteSent(t)
		start := time.Now()
		tctx, cancel := context.WithTimeout(ctx, timeout)
		actx, abandon := context.WithCancelCause(tctx)
		tok := m.track(t.Edge, abandon)
		res, err := m.sender.Send(actx, t, req)
		m.untrack(t.Edge, tok)
		abandoned := errors.Is(context.Cause(actx), errEdgeDown)
		abandon(nil)
		cancel()
		rtt := time.Since(start)
		m.metrics.duration.WithLabelValues(kind).Observe(rtt.Seconds())
		if ctx.Err() != nil {
			// Cut short by our own shutdown: says nothing about the edge.
			return exchangeResult{out: outAborted, err: ctx.Err(), expires: expires}
		}
		if err != nil && abandoned {
			// Not reported: the edge is already down, and this IP was not
			// given its full timeout.
			m.metrics.requests.WithLabelValues(kind, resAbandoned).Inc()
			return exchangeResult{out: outAbandoned, err: fmt.Errorf("%s: %w", t, errEdgeDown), expires: expires}
		}
		if err != nil {
			outcomeLabel := resTransport
			if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, edge.ErrNoResponse) {
				outcomeLabel = resTimeout
				err = fmt.Errorf("%w within %s", edge.ErrNoResponse, timeout)
			}
			m.metrics.requests.WithLabelValues(kind, outcomeLabel).Inc()
			m.mon.Report(t, edge.Result{RTT: rtt}, err)
			return exchangeResult{out: outEdge, err: err, expires: expires}
		}
		result := edge.ResultOf(res, rtt)
		code := res.StatusCode
		if rateLimited(res) {
			// Per AOR, not per edge: reporting it would mark a healthy IP
			// down and could fail everyone over for one user's burst.
			m.metrics.requests.WithLabelValues(kind, resLimited).Inc()
			return exchangeResult{res: res, out: outLimited, retryAfter: max(result.RetryAfter, time.Second),
				err: fmt.Errorf("%d %s (REGISTER rate limit)", code, res.Reason), expires: expires}
		}
		m.mon.Report(t, result, nil)
		switch {
		case code >= 200 && code < 300:
			m.metrics.requests.WithLabelValues(kind, resOK).Inc()
			return exchangeResult{res: res, out: outOK, expires: expires}
		case code == sip.StatusUnauthorized || code == sip.StatusProxyAuthRequired:
			m.metrics.requests.WithLabelValues(kind, resChallenged).Inc()
			ans, err := challengeOf(res)
			if err != nil {
				return exchangeResult{res: res, out: outUser, err: fmt.Errorf("%d %s: %w", code, res.Reason, err), expires: expires}
			}
			if challenges >= 2 || usedNonce != "" && ans.Nonce() == usedNonce && !ans.Stale() {
				return exchangeResult{res: res, out: outUser, expires: expires,
					err: fmt.Errorf("%d %s: credentials of %s rejected", code, res.Reason, id.aor)}
			}
			challenges++
			r.auth[t.Edge] = ans
		case code == sip.StatusIntervalToBrief:
			m.metrics.requests.WithLabelValues(kind, resTooBrief).Inc()
			me := minExpires(res)
			if expires == 0 || me <= expires || briefs > 0 {
				return exchangeResult{res: res, out: outUser, expires: expires,
					err: fmt.Errorf("%d %s (Min-Expires %d)", code, res.Reason, me)}
			}
			briefs++
			expires = me
			m.mu.Lock()
			r.minExpires = me
			m.mu.Unlock()
		case code == sip.StatusRequestTimeout || code >= 500 && code < 600:
			m.metrics.requests.WithLabelValues(kind, resError).Inc()
			return exchangeResult{res: res, out: outEdge, retryAfter: result.RetryAfter, expires: expires,
				err: fmt.Errorf("answered %d %s", code, res.Reason)}
		case tooManyRegistrations(res):
			m.metrics.requests.WithLabelValues(kind, resTooMany).Inc()
			return exchangeResult{res: res, out: outUser, expires: expires,
				err: fmt.Errorf("%d %s: Twilio already holds its maximum of %d registrations for %s (error 32007): other devices register as this Twilio user; remove some, or give this phone a Twilio user of its own",
					code, res.Reason, twilioMaxRegistrations, id.aor)}
		default:
			m.metrics.requests.WithLabelValues(kind, resRejected).Inc()
			return exchangeResult{res: res, out: outUser, expires: expires, err: fmt.Errorf("%d %s", code, res.Reason)}
		}
	}
}

// buildRegister builds a complete REGISTER (RFC 3261 §10.2) for one target:
// the Request-URI names the edge FQDN (Twilio wants the name, never the IP),
// To/From the AOR at <domain>.sip.twilio.com, and the request is sent to the
// target's IP explicitly. sipgo adds the Via.
func (m *Manager) buildRegister(t edge.Target, id ident, cseq uint32, contact sip.Uri, expires int) *sip.Request {
	req := sip.NewRequest(sip.REGISTER, t.URI(""))
	// The AOR host has no edge: it is what Twilio forks inbound calls to
	// (README, "Twilio facts" 1).
	aor := sip.Uri{Scheme: "sip", User: id.aor, Host: id.domain + ".sip.twilio.com"}
	from := &sip.FromHeader{Address: aor}
	from.Params.Add("tag", sip.GenerateTagN(16))
	req.AppendHeader(from)
	req.AppendHeader(&sip.ToHeader{Address: aor})
	callID := sip.CallIDHeader(id.callID)
	req.AppendHeader(&callID)
	req.AppendHeader(&sip.CSeqHeader{SeqNo: cseq, MethodName: sip.REGISTER})
	maxFwd := sip.MaxForwardsHeader(70)
	req.AppendHeader(&maxFwd)
	req.AppendHeader(&sip.ContactHeader{Address: contact})
	exp := sip.ExpiresHeader(expires)
	req.AppendHeader(&exp)
	m.mu.Lock()
	ua := m.s.UserAgent
	m.mu.Unlock()
	if ua != "" {
		req.AppendHeader(sip.NewHeader("User-Agent", ua))
	}
	req.SetBody(nil) // Content-Length: 0, required on stream transports
	edge.Direct(req, t)
	return req
}

// authorize adds credentials computed from the edge's last challenge, if
// there is one, and returns its nonce. Reusing a challenge with a higher
// nonce count saves the 401 round trip on refreshes; a server that no
// longer accepts the nonce simply challenges again.
func (m *Manager) authorize(r *reg, req *sip.Request, edgeName string, id ident) (string, error) {
	ans := r.auth[edgeName]
	if ans == nil {
		return "", nil
	}
	nonce := ans.Nonce()
	name, value, ok, err := ans.Answer(string(sip.REGISTER), req.Recipient.String(), id.aor, id.password)
	if err != nil {
		delete(r.auth, edgeName)
		return "", err
	}
	if !ok {
		return "", nil
	}
	req.AppendHeader(sip.NewHeader(name, value))
	return nonce, nil
}

// challengeOf reads a 401/407's challenge into an Answerer.
func challengeOf(res *sip.Response) (*digest.Answerer, error) {
	name, _ := digest.Headers(res.StatusCode)
	var values []string
	for _, h := range res.GetHeaders(name) {
		values = append(values, h.Value())
	}
	ans := &digest.Answerer{}
	if err := ans.Learn(res.StatusCode, values); err != nil {
		return nil, err
	}
	return ans, nil
}

// rateLimited reports Twilio's per-AOR REGISTER limit (warning 32008): a
// 503 whose Warning names 32008.
func rateLimited(res *sip.Response) bool {
	if res.StatusCode != sip.StatusServiceUnavailable {
		return false
	}
	for _, h := range res.GetHeaders("Warning") {
		if strings.Contains(h.Value(), "32008") {
			return true
		}
	}
	return false
}

// twilioMaxRegistrations is Twilio's limit of active registrations per AOR
// (README, "Twilio facts"): the 11th is refused, with error 32007.
const twilioMaxRegistrations = 10

// tooManyRegistrations recognises Twilio's refusal of one registration too
// many for an AOR. Its exact form is not documented: a 403 whose Warning
// names 32007, or whose reason speaks of registrations, is taken as it.
// Moves are make-before-break, so a user whose AOR is shared with other
// devices meets it when changing edges even if it fitted before.
func tooManyRegistrations(res *sip.Response) bool {
	if res.StatusCode != sip.StatusForbidden {
		return false
	}
	for _, h := range res.GetHeaders("Warning") {
		if strings.Contains(h.Value(), "32007") {
			return true
		}
	}
	return strings.Contains(strings.ToLower(res.Reason), "registrations")
}

func minExpires(res *sip.Response) int {
	h := res.GetHeader("Min-Expires")
	if h == nil {
		return 0
	}
	n, err := strconv.Atoi(strings.TrimSpace(h.Value()))
	if err != nil || n < 0 {
		return 0
	}
	return n
}

// grantedExpiry is the expiry the registrar granted our contact: its
// expires parameter in the 200's Contact list, else the Expires header, else
// what was asked for.
func grantedExpiry(res *sip.Response, contact sip.Uri, asked int) time.Duration {
	for _, h := range res.GetHeaders("Contact") {
		c, ok := h.(*sip.ContactHeader)
		if !ok || c.Address.User != contact.User || !strings.EqualFold(c.Address.Host, contact.Host) || c.Address.Port != contact.Port {
			continue
		}
		if v, ok := c.Params.Get("expires"); ok {
			if n, err := strconv.Atoi(v); err == nil && n > 0 {
				return time.Duration(n) * time.Second
			}
		}
	}
	if h := res.GetHeader("Expires"); h != nil {
		if n, err := strconv.Atoi(strings.TrimSpace(h.Value())); err == nil && n > 0 {
			return time.Duration(n) * time.Second
		}
	}
	return time.Duration(asked) * time.Second
}

// limit waits until r may send another REGISTER within Twilio's per-AOR
// rate. Only r's worker calls it.
func (m *Manager) limit(ctx context.Context, r *reg) error {
	if oldest := r.sent[r.sentIdx]; !oldest.IsZero() {
		if wait := time.Until(oldest.Add(rateWindow)); wait > 0 {
			m.metrics.throttled.Inc()
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			case <-t.C:
			}
		}
	}
	r.sent[r.sentIdx] = time.Now()
	r.sentIdx = (r.sentIdx + 1) % rateBurst
	return nil
}

// track registers the cancel function of a request in flight to edgeName,
// so abandonEdge can end it; untrack removes it.
func (m *Manager) track(edgeName string, abandon context.CancelCauseFunc) uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.seq++
	set := m.inFlight[edgeName]
	if set == nil {
		set = map[uint64]context.CancelCauseFunc{}
		m.inFlight[edgeName] = set
	}
	set[m.seq] = abandon
	return m.seq
}

func (m *Manager) untrack(edgeName string, id uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.inFlight[edgeName], id)
}

// abandonEdge ends every request in flight to edgeName. Called with mu held.
func (m *Manager) abandonEdge(edgeName string) {
	for _, abandon := range m.inFlight[edgeName] {
		abandon(errEdgeDown)
	}
}

// noteSent records a REGISTER to t's IP, for the register-method keepalive.
func (m *Manager) noteSent(t edge.Target) {
	m.mu.Lock()
	m.lastSent[t.IP] = m.now()
	m.mu.Unlock()
}
