package location

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// A journal record is a version byte, the user, then the user's bindings. A
// compact hand-rolled encoding keeps the writer goroutine cheap under load;
// JSON would cost several times more CPU per REGISTER. Version 2 added each
// binding's Node; version 1 records still decode (with no node).
const (
	recordVersion   = 2
	recordVersionV1 = 1
)

var errCorrupt = errors.New("location: corrupt record")

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendAddrPort(b []byte, ap netip.AddrPort) []byte {
	// The binary form is length-prefixed so a zero AddrPort (empty) works.
	enc, _ := ap.MarshalBinary()
	b = binary.AppendUvarint(b, uint64(len(enc)))
	return append(b, enc...)
}

func appendTime(b []byte, t time.Time) []byte {
	if t.IsZero() {
		return binary.AppendVarint(b, 0)
	}
	return binary.AppendVarint(b, t.UnixNano())
}

func appendRecord(b []byte, user string, bs []Binding) []byte {
	b = append(b, recordVersion)
	b = appendString(b, user)
	b = binary.AppendUvarint(b, uint64(len(bs)))
	for i := range bs {
		x := &bs[i]
		b = appendString(b, x.Contact)
		b = binary.AppendUvarint(b, uint64(len(x.Params)))
		for _, p := range x.Params {
			b = appendString(b, p.Name)
			b = appendString(b, p.Value)
		}
		b = appendAddrPort(b, x.Source)
		b = appendAddrPort(b, x.Local)
		b = appendString(b, x.Transport)
		b = appendString(b, x.CallID)
		b = binary.AppendUvarint(b, uint64(x.CSeq))
		b = appendString(b, x.Branch)
		b = appendTime(b, x.Expires)
		b = appendTime(b, x.Updated)
		b = appendString(b, x.UserAgent)
		b = appendString(b, x.Node)
	}
	return b
}

type decoder struct {
	b   []byte
	err error
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err = errCorrupt
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.err = errCorrupt
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) string() string {
	n := d.uvarint()
	if d.err != nil {
		return ""
	}
	if n > uint64(len(d.b)) {
		d.err = errCorrupt
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}

func (d *decoder) addrPort() netip.AddrPort {
	n := d.uvarint()
	if d.err != nil {
		return netip.AddrPort{}
	}
	if n > uint64(len(d.b)) {
		d.err = errCorrupt
		return netip.AddrPort{}
	}
	var ap netip.AddrPort
	if err := ap.UnmarshalBinary(d.b[:n]); err != nil {
		d.err = fmt.Errorf("%w: address: %w", errCorrupt, err)
		return netip.AddrPort{}
	}
	d.b = d.b[n:]
	return ap
}

func (d *decoder) time() time.Time {
	ns := d.varint()
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns)
}

// EncodeRecord encodes user's bindings as the journal does, for stores
// shared by a cluster; DecodeRecord reads it back.
func EncodeRecord(user string, bs []Binding) []byte { return appendRecord(nil, user, bs) }

// DecodeRecord decodes what EncodeRecord made.
func DecodeRecord(b []byte) (string, []Binding, error) { return decodeRecord(b) }

// decodeRecord decodes a record. The strings are copied out of b, which
// bbolt only lends for the life of the transaction.
func decodeRecord(b []byte) (string, []Binding, error) {
	if len(b) == 0 || (b[0] != recordVersion && b[0] != recordVersionV1) {
		return "", nil, fmt.Errorf("%w: unknown version", errCorrupt)
	}
	version := b[0]
	d := decoder{b: b[1:]}
	user := d.string()
	n := d.uvarint()
	// Every binding takes well over one byte, so this bounds allocation by
	// the record size even when the count is garbage.
	if d.err != nil || user == "" || n > uint64(len(d.b)) {
		return "", nil, errCorrupt
	}
	bs := make([]Binding, 0, n)
	for i := uint64(0); i < n && d.err == nil; i++ {
		x := Binding{User: user}
		x.Contact = d.string()
		np := d.uvarint()
		if np > uint64(len(d.b)) {
			return "", nil, errCorrupt
		}
		for j := uint64(0); j < np && d.err == nil; j++ {
			x.Params = append(x.Params, Param{Name: d.string(), Value: d.string()})
		}
		x.Source = d.addrPort()
		x.Local = d.addrPort()
		x.Transport = internTransport(d.string())
		x.CallID = d.string()
		x.CSeq = uint32(d.uvarint())
		x.Branch = d.string()
		x.Expires = d.time()
		x.Updated = d.time()
		x.UserAgent = d.string()
		if version >= 2 {
			x.Node = d.string()
		}
		bs = append(bs, x)
	}
	if d.err != nil {
		return "", nil, d.err
	}
	if len(d.b) != 0 {
		return "", nil, fmt.Errorf("%w: %d trailing bytes", errCorrupt, len(d.b))
	}
	return user, bs, nil
}

// internTransport returns the shared constant for common transports so that
// loading many bindings does not keep one copy of "udp" each.
func internTransport(s string) string {
	switch s {
	case "udp":
		return "udp"
	case "tcp":
		return "tcp"
	case "tls":
		return "tls"
	case "ws":
		return "ws"
	case "wss":
		return "wss"
	}
	return s
}
