package edgesim

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/emiago/sipgo/sip"
)

// Responses where Twilio's exact behaviour is not documented; chosen so a
// correct client reacts the right way:
//
//   - 11th binding of an AOR: 403 Forbidden with a Warning naming Twilio's
//     32007. Bindings are shared by every edge, so another edge would refuse
//     it too; a 5xx would wrongly send a client to the next edge.
//   - more than Rules.RegisterRate REGISTERs in one second for an AOR: 503
//     with Retry-After: 1 and a Warning naming Twilio's 32008. That is SIP's
//     overload signal (RFC 3261 §21.5.4); Twilio's own reply is unconfirmed.
//   - wrong password or unknown user: 403 Forbidden, not a new 401, so a
//     client cannot loop on bad credentials.
const (
	reasonTooMany   = "Maximum Registrations Reached"
	warningRate     = `399 edgesim "32008 REGISTER rate limit exceeded for this AOR"`
	warningTooMany  = `399 edgesim "32007 more than 10 registrations for this AOR"`
	retryAfterRate  = "1"
	reasonWrongUser = "Forbidden"
)

// handleRegister is the registrar: digest auth, Twilio's expiry rules and
// limits, and the shared location table.
func (s *Sim) handleRegister(_ context.Context, in *inbound) {
	req := in.req
	to := req.To()
	if to == nil || to.Address.User == "" {
		in.reply(sip.StatusBadRequest, "Missing AOR in To", nil)
		return
	}
	aor := to.Address.User
	if !s.knownDomain(to.Address.Host) || !s.knownDomain(req.Recipient.Host) {
		in.reply(sip.StatusNotFound, "Domain Not Found", nil)
		return
	}
	now := s.clock()
	if !s.limiter.allow(aor, now, s.cfg.Rules.RegisterRate) {
		s.log.Warn("register rate limit", "edge", in.ip.edge.name, "ip", in.ip.addr.String(), "user", aor)
		in.reply(sip.StatusServiceUnavailable, "Service Unavailable", func(res *sip.Response) {
			res.AppendHeader(sip.NewHeader("Retry-After", retryAfterRate))
			res.AppendHeader(sip.NewHeader("Warning", warningRate))
		})
		return
	}
	if !s.authorize(in, aor, now, wwwDigest) {
		return
	}

	contacts := req.GetHeaders("Contact")
	if len(contacts) == 0 {
		// A query (RFC 3261 §10.2.3): list the bindings, change nothing.
		s.replyBindings(in, s.loc.list(aor, now))
		return
	}
	reg := registration{
		user: aor, edge: in.ip.edge.name, ip: in.ip.addr.String(), port: in.ip.portFor(req.Transport()),
		transport: req.Transport(), source: req.Source(), callID: callID(req), now: now,
	}
	if cs := req.CSeq(); cs != nil {
		reg.cseq = cs.SeqNo
	}
	headerExpires, hasHeaderExpires, err := expiresHeader(req)
	if err != nil {
		in.reply(sip.StatusBadRequest, "Bad Expires", nil)
		return
	}
	if wildcard(contacts) {
		s.removeAll(in, reg, contacts, headerExpires, hasHeaderExpires)
		return
	}

	updates := make([]contactUpdate, 0, len(contacts))
	for _, h := range contacts {
		c, ok := h.(*sip.ContactHeader)
		if !ok {
			in.reply(sip.StatusBadRequest, "Bad Contact", nil)
			return
		}
		exp := s.cfg.Rules.MaxExpires // the registrar's choice when none is given
		if hasHeaderExpires {
			exp = headerExpires
		}
		if v, ok := c.Params.Get("expires"); ok {
			if exp, err = strconv.Atoi(v); err != nil || exp < 0 {
				in.reply(sip.StatusBadRequest, "Bad Contact Expires", nil)
				return
			}
		}
		if exp != 0 && exp < s.cfg.Rules.MinExpires {
			in.reply(sip.StatusIntervalToBrief, "Interval Too Brief", func(res *sip.Response) {
				res.AppendHeader(sip.NewHeader("Min-Expires", strconv.Itoa(s.cfg.Rules.MinExpires)))
			})
			return
		}
		exp = min(exp, s.cfg.Rules.MaxExpires)
		updates = append(updates, contactUpdate{contact: c.Address.String(), expires: exp})
	}

	bindings, err := s.loc.apply(reg, updates, s.cfg.Rules.MaxRegistrations)
	switch {
	case errors.Is(err, errTooManyBindings):
		s.log.Info("register refused: too many bindings", "edge", in.ip.edge.name, "user", aor, "max", s.cfg.Rules.MaxRegistrations)
		in.reply(sip.StatusForbidden, reasonTooMany, func(res *sip.Response) {
			res.AppendHeader(sip.NewHeader("Warning", warningTooMany))
		})
		return
	case errors.Is(err, errOutOfOrder):
		in.reply(sip.StatusInternalServerError, "Out Of Order", nil)
		return
	case err != nil:
		in.reply(sip.StatusInternalServerError, "Server Internal Error", nil)
		return
	}
	s.log.Debug("registered", "edge", in.ip.edge.name, "ip", in.ip.addr.String(), "user", aor, "bindings", len(bindings))
	s.replyBindings(in, bindings)
}

