// Package mmsg is the thin Linux socket layer under the media relay: UDP
// sockets as raw non-blocking descriptors, batched receive and send
// (recvmmsg/sendmmsg), single ones that cost less for one datagram
// (recvfrom/sendto) and allocation-free conversion between socket addresses
// and netip.AddrPort, and Poller, the epoll set such a loop waits on. It
// exists because the relay's hot path runs its own
// epoll loop rather than one goroutine per socket: that saves a syscall and
// two goroutine switches per packet (see media/README.md for the figures).
//
// It imports nothing of edgewise.
package mmsg

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"unsafe"

	"golang.org/x/sys/unix"
)

// NameLen is the size of a socket-address buffer big enough for IPv4 and IPv6
// (sizeof(struct sockaddr_in6)).
const NameLen = unix.SizeofSockaddrInet6

// Name is a raw socket address as the kernel reads and writes it.
type Name [NameLen]byte

// mmsghdr mirrors struct mmsghdr; Go's natural padding matches C's on every
// Linux architecture because Msghdr is word-aligned.
type mmsghdr struct {
	hdr unix.Msghdr
	n   uint32
}

// Batch is a reusable set of message headers for Recv and Send. It is owned by
// one goroutine; its buffers must stay referenced while the kernel uses them,
// which Batch guarantees by holding them.
type Batch struct {
	msgs  []mmsghdr
	iovs  []unix.Iovec
	Bufs  [][]byte // payload buffers; Recv fills them, Send reads them
	Names []Name   // per-message peer addresses
	Lens  []int    // bytes received (Recv) per message
	Flags []int    // msg_flags per received message (MSG_TRUNC, ...)
	oob   [][]byte // control-message buffers (nil unless WithOOB)
	OOB   [][]byte // control data received per message
	armed bool     // headers point at Bufs (Send unarms: it reuses them)
}

// NewBatch returns a batch of n messages whose receive buffers are bufSize
// bytes; oobSize > 0 reserves room for control messages (timestamps).
func NewBatch(n, bufSize, oobSize int) *Batch {
	b := &Batch{
		msgs:  make([]mmsghdr, n),
		iovs:  make([]unix.Iovec, n),
		Bufs:  make([][]byte, n),
		Names: make([]Name, n),
		Lens:  make([]int, n),
		Flags: make([]int, n),
		OOB:   make([][]byte, n),
	}
	// One backing array keeps the buffers close together in memory.
	backing := make([]byte, n*bufSize)
	for i := range b.Bufs {
		b.Bufs[i] = backing[i*bufSize : (i+1)*bufSize : (i+1)*bufSize]
	}
	if oobSize > 0 {
		b.oob = make([][]byte, n)
		ob := make([]byte, n*oobSize)
		for i := range b.oob {
			b.oob[i] = ob[i*oobSize : (i+1)*oobSize : (i+1)*oobSize]
		}
	}
	return b
}

// Len is the number of messages the batch holds.
func (b *Batch) Len() int { return len(b.msgs) }

// Recv reads up to len(b) datagrams from fd without blocking. It returns the
// count read; unix.EAGAIN when none is waiting.
func (b *Batch) Recv(fd int) (int, error) {
	if !b.armed {
		for i := range b.msgs {
			buf := b.Bufs[i][:cap(b.Bufs[i])]
			b.iovs[i].Base = &buf[0]
			b.iovs[i].SetLen(len(buf))
			h := &b.msgs[i].hdr
			*h = unix.Msghdr{}
			h.Name = &b.Names[i][0]
			h.Iov = &b.iovs[i]
			h.Iovlen = 1
		}
		b.armed = true
	}
	// Only what the kernel writes back needs resetting between calls.
	for i := range b.msgs {
		h := &b.msgs[i].hdr
		h.Namelen = NameLen
		h.Flags = 0
		if b.oob != nil {
			h.Control = &b.oob[i][0]
			h.SetControllen(len(b.oob[i]))
		}
	}
	// recvmmsg on a non-blocking socket never sleeps, so the raw form
	// (no scheduler hand-off) is safe and cheaper.
	r, _, errno := unix.RawSyscall6(unix.SYS_RECVMMSG, uintptr(fd),
		uintptr(unsafe.Pointer(&b.msgs[0])), uintptr(len(b.msgs)), unix.MSG_DONTWAIT, 0, 0)
	if errno != 0 {
		return 0, errno
	}
	n := int(r)
	for i := 0; i < n; i++ {
		b.Lens[i] = int(b.msgs[i].n)
		b.Flags[i] = int(b.msgs[i].hdr.Flags)
		if b.oob != nil {
			b.OOB[i] = b.oob[i][:b.msgs[i].hdr.Controllen]
		}
	}
	return n, nil
}

