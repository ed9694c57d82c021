package edgesim

import (
	"context"
	"errors"
	"slices"
	"sync/atomic"

	"github.com/emiago/sipgo/sip"
)

// dialog is an established SIP dialog between one edge IP and the gateway,
// seen from edgesim's side (RFC 3261 §12). It builds edgesim's in-dialog
// requests (ACK, BYE) and sends them from that edge IP.
type dialog struct {
	ip         *edgeIP
	transport  string // as sipgo writes it: UDP, TCP
	callID     string
	local      sip.Uri
	localName  string
	localTag   string
	remote     sip.Uri
	remoteName string
	remoteTag  string
	target     sip.Uri   // the gateway's Contact: Request-URI of edgesim's requests
	routes     []sip.Uri // route set from Record-Route (RFC 3261 §12.1)

	cseq       atomic.Uint32 // edgesim's last CSeq in the dialog
	remoteCSeq atomic.Uint32 // highest CSeq the gateway used
}

var errNoContact = errors.New("no Contact header")

func dialogKey(callID, localTag, remoteTag string) string {
	return callID + "\x00" + localTag + "\x00" + remoteTag
}

func (d *dialog) key() string { return dialogKey(d.callID, d.localTag, d.remoteTag) }

// incomingDialogKey is the key of the dialog a request from the gateway
// belongs to: edgesim's tag is in To, the gateway's in From.
func incomingDialogKey(req *sip.Request) (string, bool) {
	cid, to, from := req.CallID(), req.To(), req.From()
	if cid == nil || to == nil || from == nil {
		return "", false
	}
	toTag, _ := to.Params.Get("tag")
	fromTag, _ := from.Params.Get("tag")
	if toTag == "" || fromTag == "" {
		return "", false
	}
	return dialogKey(cid.Value(), toTag, fromTag), true
}

// uasDialog is the dialog edgesim, as UAS, answers inv in; inv already
// carries edgesim's To tag.
func uasDialog(ip *edgeIP, inv *sip.Request) (*dialog, error) {
	contact := inv.Contact()
	if contact == nil {
		return nil, errNoContact
	}
	to, from := inv.To(), inv.From()
	d := &dialog{
		ip: ip, transport: inv.Transport(), callID: inv.CallID().Value(),
		local: *to.Address.Clone(), localName: to.DisplayName, localTag: to.Params.GetOr("tag", ""),
		remote: *from.Address.Clone(), remoteName: from.DisplayName, remoteTag: from.Params.GetOr("tag", ""),
		target: *contact.Address.Clone(),
	}
	// The UAS keeps the Record-Route order (RFC 3261 §12.1.1).
	for _, h := range inv.GetHeaders("Record-Route") {
		if rr, ok := h.(*sip.RecordRouteHeader); ok {
			d.routes = append(d.routes, *rr.Address.Clone())
		}
	}
	d.remoteCSeq.Store(inv.CSeq().SeqNo)
	return d, nil
}

// uacDialog is the dialog a placed fork's 2xx establishes.
func uacDialog(ip *edgeIP, inv *sip.Request, res *sip.Response) *dialog {
	to, from := res.To(), inv.From()
	if to == nil {
		// sipgo does not parse a response without To; keep going anyway.
		to = inv.To()
	}
	target := inv.Recipient
	if c := res.Contact(); c != nil {
		target = c.Address
	}
	d := &dialog{
		ip: ip, transport: inv.Transport(), callID: inv.CallID().Value(),
		local: *from.Address.Clone(), localName: from.DisplayName, localTag: from.Params.GetOr("tag", ""),
		remote: *to.Address.Clone(), remoteName: to.DisplayName, remoteTag: to.Params.GetOr("tag", ""),
		target: *target.Clone(),
	}
	// The UAC reverses the Record-Route order (RFC 3261 §12.1.2).
	for _, h := range res.GetHeaders("Record-Route") {
		if rr, ok := h.(*sip.RecordRouteHeader); ok {
			d.routes = append(d.routes, *rr.Address.Clone())
		}
	}
	slices.Reverse(d.routes)
	d.cseq.Store(inv.CSeq().SeqNo)
	return d
}

// newRequest builds edgesim's next in-dialog request.
func (d *dialog) newRequest(method sip.RequestMethod) *sip.Request {
	return d.requestWithCSeq(method, d.cseq.Add(1))
}

// requestWithCSeq builds an in-dialog request with a given CSeq number
// (an ACK reuses its INVITE's).
func (d *dialog) requestWithCSeq(method sip.RequestMethod, seq uint32) *sip.Request {
	req := sip.NewRequest(method, *d.target.Clone())
	req.SetTransport(d.transport)
	from := &sip.FromHeader{DisplayName: d.localName, Address: *d.local.Clone()}
	from.Params.Add("tag", d.localTag)
	to := &sip.ToHeader{DisplayName: d.remoteName, Address: *d.remote.Clone()}
	to.Params.Add("tag", d.remoteTag)
	cid := sip.CallIDHeader(d.callID)
	maxFwd := sip.MaxForwardsHeader(70)
	req.AppendHeader(from)
	req.AppendHeader(to)
	req.AppendHeader(&cid)
	req.AppendHeader(&sip.CSeqHeader{SeqNo: seq, MethodName: method})
	req.AppendHeader(&maxFwd)
	for _, r := range d.routes {
		req.AppendHeader(&sip.RouteHeader{Address: *r.Clone()})
	}
	req.AppendHeader(d.ip.contact(d.transport))
	req.AppendHeader(sip.NewHeader("User-Agent", "edgesim "+d.ip.edge.name))
	return req
}

// do sends an in-dialog request and waits for its final response.
func (d *dialog) do(ctx context.Context, req *sip.Request) (*sip.Response, error) {
	return d.ip.do(ctx, req)
}

// acceptRemoteCSeq checks that a request from the gateway moves its CSeq
// forward (RFC 3261 §12.2.2) and records it.
func (d *dialog) acceptRemoteCSeq(seq uint32) bool {
	for {
		old := d.remoteCSeq.Load()
		if seq <= old {
			return false
		}
		if d.remoteCSeq.CompareAndSwap(old, seq) {
			return true
		}
	}
}
