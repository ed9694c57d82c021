package registrar

import (
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/edgewise-sip/edgewise/registrar/location"
)

// contactOp is what one Contact of a REGISTER asks for.
type contactOp struct {
	uri      string
	parsed   *sip.Uri
	params   []location.Param
	instance string
	regID    string
	expires  time.Duration // granted; 0 removes
	wildcard bool
}

// maxExpiresValue is the largest delta-seconds RFC 3261 §20.19 allows.
const maxExpiresValue = 1<<32 - 1

// contactOps turns the Contact headers into operations, or returns the
// response that refuses them (400 for a misused "*" or a non-SIP contact, 423
// for an expiry below min_expires).
func (r *Registrar) contactOps(req *sip.Request, h *registerHeaders, st *state, now time.Time) ([]contactOp, *sip.Response) {
	s := &st.s
	hdrExpires, hdrOK := parseExpires(h.expires)
	ops := make([]contactOp, 0, len(h.contacts))
	for _, c := range h.contacts {
		if c.Address.Wildcard {
			// RFC 3261 §10.3 step 6: "*" only alone and only with Expires: 0.
			if len(h.contacts) != 1 || !h.hasExpires || !hdrOK || hdrExpires != 0 {
				return nil, newResponse(req, 400, "Bad Request - Invalid Wildcard Contact")
			}
			return []contactOp{{wildcard: true}}, nil
		}
		if !isSIPScheme(c.Address.Scheme) {
			return nil, newResponse(req, 400, "Bad Request - Contact Must Be A SIP URI")
		}
		requested := int64(s.DefaultExpires / time.Second)
		if hdrOK {
			requested = hdrExpires
		}
		op := contactOp{uri: c.Address.String(), parsed: &c.Address}
		for _, p := range c.Params {
			if strings.EqualFold(p.K, "expires") {
				if v, ok := parseExpires(p.V); ok {
					requested = v
				}
				continue
			}
			op.params = append(op.params, location.Param{Name: p.K, Value: p.V})
			switch {
			case strings.EqualFold(p.K, "+sip.instance"):
				op.instance = strings.Trim(p.V, `"`)
			case strings.EqualFold(p.K, "reg-id"):
				op.regID = p.V
			}
		}
		if requested != 0 && requested < int64(s.MinExpires/time.Second) {
			res := newResponse(req, 423, "Interval Too Brief")
			res.AppendHeader(sip.NewHeader("Min-Expires", strconv.FormatInt(int64(s.MinExpires/time.Second), 10)))
			return nil, res
		}
		op.expires = grant(requested, s)
		ops = append(ops, op)
	}
	return ops, nil
}

// parseExpires reads delta-seconds; absent or malformed values are not ok,
// and the caller falls back (RFC 3261 §20.19 suggests treating junk as the
// default). Values beyond the 32-bit range are clamped.
func parseExpires(v string) (int64, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		if ne, ok := err.(*strconv.NumError); ok && ne.Err == strconv.ErrRange {
			return maxExpiresValue, true
		}
		return 0, false
	}
	return int64(min(n, maxExpiresValue)), true
}

// grant turns a requested expiry (seconds, > 0 or 0) into the granted one:
// capped at max_expires, then shortened by a random 0..spread% (but not below
// min_expires) so that phones do not stay in lockstep.
func grant(requested int64, s *Settings) time.Duration {
	if requested == 0 {
		return 0
	}
	g := min(requested, int64(s.MaxExpires/time.Second))
	if s.ExpiresSpread > 0 {
		if span := g * int64(s.ExpiresSpread) / 100; span > 0 {
			g -= rand.Int64N(span + 1)
		}
		g = max(g, int64(s.MinExpires/time.Second))
	}
	return time.Duration(g) * time.Second
}

