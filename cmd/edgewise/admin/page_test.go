package admin

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// fixtureStatus is shaped like the daemon's status document: the primary
// edge is down, its users have moved to the second edge, one call is up.
const fixtureStatus = `{
  "version": "test",
  "config": {"path": "/etc/edgewise.yaml", "edges": ["ashburn", "umatilla"],
    "last_reload": {"time": "2026-01-02T03:04:05Z", "trigger": "sighup", "ok": true, "changed": ["twilio.edges"]}},
  "edges": [
    {"name": "umatilla", "state": "up", "active": true, "ips": [{"ip": "127.0.0.2", "state": "up", "last_rtt_ms": 1.5, "last_error": ""}]},
    {"name": "ashburn", "state": "down", "active": false, "reason": "no answer", "ips": [{"ip": "127.0.0.1", "state": "down", "last_rtt_ms": 0, "last_error": "timeout after 4s"}]}
  ],
  "users": [{"user": "alice", "contacts": [{"uri": "sip:alice@127.0.0.9:5062", "source": "127.0.0.9:5062", "transport": "udp", "expires_in": 300, "reachable": "yes"}],
    "upstream": {"edge": "umatilla", "state": "registered", "last_error": ""}}],
  "events": [
    {"at": "2026-01-02T03:04:06Z", "kind": "edge_failover", "severity": "warn", "text": "active edge ashburn → umatilla: no answer"},
    {"at": "2026-01-02T03:04:05Z", "kind": "reload", "severity": "info", "text": "config reload (sighup) → 2: changed twilio.edges"}
  ],
  "calls": [{"id": "c1", "direction": "outbound", "user": "alice", "from": "alice", "to": "+15550100", "state": "answered", "edge": "umatilla",
    "media": {"legs": [{"side": "A", "remote": "127.0.0.9:4000", "rx": {"packets": 1234, "bytes": 5678, "lost": 2}, "tx": {"packets": 1200, "bytes": 5600}}]},
    "browser": {"ice": "connected", "dtls": "connected", "srtp": {"rx": {"packets": 1240}, "tx": {"packets": 1201}}}}]
}`

func fixtureServer(t *testing.T) *Server {
	t.Helper()
	// Unknown fields are refused so that the fixture follows the real
	// document's field names.
	dec := json.NewDecoder(strings.NewReader(fixtureStatus))
	dec.DisallowUnknownFields()
	var doc Status
	if err := dec.Decode(&doc); err != nil {
		t.Fatal(err)
	}
	// httptest's requests say "Host: example.com".
	return New(Options{Status: func() Status { return doc }, AllowedHosts: []string{"example.com"}}, nil)
}

func TestPageShowsDownEdge(t *testing.T) {
	s := fixtureServer(t)
	s.SetToken("s3cret")

	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	if rec.Code != http.StatusUnauthorized {
		t.Fatalf("page without token: code %d, want 401", rec.Code)
	}

	req := httptest.NewRequest("GET", "/", nil)
	req.Header.Set("Authorization", "Bearer s3cret")
	rec = httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		t.Fatalf("code %d: %s", rec.Code, rec.Body)
	}
	if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "text/html") {
		t.Fatalf("content type %q", ct)
	}
	body := rec.Body.String()
	for _, want := range []string{
		`<tr class="edge-down" data-edge="ashburn" data-state="down">`, // colour
		`&#x2716; down`, // and text
		`timeout after 4s`,
		`data-user="alice" data-edge="umatilla"`,
		`sip:alice@127.0.0.9:5062`,
		`rx 1234/5678/2 · tx 1200/5600`,
		`browser (WebRTC): ICE connected, DTLS connected · SRTP rx 1240 · tx 1201`,
		`twilio.edges`,
		`sighup`,
		`EventSource("v1/events?view=html")`,
		`<tr class="sev-warn" data-kind="edge_failover">`,
		`active edge ashburn → umatilla: no answer`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	// Configured order: ashburn before umatilla although status lists it second.
	if a, u := strings.Index(body, `data-edge="ashburn"`), strings.Index(body, `data-edge="umatilla" data-state`); a < 0 || u < 0 || a > u {
		t.Errorf("edges not in configured order (ashburn at %d, umatilla at %d)", a, u)
	}
	if t.Failed() {
		t.Log(body)
	}

	rec = httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/nope", nil))
	if rec.Code != http.StatusNotFound {
		t.Fatalf("/nope: code %d, want 404", rec.Code)
	}
}

// readEvent reads one server-sent event: its name and joined data.
func readEvent(t *testing.T, r *bufio.Reader) (string, string) {
	t.Helper()
	var name string
	var data []string
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("read event: %v", err)
		}
		line = strings.TrimSuffix(line, "\n")
		switch {
		case line == "":
			return name, strings.Join(data, "\n")
		case strings.HasPrefix(line, "event: "):
			name = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			data = append(data, strings.TrimPrefix(line, "data: "))
		}
	}
}

func TestEventsEndWithClient(t *testing.T) {
	s := fixtureServer(t)
	done := make(chan string, 2)
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.Handler().ServeHTTP(w, r)
		done <- r.URL.String()
	}))
	defer ts.Close()

	for _, tc := range []struct{ query, event, want string }{
		{"", "status", `"ashburn"`},
		{"?view=html", "html", `edge-down`},
	} {
		ctx, cancel := context.WithCancel(context.Background())
		req, _ := http.NewRequestWithContext(ctx, "GET", ts.URL+"/v1/events"+tc.query, nil)
		resp, err := ts.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
			t.Fatalf("content type %q", ct)
		}
		br := bufio.NewReader(resp.Body)
		// Two events: the first at once, the second a tick later.
		for range 2 {
			name, data := readEvent(t, br)
			if name != tc.event || !strings.Contains(data, tc.want) {
				t.Fatalf("event %q data %.200q, want %q containing %q", name, data, tc.event, tc.want)
			}
			if tc.event == "status" && !json.Valid([]byte(data)) {
				t.Fatalf("status event is not JSON: %.200q", data)
			}
		}
		cancel()
		resp.Body.Close()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatalf("events handler %s still running after the client went away", tc.query)
		}
	}
}

func TestEventsEndOnShutdown(t *testing.T) {
	s := fixtureServer(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	served := make(chan error, 1)
	go func() { served <- s.Serve(ctx, ln) }()

	resp, err := http.Get("http://" + ln.Addr().String() + "/v1/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	readEvent(t, br)

	cancel()
	// Shutdown waits for the stream; it returns nil only if the stream
	// ended by itself instead of running into the drain deadline.
	select {
	case err := <-served:
		if err != nil {
			t.Fatalf("Serve: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after shutdown")
	}
}

// TestPageCSP: the policy allows exactly the page's own inline script and
// style as served, so a script injected into the page would not run, and
// the page cannot be framed.
func TestPageCSP(t *testing.T) {
	s := fixtureServer(t)
	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	csp := rec.Header().Get("Content-Security-Policy")
	if !strings.Contains(csp, "frame-ancestors 'none'") || strings.Contains(csp, "unsafe-inline") {
		t.Fatalf("CSP %q", csp)
	}
	page := rec.Body.Bytes()
	if !strings.Contains(csp, inlineHash(page, "script")) || !strings.Contains(csp, inlineHash(page, "style")) {
		t.Fatalf("CSP %q does not allow the page's own script and style", csp)
	}
	evil := bytes.Replace(page, []byte("addEventListener"), []byte("alert(1);addEventListener"), 1)
	if strings.Contains(csp, inlineHash(evil, "script")) {
		t.Fatal("a changed script is allowed too")
	}
}
