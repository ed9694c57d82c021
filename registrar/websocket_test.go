package registrar

import (
	"strings"
	"sync"
	"testing"
	"time"
)

// TestWebSocketBindings registers a browser-style contact (RFC 7118 §5: a
// .invalid host, transport=ws) over a real WebSocket connection, and checks
// that the binding routes to the connection, drives subscribers like a
// phone's, and goes when the connection closes while a desk phone's binding
// of the same user stays.
func TestWebSocketBindings(t *testing.T) {
	e := newEnv(t, nil)
	var mu sync.Mutex
	var counts []int
	e.table.Subscribe(func(user string, live int) {
		if user == "alice" {
			mu.Lock()
			counts = append(counts, live)
			mu.Unlock()
		}
	})

	desk := newPhone(t, e, "UDP", "alice", "wonderland")
	desk.register(200, "Contact: "+desk.contact(5070))

	browser := newPhone(t, e, "WS", "alice", "wonderland")
	const contact = "sip:k3j2l1@df7jal23ls0d.invalid;transport=ws"
	res := browser.register(200, `Contact: <`+contact+`>;reg-id=1;+sip.instance="<urn:uuid:6b1e9f1c-58a1-4a8b-a64f-0b5a3c5d1a11>"`, "Expires: 600")
	got := contactsOf(res)
	if got[contact] != 600 || len(got) != 2 {
		t.Fatalf("200 OK contacts = %v, want the browser's with 600 s and the desk phone's", got)
	}
	if v := res.GetHeaders("Contact"); !strings.Contains(v[0].Value()+v[1].Value(), `+sip.instance="<urn:uuid:6b1e9f1c`) {
		t.Errorf("200 OK drops the instance: %v", v)
	}
	var wsSource string
	for _, b := range e.table.Lookup("alice") {
		if b.Contact != contact {
			continue
		}
		if b.Transport != "ws" || !b.Source.Addr().IsLoopback() || b.Source.Port() == 0 || b.Source.Port() == e.srv.Addr("ws").Port() {
			t.Fatalf("browser binding = %+v, want transport ws from the browser's connection", b)
		}
		wsSource = b.Source.String()
	}
	if wsSource == "" {
		t.Fatalf("no browser binding in %+v", e.table.Lookup("alice"))
	}

	// The browser goes away: its connection closes, its binding goes, the
	// desk phone's stays.
	browser.ua.Close()
	deadline := time.Now().Add(5 * time.Second)
	for len(e.table.Lookup("alice")) != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("bindings after the websocket closed: %+v", e.table.Lookup("alice"))
		}
		time.Sleep(10 * time.Millisecond)
	}
	if b := e.table.Lookup("alice"); b[0].Transport != "udp" {
		t.Fatalf("left %+v, want the desk phone's", b)
	}
	for {
		mu.Lock()
		c := append([]int(nil), counts...)
		mu.Unlock()
		if len(c) >= 3 {
			if c[0] != 1 || c[1] != 2 || c[2] != 1 {
				t.Fatalf("subscriber saw %v, want [1 2 1]", c)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("subscriber saw %v, want [1 2 1]", c)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := e.logs.count("websocket closed, bindings removed"); n != 1 {
		t.Errorf("logged the removal %d times", n)
	}
}
