package webrtc

import (
	"encoding/binary"
	"sync/atomic"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	pion "github.com/pion/webrtc/v4"
)

// maxPacket is the largest datagram the bridge reads (the relay's limit too).
const maxPacket = 2048

// plainTrack is the bridge's outgoing audio toward the browser: a pion
// TrackLocal that hands RTP from the plain side to pion as it came, with
// only the SSRC (to the one the WebRTC description announced) and, where
// the two sides number a codec differently, the payload type changed.
type plainTrack struct{ bound atomic.Pointer[binding] }

type binding struct {
	w    pion.TrackLocalWriter
	ssrc uint32
}

var _ pion.TrackLocal = (*plainTrack)(nil)

func (t *plainTrack) Bind(ctx pion.TrackLocalContext) (pion.RTPCodecParameters, error) {
	codecs := ctx.CodecParameters()
	if len(codecs) == 0 {
		return pion.RTPCodecParameters{}, ErrNoCodec
	}
	t.bound.Store(&binding{w: ctx.WriteStream(), ssrc: uint32(ctx.SSRC())})
	return codecs[0], nil
}

func (t *plainTrack) Unbind(pion.TrackLocalContext) error {
	t.bound.Store(nil)
	return nil
}

func (t *plainTrack) ID() string              { return "audio" }
func (t *plainTrack) RID() string             { return "" }
func (t *plainTrack) StreamID() string        { return "edgewise" }
func (t *plainTrack) Kind() pion.RTPCodecType { return pion.RTPCodecTypeAudio }

// isRTCP tells RTCP from RTP on one port by the second byte (RFC 5761 §4:
// RTCP packet types 192–223 fall where RTP would have marker + PT 64–95).
func isRTCP(b byte) bool { return b >= 192 && b <= 223 }

// toPion queues a datagram from the plain side for pionOut: RTCP, and RTP
// until the fast path carries the call. A full queue drops.
func (b *Bridge) toPion(pkt []byte) {
	select {
	case b.pionq <- append([]byte(nil), pkt...):
	default:
		b.c.drop(dropSendError)
	}
}

// pionOut sends what toPion queued through pion: the far end's RTCP, and
// RTP while the bridge's own SRTP context is not yet proven.
func (b *Bridge) pionOut() {
	defer b.wg.Done()
	var hdr rtp.Header
	for {
		var pkt []byte
		select {
		case <-b.done:
			return
		case pkt = <-b.pionq:
		}
		if isRTCP(pkt[1]) {
			b.rtcpToBrowser(pkt)
			continue
		}
		bd := b.track.bound.Load()
		m := b.toBrowser.Load()
		if bd == nil || m == nil {
			b.c.drop(dropNotReady)
			continue
		}
		pt := m[pkt[1]&0x7f]
		if pt < 0 {
			b.c.drop(dropCodec)
			continue
		}
		hl, err := hdr.Unmarshal(pkt)
		if err != nil {
			b.c.drop(dropMalformed)
			continue
		}
		hdr.SSRC, hdr.PayloadType = bd.ssrc, uint8(pt)
		w, err := bd.w.WriteRTP(&hdr, pkt[hl:])
		switch {
		case err != nil:
			b.c.drop(dropSendError)
		case w == 0:
			b.c.drop(dropNotReady) // DTLS not up yet
		default:
			b.c.srtp.tx(len(pkt))
		}
	}
}

// rtcpToBrowser passes the far end's reports on with its SSRC replaced by
// the one the browser knows; other RTCP (BYE, APP, feedback for streams
// the browser never sent) stays on the plain side.
func (b *Bridge) rtcpToBrowser(pkt []byte) {
	bd := b.track.bound.Load()
	if bd == nil {
		b.c.drop(dropNotReady)
		return
	}
	pkts, err := rtcp.Unmarshal(pkt)
	if err != nil {
		b.c.drop(dropMalformed)
		return
	}
	out := pkts[:0]
	for _, p := range pkts {
		switch r := p.(type) {
		case *rtcp.SenderReport:
			r.SSRC = bd.ssrc
			out = append(out, r)
		case *rtcp.ReceiverReport:
			r.SSRC = bd.ssrc
			out = append(out, r)
		}
	}
	if len(out) == 0 {
		return
	}
	pc := b.pcA.Load()
	if pc == nil || pc.WriteRTCP(out) != nil {
		b.c.drop(dropSendError)
		return
	}
	b.c.srtp.txRTCP(len(pkt))
}

// onTrack starts relaying the browser's audio (and its RTCP) once pion has
// seen its first packet.
func (b *Bridge) onTrack(track *pion.TrackRemote, recv *pion.RTPReceiver) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return
	}
	b.wg.Add(2)
	go b.readBrowser(track)
	go b.readBrowserRTCP(recv)
	b.trackUp.Store(true)
}

func (b *Bridge) readBrowser(track *pion.TrackRemote) {
	defer b.wg.Done()
	buf := make([]byte, maxPacket)
	for {
		n, _, err := track.Read(buf)
		if err != nil {
			return // pion closes the track with the connection
		}
		if f := b.fast.Load(); f != nil && f.verified.Load() {
			// The fast path carries the browser's RTP now; what still
			// comes this way was in pion's pipeline at the handover, or is
			// a replay the fast path refused.
			continue
		}
		b.c.srtp.rx(n)
		r := b.remote.Load()
		m := b.toPlain.Load()
		if r == nil || m == nil || n < 12 {
			b.c.drop(dropNotReady)
			continue
		}
		pt := m[buf[1]&0x7f]
		if pt < 0 {
			b.c.drop(dropCodec)
			continue
		}
		buf[1] = buf[1]&0x80 | uint8(pt)
		b.pionSeq.Store(int32(binary.BigEndian.Uint16(buf[2:4])))
		if err := b.plain.writeTo(buf[:n], r.rtp); err != nil {
			b.c.drop(dropSendError)
			continue
		}
		b.c.plain.tx(n)
	}
}

// readBrowserRTCP passes the browser's reports about its own stream (SR,
// SDES) to the plain side untouched: their SSRC is the one its RTP
// carries.
func (b *Bridge) readBrowserRTCP(recv *pion.RTPReceiver) {
	defer b.wg.Done()
	buf := make([]byte, maxPacket)
	for {
		n, _, err := recv.Read(buf)
		if err != nil {
			return
		}
		b.c.srtp.rxRTCP(n)
		r := b.remote.Load()
		if r == nil {
			continue
		}
		if err := b.plain.writeTo(buf[:n], r.rtcp); err == nil {
			b.c.plain.txRTCP(n)
		}
	}
}

// drainSender reads the browser's reports about what the bridge sends.
// pion buffers them per stream until read; they are counted, not relayed:
// the same compound packet also reaches readBrowserRTCP.
func (b *Bridge) drainSender(s *pion.RTPSender) {
	if b.senderUp || s == nil {
		return
	}
	b.senderUp = true
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		buf := make([]byte, maxPacket)
		for {
			if _, _, err := s.Read(buf); err != nil {
				return
			}
		}
	}()
}
