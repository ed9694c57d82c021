package media

import (
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/srtp/v3"
	"golang.org/x/sys/unix"

	"github.com/edgewise-sip/edgewise/media/mmsg"
)

const (
	// batchSize is how many datagrams one recvmmsg takes from a socket.
	// At 50 pps per stream it is usually one; a fast stream fills it.
	batchSize = 32
	// bufSize holds any datagram that fits an Ethernet MTU with room to
	// spare; a larger one arrives cut (MSG_TRUNC) and is dropped.
	bufSize   = 2048
	maxEvents = 256
	// coalesceMin ready sockets in one wake-up mean the relay is busy.
	coalesceMin = 4
)

type workerState uint8

const (
	stateIdle workerState = iota
	stateRunning
	stateStopped
)

// socket kinds, as indexes into Session.entries: leg*2 + kind.
const (
	kindRTP  = 0
	kindRTCP = 1
)

// command asks the worker to start (add) or stop (remove) serving a
// session's sockets.
type command struct {
	s    *Session
	add  bool
	done chan struct{}
}

// entry is one registered socket.
type entry struct {
	fd   int
	s    *Session
	side Side
	kind int
	// batch: read this socket with recvmmsg, not recvfrom (see readBatch).
	batch bool
	// round is the worker's poll round of the last read.
	round uint32
}

// worker owns an epoll set and every socket in it. Only its goroutine reads
// those sockets or touches entries, so a descriptor is never closed while an
// event for it is being handled.
type worker struct {
	r *Relay

	mu      sync.Mutex
	state   workerState
	pending []*Session // added before Run
	cmds    []command
	stop    bool
	// poll is the epoll set of every socket the worker serves; nil
	// before start and after shutdown.
	poll *mmsg.Poller

	// owned by the worker goroutine
	entries mmsg.Tokens[*entry]
	// round counts polls; busy is set when the last poll filled events.
	round   uint32
	busy    bool
	rx, tx  *mmsg.Batch
	out     [][]byte
	outRTCP []bool
	// dec and enc hold the packets an SRTP leg decrypted and the ones
	// encrypted for an SRTP peer, one buffer per batch slot.
	dec, enc [][]byte
	hdr      rtp.Header
	rtcpHdr  rtcp.Header

	ctr workerCounters
}

// workerCounters feed the Prometheus collector; written by one goroutine,
// read at scrape time.
type workerCounters struct {
	packets [2]atomic.Uint64 // by kind: rtp, rtcp
	bytes   [2]atomic.Uint64
	dropped [numReasons]atomic.Uint64
}

func newWorker(r *Relay) *worker {
	w := &worker{
		r:       r,
		rx:      mmsg.NewBatch(batchSize, bufSize, 0),
		tx:      mmsg.NewBatch(batchSize, 0, 0),
		out:     make([][]byte, 0, batchSize),
		outRTCP: make([]bool, 0, batchSize),
		dec:     buffers(batchSize, bufSize),
		enc:     buffers(batchSize, bufSize+srtpOverhead),
	}
	return w
}

// srtpOverhead is the most SRTP adds to a packet: the auth tag (16 bytes
// with AES-GCM) and, for SRTCP, the 4-byte index.
const srtpOverhead = 32

func buffers(n, size int) [][]byte {
	backing := make([]byte, n*size)
	out := make([][]byte, n)
	for i := range out {
		out[i] = backing[i*size : i*size : (i+1)*size]
	}
	return out
}

// start creates the epoll set; the sessions added before Run are registered
// by the loop's first pass.
func (w *worker) start() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	p, err := mmsg.NewPoller(maxEvents)
	if err != nil {
		return fmt.Errorf("media: %w", err)
	}
	w.poll = p
	w.state = stateRunning
	for _, s := range w.pending {
		w.cmds = append(w.cmds, command{s: s, add: true})
	}
	w.pending = nil
	return nil
}

// submit hands a command to the worker. Removal waits until the session's
// ports are back in the pool.
func (w *worker) submit(c command) {
	w.mu.Lock()
	switch w.state {
	case stateIdle:
		if c.add {
			w.pending = append(w.pending, c.s)
			w.mu.Unlock()
			return
		}
		for i, s := range w.pending {
			if s == c.s {
				w.pending = append(w.pending[:i], w.pending[i+1:]...)
				break
			}
		}
		w.mu.Unlock()
		c.s.free()
	case stateRunning:
		if !c.add {
			c.done = make(chan struct{})
		}
		w.cmds = append(w.cmds, c)
		w.wake()
		w.mu.Unlock()
		if c.done != nil {
			<-c.done
		}
	default: // stopped: the worker freed everything it had
		w.mu.Unlock()
		c.s.free()
	}
}

