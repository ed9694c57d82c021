package location

import (
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/edgewise-sip/edgewise/test/kit"
)

func wsBinding(contact, source string, expires time.Time) Binding {
	b := binding(contact, expires)
	b.Transport = "ws"
	b.Source = netip.MustParseAddrPort(source)
	b.Params = nil
	return b
}

// TestRemoveSource removes the bindings of one WebSocket connection, for
// every user registered over it, and nothing else: not a UDP binding from
// the same address, not another connection's.
func TestRemoveSource(t *testing.T) {
	clk := newClock()
	tb, err := Open(filepath.Join(t.TempDir(), "edgewise.db"), kit.Logger(t), Settings{Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer tb.Close()
	lives := make(chan [2]any, 16)
	tb.Subscribe(func(user string, live int) { lives <- [2]any{user, live} })

	exp := clk.Now().Add(time.Hour)
	udpSame := binding("sip:alice@192.0.2.10:5062", exp)
	udpSame.Source = netip.MustParseAddrPort("192.0.2.10:40000")
	add(t, tb, "alice", wsBinding("sip:a1@x.invalid;transport=ws", "192.0.2.10:40000", exp), udpSame)
	add(t, tb, "bob", wsBinding("sip:b1@x.invalid;transport=ws", "192.0.2.10:40000", exp))
	add(t, tb, "carol", wsBinding("sip:c1@y.invalid;transport=ws", "192.0.2.10:40001", exp))
	for range 3 {
		<-lives
	}

	n, err := tb.RemoveSource("ws", netip.MustParseAddrPort("192.0.2.10:40000"))
	if err != nil || n != 2 {
		t.Fatalf("RemoveSource = %d, %v; want 2", n, err)
	}
	if b := tb.Lookup("alice"); len(b) != 1 || b[0].Transport != "udp" {
		t.Errorf("alice keeps %+v, want the udp binding", b)
	}
	if b := tb.Lookup("bob"); len(b) != 0 {
		t.Errorf("bob keeps %+v", b)
	}
	if b := tb.Lookup("carol"); len(b) != 1 {
		t.Errorf("carol lost her binding on another connection")
	}
	got := map[any]any{}
	for range 2 {
		select {
		case l := <-lives:
			got[l[0]] = l[1]
		case <-time.After(5 * time.Second):
			t.Fatalf("subscribers told %v, want alice 1 and bob 0", got)
		}
	}
	if got["alice"] != 1 || got["bob"] != 0 {
		t.Errorf("subscribers told %v, want alice 1 and bob 0", got)
	}
	if n, err := tb.RemoveSource("ws", netip.MustParseAddrPort("192.0.2.99:1")); n != 0 || err != nil {
		t.Errorf("RemoveSource of an unknown connection = %d, %v", n, err)
	}
}

// TestWebSocketBindingsDroppedOnOpen: the connections died with the
// process, so their bindings are not loaded (nor kept in the file).
func TestWebSocketBindingsDroppedOnOpen(t *testing.T) {
	clk := newClock()
	path := filepath.Join(t.TempDir(), "edgewise.db")
	tb, err := Open(path, kit.Logger(t), Settings{Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	exp := clk.Now().Add(time.Hour)
	add(t, tb, "alice", wsBinding("sip:a1@x.invalid;transport=ws", "192.0.2.10:40000", exp), binding("sip:alice@192.0.2.10:5062", exp))
	wss := wsBinding("sip:b1@x.invalid;transport=ws", "192.0.2.10:40001", exp)
	wss.Transport = "wss"
	add(t, tb, "bob", wss)
	if err := tb.Close(); err != nil {
		t.Fatal(err)
	}
	tb, err = Open(path, kit.Logger(t), Settings{Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	if b := tb.Lookup("alice"); len(b) != 1 || b[0].Transport != "udp" {
		t.Errorf("alice after reopen: %+v, want only the udp binding", b)
	}
	if b := tb.Lookup("bob"); len(b) != 0 {
		t.Errorf("bob after reopen: %+v", b)
	}
	tb.Close()
	if n := journalRecords(t, path); n != 1 {
		t.Errorf("file holds %d records, want 1", n)
	}
}
