package media

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/edgewise-sip/edgewise/media/mmsg"
	"github.com/edgewise-sip/edgewise/media/sdp"
)

// ErrClosed is returned once the relay has stopped.
var ErrClosed = errors.New("media: relay stopped")

// ErrDuplicate is returned by NewSession for an id already in use.
var ErrDuplicate = errors.New("media: session id already in use")

// Session is the media of one call: two legs and the state both share.
// Its methods are safe for concurrent use.
type Session struct {
	id      string
	r       *Relay
	w       *worker
	created time.Time

	mu        sync.Mutex
	legs      [2]Leg
	hold      bool
	answered  bool
	clockFrom int64 // ns: silence counts from here (answer, end of hold)
	timedOut  bool
	closed    bool
	onTimeout func(Side)

	// owned by the worker goroutine
	entries [4]int32
	release sync.Once
}

// endpoint is one socket of a leg and where its packets go.
type endpoint struct {
	fd      int
	sdp     netip.AddrPort // last destination learned from SDP
	remote  netip.AddrPort // current destination: SDP, then the latched source
	latched bool
	name    mmsg.Name // remote encoded for sendmmsg
	nameLen int
}

func (e *endpoint) setRemote(ap netip.AddrPort, v6 bool) {
	e.remote = ap
	e.nameLen = mmsg.Encode(&e.name, ap, v6)
	if e.nameLen == 0 {
		e.remote = netip.AddrPort{}
	}
}

// Leg is one side of a session: a local RTP/RTCP pair and the peer it talks
// to. Its methods lock the session.
type Leg struct {
	s         *Session
	side      Side
	pair      pair
	advertise netip.Addr
	v6        bool
	allow     []netip.Prefix

	// strict is set once RestrictSources named the peer's addresses: media
	// is then taken only from sources (or a public address its SDP gave,
	// sdpSource), never latched to anyone else.
	strict    bool
	sources   []netip.Addr
	sdpSource netip.Addr

	rtp, rtcp endpoint
	rates     [128]uint32 // clock rate per payload type; 0 = default 8000
	events    [128]bool   // RFC 4733 payload types (no jitter)

	srtp legSRTP

	lastRx int64 // ns; 0 = never
	rx     rxCounters
	tx     txCounters
}

type rxCounters struct {
	packets, bytes, rtcpPackets, rtcpBytes uint64
	stream                                 rxStream
	dropped                                drops
}

type txCounters struct {
	packets, bytes, rtcpPackets, rtcpBytes uint64
	dropped                                drops
}

// ID returns the id given to NewSession.
func (s *Session) ID() string { return s.id }

// Leg returns side A or B.
func (s *Session) Leg(side Side) *Leg { return &s.legs[side&1] }

// Side returns which leg this is.
func (l *Leg) Side() Side { return l.side }

// LocalAddr is the leg's RTP address as advertised in SDP (its RTCP port is
// one above).
func (l *Leg) LocalAddr() netip.AddrPort {
	return netip.AddrPortFrom(l.advertise, l.pair.port)
}

// Target is LocalAddr in the form sdp.Rewrite takes.
func (l *Leg) Target() sdp.Target { return sdp.Target{Addr: l.advertise, Port: l.pair.port} }

// SetRemote sets where the leg's peer wants RTP and RTCP, as its SDP says; a
// zero rtcp means RTP port + 1. Until the peer's first valid packet arrives
// (and latches the leg to its real source) media is sent there. A changed
// address re-opens latching, as after a re-INVITE that moves the stream; the
// same address again keeps the latch.
func (l *Leg) SetRemote(rtp, rtcp netip.AddrPort) {
	if rtp.IsValid() && !rtcp.IsValid() && rtp.Port() < 65535 {
		rtcp = netip.AddrPortFrom(rtp.Addr(), rtp.Port()+1)
	}
	rtp = netip.AddrPortFrom(rtp.Addr().Unmap(), rtp.Port())
	rtcp = netip.AddrPortFrom(rtcp.Addr().Unmap(), rtcp.Port())
	l.s.mu.Lock()
	defer l.s.mu.Unlock()
	for _, x := range []struct {
		ep *endpoint
		ap netip.AddrPort
	}{{&l.rtp, rtp}, {&l.rtcp, rtcp}} {
		if x.ap == x.ep.sdp {
			continue
		}
		x.ep.sdp = x.ap
		x.ep.latched = false
		x.ep.setRemote(x.ap, l.v6)
	}
}