// requestStop makes the loop return after freeing every session it has.
func (w *worker) requestStop() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.stop = true
	if w.state == stateRunning {
		w.wake()
	}
}

// wake makes the epoll set readable, which unparks the worker. The caller holds w.mu and has seen the worker
// running, so the eventfd is still open (shutdown closes it under w.mu).
func (w *worker) wake() {
	if err := w.poll.Wake(); err != nil {
		w.r.log.Error("media: waking worker", "err", err)
	}
}

// loop serves the epoll set until requestStop.
//
// The worker waits in Go's netpoller, as a goroutine waits for a socket:
// the runtime watches the epoll set's descriptor and parks the worker while
// nothing is ready. Blocking in epoll_wait instead leaves the goroutine in a
// system call holding its P; with a worker for every P, sysmon then takes
// the Ps back at almost every wait and, having found work, polls again
// 20 µs later instead of backing off to 10 ms. On the 2-CPU relay benchmark
// that cost half again as much relay CPU, six times the context switches,
// and stalls of 100 ms and more at 300,000 packets/s (media/README.md).
//
// With Settings.Coalesce set it coalesces under load: when a wake-up found
// at least coalesceMin sockets ready, the worker naps before polling again,
// so the next poll finds many packets and the senders need not wake it for
// each one. A light load always parks and is served at once.
func (w *worker) loop() error {
	nap := unix.NsecToTimespec(int64(w.r.set.Coalesce))
	for {
		if w.apply() {
			return nil
		}
		evs, err := w.poll.Wait()
		if err != nil {
			w.shutdown()
			return fmt.Errorf("media: %w", err)
		}
		n := len(evs)
		if n == 0 {
			continue // interrupted
		}
		w.round++
		w.busy = w.poll.Full(evs)
		for _, ev := range evs {
			if ev.Fd == mmsg.WakeToken {
				continue
			}
			if e := w.entries.At(ev.Fd); e != nil {
				w.handle(e)
			}
		}
		if n >= coalesceMin && w.r.set.Coalesce > 0 {
			unix.Nanosleep(&nap, nil)
		}
	}
}

// apply runs queued commands; it reports true (after shutting down) when
// asked to stop.
func (w *worker) apply() bool {
	w.mu.Lock()
	cmds, stop := w.cmds, w.stop
	w.cmds = nil
	w.mu.Unlock()
	for _, c := range cmds {
		if c.add {
			w.register(c.s)
		} else {
			w.unregister(c.s)
			close(c.done)
		}
	}
	if stop {
		w.shutdown()
	}
	return stop
}

func (w *worker) register(s *Session) {
	for side := range s.legs {
		leg := &s.legs[side]
		for kind, fd := range [2]int{leg.pair.rtp, leg.pair.rti} {
			idx := w.entries.Add(&entry{fd: fd, s: s, side: Side(side), kind: kind})
			s.entries[side*2+kind] = idx
			if err := w.poll.Add(fd, idx); err != nil {
				// Only resource exhaustion gets here; the session then
				// relays nothing on that socket and its stats show it.
				w.r.log.Error("media: epoll_ctl add", "session", s.id, "err", err)
			}
		}
	}
}

func (w *worker) unregister(s *Session) {
	for i, idx := range s.entries {
		if idx < 0 {
			continue
		}
		_ = w.poll.Remove(w.entries.At(idx).fd)
		w.entries.Remove(idx)
		s.entries[i] = -1
	}
	s.free()
}

// shutdown frees every session the worker holds or was about to get, and
// closes the epoll set. Commands arriving later are handled by submit.
func (w *worker) shutdown() {
	w.mu.Lock()
	w.state = stateStopped
	cmds := w.cmds
	w.cmds = nil
	w.mu.Unlock()
	for _, c := range cmds {
		c.s.free()
		if c.done != nil {
			close(c.done)
		}
	}
	for _, e := range w.entries.All() {
		e.s.free()
	}
	w.entries.Reset()
	w.mu.Lock()
	_ = w.poll.Close()
	w.poll = nil
	w.mu.Unlock()
}

// readBatch tells whether to read e with recvmmsg, which takes up to
// batchSize datagrams, rather than recvfrom, which takes one and costs
// less (~0.2 µs a packet with sendto, see mmsg.RecvOne): a 50 pps stream's
// socket almost always holds one datagram when it is ready. A socket is
// read in batches from its second consecutive ready round (a fast stream
// or a queue), while a batch read brings more than one, and by everyone
// when the last poll filled its events (the worker is behind).
func (w *worker) readBatch(e *entry) bool {
	return w.busy || e.batch || e.round+1 == w.round
}

