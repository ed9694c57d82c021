package calls

import (
	"hash/maphash"
	"strconv"
	"strings"

	"github.com/emiago/sipgo/sip"

	"github.com/edgewise-sip/edgewise/registrar/directory"
)

// A stranger can send INVITEs without credentials and BYEs for dialogs that
// never existed as fast as its link allows, from a forged UDP source. Each
// such request used to get a server transaction: a 407 retransmitted eleven
// times (a 455-byte request became 5 KB toward the forged address, an
// amplifier) and a BYE kept for Timer J's 32 s. The screens below answer
// them before sipgo's transaction layer sees them: once, with nothing
// kept. Requests worth a transaction — authenticated INVITEs, Twilio's
// calls, requests inside a dialog that exists — go on to it.

// screenInvite answers an INVITE that deserves no transaction: a call from a
// phone without credentials (the 407), a call to a Contact from outside
// Twilio's ranges, a re-INVITE of an unknown dialog, the protocol errors
// serveInvite would answer at once.
func (b *B2BUA) screenInvite(req *sip.Request, tx sip.ServerTransaction) bool {
	if mf := req.MaxForwards(); mf != nil && mf.Val() == 0 {
		b.replyStateless(tx, req, 483, "Too Many Hops")
		return true
	}
	if tagOf(req.To().Params) != "" {
		if b.dialogOf(req) == nil {
			b.replyStateless(tx, req, 481, "Call/Transaction Does Not Exist")
			return true
		}
		return false
	}
	if h := req.GetHeader("Require"); h != nil {
		b.replyStateless(tx, req, 420, "Bad Extension", sip.NewHeader("Unsupported", h.Value()))
		return true
	}
	st := b.state.Load()
	if b.peers != nil && req.GetHeader(PeerHeader) != nil {
		// A cluster node's fork, checked before any state is kept: the
		// signature is cheap to verify, a transaction is not.
		src := sourceOf(req)
		if _, err := b.peers.Verify(headerValue(req, PeerHeader), src.Addr(), peerFields(req)...); err != nil {
			b.metrics.refused.Inc()
			if b.refusedLog.first(src.Addr(), b.now()) {
				b.log.Warn("fork claiming to come from a cluster node refused (logged once per source a minute)",
					"source", src.String(), "error", err)
			}
			if sip.IsReliable(req.Transport()) {
				b.replyStateless(tx, req, 403, "Forbidden - Bad Peer Signature")
			}
			return true // UDP: silence, as for any forged call
		}
		return false
	}
	if _, _, ok := directory.ParseContactURI(req.Recipient); ok {
		if st.fromTwilio(sourceOf(req).Addr()) {
			return false // Twilio's call: a transaction, then the Contact check
		}
		b.metrics.refused.Inc()
		if b.refusedLog.first(sourceOf(req).Addr(), b.now()) {
			b.log.Info("INVITE from outside the Twilio signalling ranges refused (logged once per source a minute)",
				"source", req.Source(), "contact", req.Recipient.User)
		}
		if sip.IsReliable(req.Transport()) {
			b.replyStateless(tx, req, 403, "Forbidden")
			b.metrics.setup(inbound, outForbidden)
		}
		return true // UDP: silence; a source that may be forged learns nothing
	}
	if !hasCredentials(req, st.s.Realm) {
		b.challengeStateless(req, tx)
		return true
	}
	return false
}

// screenInDialog answers BYE, UPDATE and INFO for dialogs that do not exist.
func (b *B2BUA) screenInDialog(req *sip.Request, tx sip.ServerTransaction) bool {
	if b.dialogOf(req) != nil {
		return false
	}
	b.replyStateless(tx, req, 481, "Call/Transaction Does Not Exist")
	return true
}

// screenAck drops the ACK of a response sent without a transaction (it
// completes nothing); other ACKs go to the transaction layer.
func screenAck(req *sip.Request, _ sip.ServerTransaction) bool {
	return strings.HasPrefix(tagOf(req.To().Params), statelessTagPrefix)
}

// hasCredentials reports whether req carries digest credentials for realm.
func hasCredentials(req *sip.Request, realm string) bool {
	for _, name := range []string{"Proxy-Authorization", "Authorization"} {
		for _, h := range req.GetHeaders(name) {
			if strings.Contains(h.Value(), realm) {
				return true
			}
		}
	}
	return false
}

// statelessTagPrefix marks the To tags of responses sent without a
// transaction, so their ACKs can be recognised and dropped.
const statelessTagPrefix = "sl"

var statelessSeed = maphash.MakeSeed()

// statelessTag is the To tag of a response sent without a transaction: the
// same for every retransmission of the request (RFC 3261 §8.2.6.2 wants a
// tag; a retransmitted request must get an identical answer), derived from
// its Call-ID, From tag and Via branch.
func statelessTag(req *sip.Request) string {
	var h maphash.Hash
	h.SetSeed(statelessSeed)
	h.WriteString(string(*req.CallID()))
	h.WriteByte(0)
	h.WriteString(tagOf(req.From().Params))
	h.WriteByte(0)
	branch, _ := req.Via().Params.Get("branch")
	h.WriteString(branch)
	return statelessTagPrefix + strconv.FormatUint(h.Sum64(), 36)
}

// replyStateless is reply with the stateless To tag.
func (b *B2BUA) replyStateless(tx sip.ServerTransaction, req *sip.Request, code int, reason string, hdrs ...sip.Header) {
	res := sip.NewResponseFromRequest(req, code, reason, nil)
	if tagOf(res.To().Params) == "" {
		res.To().Params.Add("tag", statelessTag(req))
	}
	for _, h := range hdrs {
		res.AppendHeader(h)
	}
	b.send(tx, res)
}
