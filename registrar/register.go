package registrar

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/edgewise-sip/edgewise/registrar/location"
	"github.com/edgewise-sip/edgewise/registrar/lockout"
	"github.com/edgewise-sip/edgewise/registrar/sip/digest"
)

var (
	errOutOfOrder      = errors.New("registrar: CSeq not higher than the binding's")
	errTooManyContacts = errors.New("registrar: too many contacts")
)

// ServeRegister answers a REGISTER (RFC 3261 §10.3). It is idempotent, so it
// is meant for frontend.HandleStateless: a retransmission is recognised (same
// Call-ID, CSeq and Via branch) and answered with the current bindings without
// applying anything twice.
//
// Order of checks: lockout, To, Require, digest authentication (401, 401
// stale, 403), then Contacts: none is a query; "*" with Expires 0 removes
// all; expiries below min_expires get 423; the update is atomic per user and
// persisted before 200 OK lists every current binding.
func (r *Registrar) ServeRegister(req *sip.Request, tx sip.ServerTransaction) {
	now := r.now()
	st := r.state.Load()
	src := sourceOf(req)
	if r.lockout.Blocked(src.Addr()) {
		// the front end's guard normally stops these first.
		if sip.IsReliable(req.Transport()) {
			r.reply(tx, newResponse(req, 403, "Forbidden"))
		}
		return
	}
	res, upd := r.register(req, tx, st, src, now)
	if upd == nil {
		r.reply(tx, res)
		return
	}
	if d, ok := tx.(detachable); ok && d.Detached() {
		// Answer from the commit callback: the reader that called us
		// goes on with the next message meanwhile, so a slow commit delays
		// only the REGISTERs that wait for it, not the 401s behind them.
		r.table.UpdateAsync(upd.user, upd.apply, func(bs []location.Binding, err error) {
			r.reply(tx, r.updated(req, upd, bs, err))
		})
		return
	}
	bs, err := r.table.Update(upd.user, upd.apply)
	r.reply(tx, r.updated(req, upd, bs, err))
}

// detachable is implemented by transactions that may be answered after the
// handler returned: the front end's stateless ones. A sipgo server transaction is
// terminated when its handler returns, so it is answered synchronously.
type detachable interface{ Detached() bool }

// pendingUpdate is a binding change that passed every check and only needs
// to be applied and persisted.
type pendingUpdate struct {
	user        string
	ops         []contactOp
	tmpl        location.Binding
	maxContacts int
	noop        bool // keep the bindings as they are
}

func (u *pendingUpdate) apply(cur []location.Binding) ([]location.Binding, error) {
	if u.noop {
		return cur, nil
	}
	return applyOps(cur, u.ops, &u.tmpl, u.maxContacts, u.tmpl.Updated)
}

// updated answers once the update is applied and persisted (or failed).
func (r *Registrar) updated(req *sip.Request, u *pendingUpdate, bindings []location.Binding, err error) *sip.Response {
	switch {
	case errors.Is(err, errOutOfOrder):
		// RFC 3261 §10.3 step 7: the update is aborted and the request fails.
		return newResponse(req, 500, "Server Internal Error - CSeq Out Of Order")
	case errors.Is(err, errTooManyContacts):
		return newResponse(req, 403, "Forbidden - Too Many Contacts (max "+strconv.Itoa(u.maxContacts)+")")
	case err != nil:
		r.log.Error("storing bindings failed", "user", u.user, "error", err)
		res := newResponse(req, 500, "Server Internal Error")
		res.AppendHeader(sip.NewHeader("Retry-After", "5"))
		return res
	}
	return r.ok(req, bindings, r.now())
}

func (r *Registrar) reply(tx sip.ServerTransaction, res *sip.Response) {
	r.metrics.countResponse(res.StatusCode)
	if err := tx.Respond(res); err != nil {
		r.log.Debug("sending response failed", "code", res.StatusCode, "error", err)
	}
}

// registerHeaders are the headers ServeRegister reads, gathered in one pass.
type registerHeaders struct {
	auth       [4]string
	nauth      int
	contacts   []*sip.ContactHeader
	expires    string
	hasExpires bool
	require    string
	userAgent  string
}

