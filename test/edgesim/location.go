package edgesim

import (
	"errors"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"
)

// Binding is one registered contact of an AOR. The location table holds one
// binding per (User, Contact) for all edges together, so a contact that
// re-registers through another edge moves there instead of doubling.
type Binding struct {
	User    string `json:"user"`
	Contact string `json:"contact"`
	// Edge, IP and Port say where the REGISTER that wrote the binding
	// arrived: the edge name and the edge IP (not the sender's).
	Edge      string `json:"edge"`
	IP        string `json:"ip"`
	Port      int    `json:"port"`
	Transport string `json:"transport"`
	// Source is the sender's address as seen by the edge socket.
	Source       string    `json:"source"`
	CallID       string    `json:"call_id"`
	CSeq         uint32    `json:"cseq"`
	ExpiresAt    time.Time `json:"expires_at"`
	RegisteredAt time.Time `json:"registered_at"`
	// ExpiresIn is the remaining lifetime in whole seconds when listed.
	ExpiresIn int `json:"expires_in"`
}

var (
	// errTooManyBindings: the REGISTER would leave the AOR with more
	// bindings than Rules.MaxRegistrations.
	errTooManyBindings = errors.New("too many registrations for this AOR")
	// errOutOfOrder: RFC 3261 §10.3 step 7, a binding's Call-ID was seen
	// with a CSeq at least as high.
	errOutOfOrder = errors.New("request out of order for this Call-ID")
)

// location is the binding table shared by every edge.
type location struct {
	mu    sync.Mutex
	users map[string]map[string]*Binding // user → contact URI → binding
}

func newLocation() *location {
	return &location{users: map[string]map[string]*Binding{}}
}

// contactUpdate is one Contact of a REGISTER with its granted expiry.
type contactUpdate struct {
	contact string
	expires int // seconds; 0 removes the binding
}

// registration is what a REGISTER says about where and when it arrived.
type registration struct {
	user, edge, ip, transport, source, callID string
	port                                      int
	cseq                                      uint32
	now                                       time.Time
}

// apply writes all updates of one REGISTER or none of them, and returns the
// AOR's bindings afterwards.
func (l *location) apply(r registration, updates []contactUpdate, maxBindings int) ([]Binding, error) {
	l.mu.Lock()
	defer l.mu.Unlock()

	current := l.users[r.user]
	next := make(map[string]*Binding, len(current)+len(updates))
	for c, b := range current {
		if b.ExpiresAt.After(r.now) {
			next[c] = b
		}
	}
	live := len(next)
	for _, u := range updates {
		if old, ok := next[u.contact]; ok && old.CallID == r.callID && r.cseq <= old.CSeq {
			return nil, errOutOfOrder
		}
		if u.expires == 0 {
			delete(next, u.contact)
			continue
		}
		next[u.contact] = &Binding{
			User:         r.user,
			Contact:      u.contact,
			Edge:         r.edge,
			IP:           r.ip,
			Port:         r.port,
			Transport:    r.transport,
			Source:       r.source,
			CallID:       r.callID,
			CSeq:         r.cseq,
			ExpiresAt:    r.now.Add(time.Duration(u.expires) * time.Second),
			RegisteredAt: r.now,
		}
	}
	// Only growth is refused: an AOR already at the limit may still refresh
	// or remove its bindings.
	if len(next) > maxBindings && len(next) > live {
		return nil, errTooManyBindings
	}
	l.store(r.user, next)
	return listOf(next, r.now), nil
}

// removeAll handles "Contact: *" with Expires: 0 (RFC 3261 §10.3 step 6).
func (l *location) removeAll(r registration) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, b := range l.users[r.user] {
		if b.CallID == r.callID && r.cseq <= b.CSeq {
			return errOutOfOrder
		}
	}
	delete(l.users, r.user)
	return nil
}

func (l *location) store(user string, m map[string]*Binding) {
	if len(m) == 0 {
		delete(l.users, user)
		return
	}
	l.users[user] = m
}

// list returns live bindings of user, or of everyone when user is empty,
// sorted by user, then contact.
func (l *location) list(user string, now time.Time) []Binding {
	l.mu.Lock()
	defer l.mu.Unlock()
	if user != "" {
		return listOf(l.users[user], now)
	}
	var out []Binding
	for _, u := range slices.Sorted(maps.Keys(l.users)) {
		out = append(out, listOf(l.users[u], now)...)
	}
	return out
}

func listOf(m map[string]*Binding, now time.Time) []Binding {
	out := make([]Binding, 0, len(m))
	for _, b := range m {
		if !b.ExpiresAt.After(now) {
			continue
		}
		c := *b
		// Round up so a binding listed as live never shows 0.
		c.ExpiresIn = int((c.ExpiresAt.Sub(now) + time.Second - 1) / time.Second)
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b Binding) int {
		if c := strings.Compare(a.User, b.User); c != 0 {
			return c
		}
		return strings.Compare(a.Contact, b.Contact)
	})
	return out
}

// sweep drops bindings that expired at or before now and returns how many.
func (l *location) sweep(now time.Time) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for u, m := range l.users {
		for c, b := range m {
			if !b.ExpiresAt.After(now) {
				delete(m, c)
				n++
			}
		}
		if len(m) == 0 {
			delete(l.users, u)
		}
	}
	return n
}

func (l *location) clear() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.users = map[string]map[string]*Binding{}
}
