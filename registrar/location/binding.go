// Package location is the registrar's bindings table: which contacts each user
// has registered, from where, until when. It is an in-memory map sharded by
// user, written through to a bbolt file so that bindings survive a restart,
// and swept for expiry.
//
// It imports nothing of edgewise.
package location

import (
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Binding is one registered contact of a user (RFC 3261 §10).
type Binding struct {
	// User is the address-of-record's user part.
	User string
	// Contact is the contact URI as the phone gave it, URI parameters
	// included, without angle brackets or header parameters, e.g.
	// "sip:alice@192.0.2.10:5060;transport=udp".
	Contact string
	// Params are the Contact header parameters other than expires, in order,
	// e.g. +sip.instance, reg-id, q (RFC 5626, RFC 3840).
	Params []Param
	// Source is the address the REGISTER came from (received/rport): requests
	// to this contact must be sent there, which is what crosses NAT.
	Source netip.AddrPort
	// Local is the address of the socket that received the REGISTER.
	// Requests to the contact should leave from it: that is the address the
	// phone's NAT pinhole was opened towards.
	Local netip.AddrPort
	// Transport is the lower-case transport the REGISTER came over: udp,
	// tcp, ws or wss.
	Transport string
	// CallID and CSeq are from the REGISTER that last changed the binding,
	// for the ordering rules of RFC 3261 §10.3 step 7.
	CallID string
	CSeq   uint32
	// Branch is the top Via branch of that REGISTER, so a stateless registrar
	// can tell a UDP retransmission (same branch) from a reordered request.
	Branch string
	// Expires is when the binding lapses.
	Expires time.Time
	// Updated is when the binding was last written by a REGISTER.
	Updated time.Time
	// UserAgent is the phone's User-Agent header, for status pages.
	UserAgent string
	// Node is the cluster node the REGISTER arrived through ("" on a single
	// node). As with a Path header (RFC 3327), requests to the contact must
	// leave from that node: the phone's NAT pinhole is open toward it.
	Node string
	// Reachable is the qualify state. It is not persisted.
	Reachable Reachability
}

// Param is a Contact header parameter. Value is empty for a flag parameter.
type Param struct {
	Name  string
	Value string
}

// Reachability is the result of qualifying a contact with OPTIONS.
type Reachability uint8

const (
	// ReachUnknown means not qualified yet (or qualify is off).
	ReachUnknown Reachability = iota
	// Reachable means the contact answered the last OPTIONS.
	Reachable
	// Unreachable means the last OPTIONS got no answer. The binding is kept,
	// but routing skips it (see Table.Routable).
	Unreachable
)

func (r Reachability) String() string {
	switch r {
	case Reachable:
		return "reachable"
	case Unreachable:
		return "unreachable"
	default:
		return "unknown"
	}
}

// ConnectionBound reports whether the contact is only reachable over the
// connection its REGISTER came on: a WebSocket one (RFC 7118 §5), whose
// browser listens nowhere and whose Contact host is a .invalid name.
func (b *Binding) ConnectionBound() bool { return b.Transport == "ws" || b.Transport == "wss" }

// Live reports whether the binding has not expired at now.
func (b *Binding) Live(now time.Time) bool { return b.Expires.After(now) }

// Param returns the value of the Contact parameter name (case-insensitive).
func (b *Binding) Param(name string) (string, bool) {
	for _, p := range b.Params {
		if strings.EqualFold(p.Name, name) {
			return p.Value, true
		}
	}
	return "", false
}

// InstanceID returns the +sip.instance parameter without quotes (RFC 5626).
func (b *Binding) InstanceID() string {
	v, _ := b.Param("+sip.instance")
	return strings.Trim(v, `"`)
}

// RegID returns the reg-id parameter (RFC 5626), or 0.
func (b *Binding) RegID() int {
	v, _ := b.Param("reg-id")
	n, _ := strconv.Atoi(v)
	return n
}

// Q returns the q parameter (RFC 3261 §20.10) in thousandths; 1000 when absent
// or malformed, so that contacts without q sort first as RFC 3261 suggests.
func (b *Binding) Q() int {
	v, ok := b.Param("q")
	if !ok {
		return 1000
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || f < 0 || f > 1 {
		return 1000
	}
	return int(f*1000 + 0.5)
}

// Clone returns a copy that shares no mutable memory with b.
func (b Binding) Clone() Binding {
	b.Params = slices.Clone(b.Params)
	return b
}

func cloneBindings(bs []Binding) []Binding {
	if len(bs) == 0 {
		return nil
	}
	out := make([]Binding, len(bs))
	for i := range bs {
		out[i] = bs[i].Clone()
	}
	return out
}

func countLive(bs []Binding, now time.Time) int {
	n := 0
	for i := range bs {
		if bs[i].Live(now) {
			n++
		}
	}
	return n
}