// scanHeaders fills h, appending the Contact headers to contacts. The
// caller provides that slice's first array so that h, a local of every
// REGISTER, stays off the heap (a slice into h itself would move it there).
func scanHeaders(req *sip.Request, h *registerHeaders, contacts []*sip.ContactHeader) {
	for _, hdr := range req.Headers() {
		if c, ok := hdr.(*sip.ContactHeader); ok {
			contacts = append(contacts, c)
			continue
		}
		name := hdr.Name()
		switch {
		case strings.EqualFold(name, "Authorization"):
			if h.nauth < len(h.auth) {
				h.auth[h.nauth] = hdr.Value()
				h.nauth++
			}
		case strings.EqualFold(name, "Expires"):
			h.expires, h.hasExpires = hdr.Value(), true
		case strings.EqualFold(name, "Require"):
			h.require = hdr.Value()
		case strings.EqualFold(name, "User-Agent"):
			h.userAgent = hdr.Value()
		}
	}
	h.contacts = contacts
}

// register runs every check of a REGISTER. It returns the response, or, when
// bindings must change, the update to apply before answering.
func (r *Registrar) register(req *sip.Request, tx sip.ServerTransaction, st *state, src netip.AddrPort, now time.Time) (*sip.Response, *pendingUpdate) {
	var h registerHeaders
	var contacts [4]*sip.ContactHeader
	scanHeaders(req, &h, contacts[:0])

	to := req.To()
	user := to.Address.User
	if user == "" || !isSIPScheme(to.Address.Scheme) {
		return newResponse(req, 400, "Bad Request - No User In To"), nil
	}
	if h.require != "" {
		// No extension is supported that a REGISTER could require here.
		res := newResponse(req, 420, "Bad Extension")
		res.AppendHeader(sip.NewHeader("Unsupported", h.require))
		return res, nil
	}

	// Authentication (RFC 3261 §22.3, RFC 7616).
	var cred digest.Authorization
	found, malformed := false, false
	for _, v := range h.auth[:h.nauth] {
		a, err := digest.ParseAuthorization(v)
		if err != nil {
			malformed = malformed || errors.Is(err, digest.ErrMalformed)
			continue
		}
		if a.Realm == st.s.Realm {
			cred, found = a, true
			break
		}
	}
	if !found {
		if malformed {
			return newResponse(req, 400, "Bad Request - Malformed Authorization"), nil
		}
		return r.challenge(req, src.Addr(), false, now), nil
	}
	if refusal, _ := r.lockout.Check(src.Addr(), cred.Username); refusal != lockout.Allowed {
		// Refused before the password is looked at, so guessing from here
		// learns nothing; the phones that logged in as this user before
		// are not refused (see package lockout).
		r.debug("authentication refused before checking", req, src, "user", cred.Username, "reason", refusal.String())
		return newResponse(req, 403, "Forbidden"), nil
	}
	var dr digest.Request
	if f, ok := tx.(fingerprinted); ok {
		dr = digestRequest(req, src.Addr(), f.Fingerprint())
	} else {
		dr = DigestRequest(req, src.Addr())
	}
	res := r.auth.Verify(dr, &cred, st.secret, now)
	switch res.Outcome {
	case digest.OK:
	case digest.Challenge:
		r.debug("credentials not usable, challenging again", req, src, "reason", res.Reason)
		return r.challenge(req, src.Addr(), false, now), nil
	case digest.Stale:
		r.debug("stale credentials", req, src, "reason", res.Reason)
		return r.challenge(req, src.Addr(), true, now), nil
	case digest.Malformed:
		return newResponse(req, 400, "Bad Request - "+res.Reason), nil
	default:
		r.metrics.authFailures.Inc()
		r.debug("authentication failed", req, src, "user", cred.Username, "reason", res.Reason)
		r.authFailed(src.Addr(), knownUser(cred.Username, res))
		return newResponse(req, 403, "Forbidden"), nil
	}
	r.lockout.Succeeded(src.Addr(), cred.Username)
	if cred.Username != user {
		r.debug("authenticated user differs from the address-of-record", req, src, "user", cred.Username, "aor", user)
		return newResponse(req, 403, "Forbidden"), nil
	}
	if res.Retransmission {
		// The first copy was applied already, but its commit may still be
		// in flight: an empty update waits for it, so this 200 too is only
		// sent for persisted bindings.
		return nil, &pendingUpdate{user: user, noop: true, maxContacts: st.s.MaxContacts}
	}
	if len(h.contacts) == 0 {
		// A query (RFC 3261 §10.3 step 6): list what is there.
		return r.ok(req, r.table.Lookup(user), now), nil
	}

	ops, fail := r.contactOps(req, &h, st, now)
	if fail != nil {
		return fail, nil
	}
	branch, _ := req.Via().Params.Get("branch")
	return nil, &pendingUpdate{
		user: user,
		ops:  ops,
		tmpl: location.Binding{
			Source:    src,
			Local:     localOf(req),
			Transport: sip.NetworkToLower(req.Transport()),
			CallID:    string(*req.CallID()),
			CSeq:      req.CSeq().SeqNo,
			Branch:    branch,
			Updated:   now,
			UserAgent: h.userAgent,
		},
		maxContacts: st.s.MaxContacts,
	}
}