// RecvOne reads one datagram from fd without blocking into Bufs[0],
// Names[0], Lens[0] and Flags[0] (MSG_TRUNC when it was longer than
// Bufs[0]), with recvfrom. With one datagram waiting, as a 50 pps stream's
// socket almost always has, it costs less than Recv: recvmmsg copies a
// message header each way and, after the datagram, tries the empty queue
// once more before it returns. Control data is not read.
func (b *Batch) RecvOne(fd int) (int, error) {
	buf := b.Bufs[0][:cap(b.Bufs[0])]
	nameLen := uint32(NameLen)
	// MSG_TRUNC makes recvfrom return the datagram's real length, which
	// tells a cut datagram apart.
	r, _, errno := unix.RawSyscall6(unix.SYS_RECVFROM, uintptr(fd), uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)),
		unix.MSG_DONTWAIT|unix.MSG_TRUNC, uintptr(unsafe.Pointer(&b.Names[0][0])), uintptr(unsafe.Pointer(&nameLen)))
	if errno != 0 {
		return 0, errno
	}
	b.Lens[0], b.Flags[0] = int(r), 0
	if int(r) > len(buf) {
		b.Lens[0], b.Flags[0] = len(buf), unix.MSG_TRUNC
	}
	if b.oob != nil {
		b.OOB[0] = b.oob[0][:0]
	}
	return 1, nil
}

// SendOne writes one datagram to name from fd without blocking, with
// sendto: for a single packet it costs less than Send's sendmmsg, which
// copies a message header in and its length back out.
func SendOne(fd int, pkt []byte, name *Name, nameLen int) error {
	var p unsafe.Pointer
	if len(pkt) > 0 {
		p = unsafe.Pointer(&pkt[0])
	}
	for {
		_, _, errno := unix.RawSyscall6(unix.SYS_SENDTO, uintptr(fd), uintptr(p), uintptr(len(pkt)),
			unix.MSG_DONTWAIT, uintptr(unsafe.Pointer(&name[0])), uintptr(nameLen))
		switch errno {
		case 0:
			return nil
		case unix.EINTR:
			continue
		}
		return errno
	}
}

// Send writes pkts[i] to names[i] (or to *one when one is non-nil) from fd,
// returning how many were sent. A partial count comes with the error that
// stopped the rest.
func (b *Batch) Send(fd int, pkts [][]byte, one *Name, nameLen int) (int, error) {
	b.armed = false
	total := 0
	for total < len(pkts) {
		k := len(pkts) - total
		if k > len(b.msgs) {
			k = len(b.msgs)
		}
		for i := 0; i < k; i++ {
			p := pkts[total+i]
			h := &b.msgs[i].hdr
			*h = unix.Msghdr{}
			if len(p) > 0 {
				b.iovs[i].Base = &p[0]
			} else {
				b.iovs[i].Base = nil
			}
			b.iovs[i].SetLen(len(p))
			if one != nil {
				h.Name = &one[0]
			} else {
				h.Name = &b.Names[total+i][0]
			}
			h.Namelen = uint32(nameLen)
			h.Iov = &b.iovs[i]
			h.Iovlen = 1
		}
		r, _, errno := unix.RawSyscall6(unix.SYS_SENDMMSG, uintptr(fd),
			uintptr(unsafe.Pointer(&b.msgs[0])), uintptr(k), unix.MSG_DONTWAIT, 0, 0)
		if errno == unix.EINTR {
			continue
		}
		if errno != 0 {
			return total, errno
		}
		total += int(r)
	}
	return total, nil
}

