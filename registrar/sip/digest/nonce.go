package digest

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"hash"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// A nonce is 32 bytes, base64url without padding (43 characters):
//
//	[0:8]   issue time, Unix milliseconds, big endian
//	[8:16]  a per-process counter, so every nonce is distinct and has an id
//	[16:32] HMAC-SHA256(key, [0:16] || the client's IPv6 or IPv4-mapped
//	        address) truncated to 128 bits
//
// The server keeps nothing per issued nonce: the MAC proves it issued the nonce
// and when, and to which address (the address is in the MAC, not in the
// nonce: it is only checked, never revealed). Only nonces that have been used successfully get a small nonce-count
// entry (see ncCache). The key lives in memory only, so after a restart older
// nonces fail the MAC check and are answered with stale=true, which phones
// follow silently.
const (
	nonceRawLen = 32
	nonceLen    = 43
	macLen      = 16
)

type nonceSigner struct {
	counter atomic.Uint64
	macs    sync.Pool // hash.Hash from hmac.New, keyed
}

func newNonceSigner(key []byte) *nonceSigner {
	if len(key) == 0 {
		key = make([]byte, 32)
		if _, err := rand.Read(key); err != nil {
			// crypto/rand.Read does not fail on supported platforms (Go 1.24+
			// crashes the program instead); keep the check for clarity.
			panic("digest: crypto/rand failed: " + err.Error())
		}
	}
	k := append([]byte(nil), key...)
	s := &nonceSigner{}
	s.macs.New = func() any { return hmac.New(sha256.New, k) }
	var start [8]byte
	_, _ = rand.Read(start[:])
	s.counter.Store(binary.BigEndian.Uint64(start[:]) >> 1)
	return s
}

// mac computes the nonce's MAC over its stamp and the client's address. An
// IPv4 address and its IPv4-mapped IPv6 form are the same client.
func (s *nonceSigner) mac(dst *[sha256.Size]byte, stamp []byte, client netip.Addr) {
	var msg [16 + 16]byte
	copy(msg[:16], stamp)
	ip := client.Unmap().As16()
	copy(msg[16:], ip[:])
	h := s.macs.Get().(hash.Hash)
	h.Reset()
	h.Write(msg[:])
	h.Sum(dst[:0])
	s.macs.Put(h)
}

// issue returns a new nonce stamped with now, for client.
func (s *nonceSigner) issue(now time.Time, client netip.Addr) string {
	var raw [nonceRawLen]byte
	binary.BigEndian.PutUint64(raw[0:8], uint64(now.UnixMilli()))
	binary.BigEndian.PutUint64(raw[8:16], s.counter.Add(1))
	var sum [sha256.Size]byte
	s.mac(&sum, raw[:16], client)
	copy(raw[16:], sum[:macLen])
	var out [nonceLen]byte
	base64.RawURLEncoding.Encode(out[:], raw[:])
	return string(out[:])
}

// open checks a nonce's MAC for client and returns its issue time and id.
func (s *nonceSigner) open(nonce string, client netip.Addr) (issued time.Time, id uint64, ok bool) {
	if len(nonce) != nonceLen {
		return time.Time{}, 0, false
	}
	var in [nonceLen]byte
	copy(in[:], nonce)
	var raw [nonceRawLen]byte
	if n, err := base64.RawURLEncoding.Decode(raw[:], in[:]); err != nil || n != nonceRawLen {
		return time.Time{}, 0, false
	}
	var sum [sha256.Size]byte
	s.mac(&sum, raw[:16], client)
	if !hmac.Equal(sum[:macLen], raw[16:]) {
		return time.Time{}, 0, false
	}
	ms := int64(binary.BigEndian.Uint64(raw[0:8]))
	return time.UnixMilli(ms), binary.BigEndian.Uint64(raw[8:16]), true
}