// handle relays what one socket has waiting: read, validate, latch and
// count each packet under the session's lock, send the good ones in one
// sendmmsg (sendto for one) to the other leg's peer.
func (w *worker) handle(e *entry) {
	var n int
	var err error
	if w.readBatch(e) {
		n, err = w.rx.Recv(e.fd)
		e.batch = n > 1
	} else {
		n, err = w.rx.RecvOne(e.fd)
	}
	e.round = w.round
	if err != nil || n == 0 {
		return // EAGAIN, EINTR, or a socket error the next read clears
	}
	now := w.r.now()
	s := e.s
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	in, out := &s.legs[e.side], &s.legs[e.side^1]
	src, dst := &in.rtp, &out.rtp
	if e.kind == kindRTCP {
		src, dst = &in.rtcp, &out.rtcp
	}
	w.out, w.outRTCP = w.out[:0], w.outRTCP[:0]
	var dropped [numReasons]uint64
	for i := 0; i < n; i++ {
		pkt := w.rx.Bufs[i][:w.rx.Lens[i]]
		isRTCP := e.kind == kindRTCP || isMuxedRTCP(pkt)
		r := reasonOK
		switch {
		case w.rx.Flags[i]&unix.MSG_TRUNC != 0:
			r = dropOversize
		case isRTCP:
			r = w.checkRTCP(pkt)
		default:
			r = w.checkRTP(pkt, in.srtp.rx != nil)
		}
		if r == reasonOK && in.srtp.rx != nil {
			// Authenticate before latching: on an SRTP leg only the key
			// holder can move the media.
			pkt, r = w.decrypt(in.srtp.rx, i, pkt, isRTCP)
		}
		if r == reasonOK {
			r = in.accept(src, mmsg.Decode(&w.rx.Names[i]), isRTCP)
		}
		if r != reasonOK {
			in.rx.dropped[r]++
			dropped[r]++
			continue
		}
		in.lastRx = now
		if isRTCP {
			in.rx.rtcpPackets++
			in.rx.rtcpBytes += uint64(len(pkt))
		} else {
			in.rx.packets++
			in.rx.bytes += uint64(len(pkt))
			h := &w.hdr
			pt := h.PayloadType
			rate := in.rates[pt]
			if rate == 0 {
				rate = 8000
			}
			in.rx.stream.update(h.SSRC, h.SequenceNumber, h.Timestamp, rate, in.events[pt], now)
		}
		if dst.nameLen == 0 {
			out.tx.dropped[dropNoRemote]++
			dropped[dropNoRemote]++
			continue
		}
		if out.srtp.active() {
			// An SRTP peer gets nothing in the clear, not even before the
			// relay's key has reached it.
			var err error
			if out.srtp.tx == nil {
				err = errNoKey
			} else {
				pkt, err = w.encrypt(out.srtp.tx, i, pkt, isRTCP)
			}
			if err != nil {
				out.tx.dropped[dropSRTP]++
				dropped[dropSRTP]++
				continue
			}
		}
		w.out = append(w.out, pkt)
		w.outRTCP = append(w.outRTCP, isRTCP)
	}
	if len(w.out) > 0 {
		fd := out.pair.rtp
		if e.kind == kindRTCP {
			fd = out.pair.rti
		}
		var sent int
		if len(w.out) == 1 {
			if mmsg.SendOne(fd, w.out[0], &dst.name, dst.nameLen) == nil {
				sent = 1
			}
		} else {
			sent, _ = w.tx.Send(fd, w.out, &dst.name, dst.nameLen)
		}
		var pk, by [2]uint64
		for i, p := range w.out {
			if i >= sent {
				out.tx.dropped[dropSendError]++
				dropped[dropSendError]++
				continue
			}
			k := 0
			if w.outRTCP[i] {
				k = 1
			}
			pk[k]++
			by[k] += uint64(len(p))
		}
		out.tx.packets += pk[0]
		out.tx.bytes += by[0]
		out.tx.rtcpPackets += pk[1]
		out.tx.rtcpBytes += by[1]
		s.mu.Unlock()
		for k := range pk {
			if pk[k] > 0 {
				w.ctr.packets[k].Add(pk[k])
				w.ctr.bytes[k].Add(by[k])
			}
		}
	} else {
		s.mu.Unlock()
	}
	for r, c := range dropped {
		if c > 0 {
			w.ctr.dropped[r].Add(c)
		}
	}
}

