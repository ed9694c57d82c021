package mmsg

import (
	"net/netip"
	"testing"

	"golang.org/x/sys/unix"
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

// TestOneLoopback: RecvOne and SendOne carry a datagram and its source, and
// RecvOne flags a datagram longer than its buffer as cut.
func TestOneLoopback(t *testing.T) {
	lo := netip.MustParseAddrPort("127.0.0.1:0")
	a, err := Bind(lo, SocketOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer Close(a)
	b, err := Bind(lo, SocketOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer Close(b)
	pa, _ := LocalPort(a)
	pb, _ := LocalPort(b)
	var to Name
	l := Encode(&to, netip.AddrPortFrom(lo.Addr(), pb), false)
	in := NewBatch(4, 8, 0)
	if _, err := in.RecvOne(b); err == nil {
		t.Error("empty socket read without EAGAIN")
	}
	for _, tc := range []struct {
		send  string
		want  string
		trunc bool
	}{{"short", "short", false}, {"eightbyt", "eightbyt", false}, {"too long for it", "too long", true}} {
		if err := SendOne(a, []byte(tc.send), &to, l); err != nil {
			t.Fatal(err)
		}
		n, err := in.RecvOne(b)
		if n != 1 || err != nil {
			t.Fatalf("RecvOne: %d, %v", n, err)
		}
		got := string(in.Bufs[0][:in.Lens[0]])
		trunc := in.Flags[0]&unix.MSG_TRUNC != 0
		if got != tc.want || trunc != tc.trunc || Decode(&in.Names[0]) != netip.AddrPortFrom(lo.Addr(), pa) {
			t.Errorf("sent %q: got %q trunc=%v from %v", tc.send, got, trunc, Decode(&in.Names[0]))
		}
	}
	// Recv after RecvOne still arms its own headers.
	SendOne(a, []byte("x"), &to, l)
	SendOne(a, []byte("y"), &to, l)
	if n, err := in.Recv(b); n != 2 || err != nil {
		t.Fatalf("Recv after RecvOne: %d, %v", n, err)
	}
}
