package webrtc

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	pion "github.com/pion/webrtc/v4"

	"github.com/edgewise-sip/edgewise/media/sdp"
)

// ErrNoCodec is returned when the two sides share no audio codec the
// bridge carries (errors.Is(err, sdp.ErrInvalid) holds: answer 488).
var ErrNoCodec = fmt.Errorf("%w: no audio codec both sides accept (PCMU, PCMA, G722, opus)", sdp.ErrInvalid)

// gatherTimeout bounds waiting for pion's host candidates; with a UDP mux
// they are known at once, so hitting it means something is broken.
const gatherTimeout = 5 * time.Second

// pending is which half of an offer/answer exchange the bridge waits for.
type pending uint8

const (
	pendingNone pending = iota
	// The browser offered (FromBrowser); ToBrowser brings the plain answer.
	pendingBrowserOffer
	// The plain side offered and the browser got a WebRTC offer
	// (ToBrowser); FromBrowser brings its answer.
	pendingLocalOffer
)

// remote is where the plain peer (the relay's leg A) wants media.
type remote struct{ rtp, rtcp netip.AddrPort }

// Bridge terminates one browser's WebRTC media (ICE-lite, DTLS-SRTP,
// rtcp-mux, BUNDLE) and exposes it as a plain RTP endpoint on one local
// UDP socket, so the relay treats the browser like a phone. Payloads are
// copied, never transcoded. Its methods are safe for concurrent use.
type Bridge struct {
	h       *Hub
	id      string
	log     *slog.Logger
	plain   *plainSock
	local   netip.AddrPort
	sessID  uint64
	created time.Time

	mu           sync.Mutex
	stopCtx      func() bool // ends the context watch
	pc           *pion.PeerConnection
	pcA          atomic.Pointer[pion.PeerConnection] // pc, for the packet paths without mu
	engine       []sdp.Codec                         // codecs in pc's media engine (fixed for the call)
	pending      pending
	browserOffer string      // the browser's pending offer, at sendrecv for pion
	offerCodecs  []sdp.Codec // its codecs (browser numbering)
	plainOffer   []sdp.Codec // the plain side's pending offer's codecs
	codecs       []sdp.Codec // negotiated, browser numbering
	dir          sdp.Direction
	version      uint64
	closed       bool
	failure      error
	onFail       func(error)
	senderUp     bool

	track     plainTrack
	remote    atomic.Pointer[remote]
	toBrowser atomic.Pointer[ptMap]
	toPlain   atomic.Pointer[ptMap]
	state     atomic.Pointer[connState]

	// The media fast path (fastpath.go).
	secrets dtlsSecrets
	fast    atomic.Pointer[fastPath]
	fastOff atomic.Bool                    // not for this call (edgewise is the DTLS client, or keys never matched)
	peer    atomic.Pointer[netip.AddrPort] // the browser's address on the selected pair
	pionSeq atomic.Int32                   // last RTP sequence number pion delivered, -1 none
	trackUp atomic.Bool                    // onTrack ran: readBrowserRTCP relays the browser's RTCP
	widx    int32                          // the plain worker's index of this bridge (worker only)
	pionq   chan []byte                    // for pionOut

	events chan event
	done   chan struct{} // closed by Close
	failed chan struct{} // closed on failure
	wg     sync.WaitGroup

	c counters
}

func newBridge(h *Hub, seq uint64) (*Bridge, error) {
	sock, err := openPlain(h.set.PlainIP)
	if err != nil {
		return nil, fmt.Errorf("webrtc: plain socket: %w", err)
	}
	var r [8]byte
	_, _ = rand.Read(r[:])
	b := &Bridge{
		h:       h,
		id:      "wrtc-" + strconv.FormatUint(seq, 10),
		plain:   sock,
		local:   sock.local,
		widx:    -1,
		pionq:   make(chan []byte, pionQueue),
		sessID:  binary.BigEndian.Uint64(r[:]) >> 2, // SDP wants a number that fits int64
		created: time.Now(),
		events:  make(chan event, 64),
		done:    make(chan struct{}),
		failed:  make(chan struct{}),
	}
	b.log = h.log.With("bridge", b.id)
	b.pionSeq.Store(-1)
	b.state.Store(&connState{ice: pion.ICEConnectionStateNew, dtls: pion.DTLSTransportStateNew})
	b.wg.Add(2)
	go b.monitor()
	go b.pionOut()
	h.worker.submit(workerCmd{b: b, add: true})
	return b, nil
}

