package webrtc

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"unsafe"

	"github.com/pion/rtp"
	"golang.org/x/sys/unix"

	"github.com/edgewise-sip/edgewise/media/mmsg"
)

// The plain side's sockets are raw descriptors served by one epoll loop
// per Hub (plainWorker), as the relay serves its own (package media): a
// goroutine per bridge parked on its socket cost a scheduler wake-up and a
// netpoll round per packet, which profiles put at a quarter of the
// bridge's CPU with the fast path on. The worker reads whatever sockets are
// ready, encrypts RTP for the browsers whose fast path is up, and sends
// all of it toward the browsers in one sendmmsg on the shared socket.
// What needs pion (RTCP, RTP before the fast path is verified) goes to the
// bridge's own pionOut goroutine, so nothing pion does can stall the loop.

const (
	workerBatch     = 32 // datagrams per recvmmsg / sendmmsg
	workerMaxEvents = 256
	// pionQueue bounds what waits for a bridge's pionOut goroutine; a
	// full queue drops (dropSendError), it never blocks the worker.
	pionQueue = 64
)

// plainSock is a bridge's plain RTP/RTCP socket: a raw non-blocking
// descriptor (media/mmsg) that only the worker reads. Writers on other
// goroutines hold mu, so close never frees the descriptor number under a
// write that would then reach whatever reused it.
type plainSock struct {
	mu    sync.RWMutex
	fd    int
	v6    bool
	local netip.AddrPort
}

func openPlain(ip netip.Addr) (*plainSock, error) {
	fd, err := mmsg.Bind(netip.AddrPortFrom(ip, 0), mmsg.SocketOptions{})
	if err != nil {
		return nil, err
	}
	port, err := mmsg.LocalPort(fd)
	if err != nil {
		_ = mmsg.Close(fd)
		return nil, err
	}
	return &plainSock{fd: fd, v6: ip.Is6() && !ip.Is4In6(), local: netip.AddrPortFrom(ip, port)}, nil
}

var errPlainAddr = errors.New("webrtc: plain destination of the wrong family")

// writeTo sends one datagram without blocking (a full buffer drops it).
func (p *plainSock) writeTo(pkt []byte, to netip.AddrPort) error {
	var name mmsg.Name
	nl := mmsg.Encode(&name, to, p.v6)
	if nl == 0 || len(pkt) == 0 {
		return errPlainAddr
	}
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.fd < 0 {
		return net.ErrClosed
	}
	// A non-blocking sendto never sleeps: the raw form skips the
	// scheduler's hand-off.
	_, _, errno := unix.RawSyscall6(unix.SYS_SENDTO, uintptr(p.fd), uintptr(unsafe.Pointer(&pkt[0])),
		uintptr(len(pkt)), unix.MSG_DONTWAIT, uintptr(unsafe.Pointer(&name[0])), uintptr(nl))
	if errno != 0 {
		return errno
	}
	return nil
}

func (p *plainSock) close() error {
	p.mu.Lock()
	fd := p.fd
	p.fd = -1
	p.mu.Unlock()
	if fd < 0 {
		return nil
	}
	return mmsg.Close(fd)
}

type workerCmd struct {
	b    *Bridge
	add  bool
	done chan struct{}
}

// plainWorker owns an epoll set of every bridge's plain socket. Only its
// goroutine reads those sockets, touches entries, or uses a fast path's tx
// context.
type plainWorker struct {
	log    *slog.Logger
	shared syscall.RawConn // the hub's ICE/DTLS/SRTP socket
	v6     bool            // its family (sockaddr_in6 names)

	mu      sync.Mutex
	cmds    []workerCmd
	stop    bool
	stopped bool
	ended   chan struct{}

	poll    *mmsg.Poller // every bridge's plain socket
	entries mmsg.Tokens[*Bridge]
	rx      *mmsg.Batch
	tx      *mmsg.Batch
	out     [][]byte
	owners  []*Bridge
	lens    []int // RTP sizes, as the counters count
	enc     [][]byte
	hdr     rtp.Header
}