// accept applies symmetric latching — strict about the source when
// RestrictSources was called, limited to Settings.AllowB on leg B — to a
// valid packet from src; the caller holds the session lock.
func (l *Leg) accept(ep *endpoint, src netip.AddrPort, isRTCP bool) reason {
	if ep.latched {
		if src == ep.remote {
			return reasonOK
		}
		if !l.strict || src.Addr() != ep.remote.Addr() {
			return dropStranger
		}
		// The peer's NAT gave it a new port on the same address: follow
		// it (the address is the one the peer signalled from).
		ep.setRemote(src, l.v6)
		return reasonOK
	}
	if l.strict && !l.trusted(src.Addr()) {
		return dropStranger
	}
	if len(l.allow) > 0 && !allowed(l.allow, src.Addr()) {
		return dropNotAllowed
	}
	ep.latched = true
	ep.setRemote(src, l.v6)
	// Until RTCP latches on its own, send it beside the latched RTP source:
	// a NAT usually maps RTP+1 next to RTP, while the SDP's RTCP address is
	// the private one.
	if ep == &l.rtp && !l.rtcp.latched && src.Port() < 65535 && l.rtcp.remote.Addr() != src.Addr() {
		l.rtcp.setRemote(netip.AddrPortFrom(src.Addr(), src.Port()+1), l.v6)
	}
	return reasonOK
}

func allowed(prefixes []netip.Prefix, a netip.Addr) bool {
	for _, p := range prefixes {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// isMuxedRTCP tells RTCP from RTP on a shared port (RFC 5761 §4): RTCP
// packet types 192–223 occupy the second byte where RTP has M+PT.
func isMuxedRTCP(b []byte) bool {
	return len(b) >= 2 && b[1] >= 192 && b[1] <= 223
}

// decrypt authenticates and decrypts an SRTP or SRTCP packet into batch
// slot i's buffer.
func (w *worker) decrypt(ctx *srtp.Context, i int, pkt []byte, isRTCP bool) ([]byte, reason) {
	var out []byte
	var err error
	if isRTCP {
		out, err = ctx.DecryptRTCP(w.dec[i][:0], pkt, &w.rtcpHdr)
	} else {
		out, err = ctx.DecryptRTP(w.dec[i][:0], pkt, &w.hdr)
	}
	if err != nil {
		return nil, dropSRTP
	}
	return out, reasonOK
}

// encrypt protects a packet for an SRTP peer into batch slot i's buffer.
func (w *worker) encrypt(ctx *srtp.Context, i int, pkt []byte, isRTCP bool) ([]byte, error) {
	if isRTCP {
		return ctx.EncryptRTCP(w.enc[i][:0], pkt, &w.rtcpHdr)
	}
	return ctx.EncryptRTP(w.enc[i][:0], pkt, &w.hdr)
}

// checkRTP validates an RTP packet with pion/rtp, leaving its header in
// w.hdr. Obvious garbage is refused before the parser so it costs no
// allocation. An SRTP packet's padding is encrypted and its last bytes are
// the auth tag, so secure skips the padding check (decryption checks it).
func (w *worker) checkRTP(b []byte, secure bool) reason {
	if len(b) == 0 || b[0]>>6 != 2 {
		return dropMalformed
	}
	if len(b) < 12 {
		return dropTruncated
	}
	n, err := w.hdr.Unmarshal(b)
	if err != nil {
		return dropTruncated
	}
	if b[0]&0x20 != 0 && !secure { // padding: the last byte counts it, itself included
		pad := int(b[len(b)-1])
		if pad == 0 || n+pad > len(b) {
			return dropMalformed
		}
	}
	return reasonOK
}

// checkRTCP validates the first header of an RTCP (or SRTCP) compound
// packet with pion/rtcp; the rest may be encrypted, so only its length is
// checked against the datagram.
func (w *worker) checkRTCP(b []byte) reason {
	if len(b) == 0 || b[0]>>6 != 2 {
		return dropMalformed
	}
	if len(b) < 4 {
		return dropTruncated
	}
	if err := w.rtcpHdr.Unmarshal(b); err != nil {
		return dropMalformed
	}
	if t := uint8(w.rtcpHdr.Type); t < 192 || t > 223 {
		return dropMalformed
	}
	if (int(w.rtcpHdr.Length)+1)*4 > len(b) {
		return dropTruncated
	}
	return reasonOK
}
