package frontend

import (
	"errors"
	"testing"
)

// FuzzFrameLimit feeds a client's byte stream to the WebSocket frame
// limiter whole and split in two at every fuzzed point: it must never
// panic, and how the bytes arrive (one read or two) must not change its
// verdict.
func FuzzFrameLimit(f *testing.F) {
	masked := func(op byte, n int) []byte {
		b := []byte{0x80 | op, 0x80 | byte(n), 1, 2, 3, 4}
		return append(b, make([]byte, n)...)
	}
	f.Add(masked(1, 5), 3)
	f.Add(append(masked(1, 125), masked(9, 0)...), 7)
	f.Add([]byte{0x81, 0xfe, 0x00, 0x10, 1, 2, 3, 4}, 2)                         // 16-bit length
	f.Add([]byte{0x81, 0xff, 0, 0, 0, 0, 0xff, 0, 0, 0, 1, 2, 3, 4}, 9)          // 64-bit, too large
	f.Add([]byte{0x01, 0x85, 1, 2, 3, 4, 0, 0, 0, 0, 0, 0x80, 0x85, 1, 2, 3}, 5) // fragments
	f.Add([]byte{0x81, 0x05, 'h', 'e', 'l', 'l', 'o'}, 1)                        // unmasked
	f.Fuzz(func(t *testing.T, stream []byte, cut int) {
		var whole frameLimit
		errWhole := whole.feed(stream)
		if cut < 0 {
			cut = -cut
		}
		if len(stream) > 0 {
			cut %= len(stream) + 1
		} else {
			cut = 0
		}
		var split frameLimit
		errSplit := split.feed(stream[:cut])
		if errSplit == nil {
			errSplit = split.feed(stream[cut:])
		}
		if !errors.Is(errSplit, errWhole) && (errSplit != nil || errWhole != nil) {
			t.Fatalf("whole stream: %v; split at %d: %v", errWhole, cut, errSplit)
		}
	})
}
