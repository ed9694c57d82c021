package frontend

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo/sip"
)

// udpListener is one UDP socket. Several reader goroutines read it and
// answer stateless requests in parallel; messages for sipgo go through inbox
// to the net.PacketConn that sipgo serves, in the order the socket received
// them (see sequencer).
type udpListener struct {
	conn  *net.UDPConn
	addr  netip.AddrPort // bound address, IPv4-mapped addresses unmapped
	laddr sip.Addr       // addr for handlers (req.Laddr)
	// sipgoKey is the address sipgo files this socket under in its
	// connection pool: requests whose Laddr equals it are sent from here.
	sipgoKey sip.Addr
	log      *slog.Logger

	// readMu makes reading a datagram and taking its ticket one step, so
	// tickets follow the socket's order.
	readMu  sync.Mutex
	tickets atomic.Uint64
	order   sequencer
	// replies are the final responses the stateless path sent from here,
	// for retransmissions.
	replies *replies

	inbox     chan datagram
	closed    chan struct{}
	closeOnce sync.Once
	// sipgoReady is closed when sipgo first reads: by then it has filed the
	// socket in its connection pool, so outbound requests can use it.
	sipgoReady chan struct{}
	readyOnce  sync.Once
}

type datagram struct {
	data []byte
	from netip.AddrPort
	buf  *[]byte // data's backing array when it came from datagramBufs
}

// datagramBufs recycles the copies of datagrams on their way to sipgo:
// every message of a call passes here, and sipgo copies each into its own
// read buffer at once, so a copy lives only while it waits in the inbox.
var datagramBufs = sync.Pool{New: func() any { b := make([]byte, 0, datagramBufSize); return &b }}

// datagramBufSize holds any SIP message that fits an Ethernet frame;
// larger ones get a buffer of their own.
const datagramBufSize = 2048

// copyDatagram copies pkt out of a reader's buffer.
func copyDatagram(pkt []byte, from netip.AddrPort) datagram {
	if len(pkt) > datagramBufSize {
		return datagram{data: append([]byte(nil), pkt...), from: from}
	}
	bp := datagramBufs.Get().(*[]byte)
	*bp = append((*bp)[:0], pkt...)
	return datagram{data: *bp, from: from, buf: bp}
}

// release returns d's buffer once nothing reads d.data any more.
func (d datagram) release() {
	if d.buf != nil {
		datagramBufs.Put(d.buf)
	}
}

// sipgoQueue bounds datagrams waiting for sipgo's single reader.
const sipgoQueue = 1024

func listenUDP(ap netip.AddrPort, rbuf int, log *slog.Logger) (*udpListener, error) {
	conn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(ap))
	if err != nil {
		return nil, err
	}
	// Both buffers: a burst of 401s and 200s must not hit ENOBUFS either.
	if err := conn.SetReadBuffer(rbuf); err != nil {
		log.Warn("cannot set UDP receive buffer", "bytes", rbuf, "error", err)
	}
	if err := conn.SetWriteBuffer(rbuf); err != nil {
		log.Warn("cannot set UDP send buffer", "bytes", rbuf, "error", err)
	}
	raw := conn.LocalAddr().(*net.UDPAddr)
	bound := netip.AddrPortFrom(raw.AddrPort().Addr().Unmap(), raw.AddrPort().Port())
	return &udpListener{
		conn:       conn,
		addr:       bound,
		laddr:      sipAddr(bound),
		sipgoKey:   sip.Addr{IP: raw.IP, Port: raw.Port},
		log:        log,
		order:      sequencer{slots: make([]slot, 2*maxUDPReaders)},
		replies:    newReplies(maxReplies),
		inbox:      make(chan datagram, sipgoQueue),
		closed:     make(chan struct{}),
		sipgoReady: make(chan struct{}),
	}, nil
}

func sipAddr(ap netip.AddrPort) sip.Addr {
	ip := ap.Addr().AsSlice()
	return sip.Addr{IP: net.IP(ip), Port: int(ap.Port()), Hostname: ap.Addr().String()}
}

func (u *udpListener) close() {
	u.closeOnce.Do(func() {
		close(u.closed)
		u.conn.Close()
	})
}

