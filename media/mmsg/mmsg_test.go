package mmsg

import (
	"net/netip"
	"testing"
)

func TestEncodeDecode(t *testing.T) {
	for _, tc := range []struct {
		ap   netip.AddrPort
		v6   bool
		want netip.AddrPort
	}{
		{netip.MustParseAddrPort("192.0.2.1:5004"), false, netip.MustParseAddrPort("192.0.2.1:5004")},
		{netip.MustParseAddrPort("[::ffff:192.0.2.1]:5004"), false, netip.MustParseAddrPort("192.0.2.1:5004")},
		{netip.MustParseAddrPort("192.0.2.1:5004"), true, netip.MustParseAddrPort("192.0.2.1:5004")}, // v4-mapped on a v6 socket
		{netip.MustParseAddrPort("[2001:db8::1]:65535"), true, netip.MustParseAddrPort("[2001:db8::1]:65535")},
	} {
		var n Name
		if Encode(&n, tc.ap, tc.v6) == 0 {
			t.Fatalf("%v: not encoded", tc.ap)
		}
		if got := Decode(&n); got != tc.want {
			t.Errorf("%v (v6 %v): decoded %v", tc.ap, tc.v6, got)
		}
	}
	var n Name
	if Encode(&n, netip.MustParseAddrPort("[2001:db8::1]:1"), false) != 0 || Encode(&n, netip.AddrPort{}, true) != 0 {
		t.Error("unencodable address encoded")
	}
}

func TestBatchLoopback(t *testing.T) {
	lo := netip.MustParseAddrPort("127.0.0.1:0")
	a, err := Bind(lo, SocketOptions{Buffer: 1 << 16, TOS: 0xb8})
	if err != nil {
		t.Fatal(err)
	}
	defer Close(a)
	b, err := Bind(lo, SocketOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer Close(b)
	pb, err := LocalPort(b)
	if err != nil {
		t.Fatal(err)
	}
	var to Name
	l := Encode(&to, netip.AddrPortFrom(lo.Addr(), pb), false)
	out := NewBatch(4, 0, 0)
	pkts := [][]byte{[]byte("one"), []byte("two"), []byte("three")}
	if n, err := out.Send(a, pkts, &to, l); n != 3 || err != nil {
		t.Fatalf("sent %d: %v", n, err)
	}
	in := NewBatch(8, 64, 0)
	n, err := in.Recv(b)
	if err != nil || n != 3 {
		t.Fatalf("received %d: %v", n, err)
	}
	pa, _ := LocalPort(a)
	for i, want := range pkts {
		if got := string(in.Bufs[i][:in.Lens[i]]); got != string(want) || Decode(&in.Names[i]).Port() != pa {
			t.Errorf("message %d: %q from %v", i, got, Decode(&in.Names[i]))
		}
	}
	if _, err := in.Recv(b); err == nil {
		t.Error("empty socket read without EAGAIN")
	}
}
