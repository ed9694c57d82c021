package main

import (
	"bytes"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"

	"github.com/edgewise-sip/edgewise/cmd/edgewise/admin"
)

// statusFixture is a /v1/status answer during a failover: ashburn is down,
// alice has moved to umatilla, bob is not registered upstream.
const statusFixture = `{
  "version": "test",
  "started_at": "2026-01-02T03:00:00Z",
  "config": {"path": "/etc/edgewise.yaml", "version": "1", "hash": "abc", "edges": ["ashburn", "umatilla"],
    "last_reload": {"time": "2026-01-02T03:04:05Z", "trigger": "sighup", "ok": true, "unchanged": false, "changed": ["twilio.edges"]},
    "reloads": []},
  "users": [
    {"user": "alice", "contacts": [{"uri": "sip:alice@127.0.0.9:5062", "source": "127.0.0.9:5062", "transport": "udp", "expires_at": "2026-01-02T04:00:00Z", "expires_in": 300, "reachable": "yes"}],
      "upstream": {"user": "alice", "edge": "umatilla", "ip": "127.0.0.2", "state": "registered", "last_error": ""}},
    {"user": "bob", "contacts": [], "upstream": {"user": "bob", "edge": "", "ip": "", "state": "failing", "last_error": "408 request timeout"}}
  ],
  "edges": [
    {"name": "ashburn", "fqdn": "example.sip.ashburn.twilio.com", "state": "down", "active": false, "since": "2026-01-02T03:04:00Z", "reason": "all IPs failed",
      "dns": {"resolved_at": "2026-01-02T03:00:00Z", "expires_at": "2026-01-02T03:05:00Z"},
      "ips": [{"ip": "127.0.0.1", "state": "down", "last_rtt_ms": 0, "last_error": "timeout", "since": "2026-01-02T03:04:00Z"},
              {"ip": "127.0.0.3", "state": "down", "last_rtt_ms": 0, "last_error": "timeout", "since": "2026-01-02T03:04:00Z"}]},
    {"name": "umatilla", "fqdn": "example.sip.umatilla.twilio.com", "state": "up", "active": true, "since": "2026-01-02T03:00:00Z",
      "dns": {"resolved_at": "2026-01-02T03:00:00Z", "expires_at": "2026-01-02T03:05:00Z"},
      "ips": [{"ip": "127.0.0.2", "state": "up", "last_rtt_ms": 1.5, "last_error": "", "since": "2026-01-02T03:00:00Z"}]}
  ],
  "calls": [{"id": "c1", "direction": "outbound", "user": "alice", "from": "alice", "to": "+15550100", "state": "answered", "started": "2026-01-02T03:05:00Z",
    "media": {"id": "m1", "legs": [{"side": "A", "rx": {"packets": 10}, "tx": {"packets": 9}}]}}],
  "store": {"path": "/var/lib/edgewise/edgewise.db", "bindings": 1}
}`

func statusServer(t *testing.T, token string) *httptest.Server {
	t.Helper()
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/status" {
			http.NotFound(w, r)
			return
		}
		if token != "" && r.Header.Get("Authorization") != "Bearer "+token {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(statusFixture))
	}))
	t.Cleanup(ts.Close)
	return ts
}