func (u *udpListener) readLoop(s *Server) {
	buf := make([]byte, 65536)
	tk := &ticket{u: u}
	for {
		u.readMu.Lock()
		n, from, err := u.conn.ReadFromUDPAddrPort(buf)
		if err == nil {
			u.issue(tk)
		}
		u.readMu.Unlock()
		if err != nil {
			select {
			case <-u.closed:
				return
			default:
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Transient (e.g. ICMP-induced) errors: keep serving.
			s.log.Debug("udp read error", "addr", u.addr.String(), "error", err)
			continue
		}
		from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
		s.handleMessage(origin{udp: u, ticket: tk, from: from, local: u.laddr}, buf[:n])
		// Most paths settle earlier; this one is for those that do not
		// (malformed, blocked, garbage), so no ticket holds up the rest.
		tk.pass(s)
	}
}

// maxReplies bounds the bytes of responses a socket remembers for
// retransmissions: over two to four seconds, enough for 64,000 requests a
// second of 600-byte responses.
const maxReplies = 160 << 20

// maxUDPReaders bounds the reader goroutines per socket.
const maxUDPReaders = 8

// issue gives tk the next place in the socket's order. Readers call it
// holding readMu from the read that got the datagram.
func (u *udpListener) issue(tk *ticket) {
	tk.seq, tk.settled = u.tickets.Add(1)-1, false
}

// A ticket is a datagram's place in its socket's order. Exactly one of
// forward and pass settles it; whichever comes first wins.
type ticket struct {
	u       *udpListener
	seq     uint64
	settled bool
}

// forward queues a datagram for sipgo, copying it out of the read buffer.
func (tk *ticket) forward(s *Server, pkt []byte, from netip.AddrPort) {
	if tk.settled {
		return
	}
	tk.settled = true
	tk.u.order.settle(tk.seq, true, copyDatagram(pkt, from), tk.u.inbox, &s.stats)
}

// pass settles a datagram that does not go to sipgo. Stateless handlers
// run after it, so their work never delays the messages behind them.
func (tk *ticket) pass(s *Server) {
	if tk.settled {
		return
	}
	tk.settled = true
	tk.u.order.settle(tk.seq, false, datagram{}, tk.u.inbox, &s.stats)
}

// A sequencer hands datagrams to sipgo in ticket order although readers
// finish them out of order (slots is a ring indexed by ticket). Without it a phone's 180 Ringing read by one
// reader could reach sipgo after the 200 OK another reader read just
// behind it; the transaction then drops the late 180 and the caller never
// hears the ringing. Nobody waits: a settled ticket parks in its slot, and
// whoever settles the oldest one releases every ticket ready behind it.
type sequencer struct {
	mu    sync.Mutex
	next  uint64
	slots []slot
}

// grow makes room for want tickets from next on. The ring outgrows the
// readers when one of them is descheduled holding the oldest ticket while
// the others settle and park the datagrams behind it.
func (q *sequencer) grow(want uint64) {
	n := uint64(len(q.slots))
	size := 2 * n
	for size < want {
		size *= 2
	}
	slots := make([]slot, size)
	for seq := q.next; seq < q.next+n; seq++ {
		slots[seq%size] = q.slots[seq%n]
	}
	q.slots = slots
}

type slot struct {
	settled, forward bool
	d                datagram
}

func (q *sequencer) settle(seq uint64, forward bool, d datagram, inbox chan<- datagram, st *Stats) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if seq-q.next >= uint64(len(q.slots)) {
		q.grow(seq - q.next + 1)
	}
	n := uint64(len(q.slots))
	q.slots[seq%n] = slot{settled: true, forward: forward, d: d}
	for {
		sl := &q.slots[q.next%n]
		if !sl.settled {
			return
		}
		if sl.forward {
			select {
			case inbox <- sl.d:
			default:
				// sipgo falls behind: drop, as the kernel would.
				st.Overloaded.Add(1)
				sl.d.release()
			}
		}
		*sl = slot{}
		q.next++
	}
}

func (u *udpListener) sipgoConn() net.PacketConn { return &sipgoPacketConn{u: u} }

// sipgoPacketConn is the socket as sipgo sees it: reads come from inbox,
// writes go straight to the socket, so requests sipgo sends (qualify OPTIONS,
// upstream REGISTER) leave from the listening port and reuse NAT pinholes.
type sipgoPacketConn struct{ u *udpListener }

func (c *sipgoPacketConn) ReadFrom(b []byte) (int, net.Addr, error) {
	c.u.readyOnce.Do(func() { close(c.u.sipgoReady) })
	select {
	case d := <-c.u.inbox:
		n := copy(b, d.data)
		d.release()
		return n, net.UDPAddrFromAddrPort(d.from), nil
	case <-c.u.closed:
		return 0, nil, fmt.Errorf("frontend: %s: %w", c.u.addr, net.ErrClosed)
	}
}

func (c *sipgoPacketConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	return c.u.conn.WriteTo(b, addr)
}

// Close is a no-op: the Server owns the socket and closes it in Run.
func (c *sipgoPacketConn) Close() error                       { return nil }
func (c *sipgoPacketConn) LocalAddr() net.Addr                { return c.u.conn.LocalAddr() }
func (c *sipgoPacketConn) SetDeadline(t time.Time) error      { return nil }
func (c *sipgoPacketConn) SetReadDeadline(t time.Time) error  { return nil }
func (c *sipgoPacketConn) SetWriteDeadline(t time.Time) error { return c.u.conn.SetWriteDeadline(t) }