func newPlainWorker(conn *net.UDPConn, log *slog.Logger) (*plainWorker, error) {
	shared, err := conn.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("webrtc: shared socket: %w", err)
	}
	v6 := false
	var serr error
	if err := shared.Control(func(fd uintptr) {
		sa, err := unix.Getsockname(int(fd))
		serr = err
		_, v6 = sa.(*unix.SockaddrInet6)
	}); err != nil || serr != nil {
		return nil, fmt.Errorf("webrtc: shared socket: %w", errors.Join(err, serr))
	}
	// The worker parks in Go's netpoller while no socket is ready
	// (mmsg.Poller says why that beats blocking in epoll_wait).
	poll, err := mmsg.NewPoller(workerMaxEvents)
	if err != nil {
		return nil, fmt.Errorf("webrtc: %w", err)
	}
	w := &plainWorker{
		log: log, shared: shared, v6: v6, ended: make(chan struct{}),
		poll:   poll,
		rx:     mmsg.NewBatch(workerBatch, maxPacket, 0),
		tx:     mmsg.NewBatch(workerBatch, 0, 0),
		out:    make([][]byte, 0, workerBatch),
		owners: make([]*Bridge, 0, workerBatch),
		lens:   make([]int, 0, workerBatch),
		enc:    make([][]byte, workerBatch),
	}
	for i := range w.enc {
		w.enc[i] = make([]byte, 0, maxPacket+64)
	}
	go w.loop()
	return w, nil
}

// submit hands the worker a bridge to serve or to let go; letting go
// returns once the worker no longer reads its socket.
func (w *plainWorker) submit(c workerCmd) {
	w.mu.Lock()
	if w.stopped {
		w.mu.Unlock()
		return
	}
	if !c.add {
		c.done = make(chan struct{})
	}
	w.cmds = append(w.cmds, c)
	w.wake()
	w.mu.Unlock()
	if c.done != nil {
		select {
		case <-c.done:
		case <-w.ended:
		}
	}
}

// close stops the loop and waits for it.
func (w *plainWorker) close() {
	w.mu.Lock()
	w.stop = true
	if !w.stopped {
		w.wake()
	}
	w.mu.Unlock()
	<-w.ended
}

// wake makes the epoll set readable; the caller holds mu and has seen the
// worker running, so the eventfd is open.
func (w *plainWorker) wake() {
	if err := w.poll.Wake(); err != nil {
		w.log.Error("webrtc: waking the plain worker", "err", err)
	}
}

func (w *plainWorker) loop() {
	defer func() {
		w.mu.Lock()
		w.stopped = true
		for _, c := range w.cmds {
			if c.done != nil {
				close(c.done)
			}
		}
		w.cmds = nil
		_ = w.poll.Close()
		w.mu.Unlock()
		close(w.ended)
	}()
	for {
		if w.apply() {
			return
		}
		evs, err := w.poll.Wait()
		if err != nil {
			w.log.Error("webrtc: plain worker stopped", "err", err)
			return
		}
		for _, ev := range evs {
			if ev.Fd == mmsg.WakeToken {
				continue
			}
			if b := w.entries.At(ev.Fd); b != nil {
				w.handle(b)
			}
		}
		w.flush()
	}
}

// apply runs queued commands; true when asked to stop.
func (w *plainWorker) apply() bool {
	w.mu.Lock()
	cmds, stop := w.cmds, w.stop
	w.cmds = nil
	w.mu.Unlock()
	for _, c := range cmds {
		if c.add {
			w.register(c.b)
		} else {
			w.unregister(c.b)
			close(c.done)
		}
	}
	return stop
}

func (w *plainWorker) register(b *Bridge) {
	b.widx = w.entries.Add(b)
	if err := w.poll.Add(b.plain.fd, b.widx); err != nil {
		// Only resource exhaustion gets here; the call then carries
		// nothing toward the browser and its counters show it.
		b.log.Error("webrtc: epoll_ctl add", "err", err)
	}
}

