package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgewise-sip/edgewise/cmd/edgewise/admin"
	"github.com/edgewise-sip/edgewise/test/chromium"
	"github.com/edgewise-sip/edgewise/test/kit"
)

// Browser softphones over SIP WebSocket (RFC 7118): headless Chromium runs
// SIP.js (test/browser, from npm) and registers to edgewise's ws: listener
// like a desk phone. The page reports what SIP.js sees by POSTing events to
// the test's HTTP server, which also serves it.

// TestBrowserRegisterOverWebSocket: the browser's binding appears in
// /v1/status with transport ws, its user is registered upstream on the
// primary edge, and when the browser goes away its binding goes and the user
// is unregistered upstream.
func TestBrowserRegisterOverWebSocket(t *testing.T) {
	chromium := browserDeps(t)
	s := startSim(t)
	d := startDaemon(t, browserDaemonConfig(s))
	page := browserServePage(t)
	b := browserLaunch(t, chromium, page.url(d, "alice", "alice-secret"))

	// SIP.js reports the state change before the response it came from;
	// the page posts events in order.
	page.waitFor(t, b, 30*time.Second, "response", "200")
	page.mustHaveSeen(t, "state", "Registered")
	var c admin.ContactStatus
	kit.WaitFor(t, 10*time.Second, "alice's browser binding in /v1/status", func() bool {
		cs := browserContacts(t, d, "alice")
		if len(cs) != 1 {
			return false
		}
		c = cs[0]
		return true
	})
	if c.Transport != "ws" || !strings.Contains(c.URI, ".invalid") || !strings.Contains(c.URI, "transport=ws") ||
		!strings.HasPrefix(c.Source, "127.0.0.1:") || !strings.Contains(c.UserAgent, "SIP.js") {
		t.Errorf("binding %+v, want a transport=ws .invalid contact from the browser's connection", c)
	}
	kit.WaitFor(t, 10*time.Second, "alice registered upstream on ashburn", func() bool {
		return onlyOn(s.edgesOf(t, "alice"), "ashburn")
	})

	b.Close()
	kit.WaitFor(t, 10*time.Second, "alice's binding gone after the browser closed", func() bool {
		return len(browserContacts(t, d, "alice")) == 0
	})
	kit.WaitFor(t, 10*time.Second, "alice unregistered upstream", func() bool {
		return len(s.edgesOf(t, "alice")) == 0
	})
	if !strings.Contains(d.out.String(), "websocket closed, bindings removed") {
		t.Error("edgewise did not log the removal")
	}
}

// TestBrowserRegisterEdgeFailover: while the browser is registered the
// primary edge stops answering; the browser's user moves to the next edge
// like a desk phone's user, and the browser stays registered to edgewise.
func TestBrowserRegisterEdgeFailover(t *testing.T) {
	chromium := browserDeps(t)
	s := startSim(t)
	d := startDaemon(t, browserDaemonConfig(s))
	page := browserServePage(t)
	b := browserLaunch(t, chromium, page.url(d, "carol", "carol-secret"))

	page.waitFor(t, b, 30*time.Second, "response", "200")
	kit.WaitFor(t, 10*time.Second, "carol registered upstream on ashburn", func() bool {
		return onlyOn(s.edgesOf(t, "carol"), "ashburn")
	})
	broken := time.Now()
	s.setMode(t, "edges/ashburn", "drop")
	// timeout 500 ms + keepalive 1 s + 2 s, with a margin for a busy box.
	kit.WaitFor(t, 10*time.Second, "carol moved to umatilla", func() bool {
		return onlyOn(s.edgesOf(t, "carol"), "umatilla")
	})
	t.Logf("failover took %v", time.Since(broken).Round(time.Millisecond))
	if cs := browserContacts(t, d, "carol"); len(cs) != 1 || cs[0].Transport != "ws" {
		t.Errorf("carol's browser binding after the failover: %+v", cs)
	}
	page.mustNotHaveSeen(t, "state", "Unregistered")
}

// browserDaemonConfig is upstreamConfig (edgesim, short timers) with a ws:
// listener on the daemon's own loopback address.
func browserDaemonConfig(s *sim) func(ip, dir string) string {
	return func(ip, dir string) string {
		cfg := upstreamConfig(s, "")(ip, dir)
		old := fmt.Sprintf(`listen: ["udp:%[1]s:5060", "tcp:%[1]s:5060"]`, ip)
		if !strings.Contains(cfg, old) {
			panic("daemonConfig changed its listen line: " + old)
		}
		return strings.Replace(cfg, old, fmt.Sprintf(`listen: ["udp:%[1]s:5060", "tcp:%[1]s:5060", "ws:%[1]s:8080"]`, ip), 1)
	}
}

var browserNPM sync.Mutex

