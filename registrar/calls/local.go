package calls

import (
	"context"
	"errors"
	"fmt"
	"net/netip"

	"github.com/emiago/sipgo/sip"

	"github.com/edgewise-sip/edgewise/media"
)

// route is where a phone's call goes: through Twilio, to another local
// user's phones, or to a fallback target. The set is closed (metric label).
type route string

const (
	routeTwilio   route = "twilio"
	routeLocal    route = "local"
	routeFallback route = "fallback"
	// routePeer: another node of the cluster forked a call to this one
	// for the phones registered here.
	routePeer route = "peer"
)

// routing is the decision for one call from a phone: the first route,
// and the one to take when every Twilio address failed (then is "" when
// there is none).
type routing struct {
	first, then route
	callee      string // the local user dialled, for routeLocal
	emergency   bool
}

// routeFor decides where a phone's call to dialled goes. A local user
// (dialled by extension or name) is rung by edgewise itself per
// Settings.Local; another number goes to Twilio while an edge is usable
// and to the fallback targets while none is. An emergency number is never
// local (configs refuses such extensions) and takes the same way as any
// other number: Twilio first, the fallback targets when Twilio cannot be
// reached.
func (b *B2BUA) routeFor(st *state, dialled string) routing {
	rt := routing{first: routeTwilio, emergency: st.emergency[dialled]}
	callee, local := st.localUser(dialled)
	if local && !rt.emergency {
		rt.callee = callee
		switch st.s.Local {
		case LocalAlways:
			rt.first = routeLocal
		case LocalWhenTwilioDown:
			if b.twilioUsable() {
				rt.then = routeLocal
			} else {
				rt.first = routeLocal
			}
		}
		return rt
	}
	if len(st.s.FallbackTargets) == 0 {
		return rt
	}
	if b.twilioUsable() {
		rt.then = routeFallback
	} else {
		rt.first = routeFallback
	}
	return rt
}

// localUser finds the local user a Request-URI user names: an extension,
// or a configured phone's user name.
func (st *state) localUser(dialled string) (string, bool) {
	if u, ok := st.s.Extensions[dialled]; ok {
		return u, true
	}
	if _, ok := st.phones.Credential(dialled); ok {
		return dialled, true
	}
	return "", false
}

// checkRoutes checks the settings of local and fallback calls.
func (s Settings) checkRoutes() []error {
	var errs []error
	switch s.Local {
	case LocalWhenTwilioDown, LocalAlways, LocalNever:
	default:
		errs = append(errs, fmt.Errorf("local mode %q is not one of %s, %s, %s", s.Local, LocalWhenTwilioDown, LocalAlways, LocalNever))
	}
	for ext, user := range s.Extensions {
		if ext == "" || user == "" {
			errs = append(errs, fmt.Errorf("extension %q of user %q: both must be set", ext, user))
		}
	}
	for _, t := range s.FallbackTargets {
		var u sip.Uri
		if err := sip.ParseUri(t.URI, &u); err != nil || u.Host == "" {
			errs = append(errs, fmt.Errorf("fallback target %q is not a SIP URI with a host", t.URI))
		}
	}
	for _, n := range s.EmergencyNumbers {
		if u, ok := s.Extensions[n]; ok {
			errs = append(errs, fmt.Errorf("emergency number %s is user %s's extension", n, u))
		}
	}
	return errs
}

// ringLocal connects a phone's call to another local user: every phone of
// the callee rings at once (then the callee's fixed targets), as for a call
// from Twilio, with the caller's phone in Twilio's place. The caller's leg
// is A; the callee's forks are B.
func (b *B2BUA) ringLocal(ctx context.Context, c *call, caller *leg, req *sip.Request, tx sip.ServerTransaction, offer []byte, callee string) {
	bindings := b.throughPeers(callee, b.bindings.Routable(callee))
	if callee == c.user {
		// Calling yourself rings your other phones, not the one calling.
		src := sourceOf(req)
		kept := bindings[:0:0]
		for _, bnd := range bindings {
			if bnd.Source != src {
				kept = append(kept, bnd)
			}
		}
		bindings = kept
	}
	plan := stages(bindings, c.st.s.Targets[callee], randIntN)
	if len(plan) == 0 {
		b.reply(tx, req, 480, "Temporarily Unavailable", reasonHeader(480, "no phone registered for "+callee))
		b.metrics.setup(c.dir, outNoBinding)
		b.finish(c, "no binding")
		return
	}
	r := b.newRing(c, caller, req, tx, offer, media.B)
	r.toUser = callee
	r.fromUser = c.user
	if ext := c.st.extOf[c.user]; ext != "" {
		r.fromUser = ext // what the callee dials to call back
	}
	c.log.Info("local call", "callee", callee, "phones", len(bindings))
	r.run(ctx, plan)
}

// ringFallback sends a phone's call to the fallback targets, one at a time
// in priority order (weighted within a priority), each with the number
// dialled as the Request-URI's user, the next on failure or silence.
func (b *B2BUA) ringFallback(ctx context.Context, c *call, caller *leg, req *sip.Request, tx sip.ServerTransaction, offer []byte, dialled string) {
	plan := stages(nil, c.st.s.FallbackTargets, randIntN)
	r := b.newRing(c, caller, req, tx, offer, media.B)
	r.toUser, r.ruriUser = dialled, dialled
	r.noAnswer = "no fallback target answered"
	c.log.Info("call to the fallback targets", "dialled", dialled, "targets", len(plan), "emergency", c.emergency)
	r.run(ctx, plan)
}

// newRing is the setup of a call forked to the legs of side (A: phones
// called from Twilio; B: a phone's call to a local user or a fallback
// target), caller being the dialog of the INVITE that asked for it.
func (b *B2BUA) newRing(c *call, caller *leg, req *sip.Request, tx sip.ServerTransaction, offer []byte, side media.Side) *ring {
	return &ring{
		b: b, c: c, caller: caller, treq: req, ttx: tx, offer: offer, side: side,
		callID: newCallID(), fromTag: newTag(), cseq: initialCSeq(),
		events: make(chan forkEvent), stop: make(chan struct{}), over: make(chan struct{}),
		noAnswer: "no phone answered",
	}
}

// switchRoute moves a call whose Twilio attempt failed at every address
// to its other route.
func (c *call) switchRoute(rt route) {
	c.mu.Lock()
	c.route = rt
	c.mu.Unlock()
}

// onPhonesNetwork reports whether a is on the phones' side of edgewise
// (private, shared, loopback or link-local): a fallback target there gets
// the relay's local address in SDP, one elsewhere its public address.
func onPhonesNetwork(a netip.Addr) bool {
	a = a.Unmap()
	return a.IsPrivate() || a.IsLoopback() || a.IsLinkLocalUnicast() || sharedAddressSpace.Contains(a)
}

var sharedAddressSpace = netip.MustParsePrefix("100.64.0.0/10") // RFC 6598

// errNoBrowserOffer refuses to ring a browser for a caller whose INVITE
// has no offer: the bridge needs one to build its own.
var errNoBrowserOffer = errors.New("a browser needs an offer and the caller's INVITE has none")
