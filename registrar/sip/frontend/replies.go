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
// A generation's responses sit back to back in one byte slab, and one
// index of fingerprints serves both generations: a set-associative table
// (two slots a set, both in one cache line) whose slots name the
// generation and offset of their record. Nearly every lookup misses (only
// retransmissions hit), and a miss now reads one cache line where two hash
// maps, one per generation, cost two probes with their cache and TLB
// misses. Nothing here holds a pointer, so the garbage collector never scans
// it; a rotation reuses the oldest generation's slab and invalidates its
// slots by their generation number, so remembering allocates nothing once
// the slabs have grown. When both slots of a set are taken by live records,
// the newer response replaces the older one: that retransmission is then
// handled afresh, as when the slab is full. The index starts small and
// doubles while it is more than two thirds full, up to one slot for each
// record both generations' slabs can hold at the typical response size, so
// its memory follows the request rate: 32 KB a socket at first, 8 MB at
// most (4 MB at 24,000 requests a second).
type replies struct {
	shards  [replyShards]replyShard
	max     int // bytes per shard and generation
	maxSets int // most sets per shard, a power of two
}

const (
	replyShards = 16
	replyKeep   = 2 * time.Second
	// replyHeader is a record's head: the destination (16 bytes of
	// address, a byte saying IPv4, 2 of port) and the response's length.
	replyHeader = 16 + 1 + 2 + 4
	// replyWays is the slots per set: two 16-byte slots, so a set never
	// straddles a cache line.
	replyWays = 2
	// replyMinSets is the index's first size per shard.
	replyMinSets = 64
	// replyTypical is the response size the index is sized for: a 200
	// listing a contact, or a 401 with its challenge, is 400–600 bytes.
	replyTypical = 512
)

type replyShard struct {
	mu      sync.Mutex
	gen     uint32      // the current generation; gen-1 is the previous one
	slabs   [2][]byte   // slabs[g%2] holds generation g's records
	slots   []replySlot // len is a power of two times replyWays
	added   [2]int      // records put in each generation (by gen%2)
	rotated time.Time
	// 128 bytes in all: shards never share a cache line.
}

// replySlot is one index entry; fp 0 is an empty slot (fingerprints are
// never 0).
type replySlot struct {
	fp  uint64
	gen uint32
	off uint32 // of the record in slabs[gen%2]
}

func newReplies(maxBytes int) *replies {
	r := &replies{max: max(1, maxBytes/replyShards/2)}
	// At most a slot for each record of both generations at the typical
	// size: at the default bound 32,768 slots, 512 KB, per shard.
	want := 2 * max(1, r.max/replyTypical) / replyWays
	r.maxSets = 1
	for r.maxSets < want {
		r.maxSets <<= 1
	}
	return r
}

// set returns fp's set in slots. The low bits choose the shard, so the set
// comes from the bits above them.
func set(slots []replySlot, fp uint64) []replySlot {
	sets := len(slots) / replyWays
	i := (int(fp/replyShards) & (sets - 1)) * replyWays
	return slots[i : i+replyWays : i+replyWays]
}

// place stores s in its set of slots, in s.fp's own slot if it has one,
// else a free slot, else the one holding the previous generation's record,
// else the first (when s is of the current generation).
func (sh *replyShard) place(slots []replySlot, s replySlot) {
	set := set(slots, s.fp)
	slot := -1
	for i := range set {
		if set[i].fp == s.fp && sh.live(&set[i]) {
			slot = i
			break
		}
	}
	if slot < 0 {
		for i := range set {
			if !sh.live(&set[i]) {
				slot = i
				break
			}
			if set[i].gen != sh.gen && (slot < 0 || s.gen == sh.gen) {
				slot = i
			}
		}
	}
	if slot < 0 {
		if s.gen != sh.gen {
			return // both hold current records, which are worth more
		}
		slot = 0
	}
	set[slot] = s
}

