package media

import "math"

// RFC 3550 A.1: gaps up to maxDropout count as loss, packets up to
// maxMisorder behind the highest sequence number are late, not new, and
// anything else is a jump that restarts the count once confirmed by the next
// packet.
const (
	maxDropout  = 3000
	maxMisorder = 100
	seqMod      = 1 << 16
)

// rxStream is one leg's receive accounting: sequence numbers (loss) and
// interarrival jitter (RFC 3550 A.8) of the current SSRC. It is guarded by
// its session's lock.
type rxStream struct {
	started  bool
	ssrc     uint32
	maxSeq   uint16
	cycles   uint32 // sequence wraps, shifted left 16
	baseSeq  uint32
	badSeq   uint32
	received int64
	lostPrev int64 // loss of earlier SSRCs and restarted sequences

	// jitter, in seconds, so payload types of different clock rates can
	// share it; the transit baseline resets when the rate changes.
	jitter      float64
	haveTransit bool
	lastArrival int64 // ns
	lastTS      uint32
	lastRate    uint32
}

// lost is packets expected minus packets received, never below zero.
func (r *rxStream) lost() int64 {
	cur := int64(0)
	if r.started {
		expected := int64(r.cycles) + int64(r.maxSeq) - int64(r.baseSeq) + 1
		cur = max(expected-r.received, 0)
	}
	return r.lostPrev + cur
}

func (r *rxStream) restart(seq uint16) {
	r.lostPrev = r.lost()
	r.started = true
	r.baseSeq = uint32(seq)
	r.maxSeq = seq
	r.cycles = 0
	r.badSeq = seqMod + 1
	r.received = 0
}

// update accounts one valid packet. rate is the payload type's clock rate;
// skipJitter leaves jitter alone for packets whose timestamps do not advance
// with time (RFC 4733 events keep the event's start timestamp).
func (r *rxStream) update(ssrc uint32, seq uint16, ts uint32, rate uint32, skipJitter bool, now int64) {
	if !r.started || ssrc != r.ssrc {
		r.restart(seq)
		r.ssrc = ssrc
		r.haveTransit = false
		r.jitter = 0
	} else {
		udelta := seq - r.maxSeq
		switch {
		case udelta < maxDropout:
			if seq < r.maxSeq {
				r.cycles += seqMod
			}
			r.maxSeq = seq
		case udelta <= seqMod-maxMisorder:
			if uint32(seq) != r.badSeq {
				// A jump: wait for the next packet to confirm it.
				r.badSeq = (uint32(seq) + 1) & (seqMod - 1)
				return
			}
			// Two in a row: the sender restarted its sequence.
			r.restart(seq)
			r.haveTransit = false
		default:
			// Late or duplicate: counted, the highest stays.
		}
	}
	r.received++
	if skipJitter || rate == 0 {
		return
	}
	if r.haveTransit && rate == r.lastRate {
		// D(i-1,i) = (Rj - Ri) - (Sj - Si), in seconds; the timestamp
		// difference is taken as signed so a wrap is one step.
		d := float64(now-r.lastArrival)/1e9 - float64(int32(ts-r.lastTS))/float64(rate)
		r.jitter += (math.Abs(d) - r.jitter) / 16
	}
	r.haveTransit = true
	r.lastArrival = now
	r.lastTS = ts
	r.lastRate = rate
}
