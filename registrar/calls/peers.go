package calls

import (
	"context"
	"strconv"
	"strings"

	"github.com/emiago/sipgo/sip"

	"github.com/edgewise-sip/edgewise/media"
	"github.com/edgewise-sip/edgewise/registrar/location"
)

// throughPeers replaces the bindings a user registered through other live
// nodes by one fork per node, to that node: it rings them from the socket
// their NAT pinholes are open toward. A binding of a node that is gone is
// tried directly, which works where no NAT is in the way.
func (b *B2BUA) throughPeers(user string, bs []location.Binding) []location.Binding {
	if b.peers == nil {
		return bs
	}
	self := b.peers.Self()
	out := make([]location.Binding, 0, len(bs))
	seen := map[string]bool{}
	for _, bnd := range bs {
		if bnd.Node == "" || bnd.Node == self {
			out = append(out, bnd)
			continue
		}
		addr, ok := b.peers.PeerAddr(bnd.Node)
		if !ok {
			out = append(out, bnd)
			continue
		}
		if seen[bnd.Node] {
			continue
		}
		seen[bnd.Node] = true
		out = append(out, location.Binding{
			User: user, Contact: "sip:" + user + "@" + addr.String(), Source: addr, Transport: "udp",
			Node: bnd.Node, Expires: bnd.Expires, Updated: bnd.Updated,
		})
	}
	return out
}

// peerFields is what a node's signature on a fork covers.
func peerFields(req *sip.Request) []string {
	return []string{string(*req.CallID()), strconv.FormatUint(uint64(req.CSeq().SeqNo), 10), req.Recipient.User}
}

// fromPeer takes a fork another node sent for the phones of a user that
// registered here: it rings them (only them, never onward to other
// nodes) with the sending node as the caller, like Twilio in a call from
// Twilio. The caller already claimed the call and applied Twilio's checks.
func (b *B2BUA) fromPeer(req *sip.Request, tx sip.ServerTransaction, st *state) {
	src := sourceOf(req)
	node, err := b.peers.Verify(headerValue(req, PeerHeader), src.Addr(), peerFields(req)...)
	if err != nil {
		b.log.Warn("fork from a cluster node refused", "source", src.String(), "error", err)
		b.reply(tx, req, 403, "Forbidden - Bad Peer Signature")
		b.metrics.setup(inbound, outForbidden)
		return
	}
	user := req.Recipient.User
	if _, ok := st.twilio.Upstream(user); !ok {
		b.reply(tx, req, 404, "Not Found")
		b.metrics.setup(inbound, outUnknownUser)
		return
	}
	c := b.newCall(inbound, user, st)
	c.from, c.to, c.merged, c.route = req.From().Address.User, user, mergedKey(req), routePeer
	ctx, cancel := context.WithCancelCause(b.life)
	defer cancel(nil)
	c.cancelSetup = cancel
	if a := b.admit(c); a != nil {
		b.refuse(c, tx, req, a)
		return
	}
	pl := b.uasLeg(c, req, media.B)
	// The node is on the cluster's network: answers go back where it sent
	// from, and SDP names edgewise's local address.
	pl.dest = req.Source()
	pl.sentBy = c.st.towardPhones(b.sip.Addr(strings.ToLower(pl.transport)))
	pl.contact = contactHeader("edgewise", pl.sentBy, pl.transport)
	pl.faceLocal = true
	if !b.takeCaller(c, pl, tx, cancel) {
		return
	}
	c.log.Info("call through a cluster node", "node", node, "from", c.from)
	var own []location.Binding
	for _, bnd := range b.bindings.Routable(user) {
		if bnd.Node == "" || bnd.Node == b.peers.Self() {
			own = append(own, bnd)
		}
	}
	plan := stages(own, nil, randIntN)
	if len(plan) == 0 {
		b.reply(tx, req, 480, "Temporarily Unavailable", reasonHeader(480, "no phone of "+user+" registered through this node"))
		b.metrics.setup(inbound, outNoBinding)
		b.finish(c, "no binding")
		return
	}
	offer, ok := b.openMedia(c, req, tx)
	if !ok {
		b.finish(c, "setup refused")
		return
	}
	// Media comes from the other node's relay, not from Twilio's ranges.
	c.sess.Leg(media.B).RestrictSources(src.Addr())
	b.newRing(c, pl, req, tx, offer, media.A).run(ctx, plan)
}

func headerValue(req *sip.Request, name string) string {
	if h := req.GetHeader(name); h != nil {
		return h.Value()
	}
	return ""
}
