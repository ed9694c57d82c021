package location

import (
	"net/netip"
	"testing"
	"time"
)

// TestRecordVersions: a record keeps each binding's node, and a journal
// written before nodes existed (version 1) still loads.
func TestRecordVersions(t *testing.T) {
	b := Binding{
		Contact: "sip:alice@192.0.2.10:5060", Source: netip.MustParseAddrPort("192.0.2.10:5060"),
		Transport: "udp", CallID: "c1", CSeq: 7, Expires: time.Unix(1_800_000_000, 0), Node: "node-b",
	}
	user, bs, err := DecodeRecord(EncodeRecord("alice", []Binding{b}))
	if err != nil || user != "alice" || len(bs) != 1 || bs[0].Node != "node-b" || bs[0].Contact != b.Contact || bs[0].CSeq != 7 {
		t.Fatalf("round trip: %v %q %+v", err, user, bs)
	}
	// The same binding as version 1 wrote it: no node at the end.
	v1 := EncodeRecord("alice", []Binding{b})
	v1[0] = recordVersionV1
	v1 = v1[:len(v1)-len("node-b")-1]
	user, bs, err = DecodeRecord(v1)
	if err != nil || user != "alice" || len(bs) != 1 || bs[0].Node != "" || bs[0].Contact != b.Contact {
		t.Fatalf("version 1: %v %q %+v", err, user, bs)
	}
}
