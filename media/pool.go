package media

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"

	"github.com/edgewise-sip/edgewise/media/mmsg"
)

// ErrNoPorts means every free port pair of the range failed to bind or none
// is free; the B2BUA answers such a call with 503.
var ErrNoPorts = errors.New("media: no free rtp port pair")

// PortRange is an inclusive UDP port range. RTP takes the even port of each
// pair and RTCP the odd one above it (RFC 3550 §11), so Min should be even;
// an odd Min or a Max that cuts a pair leaves that port unused.
type PortRange struct {
	Min, Max int
}

// String gives "20000-29999".
func (r PortRange) String() string { return fmt.Sprintf("%d-%d", r.Min, r.Max) }

// pairs lists the even RTP ports of the range in ascending order.
func (r PortRange) pairs() []uint16 {
	var out []uint16
	first := r.Min
	if first%2 != 0 {
		first++
	}
	for p := first; p+1 <= r.Max && p+1 <= 65535; p += 2 {
		if p <= 0 {
			continue
		}
		out = append(out, uint16(p))
	}
	return out
}

// pair is one allocated RTP/RTCP port pair with both sockets bound.
type pair struct {
	port     uint16 // RTP; RTCP is port+1
	rtp, rti int    // descriptors (rti: RTCP)
}

// PortPool hands out RTP/RTCP port pairs from a range. Free pairs form a FIFO
// so a released pair is reused last: late packets of an ended call then find
// a closed port rather than a new call. A pair whose ports cannot be bound
// (another program holds one) stays free and is skipped for this allocation.
// Every method is safe for concurrent use; the lock is never taken on the
// packet path.
type PortPool struct {
	bind netip.Addr
	opts mmsg.SocketOptions

	mu     sync.Mutex
	free   []uint16 // ring buffer of free RTP ports
	head   int
	nfree  int
	inUse  map[uint16]bool
	total  int
	failed uint64 // binds that failed (pair skipped)
}

// NewPortPool makes a pool over r whose sockets bind to addr.
func NewPortPool(r PortRange, addr netip.Addr, opts mmsg.SocketOptions) (*PortPool, error) {
	ports := r.pairs()
	if len(ports) == 0 {
		return nil, fmt.Errorf("media: port range %s holds no even/odd pair", r)
	}
	if !addr.IsValid() {
		return nil, errors.New("media: pool needs a bind address")
	}
	return &PortPool{
		bind:  addr,
		opts:  opts,
		free:  ports,
		nfree: len(ports),
		inUse: make(map[uint16]bool, len(ports)),
		total: len(ports),
	}, nil
}

// PoolStats is a snapshot of the pool, counted in pairs.
type PoolStats struct {
	Pairs      int    `json:"pairs"`
	InUse      int    `json:"in_use"`
	Free       int    `json:"free"`
	BindFailed uint64 `json:"bind_failed"`
}

// Stats returns the pool's counts; InUse+Free is always Pairs.
func (p *PortPool) Stats() PoolStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return PoolStats{Pairs: p.total, InUse: len(p.inUse), Free: p.nfree, BindFailed: p.failed}
}

// allocate takes the least recently used free pair that binds. Binding
// happens under the lock so two callers never race for the same port.
func (p *PortPool) allocate() (pair, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var lastErr error
	for tries := p.nfree; tries > 0; tries-- {
		port := p.pop()
		pr, err := p.bindPair(port)
		if err == nil {
			p.inUse[port] = true
			return pr, nil
		}
		// Skipped: it stays free, at the back of the queue.
		p.failed++
		lastErr = err
		p.push(port)
	}
	if lastErr != nil {
		return pair{}, fmt.Errorf("%w (last: %w)", ErrNoPorts, lastErr)
	}
	return pair{}, ErrNoPorts
}

func (p *PortPool) bindPair(port uint16) (pair, error) {
	rtp, err := mmsg.Bind(netip.AddrPortFrom(p.bind, port), p.opts)
	if err != nil {
		return pair{}, err
	}
	rtcp, err := mmsg.Bind(netip.AddrPortFrom(p.bind, port+1), p.opts)
	if err != nil {
		mmsg.Close(rtp)
		return pair{}, err
	}
	return pair{port: port, rtp: rtp, rti: rtcp}, nil
}

// release closes the pair's sockets and returns its ports. Releasing a pair
// twice is a bug in the caller; it is refused so the counts stay exact.
func (p *PortPool) release(pr pair) error {
	// Close first: the port must be unbound before anyone may take it again.
	err := errors.Join(mmsg.Close(pr.rtp), mmsg.Close(pr.rti))
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.inUse[pr.port] {
		return fmt.Errorf("media: port %d released twice", pr.port)
	}
	delete(p.inUse, pr.port)
	p.push(pr.port)
	return err
}

func (p *PortPool) pop() uint16 {
	port := p.free[p.head]
	p.head = (p.head + 1) % len(p.free)
	p.nfree--
	return port
}

func (p *PortPool) push(port uint16) {
	p.free[(p.head+p.nfree)%len(p.free)] = port
	p.nfree++
}