// browserDeps returns Chromium's path and makes sure SIP.js is installed in
// test/browser/node_modules, running `npm ci` there when it is not. A
// missing Chromium or a failed install fails the test: `make deps` installs
// both, so either is a broken setup, not a reason to pass quietly.
func browserDeps(t *testing.T) string {
	t.Helper()
	chromium := requireTool(t, "chromium")
	dir := filepath.Join(repoDir, "test", "browser")
	lib := filepath.Join(dir, "node_modules", "sip.js", "lib", "index.js")
	browserNPM.Lock()
	defer browserNPM.Unlock()
	if _, err := os.Stat(lib); err == nil {
		return chromium
	}
	requireTool(t, "npm")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "npm", "ci", "--prefix", dir, "--no-audit", "--no-fund")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("npm ci --prefix %s: %v\n%s", dir, err, out)
	}
	if _, err := os.Stat(lib); err != nil {
		t.Fatalf("npm ci did not install SIP.js: %v", err)
	}
	return chromium
}

type browserEvent struct {
	Event  string `json:"event"`
	Detail string `json:"detail"`
}

// browserPage serves test/browser/phone.html and SIP.js on loopback and
// collects the events the page posts.
type browserPage struct {
	srv    *httptest.Server
	events chan browserEvent

	mu   sync.Mutex
	seen []browserEvent
}

func browserServePage(t *testing.T) *browserPage {
	t.Helper()
	dir := filepath.Join(repoDir, "test", "browser")
	p := &browserPage{events: make(chan browserEvent, 256)}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /phone.html", func(w http.ResponseWriter, r *http.Request) {
		http.ServeFile(w, r, filepath.Join(dir, "phone.html"))
	})
	mux.Handle("GET /sip.js/", http.StripPrefix("/sip.js/", http.FileServer(http.Dir(filepath.Join(dir, "node_modules", "sip.js")))))
	mux.HandleFunc("GET /favicon.ico", http.NotFound)
	mux.HandleFunc("POST /event", func(w http.ResponseWriter, r *http.Request) {
		var ev browserEvent
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&ev); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		p.mu.Lock()
		p.seen = append(p.seen, ev)
		p.mu.Unlock()
		select {
		case p.events <- ev:
		default: // nobody waiting on this many; seen keeps it
		}
	})
	p.srv = httptest.NewServer(mux)
	t.Cleanup(p.srv.Close)
	t.Cleanup(func() {
		if t.Failed() || testing.Verbose() {
			t.Logf("browser events:\n%s", p.transcript())
		}
	})
	return p
}

// url is phone.html registering user, neither calling nor answering.
func (p *browserPage) url(d *daemon, user, password string) string {
	return p.phoneURL(d, user, password, "", "")
}

func (p *browserPage) transcript() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var b strings.Builder
	for _, ev := range p.seen {
		fmt.Fprintf(&b, "  %s %s\n", ev.Event, ev.Detail)
	}
	return b.String()
}

// waitFor waits for the page to report event with detail; an "error"
// event, or the browser exiting, fails at once.
func (p *browserPage) waitFor(t *testing.T, b *browserProc, timeout time.Duration, event, detail string) {
	t.Helper()
	p.waitUntil(t, b, timeout, event+" "+detail, func(ev browserEvent) bool {
		return ev.Event == event && ev.Detail == detail
	})
}

// waitUntil waits for an event the page reports that satisfies ok and
// returns it; an "error" event, or the browser exiting, fails at once.
func (p *browserPage) waitUntil(t *testing.T, b *browserProc, timeout time.Duration, what string, ok func(browserEvent) bool) browserEvent {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case ev := <-p.events:
			if ev.Event == "error" {
				t.Fatalf("page error: %s", ev.Detail)
			}
			if ok(ev) {
				return ev
			}
		case <-b.Exited:
			t.Fatalf("chromium exited before %s:\n%s", what, b.Log())
		case <-deadline:
			t.Fatalf("no %s from the page within %v; chromium output:\n%s", what, timeout, b.Log())
		}
	}
}

func (p *browserPage) mustHaveSeen(t *testing.T, event, detail string) {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, ev := range p.seen {
		if ev.Event == event && ev.Detail == detail {
			return
		}
	}
	t.Errorf("page did not report %s %s", event, detail)
}

func (p *browserPage) mustNotHaveSeen(t *testing.T, event, detail string) {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, ev := range p.seen {
		if ev.Event == event && ev.Detail == detail {
			t.Errorf("page reported %s %s", event, detail)
		}
	}
}

// browserProc is a headless Chromium with fake media devices.
type browserProc = chromium.Browser

// browserLaunch opens pageURL in headless Chromium with a fake microphone
// and camera, permission prompts answered yes, and WebRTC allowed on
// loopback (edgewise's ICE candidates are 127.x addresses).
func browserLaunch(t *testing.T, bin, pageURL string) *browserProc {
	t.Helper()
	return chromium.Launch(t, bin, pageURL,
		"--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream", "--allow-loopback-in-peer-connection")
}

// browserContacts returns user's contacts in /v1/status, transport included.
func browserContacts(t *testing.T, d *daemon, user string) []admin.ContactStatus {
	t.Helper()
	for _, u := range d.status(t).Users {
		if u.User == user {
			return u.Contacts
		}
	}
	return nil
}
