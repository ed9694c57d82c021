package edgesim

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/emiago/sipgo/sip"
)

// edge is one simulated edge location.
type edge struct {
	sim     *Sim
	name    string
	ips     []*edgeIP
	fqdns   []string
	nonces  *nonceStore
	setting ModeSetting // guarded by sim.modeMu
	certs   edgeCerts   // what the TLS ports present; set in New when tls is on

	// handlers serve requests the edge accepted (mode up, or slow after its
	// delay). Methods missing here get 501.
	handlers map[sip.RequestMethod]methodHandler
}

// methodHandler serves one request. ctx ends when the IP it arrived on stops
// serving (refuse mode or shutdown).
type methodHandler func(ctx context.Context, in *inbound)

func newEdge(s *Sim, c EdgeConfig) *edge {
	e := &edge{
		sim:     s,
		name:    c.Name,
		nonces:  newNonceStore(),
		setting: ModeSetting{Mode: ModeUp},
		fqdns: []string{
			fmt.Sprintf("%s.sip.%s.twilio.com", s.cfg.Domain, c.Name),
			fmt.Sprintf("sip.%s.twilio.com", c.Name),
		},
	}
	e.handlers = map[sip.RequestMethod]methodHandler{
		sip.REGISTER: s.handleRegister,
		sip.OPTIONS:  handleOptions,
		sip.INVITE:   s.handleInvite,
		// An ACK for a non-2xx response ends its INVITE transaction inside
		// sipgo; one for a 2xx reaches here.
		sip.ACK:    s.handleAck,
		sip.BYE:    s.handleBye,
		sip.UPDATE: s.handleUpdate,
		sip.INFO:   s.handleInfo,
		// CANCEL matching an INVITE transaction is answered by sipgo (200,
		// then 487 for the INVITE); one that matches nothing gets here.
		sip.CANCEL: func(_ context.Context, in *inbound) {
			in.reply(sip.StatusCallTransactionDoesNotExists, "Call/Transaction Does Not Exist", nil)
		},
	}
	for _, a := range c.IPs {
		e.ips = append(e.ips, &edgeIP{
			sim:        s,
			edge:       e,
			addr:       netip.MustParseAddr(a).Unmap(),
			cfgPort:    c.Port,
			port:       c.Port,
			cfgTLSPort: c.TLSPort,
			tlsPort:    c.TLSPort,
			requests:   map[string]uint64{},
		})
	}
	return e
}

// inbound is a request as an edge IP received it.
type inbound struct {
	req *sip.Request
	tx  sip.ServerTransaction
	ip  *edgeIP
}

// reply answers with code; edit, when given, adds headers before sending.
func (in *inbound) reply(code int, reason string, edit func(*sip.Response)) {
	res := sip.NewResponseFromRequest(in.req, code, reason, nil)
	// Lets a test or an operator tell which edge answered.
	res.AppendHeader(sip.NewHeader("Server", "edgesim "+in.ip.edge.name))
	if edit != nil {
		edit(res)
	}
	if err := in.tx.Respond(res); err != nil {
		in.ip.sim.log.Warn("sip response not sent", "edge", in.ip.edge.name, "ip", in.ip.addr.String(),
			"method", in.req.Method, "code", code, "error", err)
	}
}

// serve runs the mode gate, then the edge's handler for the method.
func (in *inbound) serve(ctx context.Context) {
	ip := in.ip
	s := ip.sim
	m := s.effective(ip)
	s.log.Debug("sip request", "edge", ip.edge.name, "ip", ip.addr.String(), "transport", in.req.Transport(),
		"method", in.req.Method, "source", in.req.Source(), "call_id", callID(in.req), "mode", m.Mode)

	switch m.Mode {
	case ModeDrop, ModeRefuse:
		// Refuse: the request raced the socket closing; an edge whose
		// port is closed answers nothing.
		return
	case ModeReject:
		if !in.req.IsAck() {
			in.reply(sip.StatusServiceUnavailable, "Service Unavailable", nil)
		}
		return
	case ModeSlow:
		t := time.NewTimer(m.Delay)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return
		}
	}
	h, ok := ip.edge.handlers[in.req.Method]
	if !ok {
		in.reply(sip.StatusNotImplemented, "Not Implemented", nil)
		return
	}
	h(ctx, in)
}

// handleOptions answers keepalive probes; whether Twilio does is
// unconfirmed (README "Twilio facts" 1), a 200 is what probing code expects.
func handleOptions(_ context.Context, in *inbound) {
	allow := make([]string, 0, len(in.ip.edge.handlers))
	for m := range in.ip.edge.handlers {
		allow = append(allow, m.String())
	}
	slices.Sort(allow)
	in.reply(sip.StatusOK, "OK", func(res *sip.Response) {
		res.AppendHeader(sip.NewHeader("Allow", strings.Join(allow, ", ")))
	})
}

func callID(req *sip.Request) string {
	if h := req.CallID(); h != nil {
		return h.Value()
	}
	return ""
}