// ncCache remembers, for each nonce that has been used successfully, the highest
// nonce-count seen and a fingerprint of the request that used it, so a captured
// request cannot be replayed while its nonce is still fresh (RFC 7616 §3.3).
//
// It is sharded to keep lock hold times short under load, and each shard keeps
// two generations of maps that rotate every period (at least the nonce TTL): an
// entry lives between one and two periods, which covers the rest of its
// nonce's life, and forgetting expired nonces costs one map drop instead of a
// scan. The total size is bounded; when a shard is full new nonces are refused
// (the caller answers stale=true) rather than forgetting live ones, which would
// reopen a replay window.
type ncCache struct {
	shards   [ncShards]ncShard
	perShard int
}

const ncShards = 64

type ncShard struct {
	mu        sync.Mutex
	cur, prev map[uint64]ncEntry
	rotated   time.Time
	// addedMs is the latest wall-clock time (Unix ms) at which a nonce
	// was first used here, and prevUpToMs what it was when cur began:
	// every nonce in prev was first used at or before prevUpToMs.
	addedMs, prevUpToMs int64
	_                   [24]byte // keep shards on separate cache lines
}

type ncEntry struct {
	nc uint32
	fp uint64
}

type ncResult uint8

const (
	ncFresh          ncResult = iota // first use or a higher count
	ncRetransmission                 // same count, same request fingerprint
	ncReplay                         // count not higher, different request
	ncFull                           // no room to remember a new nonce
)

func newNCCache(maxEntries int) *ncCache {
	per := maxEntries / ncShards
	if per < 1 {
		per = 1
	}
	c := &ncCache{perShard: per}
	for i := range c.shards {
		c.shards[i].cur = make(map[uint64]ncEntry)
	}
	return c
}

// use records that nonce id, issued at issued, was used with count nc by a
// request with fingerprint fp. period is how long an entry must be kept
// (the nonce TTL). A zero fingerprint never matches, so callers that cannot
// identify retransmissions get strict nonce-count checking. The caller has
// checked that the nonce is not from the future: now ≥ issued - clockSkew.
func (c *ncCache) use(id uint64, nc uint32, fp uint64, issued, now time.Time, period time.Duration) ncResult {
	sh := &c.shards[id%ncShards]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if now.Sub(sh.rotated) >= period {
		if now.Sub(sh.rotated) >= 2*period {
			// Both generations are older than a nonce can live.
			sh.prev = nil
		} else {
			sh.prev = sh.cur
		}
		sh.cur = make(map[uint64]ncEntry, len(sh.cur)/2)
		sh.rotated = now
		sh.prevUpToMs = sh.addedMs
	}
	e, ok := sh.cur[id]
	// A nonce first used before cur began was first used at a wall-clock
	// time t ≤ prevUpToMs, and then, by the caller's check, issued ≤ t +
	// clockSkew. One issued later cannot be in prev, so nearly every new
	// nonce is looked up in one map, not two (a cold probe each: 1–2 %
	// of the registrar's CPU at 24,000 REGISTER/s). Wall-clock times on
	// both sides keep this true when the clock steps; the rotation itself
	// may follow the monotonic clock.
	if !ok && sh.prev != nil && issued.UnixMilli() <= sh.prevUpToMs+clockSkew.Milliseconds() {
		if e, ok = sh.prev[id]; ok {
			// Move it forward so it outlives the next rotation.
			delete(sh.prev, id)
			sh.cur[id] = e
		}
	}
	switch {
	case !ok:
		if len(sh.cur) >= c.perShard {
			return ncFull
		}
		sh.cur[id] = ncEntry{nc: nc, fp: fp}
		sh.addedMs = max(sh.addedMs, now.UnixMilli())
		return ncFresh
	case nc > e.nc:
		sh.cur[id] = ncEntry{nc: nc, fp: fp}
		return ncFresh
	case nc == e.nc && fp != 0 && fp == e.fp:
		return ncRetransmission
	default:
		return ncReplay
	}
}

// len returns the number of remembered nonces (for tests and metrics).
func (c *ncCache) len() int {
	n := 0
	for i := range c.shards {
		sh := &c.shards[i]
		sh.mu.Lock()
		n += len(sh.cur) + len(sh.prev)
		sh.mu.Unlock()
	}
	return n
}