// RestrictSources makes the leg strict about where its media comes from, as
// rtpengine's strict-source: only packets from addrs — the peer's SIP
// signalling address, say — or from the connection address of the peer's SDP
// when that is a public address, are relayed and may latch the leg; anything
// else is dropped and counted as a stranger, so a stranger who sends one
// packet to the port can neither hijack the latch nor hear the call. A peer
// whose NAT moves it to another port of the same address is followed.
// Calling it again replaces the set (the call was answered by one of the
// phones that rang): a latch to an address no longer in it is undone. On
// leg B the named sources replace Settings.AllowB: a call edgewise connects
// without Twilio (a local phone, a fallback target on leg B) takes media
// from that peer, which is never in Twilio's ranges.
func (l *Leg) RestrictSources(addrs ...netip.Addr) {
	l.s.mu.Lock()
	defer l.s.mu.Unlock()
	l.strict = true
	l.allow = nil
	l.sources = l.sources[:0]
	for _, a := range addrs {
		if a.IsValid() {
			l.sources = append(l.sources, a.Unmap())
		}
	}
	for _, ep := range []*endpoint{&l.rtp, &l.rtcp} {
		if ep.latched && !l.trusted(ep.remote.Addr()) {
			ep.latched = false
			ep.setRemote(ep.sdp, l.v6)
		}
	}
}

// trusted reports whether a strict leg takes media from a. Hold s.mu.
func (l *Leg) trusted(a netip.Addr) bool {
	if a == l.sdpSource && a.IsValid() {
		return true
	}
	for _, x := range l.sources {
		if x == a {
			return true
		}
	}
	return false
}

// isPublic reports whether a is a globally routable unicast address: one a
// peer's SDP may name as its own media source. Private (RFC 1918, RFC 4193),
// shared (RFC 6598), loopback and link-local addresses are not.
func isPublic(a netip.Addr) bool {
	return a.IsGlobalUnicast() && !a.IsPrivate() && !sharedSpace.Contains(a)
}

var sharedSpace = netip.MustParsePrefix("100.64.0.0/10")

// Remote returns the leg's current RTP destination and whether it was
// learned from the peer's packets.
func (l *Leg) Remote() (netip.AddrPort, bool) {
	l.s.mu.Lock()
	defer l.s.mu.Unlock()
	return l.rtp.remote, l.rtp.latched
}

// setSDPSource remembers the address the peer's SDP sends from, trusted by
// a strict leg when it is public (a phone with a public address that sends
// media from another host than its signalling).
func (l *Leg) setSDPSource(a netip.Addr) {
	a = a.Unmap()
	l.s.mu.Lock()
	defer l.s.mu.Unlock()
	if isPublic(a) {
		l.sdpSource = a
	} else {
		l.sdpSource = netip.Addr{}
	}
}

// SetCodecs tells the leg the clock rate of each payload type its peer sends
// (for jitter) and which payload types are RFC 4733 events. Unknown types
// count at 8000 Hz.
func (l *Leg) SetCodecs(rates map[uint8]uint32, events []uint8) {
	l.s.mu.Lock()
	defer l.s.mu.Unlock()
	l.rates = [128]uint32{}
	l.events = [128]bool{}
	for pt, r := range rates {
		l.rates[pt&0x7f] = r
	}
	for _, pt := range events {
		l.events[pt&0x7f] = true
	}
}

// Kind says whether an SDP body is an offer or an answer (RFC 3264): SDES
// keys are chosen by the offer and confirmed by the answer.
type Kind uint8

const (
	Offer Kind = iota
	Answer
)

func (k Kind) String() string {
	if k == Answer {
		return "answer"
	}
	return "offer"
}

// Translate carries one SDP body across the relay: body came from side
// from's peer, as an offer or an answer; its audio address becomes that
// leg's remote, its rtpmap the leg's clock rates, its direction the
// session's hold state, its a=crypto the leg's SRTP keys; and the body is
// returned rewritten to the other leg's address, port and SRTP key (or
// plain RTP), ready to send on. Each leg terminates its own SRTP: the relay
// decrypts what one peer sends and encrypts for the other with its own key.
// Errors wrap sdp.ErrInvalid (answer 488).
func (s *Session) Translate(from Side, kind Kind, body []byte) ([]byte, error) {
	info, err := sdp.Parse(body)
	if err != nil {
		return nil, err
	}
	m, ok := info.Audio()
	if !ok {
		return nil, sdp.ErrNoAudio
	}
	target, err := s.negotiate(from, kind, m)
	if err != nil {
		return nil, err
	}
	out, err := info.Rewrite(target)
	if err != nil {
		return nil, err
	}
	leg := s.Leg(from)
	if m.Active() && m.RTP.IsValid() {
		leg.SetRemote(m.RTP, m.RTCP)
		leg.setSDPSource(m.RTP.Addr())
	}
	if m.Active() {
		leg.SetCodecs(m.ClockRates(), m.Events())
	}
	s.SetHold(m.Hold())
	return out, nil
}

