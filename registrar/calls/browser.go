package calls

import (
	"context"
	"errors"
	"fmt"
	"net/netip"

	"github.com/edgewise-sip/edgewise/media"
	"github.com/edgewise-sip/edgewise/media/sdp"
	"github.com/edgewise-sip/edgewise/media/webrtc"
)

// Browsers terminates the WebRTC media of browser softphones: webrtc.Hub.
// With it, a phone leg whose peer is a browser gets a bridge that turns the
// browser's ICE/DTLS-SRTP media into plain RTP on a local socket, which the
// relay then treats like any phone (latching, counters, timeouts).
type Browsers interface {
	New(ctx context.Context) (*webrtc.Bridge, error)
}

var _ Browsers = (*webrtc.Hub)(nil)

// errNoWebRTC refuses a browser's call when edgewise has no WebRTC media.
var errNoWebRTC = fmt.Errorf("%w: WebRTC media is not enabled", sdp.ErrInvalid)

// attachBrowser gives l a WebRTC bridge. A media failure (ICE, DTLS,
// consent lost) hangs the call up with the reason, so a dead browser never
// leaves a silent one-way call behind.
func (b *B2BUA) attachBrowser(c *call, l *leg) (*webrtc.Bridge, error) {
	if b.browsers == nil {
		return nil, errNoWebRTC
	}
	br, err := b.browsers.New(b.life) // closed when the call ends, or at shutdown
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	l.browser = br
	l.mu.Unlock()
	br.OnFailure(func(err error) {
		c.log.Warn("browser media failed", "bridge", br.ID(), "error", err)
		b.metrics.browserFailures.Inc()
		b.spawn(func() { b.hangup(c, "browser media failed: "+err.Error(), nil) })
	})
	c.log.Debug("browser media bridged", "bridge", br.ID())
	return br, nil
}

// bridge is l's WebRTC bridge, nil unless its peer is a browser.
func (l *leg) bridge() *webrtc.Bridge {
	if l == nil {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.browser
}

// mediaSource is where l's peer sends media from, for the relay's strict
// source check: a browser's media comes from its bridge's plain socket, a
// phone's from the address its SIP came from (its NAT's public side).
func (l *leg) mediaSource() netip.Addr {
	if br := l.bridge(); br != nil {
		return br.PlainAddr().Addr()
	}
	ap, err := netip.ParseAddrPort(l.dest)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// trustPhones makes the phone side of the relay take media only from the
// phones of ls (the ones ringing, then the one that answered): a stranger
// who sends a packet to the port can neither latch it nor hear the call.
func (c *call) trustPhones(ls ...*leg) { c.trust(media.A, ls...) }

// trust is trustPhones for either side: side B holds the callee of a call
// edgewise connects without Twilio (a local phone, a fallback target).
func (c *call) trust(side media.Side, ls ...*leg) {
	if c.sess == nil {
		return
	}
	addrs := make([]netip.Addr, 0, len(ls))
	for _, l := range ls {
		addrs = append(addrs, l.mediaSource())
	}
	c.sess.Leg(side).RestrictSources(addrs...)
}

// fromLeg carries a description (an offer or an answer) l's peer sent
// across the relay, through l's bridge first when the peer is a browser.
func (c *call) fromLeg(l *leg, kind media.Kind, body []byte) ([]byte, error) {
	if br := l.bridge(); br != nil {
		plain, err := br.FromBrowser(body)
		if err != nil {
			return nil, err
		}
		body = plain
	}
	return c.sess.Translate(l.side, kind, body)
}

// toLeg turns a description the relay produced for l into what l's peer
// expects: WebRTC for a browser, unchanged for a phone or Twilio; on side B
// pointed at the relay's local address when l's peer is on the phones'
// network (a local call's callee).
func (c *call) toLeg(l *leg, body []byte) ([]byte, error) {
	if body == nil {
		return nil, nil
	}
	if l.faceLocal {
		t := c.sess.Leg(l.side).Target()
		t.Addr = c.sess.Leg(media.A).Target().Addr
		out, err := sdp.Rewrite(body, t)
		if err != nil {
			return nil, err
		}
		body = out
	}
	if br := l.bridge(); br != nil {
		return br.ToBrowser(body)
	}
	return body, nil
}

// rollback forgets an offer the other side refused, on whichever legs
// have a bridge.
func rollback(legs ...*leg) {
	for _, l := range legs {
		if br := l.bridge(); br != nil {
			if err := br.Rollback(); err != nil && !errors.Is(err, webrtc.ErrClosed) {
				l.c.log.Debug("webrtc rollback failed", "error", err)
			}
		}
	}
}

// closeBrowsers ends the WebRTC media of every leg of c (forks included).
func (c *call) closeBrowsers() {
	c.mu.Lock()
	legs := []*leg{c.in, c.out}
	for _, f := range c.forks {
		legs = append(legs, f.l)
	}
	c.mu.Unlock()
	for _, l := range legs {
		if br := l.bridge(); br != nil {
			br.Close()
		}
	}
}
