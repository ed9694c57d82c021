package upstream

import (
	"sync"
	"time"

	"github.com/edgewise-sip/edgewise/registrar/directory"
)

// heldContacts remembers which Contacts (user~edge) edgewise registered at
// Twilio and until when Twilio may still route a call to them: the expiry of
// the last registration, kept after a move or an unregistration until it
// would have lapsed, because Twilio may be routing a call to the old Contact
// as it changes. A call from Twilio to any other Contact is forged. Reads
// happen on every inbound INVITE, so they take a read lock only.
type heldContacts struct {
	mu     sync.RWMutex
	m      map[string]time.Time
	pruned int // size after the last prune; the next is due at twice it
}

func newHeldContacts() *heldContacts { return &heldContacts{m: make(map[string]time.Time)} }

// note records that user's Contact at edge is registered until until.
func (h *heldContacts) note(user, edge string, until time.Time, now time.Time) {
	k := directory.ContactUser(user, edge)
	h.mu.Lock()
	defer h.mu.Unlock()
	if until.After(h.m[k]) {
		h.m[k] = until
	}
	if len(h.m) > max(2*h.pruned, 1024) {
		for k, t := range h.m {
			if !t.After(now) {
				delete(h.m, k)
			}
		}
		h.pruned = len(h.m)
	}
}

// holds reports whether Twilio may route a call to user's Contact at edge.
func (h *heldContacts) holds(user, edge string, now time.Time) bool {
	h.mu.RLock()
	until, ok := h.m[directory.ContactUser(user, edge)]
	h.mu.RUnlock()
	return ok && until.After(now)
}

// HasContact reports whether edgewise has registered user's Contact at edge
// with Twilio, now or within the last registration period: the only
// Contacts a genuine call from Twilio can be addressed to.
func (m *Manager) HasContact(user, edge string) bool {
	return m.held.holds(user, edge, m.now())
}
