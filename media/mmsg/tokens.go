package mmsg

// Tokens maps the tokens a Poller reports back to what was registered
// under them. Tokens are small non-negative integers, reused once removed,
// so a lookup per event is one slice index, not a map probe. The zero
// value is ready; it is not safe for concurrent use (one event loop owns
// it).
type Tokens[T comparable] struct {
	vals []T
	free []int32
}

// Add stores v and returns its token.
func (t *Tokens[T]) Add(v T) int32 {
	if n := len(t.free); n > 0 {
		i := t.free[n-1]
		t.free = t.free[:n-1]
		t.vals[i] = v
		return i
	}
	t.vals = append(t.vals, v)
	return int32(len(t.vals) - 1)
}

// At returns what token i holds: the zero T for a removed or unknown
// token (WakeToken included).
func (t *Tokens[T]) At(i int32) T {
	if i < 0 || int(i) >= len(t.vals) {
		var zero T
		return zero
	}
	return t.vals[i]
}

// Remove frees token i for reuse.
func (t *Tokens[T]) Remove(i int32) {
	var zero T
	t.vals[i] = zero
	t.free = append(t.free, i)
}

// All returns every live value, for a loop that shuts down.
func (t *Tokens[T]) All() []T {
	var zero T
	out := make([]T, 0, len(t.vals)-len(t.free))
	for _, v := range t.vals {
		if v != zero {
			out = append(out, v)
		}
	}
	return out
}

// Reset forgets everything.
func (t *Tokens[T]) Reset() { t.vals, t.free = nil, nil }