func (w *plainWorker) unregister(b *Bridge) {
	if w.entries.At(b.widx) != b {
		return
	}
	_ = w.poll.Remove(b.plain.fd)
	w.entries.Remove(b.widx)
	b.widx = -1
}

// handle relays what one bridge's plain socket has waiting.
func (w *plainWorker) handle(b *Bridge) {
	n, err := w.rx.Recv(b.plain.fd)
	if err != nil {
		return // EAGAIN, EINTR, or a socket error the next read clears
	}
	for i := 0; i < n; i++ {
		if w.rx.Flags[i]&unix.MSG_TRUNC != 0 {
			b.c.drop(dropMalformed)
			continue
		}
		w.plainIn(b, w.rx.Bufs[i][:w.rx.Lens[i]])
	}
}

// plainIn takes one datagram from the plain peer (the relay's leg A).
func (w *plainWorker) plainIn(b *Bridge, pkt []byte) {
	n := len(pkt)
	if n < 8 || pkt[0]>>6 != 2 {
		b.c.drop(dropMalformed)
		return
	}
	if isRTCP(pkt[1]) {
		b.c.plain.rxRTCP(n)
		b.toPion(pkt)
		return
	}
	b.c.plain.rx(n)
	bd := b.track.bound.Load()
	m := b.toBrowser.Load()
	if bd == nil || m == nil {
		b.c.drop(dropNotReady)
		return
	}
	pt := m[pkt[1]&0x7f]
	if pt < 0 {
		b.c.drop(dropCodec)
		return
	}
	f := b.fast.Load()
	peer := b.peer.Load()
	if f == nil || !f.verified.Load() || peer == nil {
		b.toPion(pkt)
		return
	}
	if _, err := w.hdr.Unmarshal(pkt); err != nil {
		b.c.drop(dropMalformed)
		return
	}
	pkt[1] = pkt[1]&0x80 | uint8(pt)
	setSSRC(pkt, bd.ssrc)
	w.hdr.SSRC, w.hdr.PayloadType = bd.ssrc, uint8(pt)
	k := len(w.out)
	enc, err := f.tx.EncryptRTP(w.enc[k][:0], pkt, &w.hdr)
	if err != nil {
		b.c.drop(dropSendError)
		return
	}
	if mmsg.Encode(&w.tx.Names[k], *peer, w.v6) == 0 {
		b.c.drop(dropSendError)
		return
	}
	w.out = append(w.out, enc)
	w.owners = append(w.owners, b)
	w.lens = append(w.lens, n)
	if len(w.out) == workerBatch {
		w.flush()
	}
}

// flush sends what plainIn queued toward the browsers in one sendmmsg.
func (w *plainWorker) flush() {
	nameLen := unix.SizeofSockaddrInet4
	if w.v6 {
		nameLen = unix.SizeofSockaddrInet6
	}
	pkts, owners, lens := w.out, w.owners, w.lens
	for len(pkts) > 0 {
		var (
			k   int
			err error
		)
		if werr := w.shared.Write(func(fd uintptr) bool {
			k, err = w.tx.Send(int(fd), pkts, nil, nameLen)
			return true // never wait: UDP drops what does not fit
		}); werr != nil {
			k, err = 0, werr // the hub is closing
		}
		for i := range k {
			owners[i].c.srtp.tx(lens[i])
		}
		if err == nil || k >= len(pkts) {
			break
		}
		if errors.Is(err, net.ErrClosed) {
			for _, b := range owners[k:] {
				b.c.drop(dropSendError)
			}
			break
		}
		// pkts[k] was refused (a browser's address unreachable, a full
		// buffer): drop it and go on with the rest.
		owners[k].c.drop(dropSendError)
		next := k + 1
		copy(w.tx.Names[:], w.tx.Names[next:len(pkts)])
		pkts, owners, lens = pkts[next:], owners[next:], lens[next:]
	}
	w.out, w.owners, w.lens = w.out[:0], w.owners[:0], w.lens[:0]
}
