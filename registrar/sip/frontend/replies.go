package frontend

import (
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
// Entries live between replyKeep and twice that (two generations of maps,
// rotated), which covers the retransmissions at 0.5, 1.5 and 3.5 s of a
// client with the default T1. The size is bounded: when a generation is
// full, further responses are not remembered, and their retransmissions are
// handled as before.
type replies struct {
	shards [replyShards]replyShard
	max    int // entries per shard and generation
}

const (
	replyShards = 16
	replyKeep   = 2 * time.Second
)

type replyShard struct {
	mu        sync.Mutex
	cur, prev map[uint64]reply
	rotated   time.Time
	_         [40]byte // keep shards on separate cache lines
}

type reply struct {
	dst netip.AddrPort
	b   []byte
}

func newReplies(maxEntries int) *replies {
	r := &replies{max: max(1, maxEntries/replyShards/2)}
	for i := range r.shards {
		r.shards[i].cur = make(map[uint64]reply)
	}
	return r
}

// put remembers b, sent to dst, as the response to the request with
// fingerprint fp. b is copied.
func (r *replies) put(fp uint64, dst netip.AddrPort, b []byte, now time.Time) {
	sh := &r.shards[fp%replyShards]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	sh.rotate(now)
	if len(sh.cur) >= r.max {
		return
	}
	sh.cur[fp] = reply{dst: dst, b: append([]byte(nil), b...)}
}

// get returns the response remembered for fp.
func (r *replies) get(fp uint64, now time.Time) (reply, bool) {
	sh := &r.shards[fp%replyShards]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	sh.rotate(now)
	if rep, ok := sh.cur[fp]; ok {
		return rep, true
	}
	rep, ok := sh.prev[fp]
	return rep, ok
}

func (sh *replyShard) rotate(now time.Time) {
	age := now.Sub(sh.rotated)
	if age < replyKeep {
		return
	}
	if age >= 2*replyKeep {
		sh.prev = nil // both generations are older than a retransmission
	} else {
		sh.prev = sh.cur
	}
	sh.cur = make(map[uint64]reply, len(sh.cur)/2)
	sh.rotated = now
}

func (r *replies) len() int {
	n := 0
	for i := range r.shards {
		sh := &r.shards[i]
		sh.mu.Lock()
		n += len(sh.cur) + len(sh.prev)
		sh.mu.Unlock()
	}
	return n
}
