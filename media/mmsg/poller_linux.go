package mmsg

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// WakeToken is the token of the event Poller.Wake causes.
const WakeToken = -1

// Poller is an epoll set of sockets served by one goroutine, which waits
// for it in Go's netpoller, as a goroutine waits for a socket: the epoll
// set is itself readable while any socket in it is, so it is handed to the
// runtime as a non-blocking file. Blocking a thread in epoll_wait instead
// makes the runtime retake that thread's P and wake the goroutine on
// another (a scheduler round trip per wake-up, and under load stalls of
// 100 ms and more on a 2-CPU box: media/README.md). An eventfd in the set
// lets other goroutines wake the waiter.
//
// Add, Remove and Wait belong to the waiting goroutine; Wake may be called
// from any goroutine until Close.
type Poller struct {
	epfd, evfd int
	ep         *os.File // epfd handed to the netpoller
	rc         syscall.RawConn
	// poll is the callback the netpoller runs: one epoll_wait that does
	// not block, into events; made once so that waiting allocates nothing.
	poll   func(uintptr) bool
	events []unix.EpollEvent
	ready  int
	err    error
}

// NewPoller makes an epoll set whose Wait reports at most maxEvents events.
func NewPoller(maxEvents int) (*Poller, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create: %w", err)
	}
	evfd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: WakeToken}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, evfd, &ev); err != nil {
		unix.Close(epfd)
		unix.Close(evfd)
		return nil, fmt.Errorf("epoll_ctl: %w", err)
	}
	if err := unix.SetNonblock(epfd, true); err != nil {
		unix.Close(epfd)
		unix.Close(evfd)
		return nil, fmt.Errorf("epoll set non-blocking: %w", err)
	}
	ep := os.NewFile(uintptr(epfd), "epoll")
	rc, err := ep.SyscallConn()
	if err != nil {
		ep.Close()
		unix.Close(evfd)
		return nil, fmt.Errorf("epoll set: %w", err)
	}
	p := &Poller{epfd: epfd, evfd: evfd, ep: ep, rc: rc, events: make([]unix.EpollEvent, maxEvents)}
	p.poll = func(uintptr) bool {
		// A zero timeout never sleeps, so the raw form is safe
		// (epoll_pwait: the one every Linux architecture has) and skips
		// the hand-off of the goroutine's P that a syscall costs.
		r, _, errno := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(p.epfd),
			uintptr(unsafe.Pointer(&p.events[0])), uintptr(len(p.events)), 0, 0, 0)
		p.ready, p.err = int(r), nil
		if errno != 0 {
			p.ready, p.err = 0, errno
		}
		return p.err != nil || p.ready > 0
	}
	return p, nil
}

// Add watches fd for input, reported as token (not WakeToken).
func (p *Poller) Add(fd int, token int32) error {
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: token}
	return unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, fd, &ev)
}

// Remove stops watching fd.
func (p *Poller) Remove(fd int) error {
	return unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, fd, nil)
}

// Wait returns the ready events, parking until there is one. Under load
// something is almost always ready: the first poll, which does not wait,
// answers and the goroutine never parks. An event with WakeToken comes from
// Wake and is already consumed. An interrupted poll returns no events and
// no error. The slice is valid until the next Wait.
func (p *Poller) Wait() ([]unix.EpollEvent, error) {
	if err := p.rc.Read(p.poll); err != nil {
		return nil, fmt.Errorf("waiting for the epoll set: %w", err)
	}
	if p.err != nil {
		if errors.Is(p.err, unix.EINTR) {
			return nil, nil
		}
		return nil, fmt.Errorf("epoll_wait: %w", p.err)
	}
	evs := p.events[:p.ready]
	for _, ev := range evs {
		if ev.Fd == WakeToken {
			var buf [8]byte
			_, _ = unix.Read(p.evfd, buf[:])
			break
		}
	}
	return evs, nil
}

// Full reports whether a Wait returned as many events as it can hold:
// more may be ready.
func (p *Poller) Full(evs []unix.EpollEvent) bool { return len(evs) == len(p.events) }

// Wake makes the set readable, which unparks the waiter (or makes its next
// Wait return at once).
func (p *Poller) Wake() error {
	one := [8]byte{1}
	// EAGAIN means the counter is already non-zero: a wake is pending.
	if _, err := unix.Write(p.evfd, one[:]); err != nil && !errors.Is(err, unix.EAGAIN) {
		return err
	}
	return nil
}

// Close releases the set and its place in the netpoller; the sockets in it
// stay open.
func (p *Poller) Close() error {
	return errors.Join(p.ep.Close(), unix.Close(p.evfd))
}
