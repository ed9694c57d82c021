package media

import (
	"math"
	"testing"
	"time"
)

func TestRxStream(t *testing.T) {
	ms := int64(time.Millisecond)
	type pkt struct {
		seq     uint16
		arrival int64 // ms
		ssrc    uint32
	}
	seq := func(from uint16, n int, startMs, stepMs int64) []pkt {
		var out []pkt
		for i := range n {
			out = append(out, pkt{from + uint16(i), startMs + int64(i)*stepMs, 1})
		}
		return out
	}
	tests := []struct {
		name     string
		pkts     []pkt
		lost     int64
		jitterMs float64 // -1: don't check
	}{
		{"steady", seq(0, 100, 0, 20), 0, 0},
		{"wrap", seq(65500, 100, 0, 20), 0, 0},
		{"gap", append(seq(0, 10, 0, 20), seq(15, 10, 300, 20)...), 5, 0},
		{"gap across wrap", append(seq(65530, 4, 0, 20), seq(2, 4, 160, 20)...), 4, 0},
		{"reordered", []pkt{{0, 0, 1}, {2, 40, 1}, {1, 41, 1}, {3, 60, 1}}, 0, -1},
		{"duplicate", []pkt{{0, 0, 1}, {1, 20, 1}, {1, 21, 1}, {2, 40, 1}}, 0, -1},
		{"late beyond misorder counted, not a restart", append(seq(0, 300, 0, 20), pkt{100, 6000, 1}), 0, -1},
		// A jump confirmed by the next packet restarts the count; the loss
		// before it is kept.
		{"restart", append(append(seq(0, 5, 0, 20), pkt{7, 140, 1}), append([]pkt{{30000, 160, 1}}, seq(30001, 5, 180, 20)...)...), 2, -1},
		{"new ssrc", append(seq(0, 5, 0, 20), pkt{9000, 100, 2}, pkt{9002, 140, 2}), 1, -1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var r rxStream
			for _, p := range tc.pkts {
				// Timestamps follow the sequence: 160 per packet at 8 kHz.
				ts := uint32(p.seq-tc.pkts[0].seq) * 160
				r.update(p.ssrc, p.seq, ts, 8000, false, p.arrival*ms)
			}
			if got := r.lost(); got != tc.lost {
				t.Errorf("lost %d, want %d", got, tc.lost)
			}
			if tc.jitterMs >= 0 && math.Abs(r.jitter*1000-tc.jitterMs) > 1e-6 {
				t.Errorf("jitter %.3f ms, want %.3f", r.jitter*1000, tc.jitterMs)
			}
		})
	}

	t.Run("jitter converges to the mean deviation", func(t *testing.T) {
		// Arrivals alternate 10 ms and 30 ms apart for 20 ms of media:
		// |D| is always 10 ms, so J → 10 ms (RFC 3550 A.8).
		var r rxStream
		at := int64(0)
		for i := range 500 {
			r.update(1, uint16(i), uint32(i)*160, 8000, false, at)
			if i%2 == 0 {
				at += 10 * ms
			} else {
				at += 30 * ms
			}
		}
		if math.Abs(r.jitter*1000-10) > 0.01 {
			t.Errorf("jitter %.3f ms, want 10", r.jitter*1000)
		}
	})
	t.Run("events do not count for jitter", func(t *testing.T) {
		var r rxStream
		for i := range 50 {
			// RFC 4733: every packet of an event carries its start timestamp.
			r.update(1, uint16(i), 8000, 8000, true, int64(i)*20*ms)
		}
		if r.jitter != 0 || r.lost() != 0 {
			t.Errorf("jitter %v lost %d", r.jitter, r.lost())
		}
	})
	t.Run("48 kHz", func(t *testing.T) {
		var r rxStream
		for i := range 100 {
			r.update(1, uint16(i), uint32(i)*960, 48000, false, int64(i)*20*ms)
		}
		if r.jitter > 1e-9 {
			t.Errorf("jitter %v", r.jitter)
		}
	})
}