// ID names the bridge in logs and status.
func (b *Bridge) ID() string { return b.id }

// PlainAddr is the bridge's plain RTP/RTCP socket, as its RTP/AVP
// descriptions name it.
func (b *Bridge) PlainAddr() netip.AddrPort { return b.local }

// FromBrowser takes a description from the browser — an offer (first or
// re-offer), or the answer to the offer ToBrowser produced — and returns
// the plain RTP/AVP description to carry on: give it to
// media.Session.Translate(media.A, …) as if a phone had sent it. The
// direction (sendonly, recvonly, inactive) is carried across. Errors wrap
// sdp.ErrInvalid when the description is unusable (answer 488).
func (b *Bridge) FromBrowser(body []byte) ([]byte, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, ErrClosed
	}
	if b.pending == pendingLocalOffer {
		return b.browserAnswer(body)
	}
	return b.browserOfferIn(body)
}

// ToBrowser takes a plain description addressed to the browser's leg — the
// relay's output of Session.Translate(media.B, …): an answer to what
// FromBrowser returned, or an offer from the far side — and returns the
// WebRTC description for the browser.
func (b *Bridge) ToBrowser(body []byte) ([]byte, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, ErrClosed
	}
	if b.pending == pendingBrowserOffer {
		return b.plainAnswerIn(body)
	}
	return b.plainOfferIn(body)
}

// Rollback forgets an offer that the other side refused (a re-INVITE
// answered 488, a CANCEL): the next description starts a new exchange.
func (b *Bridge) Rollback() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return ErrClosed
	}
	p := b.pending
	b.pending = pendingNone
	b.browserOffer, b.offerCodecs, b.plainOffer = "", nil, nil
	if p == pendingLocalOffer && b.pc != nil {
		if err := b.pc.SetLocalDescription(pion.SessionDescription{Type: pion.SDPTypeRollback}); err != nil {
			return fmt.Errorf("webrtc: rollback: %w", err)
		}
	}
	return nil
}

// usable is what an offer's codecs leave to negotiate: all of them for a
// new connection, those its media engine already has once it exists (the
// engine is fixed then). ErrNoCodec when no speech codec is left.
func (b *Bridge) usable(offered []sdp.Codec) ([]sdp.Codec, error) {
	codecs := offered
	if b.pc != nil {
		codecs = intersect(codecs, b.engine)
	}
	if !hasSpeech(codecs) {
		return nil, ErrNoCodec
	}
	return codecs, nil
}

func (b *Bridge) browserOfferIn(body []byte) ([]byte, error) {
	a, err := parseAudio(body)
	if err != nil {
		return nil, err
	}
	codecs, err := b.usable(a.codecs)
	if err != nil {
		return nil, err
	}
	sendrecv, err := withDirection(string(body), sdp.SendRecv)
	if err != nil {
		return nil, err
	}
	b.browserOffer, b.offerCodecs, b.pending = sendrecv, codecs, pendingBrowserOffer
	b.version++
	return plainSDP(b.sessID, b.version, b.local, codecs, a.dir, a.ptime), nil
}

func (b *Bridge) plainAnswerIn(body []byte) ([]byte, error) {
	a, err := parsePlain(body)
	if err != nil {
		return nil, err
	}
	// The answerer's order is its preference; the numbering is the
	// browser's, which pion answers with.
	accepted := intersect(b.offerCodecs, a.codecs)
	accepted = reorder(accepted, a.codecs)
	if !hasSpeech(accepted) {
		return nil, ErrNoCodec
	}
	b.setRemote(a)
	first := b.pc == nil
	if first {
		if err := b.newPC(accepted); err != nil {
			return nil, err
		}
	}
	if err := b.pc.SetRemoteDescription(pion.SessionDescription{Type: pion.SDPTypeOffer, SDP: b.browserOffer}); err != nil {
		return nil, fmt.Errorf("%w: browser offer: %w", sdp.ErrInvalid, err)
	}
	if first {
		sender, err := b.pc.AddTrack(&b.track)
		if err != nil {
			return nil, fmt.Errorf("webrtc: add track: %w", err)
		}
		b.drainSender(sender)
	}
	answer, err := b.pc.CreateAnswer(nil)
	if err != nil {
		return nil, fmt.Errorf("webrtc: answer: %w", err)
	}
	local, err := b.setLocal(answer)
	if err != nil {
		return nil, err
	}
	negotiated, err := parseAudio([]byte(local))
	if err != nil {
		return nil, err
	}
	out, err := withDirection(local, a.dir)
	if err != nil {
		return nil, err
	}
	b.codecs, b.dir, b.pending = negotiated.codecs, a.dir, pendingNone
	b.browserOffer, b.offerCodecs = "", nil
	// The far end may send with the offer's numbers or its answer's; the
	// answer's win where they clash.
	b.toBrowser.Store(newPTMap(append(append([]sdp.Codec(nil), negotiated.codecs...), a.codecs...), negotiated.codecs))
	b.toPlain.Store(newPTMap(negotiated.codecs, a.codecs))
	b.post(event{kind: evNegotiated})
	return []byte(out), nil
}

