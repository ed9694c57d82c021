package calls

import (
	"net/netip"
	"sync"
	"time"
)

// sourceLog decides whether a refusal is worth a log line: the first from
// each source within sourceLogEvery. A flood of forged requests then costs a
// line per source, not per request, and the table stays bounded (it is
// forgotten whole when full: at worst some sources log again early).
type sourceLog struct {
	mu   sync.Mutex
	seen map[netip.Addr]time.Time
}

const (
	sourceLogEvery = time.Minute
	sourceLogMax   = 4096
)

// first reports whether a refusal from a at now should be logged.
func (l *sourceLog) first(a netip.Addr, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if last, ok := l.seen[a]; ok && now.Sub(last) < sourceLogEvery {
		return false
	}
	if l.seen == nil || len(l.seen) >= sourceLogMax {
		l.seen = make(map[netip.Addr]time.Time)
	}
	l.seen[a] = now
	return true
}