// grow sizes the index for the records the slabs hold: allocated on first
// use (a socket that never answers statelessly costs nothing) and doubled,
// live slots carried over, while it is more than two thirds full.
func (r *replies) grow(sh *replyShard) {
	if sh.slots == nil {
		sh.slots = make([]replySlot, min(replyMinSets, r.maxSets)*replyWays)
		return
	}
	sets := len(sh.slots) / replyWays
	if sets >= r.maxSets || 3*(sh.added[0]+sh.added[1]) <= 2*len(sh.slots) {
		return
	}
	old := sh.slots
	sh.slots = make([]replySlot, 2*len(old))
	for i := range old {
		if sh.live(&old[i]) {
			sh.place(sh.slots, old[i])
		}
	}
}

// live reports whether a slot's record belongs to a generation still kept.
func (sh *replyShard) live(s *replySlot) bool {
	return s.fp != 0 && (s.gen == sh.gen || s.gen == sh.gen-1)
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
	slab := &sh.slabs[sh.gen%2]
	if len(*slab)+replyHeader+len(b) > r.max {
		return
	}
	r.grow(sh)
	off := len(*slab)
	a := dst.Addr()
	var head [replyHeader]byte
	a16 := a.As16()
	copy(head[:16], a16[:])
	if a.Is4() {
		head[16] = 1
	}
	binary.BigEndian.PutUint16(head[17:], dst.Port())
	binary.BigEndian.PutUint32(head[19:], uint32(len(b)))
	if need := len(*slab) + replyHeader + len(b); need > cap(*slab) {
		// Double, up to the bound: append's growth for large slices
		// (a quarter at a time) reallocated each slab a dozen times
		// while it grew to its working size.
		grown := make([]byte, len(*slab), min(max(2*cap(*slab), need, 64<<10), r.max))
		copy(grown, *slab)
		*slab = grown
	}
	*slab = append(append(*slab, head[:]...), b...)
	sh.place(sh.slots, replySlot{fp: fp, gen: sh.gen, off: uint32(off)})
	sh.added[sh.gen%2]++
}

// get appends the response remembered for fp to buf and returns it with its
// destination. The bytes are copied because a rotation reuses the slab.
func (r *replies) get(fp uint64, buf []byte, now time.Time) ([]byte, netip.AddrPort, bool) {
	sh := &r.shards[fp%replyShards]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	sh.rotate(now)
	if sh.slots == nil {
		return buf, netip.AddrPort{}, false
	}
	set := set(sh.slots, fp)
	for i := range set {
		s := &set[i]
		if s.fp != fp || !sh.live(s) {
			continue
		}
		rec := sh.slabs[s.gen%2][s.off:]
		a := netip.AddrFrom16([16]byte(rec[:16]))
		if rec[16] == 1 {
			a = a.Unmap()
		}
		dst := netip.AddrPortFrom(a, binary.BigEndian.Uint16(rec[17:]))
		n := binary.BigEndian.Uint32(rec[19:])
		return append(buf, rec[replyHeader:replyHeader+n]...), dst, true
	}
	return buf, netip.AddrPort{}, false
}

// rotate starts a new generation once the current one is replyKeep old. The
// new generation reuses the slab of the one it replaces, whose slots no
// longer count as live.
func (sh *replyShard) rotate(now time.Time) {
	age := now.Sub(sh.rotated)
	if age < replyKeep {
		return
	}
	if age >= 2*replyKeep {
		// Both generations are older than a retransmission: drop both.
		sh.gen += 2
		sh.slabs[0], sh.slabs[1] = sh.slabs[0][:0], sh.slabs[1][:0]
		sh.added = [2]int{}
	} else {
		sh.gen++
		sh.slabs[sh.gen%2] = sh.slabs[sh.gen%2][:0]
		sh.added[sh.gen%2] = 0
	}
	sh.rotated = now
}

func (r *replies) len() int {
	n := 0
	for i := range r.shards {
		sh := &r.shards[i]
		sh.mu.Lock()
		for j := range sh.slots {
			if sh.live(&sh.slots[j]) {
				n++
			}
		}
		sh.mu.Unlock()
	}
	return n
}
