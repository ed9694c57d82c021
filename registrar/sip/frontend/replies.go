package frontend

import (
	"encoding/binary"
	"net/netip"
	"sync"
	"time"
)

// replies remembers the final responses the stateless path sent over UDP,
// by the fingerprint of the request (its source and bytes), so that a
// retransmission of the request gets the same response again without being
// parsed or handled twice (RFC 3261 §17.2.2: a non-INVITE server transaction
// answers retransmissions with its last response). That matters most when
// the server is briefly starved: a phone retransmits every 500 ms and more,
// and handling each copy afresh would cost as much as a new REGISTER, while
// answering a retransmitted first REGISTER with a new challenge (a new nonce)
// confuses clients that already answered the first one.
//
// Entries live between replyKeep and twice that (two generations, rotated),
// which covers the retransmissions at 0.5, 1.5 and 3.5 s of a client with
// the default T1. The size is bounded in bytes: when a generation is full,
// further responses are not remembered, and their retransmissions are
// handled as before.
//
// A generation is one byte slab holding the responses back to back and an
// index from fingerprint to offset. Neither holds a pointer, so the garbage
// collector never scans them, and a rotation reuses the oldest generation's
// slab and index: at tens of thousands of responses a second, remembering
// them allocates nothing once the slabs have grown.
type replies struct {
	shards [replyShards]replyShard
	max    int // bytes per shard and generation
}

const (
	replyShards = 16
	replyKeep   = 2 * time.Second
	// replyHeader is a record's head: the destination (16 bytes of
	// address, a byte saying IPv4, 2 of port) and the response's length.
	replyHeader = 16 + 1 + 2 + 4
)

type replyShard struct {
	mu        sync.Mutex
	cur, prev replyGen
	rotated   time.Time
	_         [40]byte // keep shards on separate cache lines
}

type replyGen struct {
	at   map[uint64]uint32 // fingerprint → offset of the record in slab
	slab []byte
}

func newReplies(maxBytes int) *replies {
	r := &replies{max: max(1, maxBytes/replyShards/2)}
	for i := range r.shards {
		r.shards[i].cur.at = make(map[uint64]uint32)
		r.shards[i].prev.at = make(map[uint64]uint32)
	}
	return r
}

// put remembers b, sent to dst, as the response to the request with
// fingerprint fp. b is copied.
func (r *replies) put(fp uint64, dst netip.AddrPort, b []byte, now time.Time) {
	if dst.Addr().Zone() != "" {
		return // link-local with a zone: rare, not worth a record format
	}
	sh := &r.shards[fp%replyShards]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	sh.rotate(now)
	g := &sh.cur
	if len(g.slab)+replyHeader+len(b) > r.max {
		return
	}
	off := len(g.slab)
	a := dst.Addr()
	var head [replyHeader]byte
	a16 := a.As16()
	copy(head[:16], a16[:])
	if a.Is4() {
		head[16] = 1
	}
	binary.BigEndian.PutUint16(head[17:], dst.Port())
	binary.BigEndian.PutUint32(head[19:], uint32(len(b)))
	g.slab = append(append(g.slab, head[:]...), b...)
	g.at[fp] = uint32(off)
}

// get appends the response remembered for fp to buf and returns it with its
// destination. The bytes are copied because a rotation reuses the slab.
func (r *replies) get(fp uint64, buf []byte, now time.Time) ([]byte, netip.AddrPort, bool) {
	sh := &r.shards[fp%replyShards]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	sh.rotate(now)
	g := &sh.cur
	off, ok := g.at[fp]
	if !ok {
		g = &sh.prev
		if off, ok = g.at[fp]; !ok {
			return buf, netip.AddrPort{}, false
		}
	}
	rec := g.slab[off:]
	a := netip.AddrFrom16([16]byte(rec[:16]))
	if rec[16] == 1 {
		a = a.Unmap()
	}
	dst := netip.AddrPortFrom(a, binary.BigEndian.Uint16(rec[17:]))
	n := binary.BigEndian.Uint32(rec[19:])
	return append(buf, rec[replyHeader:replyHeader+n]...), dst, true
}

// rotate makes the current generation the previous one once it is
// replyKeep old, reusing the oldest generation's memory for the new one.
func (sh *replyShard) rotate(now time.Time) {
	age := now.Sub(sh.rotated)
	if age < replyKeep {
		return
	}
	old := sh.prev
	if age >= 2*replyKeep {
		// Both generations are older than a retransmission: drop both,
		// but keep the bigger slab for reuse.
		if cap(sh.cur.slab) > cap(old.slab) {
			old, sh.cur = sh.cur, old
		}
		clear(sh.cur.at)
		sh.cur.slab = sh.cur.slab[:0]
	}
	sh.prev = sh.cur
	clear(old.at)
	sh.cur = replyGen{at: old.at, slab: old.slab[:0]}
	sh.rotated = now
}

func (r *replies) len() int {
	n := 0
	for i := range r.shards {
		sh := &r.shards[i]
		sh.mu.Lock()
		n += len(sh.cur.at) + len(sh.prev.at)
		sh.mu.Unlock()
	}
	return n
}