// applyOps applies a REGISTER's contacts to the user's live bindings cur,
// following RFC 3261 §10.3 steps 6-7, and returns the new set. tmpl carries
// the request's fields (source, Call-ID, CSeq, ...).
func applyOps(cur []location.Binding, ops []contactOp, tmpl *location.Binding, maxContacts int, now time.Time) ([]location.Binding, error) {
	if len(ops) == 1 && ops[0].wildcard {
		for i := range cur {
			if err := checkOrder(&cur[i], tmpl); err != nil {
				return nil, err
			}
		}
		return nil, nil
	}
	out := cur
	before := len(cur)
	for i := range ops {
		op := &ops[i]
		idx := matchBinding(out, op)
		if idx >= 0 {
			b := &out[idx]
			if b.CallID == tmpl.CallID && tmpl.CSeq == b.CSeq && tmpl.Branch == b.Branch {
				continue // retransmission: this contact is applied already
			}
			if err := checkOrder(b, tmpl); err != nil {
				return nil, err
			}
			if op.expires == 0 {
				out = slices.Delete(out, idx, idx+1)
				continue
			}
			reach := b.Reachable
			if b.Source != tmpl.Source {
				reach = location.ReachUnknown
			}
			*b = newBinding(op, tmpl, now)
			b.Reachable = reach
			continue
		}
		if op.expires == 0 {
			continue // removing what is not there is not an error
		}
		out = append(out, newBinding(op, tmpl, now))
	}
	// Only growth is refused, so lowering max_contacts does not lock out
	// users who already have more.
	if len(out) > maxContacts && len(out) > before {
		return nil, errTooManyContacts
	}
	return out, nil
}

// checkOrder is RFC 3261 §10.3 step 7: with the same Call-ID the CSeq must
// grow; a different Call-ID always wins.
func checkOrder(b, req *location.Binding) error {
	if b.CallID == req.CallID && req.CSeq <= b.CSeq {
		if req.CSeq == b.CSeq && req.Branch == b.Branch {
			return nil // retransmission
		}
		return errOutOfOrder
	}
	return nil
}

func newBinding(op *contactOp, tmpl *location.Binding, now time.Time) location.Binding {
	b := *tmpl
	b.Contact = op.uri
	b.Params = op.params
	b.Expires = now.Add(op.expires)
	b.Reachable = location.ReachUnknown
	return b
}

// matchBinding finds the binding a contact refers to: by +sip.instance (and
// reg-id) when given (RFC 5626 §6, RFC 5627), so a phone that comes back from
// a new address replaces its old binding, else by URI equality (RFC 3261
// §19.1.4).
func matchBinding(bs []location.Binding, op *contactOp) int {
	if op.instance != "" {
		for i := range bs {
			if bs[i].InstanceID() == op.instance {
				rid, _ := bs[i].Param("reg-id")
				if rid == op.regID {
					return i
				}
			}
		}
	}
	for i := range bs {
		if bs[i].Contact == op.uri {
			return i
		}
	}
	for i := range bs {
		if uriEqual(bs[i].Contact, op.parsed) {
			return i
		}
	}
	return -1
}

// uriEqual compares a stored contact URI with a parsed one as RFC 3261
// §19.1.4 does for the parts that matter here: scheme and host are
// case-insensitive, user and port exact, and the transport, user, ttl, method
// and maddr parameters must match when either side has them.
func uriEqual(stored string, u *sip.Uri) bool {
	var s sip.Uri
	if err := sip.ParseUri(stored, &s); err != nil {
		return false
	}
	if !strings.EqualFold(s.Scheme, u.Scheme) || s.User != u.User || s.Password != u.Password ||
		!strings.EqualFold(s.Host, u.Host) || s.Port != u.Port {
		return false
	}
	for _, name := range [...]string{"transport", "user", "ttl", "method", "maddr"} {
		a, aok := s.UriParams.Get(name)
		b, bok := u.UriParams.Get(name)
		if aok != bok || !strings.EqualFold(a, b) {
			return false
		}
	}
	return true
}