func (b *Bridge) plainOfferIn(body []byte) ([]byte, error) {
	a, err := parsePlain(body)
	if err != nil {
		return nil, err
	}
	codecs, err := b.usable(a.codecs)
	if err != nil {
		return nil, err
	}
	b.setRemote(a)
	if b.pc == nil {
		if err := b.newPC(codecs); err != nil {
			return nil, err
		}
		tr, err := b.pc.AddTransceiverFromTrack(&b.track, pion.RTPTransceiverInit{Direction: pion.RTPTransceiverDirectionSendrecv})
		if err != nil {
			return nil, fmt.Errorf("webrtc: add track: %w", err)
		}
		b.drainSender(tr.Sender())
	}
	offer, err := b.pc.CreateOffer(nil)
	if err != nil {
		return nil, fmt.Errorf("webrtc: offer: %w", err)
	}
	local, err := b.setLocal(offer)
	if err != nil {
		return nil, err
	}
	out, err := withDirection(local, a.dir)
	if err != nil {
		return nil, err
	}
	b.plainOffer, b.pending = codecs, pendingLocalOffer
	return []byte(out), nil
}

func (b *Bridge) browserAnswer(body []byte) ([]byte, error) {
	a, err := parseAudio(body)
	if err != nil {
		return nil, err
	}
	accepted := reorder(intersect(b.plainOffer, a.codecs), a.codecs)
	if !hasSpeech(accepted) {
		return nil, ErrNoCodec
	}
	sendrecv, err := withDirection(string(body), sdp.SendRecv)
	if err != nil {
		return nil, err
	}
	if err := b.pc.SetRemoteDescription(pion.SessionDescription{Type: pion.SDPTypeAnswer, SDP: sendrecv}); err != nil {
		return nil, fmt.Errorf("%w: browser answer: %w", sdp.ErrInvalid, err)
	}
	b.codecs, b.dir, b.pending = intersect(a.codecs, accepted), a.dir, pendingNone
	b.toBrowser.Store(newPTMap(b.plainOffer, a.codecs))
	b.toPlain.Store(newPTMap(a.codecs, b.plainOffer))
	b.plainOffer = nil
	b.version++
	b.post(event{kind: evNegotiated})
	return plainSDP(b.sessID, b.version, b.local, accepted, a.dir, a.ptime), nil
}

// reorder returns the codecs of set in the order their keys appear in by.
func reorder(set, by []sdp.Codec) []sdp.Codec {
	out := make([]sdp.Codec, 0, len(set))
	for _, o := range by {
		for _, c := range set {
			if c.Key() == o.Key() {
				out = append(out, c)
				break
			}
		}
	}
	return out
}

func (b *Bridge) setRemote(a audio) {
	if !a.rtp.IsValid() {
		return // held with c=0.0.0.0: keep the last destination
	}
	r := &remote{rtp: a.rtp, rtcp: a.rtcp}
	if !r.rtcp.IsValid() {
		r.rtcp = r.rtp
	}
	b.remote.Store(r)
}

// setLocal applies a description pion produced and returns it with the
// host candidates in it.
func (b *Bridge) setLocal(desc pion.SessionDescription) (string, error) {
	gathered := pion.GatheringCompletePromise(b.pc)
	if err := b.pc.SetLocalDescription(desc); err != nil {
		return "", fmt.Errorf("webrtc: local description: %w", err)
	}
	t := time.NewTimer(gatherTimeout)
	defer t.Stop()
	select {
	case <-gathered:
	case <-t.C:
		return "", errors.New("webrtc: gathering host candidates timed out")
	}
	return b.pc.LocalDescription().SDP, nil
}

