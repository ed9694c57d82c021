package frontend

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"
)

// udpListener is one UDP socket. Several reader goroutines read it; messages
// for sipgo go through inbox to the net.PacketConn that sipgo serves.
type udpListener struct {
	conn  *net.UDPConn
	addr  netip.AddrPort // bound address, IPv4-mapped addresses unmapped
	laddr sip.Addr       // addr for handlers (req.Laddr)
	// sipgoKey is the address sipgo files this socket under in its
	// connection pool: requests whose Laddr equals it are sent from here.
	sipgoKey sip.Addr
	log      *slog.Logger

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
	for {
		n, from, err := u.conn.ReadFromUDPAddrPort(buf)
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
		s.handleMessage(origin{udp: u, from: from, local: u.laddr}, buf[:n])
	}
}

// forward queues a datagram for sipgo, copying it out of the read buffer.
// When sipgo falls behind the datagram is dropped, as the kernel would.
func (u *udpListener) forward(s *Server, pkt []byte, from netip.AddrPort) {
	d := datagram{data: append([]byte(nil), pkt...), from: from}
	select {
	case u.inbox <- d:
	default:
		s.stats.Overloaded.Add(1)
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