func TestStatusTable(t *testing.T) {
	ts := statusServer(t, "")
	var out, errOut bytes.Buffer
	if code := run([]string{"status", "-admin", ts.URL + "/"}, &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	got := out.String()
	lines := strings.Split(got, "\n")
	mustLine := func(fields ...string) {
		t.Helper()
		for _, l := range lines {
			if reflect.DeepEqual(strings.Fields(l), fields) {
				return
			}
		}
		t.Errorf("no line with fields %q in:\n%s", fields, got)
	}
	mustLine("EDGE", "STATE", "ACTIVE", "IPS", "UP", "USERS", "REASON")
	mustLine("ashburn", "DOWN", "0/2", "0", "all", "IPs", "failed")
	mustLine("umatilla", "up", "*", "1/1", "1")
	mustLine("alice", "1", "umatilla", "registered")
	mustLine("bob", "0", "-", "failing", "408", "request", "timeout")
	mustLine("Calls:", "1", "active")
	mustLine("CALL", "DIRECTION", "USER", "TO", "EDGE", "STATE", "AGE", "RTP", "RX/TX/LOST")
	callRow := false
	for _, l := range lines {
		f := strings.Fields(l)
		callRow = callRow || (len(f) == 9 && reflect.DeepEqual(f[:6], []string{"c1", "outbound", "alice", "+15550100", "-", "answered"}) &&
			reflect.DeepEqual(f[7:], []string{"A", "10/9/0"}))
	}
	if !callRow {
		t.Errorf("no row for call c1 with its RTP counters in:\n%s", got)
	}
	mustLine("Last", "reload:", "2026-01-02T03:04:05Z", "by", "sighup:", "ok;", "changed", "twilio.edges")
	// Edges keep the daemon's (configured) order.
	if strings.Index(got, "ashburn") > strings.Index(got, "umatilla") {
		t.Errorf("edges out of order:\n%s", got)
	}
}

func TestStatusJSONRoundTrips(t *testing.T) {
	ts := statusServer(t, "s3cret")
	t.Setenv("EDGEWISE_ADMIN_TOKEN", "s3cret")
	var out, errOut bytes.Buffer
	if code := run([]string{"status", "-admin", ts.URL, "--json"}, &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	var got, want any
	if err := json.Unmarshal(out.Bytes(), &got); err != nil {
		t.Fatalf("--json output is not JSON: %v\n%s", err, out.String())
	}
	if err := json.Unmarshal([]byte(statusFixture), &want); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("--json output differs from the daemon's document:\n%s", out.String())
	}
}

func TestStatusErrors(t *testing.T) {
	// A port that was just free: nothing listens there.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + ln.Addr().String()
	ln.Close()
	t.Setenv("EDGEWISE_ADMIN_TOKEN", "")
	authed := statusServer(t, "s3cret")

	cases := []struct {
		name     string
		args     []string
		wantCode int
		wantErr  string
	}{
		{"unreachable", []string{"status", "-admin", dead}, 1, "cannot reach the edgewise daemon at " + dead},
		{"no token", []string{"status", "-admin", authed.URL}, 1, "pass -token or set EDGEWISE_ADMIN_TOKEN"},
		{"wrong token", []string{"status", "-admin", authed.URL, "-token", "nope"}, 1, "wants a token"},
		{"bad flag", []string{"status", "-bogus"}, 2, "flag provided but not defined"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			if code := run(tc.args, &out, &errOut); code != tc.wantCode {
				t.Fatalf("exit %d, want %d; stderr:\n%s", code, tc.wantCode, errOut.String())
			}
			if !strings.Contains(errOut.String(), tc.wantErr) {
				t.Fatalf("stderr lacks %q:\n%s", tc.wantErr, errOut.String())
			}
			if out.Len() != 0 {
				t.Fatalf("stdout not empty on error: %s", out.String())
			}
		})
	}

	var out, errOut bytes.Buffer
	if code := run([]string{"status", "-admin", authed.URL, "-token", "s3cret"}, &out, &errOut); code != 0 {
		t.Fatalf("right token: exit %d: %s", code, errOut.String())
	}
}

// TestStatusFixtureIsTheDocument keeps the fixture honest: every field it
// has is a field of the document the daemon serves.
func TestStatusFixtureIsTheDocument(t *testing.T) {
	dec := json.NewDecoder(strings.NewReader(statusFixture))
	dec.DisallowUnknownFields()
	var st admin.Status
	if err := dec.Decode(&st); err != nil {
		t.Fatalf("the fixture is not a status document: %v", err)
	}
	if len(st.Users) != 2 || len(st.Edges) != 2 || len(st.Calls) != 1 || st.Store == nil {
		t.Fatalf("fixture decoded to %+v", st)
	}
}