func (b *Bridge) newPC(codecs []sdp.Codec) error {
	me := &pion.MediaEngine{}
	for _, c := range codecs {
		if err := me.RegisterCodec(pionParams(c), pion.RTPCodecTypeAudio); err != nil {
			return fmt.Errorf("webrtc: codec %s: %w", c.Key(), err)
		}
	}
	api, err := b.h.api(me, &b.secrets)
	if err != nil {
		return err
	}
	cert, err := b.h.certificate()
	if err != nil {
		return err
	}
	pc, err := api.NewPeerConnection(pion.Configuration{
		Certificates:  []pion.Certificate{cert},
		BundlePolicy:  pion.BundlePolicyMaxBundle,
		RTCPMuxPolicy: pion.RTCPMuxPolicyRequire,
		// No header extensions are negotiated, so cryptex (RFC 9335) would
		// protect nothing; without it the fast path's SRTP contexts need no
		// per-direction cryptex modes.
		RTPHeaderEncryptionPolicy: pion.RTPHeaderEncryptionPolicyDisable,
	})
	if err != nil {
		return fmt.Errorf("webrtc: peer connection: %w", err)
	}
	pc.OnICEConnectionStateChange(func(s pion.ICEConnectionState) { b.post(event{kind: evICE, ice: s}) })
	// pion calls this with the transport's lock held: only post.
	pc.SCTP().Transport().OnStateChange(func(s pion.DTLSTransportState) { b.post(event{kind: evDTLS, dtls: s}) })
	pc.SCTP().Transport().ICETransport().OnSelectedCandidatePairChange(func(p *pion.ICECandidatePair) {
		if p != nil && p.Remote != nil {
			e := event{kind: evPair, pair: net.JoinHostPort(p.Remote.Address, strconv.Itoa(int(p.Remote.Port)))}
			if a, err := netip.ParseAddr(p.Remote.Address); err == nil {
				e.peer = netip.AddrPortFrom(a, p.Remote.Port)
			}
			b.post(e)
		}
	})
	pc.OnTrack(b.onTrack)
	b.pc, b.engine = pc, codecs
	b.pcA.Store(pc)
	return nil
}

// OnFailure sets the function called once when the browser's media fails:
// ICE never connects (ErrICEFailed), DTLS fails (ErrDTLSFailed, with
// "fingerprint mismatch" when the certificate does not match the
// description), the browser stops answering consent checks
// (ErrConsentLost) or closes DTLS (ErrPeerClosed). It runs on a
// goroutine of its own, so it may send the BYEs and Close the bridge. If
// the bridge has already failed, fn is called before OnFailure returns.
// Close never triggers it.
func (b *Bridge) OnFailure(fn func(err error)) {
	b.mu.Lock()
	err := b.failure
	b.onFail = fn
	b.mu.Unlock()
	if err != nil && fn != nil {
		fn(err)
	}
}

// Failed is closed when the bridge fails (see OnFailure); Err then says why.
func (b *Bridge) Failed() <-chan struct{} { return b.failed }

// Err returns the failure, or nil.
func (b *Bridge) Err() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.failure
}

func (b *Bridge) fail(err error) {
	b.mu.Lock()
	if b.closed || b.failure != nil {
		b.mu.Unlock()
		return
	}
	b.failure = err
	fn := b.onFail
	close(b.failed)
	b.mu.Unlock()
	b.log.Warn("webrtc: browser media failed", "reason", err.Error())
	if fn != nil {
		// On its own goroutine, so fn may Close the bridge.
		go fn(err)
	}
}

// Close tears the browser's media down and frees the plain socket; every
// goroutine of the bridge has ended when it returns. It is safe to call
// more than once.
func (b *Bridge) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	pc, stop := b.pc, b.stopCtx
	b.mu.Unlock()
	if stop != nil {
		stop()
	}
	close(b.done)
	b.stopFast()
	var errs []error
	if pc != nil {
		errs = append(errs, pc.Close())
	}
	b.h.worker.submit(workerCmd{b: b})
	errs = append(errs, b.plain.close())
	b.wg.Wait()
	b.h.forget(b)
	return errors.Join(errs...)
}