// negotiate applies m's SRTP to leg from and returns the target for the
// other leg's copy, keyed when that peer speaks SRTP.
func (s *Session) negotiate(from Side, kind Kind, m sdp.Media) (sdp.Target, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	in, out := &s.legs[from&1], &s.legs[(from&1)^1]
	target := out.Target()
	if !m.Active() {
		return target, nil // a disabled stream carries no keys
	}
	secure := sdp.IsSecure(m.Proto)
	k := &in.srtp
	switch {
	case kind == Offer && secure:
		c, err := pickOffered(m)
		if err != nil {
			return target, err
		}
		if err := k.expect(&c); err != nil {
			return target, fmt.Errorf("%w: %v", sdp.ErrInvalid, err)
		}
		k.peerOffer = &c
	case kind == Offer:
		if k.policy == SRTPRequired {
			return target, fmt.Errorf("%w: %s offered: %v", sdp.ErrInvalid, m.Proto, errSRTPRequired)
		}
		k.peerOffer = nil
	case k.offered && secure:
		c, err := pickAnswered(m, k.local)
		if err != nil {
			return target, err
		}
		if err := k.install(k.local, &c); err != nil {
			return target, fmt.Errorf("%w: %v", sdp.ErrInvalid, err)
		}
	case k.offered:
		if k.policy == SRTPRequired {
			return target, fmt.Errorf("%w: %s answered: %v", sdp.ErrInvalid, m.Proto, errSRTPRequired)
		}
		k.plain()
	case secure:
		return target, fmt.Errorf("%w: %s answer to a plain RTP offer", sdp.ErrInvalid, m.Proto)
	default:
		k.plain()
	}

	ok := &out.srtp
	if kind == Offer {
		ok.offered = ok.policy == SRTPRequired || ok.active()
		if !ok.offered {
			return target, nil
		}
		// A re-offer repeats the key (and suite, and tag) in use.
		c, err := ok.local, error(nil)
		if c == nil {
			c, err = newCrypto(1, suites[0].name)
		}
		if err != nil {
			return target, err
		}
		ok.local = c
		target.Crypto = c
		return target, nil
	}
	if ok.peerOffer == nil {
		ok.plain()
		return target, nil
	}
	c, err := ok.localFor(ok.peerOffer.Tag, ok.peerOffer.Suite)
	if err != nil {
		return target, err
	}
	if err := ok.install(c, ok.peerOffer); err != nil {
		return target, fmt.Errorf("%w: %v", sdp.ErrInvalid, err)
	}
	target.Crypto = c
	return target, nil
}

// SetSRTP sets what side's peer must speak (SRTPFollow by default).
func (s *Session) SetSRTP(side Side, p SRTPPolicy) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.legs[side&1].srtp.policy = p
}

// SetHold marks the call held (SDP sendonly, recvonly, inactive or
// c=0.0.0.0) or resumed. While held no timeout fires; on resume each leg
// gets a whole Timeout again before its silence counts.
func (s *Session) SetHold(hold bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.hold && !hold {
		s.clockFrom = s.r.now()
	}
	s.hold = hold
}

// Hold reports the hold state.
func (s *Session) Hold() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.hold
}

// Answered starts the inactivity clock: before the call is answered a leg
// may be silent as long as the signalling allows (ringing without early
// media). Calling it again changes nothing.
func (s *Session) Answered() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.answered {
		s.answered = true
		s.clockFrom = s.r.now()
	}
}

// OnTimeout sets the function called, once, when a leg of the answered,
// unheld call has received nothing for Settings.Timeout; side is the silent
// leg. It runs on the relay's timer goroutine: hand long work (the BYEs) to
// another goroutine. The session stays open until Close.
func (s *Session) OnTimeout(fn func(side Side)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.onTimeout = fn
}

// Close stops relaying and returns the session's ports to the pool before it
// returns. It is safe to call more than once.
func (s *Session) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	s.r.forget(s)
	s.w.submit(command{s: s, add: false})
	return nil
}

// free returns both pairs to the pool; once per session, by whoever
// finishes it (its worker, or Close when no worker runs).
func (s *Session) free() {
	s.release.Do(func() {
		s.mu.Lock()
		var lost int64
		for i := range s.legs {
			lost += s.legs[i].rx.stream.lost()
		}
		s.mu.Unlock()
		s.r.lost.Add(uint64(lost))
		for i := range s.legs {
			if err := s.r.pool.release(s.legs[i].pair); err != nil {
				s.r.log.Error("media: releasing ports", "session", s.id, "err", err)
			}
		}
	})
}

// silentLeg reports a leg that has been quiet too long, marking the session
// timed out so it is reported once.
func (s *Session) silentLeg(now, timeout int64) (Side, func(Side), bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.answered || s.hold || s.timedOut || s.closed {
		return 0, nil, false
	}
	for i := range s.legs {
		last := max(s.legs[i].lastRx, s.clockFrom)
		if now-last > timeout {
			s.timedOut = true
			return Side(i), s.onTimeout, true
		}
	}
	return 0, nil, false
}

func (s *Session) String() string { return fmt.Sprintf("session %s", s.id) }
