package frontend

import (
	"net/netip"
	"sync"
	"time"
)

// Connection bounds for TCP, TLS and WebSocket: a connection costs a
// socket, a goroutine and buffers, and a stranger can open them by the
// thousand without sending a byte. Each must complete its handshake and send
// its first SIP message within Connections.SetupTimeout, and may then stay
// silent for at most Connections.IdleTimeout: RFC 5626 CRLF keepalives
// ("\r\n\r\n", answered "\r\n") count as traffic, so a phone that keeps its
// flow alive is never cut. At most Connections.Max connections are open, at
// most Connections.MaxPerSource from one address; one over either is closed
// at accept, while the connections already open go on.
type Connections struct {
	Max          int           // every connection, all listeners; 0 means DefaultMaxConns
	MaxPerSource int           // from one IP; 0 means DefaultMaxConnsPerSource
	SetupTimeout time.Duration // TLS handshake + first SIP message; 0 means DefaultConnSetupTimeout
	IdleTimeout  time.Duration // silence after that; 0 means DefaultConnIdleTimeout
}

// Defaults for Connections. The idle timeout is longer than the longest
// registration a phone is granted (one hour by default): a phone that
// re-registers on its connection and sends nothing else is never cut. Many
// phones of an office share one NAT address, hence the per-source figure.
const (
	DefaultMaxConns          = 10000
	DefaultMaxConnsPerSource = 256
	DefaultConnSetupTimeout  = 20 * time.Second
	DefaultConnIdleTimeout   = 65 * time.Minute
)

func (c Connections) withDefaults() Connections {
	if c.Max <= 0 {
		c.Max = DefaultMaxConns
	}
	if c.MaxPerSource <= 0 {
		c.MaxPerSource = DefaultMaxConnsPerSource
	}
	if c.SetupTimeout <= 0 {
		c.SetupTimeout = DefaultConnSetupTimeout
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = DefaultConnIdleTimeout
	}
	return c
}

// connTable counts open connections, server-wide and per source.
type connTable struct {
	mu        sync.Mutex
	total     int
	perSource map[netip.Addr]int
	// logged limits refusal log lines to one per source a minute.
	logged map[netip.Addr]time.Time
}

// admit takes a place for a connection from src, or reports why not ("" when
// admitted).
func (t *connTable) admit(src netip.Addr, lim Connections) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.perSource == nil {
		t.perSource = make(map[netip.Addr]int)
	}
	switch {
	case t.total >= lim.Max:
		return "connection limit reached"
	case t.perSource[src] >= lim.MaxPerSource:
		return "per-source connection limit reached"
	}
	t.total++
	t.perSource[src]++
	return ""
}

// release gives back a place taken by admit.
func (t *connTable) release(src netip.Addr) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.total--
	if t.perSource[src]--; t.perSource[src] <= 0 {
		delete(t.perSource, src)
	}
}

// firstRefusal reports whether a refusal for src should be logged.
func (t *connTable) firstRefusal(src netip.Addr, now time.Time) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if last, ok := t.logged[src]; ok && now.Sub(last) < time.Minute {
		return false
	}
	if t.logged == nil || len(t.logged) > 4096 {
		t.logged = make(map[netip.Addr]time.Time)
	}
	t.logged[src] = now
	return true
}

// Open returns the connections open now, server-wide.
func (s *Server) OpenConns() int {
	s.conns.mu.Lock()
	defer s.conns.mu.Unlock()
	return s.conns.total
}

// admitConn takes a place for a connection from src on transport, counting
// and logging a refusal (once per source a minute).
func (s *Server) admitConn(src netip.Addr, transport string) bool {
	why := s.conns.admit(src, s.settings.Connections)
	if why == "" {
		return true
	}
	s.stats.ConnRefused.Add(1)
	if s.conns.firstRefusal(src, time.Now()) {
		s.log.Warn("connection refused: "+why+" (logged once per source a minute)", "transport", transport, "source", src.String(),
			"max", s.settings.Connections.Max, "max_per_source", s.settings.Connections.MaxPerSource)
	}
	return false
}
