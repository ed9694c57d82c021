package frontend

import (
	"io"
	"sync"
)

// tracked is the set of connections a stream listener (TCP, TLS, WS) has
// accepted, so that stopping the server closes every one of them, and none
// is added once stopping began. Listeners embed it; mu also guards their
// own per-connection tables, so that a connection enters the set and those
// tables in one step.
type tracked[C interface {
	comparable
	io.Closer
}] struct {
	mu     sync.Mutex
	conns  map[C]struct{}
	closed chan struct{} // closed by closeAll
	once   sync.Once
}

func newTracked[C interface {
	comparable
	io.Closer
}]() tracked[C] {
	return tracked[C]{conns: make(map[C]struct{}), closed: make(chan struct{})}
}

// addLocked adds c unless the listener is stopping; the caller holds mu.
func (t *tracked[C]) addLocked(c C) bool {
	select {
	case <-t.closed:
		return false
	default:
	}
	t.conns[c] = struct{}{}
	return true
}

// stopping reports whether closeAll has begun.
func (t *tracked[C]) stopping() bool {
	select {
	case <-t.closed:
		return true
	default:
		return false
	}
}

// closeAll closes the listener socket ln and every connection in the set,
// once. The connections are closed outside mu: their Close removes them
// from the set.
func (t *tracked[C]) closeAll(ln io.Closer) {
	t.once.Do(func() {
		t.mu.Lock()
		close(t.closed)
		conns := make([]C, 0, len(t.conns))
		for c := range t.conns {
			conns = append(conns, c)
		}
		t.mu.Unlock()
		ln.Close()
		for _, c := range conns {
			c.Close()
		}
	})
}