func (st *state) secret(user string) (digest.Secret, bool) {
	c, ok := st.dir.Credential(user)
	if !ok {
		return digest.Secret{}, false
	}
	return digest.Secret{Password: c.Password, HA1: c.HA1}, true
}

func (r *Registrar) challenge(req *sip.Request, src netip.Addr, stale bool, now time.Time) *sip.Response {
	res := newResponse(req, 401, "Unauthorized")
	var buf [2]string
	for _, c := range r.auth.Challenges(buf[:0], src, stale, now) {
		res.AppendHeader(sip.NewHeader("WWW-Authenticate", c))
	}
	return res
}

// ok builds the 200 listing every live binding with its remaining expiry
// (RFC 3261 §10.3 step 8) and a Date header.
func (r *Registrar) ok(req *sip.Request, bindings []location.Binding, now time.Time) *sip.Response {
	res := newResponse(req, 200, "OK")
	var sb strings.Builder
	for i := range bindings {
		b := &bindings[i]
		if !b.Live(now) {
			continue
		}
		sb.Reset()
		sb.Grow(len(b.Contact) + 32)
		sb.WriteByte('<')
		sb.WriteString(b.Contact)
		sb.WriteByte('>')
		for _, p := range b.Params {
			sb.WriteByte(';')
			sb.WriteString(p.Name)
			if p.Value != "" {
				sb.WriteByte('=')
				sb.WriteString(p.Value)
			}
		}
		sb.WriteString(";expires=")
		left := (b.Expires.Sub(now) + time.Second - 1) / time.Second
		sb.WriteString(strconv.FormatInt(int64(left), 10))
		res.AppendHeader(sip.NewHeader("Contact", sb.String()))
	}
	res.AppendHeader(sip.NewHeader("Date", r.date.get(now)))
	return res
}

func (r *Registrar) debug(msg string, req *sip.Request, src netip.AddrPort, args ...any) {
	if !r.log.Enabled(context.Background(), slog.LevelDebug) {
		return
	}
	args = append(args, "source", src.String(), "call_id", string(*req.CallID()))
	r.log.Debug(msg, args...)
}

func sourceOf(req *sip.Request) netip.AddrPort {
	ap, err := netip.ParseAddrPort(req.Source())
	if err != nil {
		return netip.AddrPort{}
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

func localOf(req *sip.Request) netip.AddrPort {
	ip, ok := netip.AddrFromSlice(req.Laddr.IP)
	if !ok || req.Laddr.Port <= 0 || req.Laddr.Port > 65535 {
		return netip.AddrPort{}
	}
	return netip.AddrPortFrom(ip.Unmap(), uint16(req.Laddr.Port))
}

// dateCache formats the Date header once per second.
type dateCache struct{ v atomic.Pointer[dateEntry] }

type dateEntry struct {
	sec int64
	s   string
}

func (d *dateCache) get(now time.Time) string {
	sec := now.Unix()
	if e := d.v.Load(); e != nil && e.sec == sec {
		return e.s
	}
	// RFC 3261 §20.17: RFC 1123 date, always GMT.
	s := now.UTC().Format("Mon, 02 Jan 2006 15:04:05 GMT")
	d.v.Store(&dateEntry{sec: sec, s: s})
	return s
}

func isSIPScheme(s string) bool { return strings.EqualFold(s, "sip") || strings.EqualFold(s, "sips") }