// Encode writes ap into n and returns the address length to pass to the
// kernel, or 0 when ap is not valid. IPv4 (and IPv4-mapped) addresses become
// sockaddr_in unless v6 is set, in which case everything is sockaddr_in6.
func Encode(n *Name, ap netip.AddrPort, v6 bool) int {
	if !ap.IsValid() {
		return 0
	}
	*n = Name{}
	a := ap.Addr()
	if !v6 {
		a = a.Unmap()
		if !a.Is4() {
			return 0
		}
		binary.NativeEndian.PutUint16(n[0:2], unix.AF_INET)
		binary.BigEndian.PutUint16(n[2:4], ap.Port())
		a4 := a.As4()
		copy(n[4:8], a4[:])
		return unix.SizeofSockaddrInet4
	}
	binary.NativeEndian.PutUint16(n[0:2], unix.AF_INET6)
	binary.BigEndian.PutUint16(n[2:4], ap.Port())
	a16 := a.As16()
	copy(n[8:24], a16[:])
	return unix.SizeofSockaddrInet6
}

// Decode reads a socket address written by the kernel. IPv4-mapped IPv6
// sources are unmapped so they compare equal to the IPv4 form in SDP.
func Decode(n *Name) netip.AddrPort {
	switch binary.NativeEndian.Uint16(n[0:2]) {
	case unix.AF_INET:
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte(n[4:8])), binary.BigEndian.Uint16(n[2:4]))
	case unix.AF_INET6:
		return netip.AddrPortFrom(netip.AddrFrom16([16]byte(n[8:24])).Unmap(), binary.BigEndian.Uint16(n[2:4]))
	}
	return netip.AddrPort{}
}

// SocketOptions tune every relay socket.
type SocketOptions struct {
	Buffer int // SO_RCVBUF and SO_SNDBUF in bytes; 0 leaves the kernel default
	TOS    int // IP_TOS / IPV6_TCLASS; 0 leaves it unset
}

// Bind opens a non-blocking UDP socket bound to ap. The family follows the
// address; an IPv6 socket bound to the unspecified address also takes IPv4.
func Bind(ap netip.AddrPort, o SocketOptions) (int, error) {
	v6 := ap.Addr().Is6() && !ap.Addr().Is4In6()
	family := unix.AF_INET
	if v6 {
		family = unix.AF_INET6
	}
	fd, err := unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP)
	if err != nil {
		return -1, fmt.Errorf("socket: %w", err)
	}
	fail := func(what string, err error) (int, error) {
		unix.Close(fd)
		return -1, fmt.Errorf("%s %s: %w", what, ap, err)
	}
	if o.Buffer > 0 {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, o.Buffer); err != nil {
			return fail("so_rcvbuf", err)
		}
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, o.Buffer); err != nil {
			return fail("so_sndbuf", err)
		}
	}
	if o.TOS > 0 {
		if v6 {
			err = unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_TCLASS, o.TOS)
		} else {
			err = unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_TOS, o.TOS)
		}
		if err != nil {
			return fail("tos", err)
		}
	}
	var sa unix.Sockaddr
	if v6 {
		sa = &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}
	} else {
		sa = &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().Unmap().As4()}
	}
	if err := unix.Bind(fd, sa); err != nil {
		return fail("bind", err)
	}
	return fd, nil
}

// LocalPort returns the port fd is bound to.
func LocalPort(fd int) (uint16, error) {
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return 0, err
	}
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return uint16(a.Port), nil
	case *unix.SockaddrInet6:
		return uint16(a.Port), nil
	}
	return 0, fmt.Errorf("getsockname: unexpected address %T", sa)
}

// Close closes a descriptor opened by Bind.
func Close(fd int) error { return unix.Close(fd) }