// digestKind is the challenge flavour: 401 for REGISTER, 407 for INVITE
// (README "Twilio facts" 1: "INVITEs are challenged with 407").
type digestKind struct {
	code                   int
	reason                 string
	challengeHdr, credsHdr string
}

var (
	wwwDigest   = digestKind{sip.StatusUnauthorized, "Unauthorized", "WWW-Authenticate", "Authorization"}
	proxyDigest = digestKind{sip.StatusProxyAuthRequired, "Proxy Authentication Required", "Proxy-Authenticate", "Proxy-Authorization"}
)

// authorize runs digest auth and answers the request itself unless the
// sender proved it is user: for REGISTER the AOR, for INVITE the From user.
// The credentials must be user's own, exactly as Twilio matches them.
func (s *Sim) authorize(in *inbound, user string, now time.Time, kind digestKind) bool {
	nonces := in.ip.edge.nonces
	method := string(in.req.Method)
	challenge := func(stale bool) {
		in.reply(kind.code, kind.reason, func(res *sip.Response) {
			res.AppendHeader(sip.NewHeader(kind.challengeHdr, nonces.challenge(now, stale)))
		})
	}
	h := in.req.GetHeader(kind.credsHdr)
	if h == nil {
		challenge(false)
		return false
	}
	creds, err := parseDigestCredentials(h.Value())
	if err != nil {
		in.reply(sip.StatusBadRequest, "Bad "+kind.credsHdr, nil)
		s.log.Info("auth malformed", "method", method, "edge", in.ip.edge.name, "user", user, "error", err)
		return false
	}
	if !sameURI(creds.uri, in.req.Recipient) {
		in.reply(sip.StatusBadRequest, "Digest URI Mismatch", nil)
		s.log.Info("digest uri differs from request uri", "method", method, "edge", in.ip.edge.name, "user", user,
			"digest_uri", creds.uri, "request_uri", in.req.Recipient.String())
		return false
	}
	outcome, why := nonces.verify(creds, method, s.password, now)
	if outcome == authOK && creds.username != user {
		outcome, why = authForbidden, fmt.Sprintf("digest user %q is not %q", creds.username, user)
	}
	switch outcome {
	case authOK:
		return true
	case authChallenge:
		challenge(false)
	case authStale:
		challenge(true)
	case authForbidden:
		in.reply(sip.StatusForbidden, reasonWrongUser, nil)
	default:
		in.reply(sip.StatusBadRequest, "Bad "+kind.credsHdr, nil)
	}
	s.log.Info("auth failed", "method", method, "edge", in.ip.edge.name, "ip", in.ip.addr.String(), "user", user, "reason", why)
	return false
}

func (s *Sim) removeAll(in *inbound, reg registration, contacts []sip.Header, exp int, hasExp bool) {
	// RFC 3261 §10.2.2: "*" only alone and only with Expires: 0.
	if len(contacts) != 1 || !hasExp || exp != 0 {
		in.reply(sip.StatusBadRequest, "Wildcard Contact Needs Expires 0", nil)
		return
	}
	if err := s.loc.removeAll(reg); err != nil {
		in.reply(sip.StatusInternalServerError, "Out Of Order", nil)
		return
	}
	s.log.Debug("unregistered all", "edge", in.ip.edge.name, "user", reg.user)
	s.replyBindings(in, nil)
}

func (s *Sim) replyBindings(in *inbound, bs []Binding) {
	in.reply(sip.StatusOK, "OK", func(res *sip.Response) {
		for _, b := range bs {
			res.AppendHeader(sip.NewHeader("Contact", fmt.Sprintf("<%s>;expires=%d", b.Contact, b.ExpiresIn)))
		}
		res.AppendHeader(sip.NewHeader("Date", s.clock().UTC().Format(time.RFC1123)))
	})
}

// knownDomain accepts the names a REGISTER for the SIP Domain may carry:
// <domain>.sip.<edge>.twilio.com, <domain>.sip.twilio.com, or an IP literal
// (a client that dialled an edge IP directly).
func (s *Sim) knownDomain(host string) bool {
	if _, err := netip.ParseAddr(strings.Trim(host, "[]")); err == nil {
		return true
	}
	h := strings.ToLower(strings.TrimSuffix(host, "."))
	if h == s.cfg.Domain+".sip.twilio.com" {
		return true
	}
	for _, e := range s.edges {
		if h == e.fqdns[0] {
			return true
		}
	}
	return false
}

func expiresHeader(req *sip.Request) (int, bool, error) {
	h := req.GetHeader("Expires")
	if h == nil {
		return 0, false, nil
	}
	v, err := strconv.Atoi(strings.TrimSpace(h.Value()))
	if err != nil || v < 0 {
		return 0, false, fmt.Errorf("bad Expires %q", h.Value())
	}
	return v, true, nil
}

func wildcard(contacts []sip.Header) bool {
	for _, h := range contacts {
		if c, ok := h.(*sip.ContactHeader); ok && c.Address.Wildcard {
			return true
		}
	}
	return false
}

// sameURI compares the digest uri parameter with the Request-URI by the
// parts that matter; the digest covers the string the client sent.
func sameURI(digestURI string, ruri sip.Uri) bool {
	var u sip.Uri
	if err := sip.ParseUri(digestURI, &u); err != nil {
		return false
	}
	return strings.EqualFold(u.Scheme, ruri.Scheme) && u.User == ruri.User &&
		strings.EqualFold(u.Host, ruri.Host) && u.Port == ruri.Port
}
