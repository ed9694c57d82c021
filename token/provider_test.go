package token

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edgewise-sip/edgewise/test/kit"
)

// TestApplyFlipsEdges: the answer right after Apply carries the new order.
func TestApplyFlipsEdges(t *testing.T) {
	s := testSettings()
	p := newTestProvider(t, s)
	r := startReplica(t, p)
	c := &Client{Providers: []string{r.url + PathToken}, Username: "alice", Password: "alice-pw"}
	ctx := t.Context()

	ans, err := c.FetchToken(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ans.Edges, []string{"ashburn", "umatilla"}) {
		t.Fatalf("edges %v", ans.Edges)
	}
	for i, tc := range []struct {
		edges   []string
		roaming bool
		want    []string
	}{
		{[]string{"umatilla", "ashburn"}, false, []string{"umatilla", "ashburn"}},
		{[]string{"dublin", "frankfurt", "ashburn"}, true, []string{"dublin", "frankfurt", "ashburn", "roaming"}},
		{[]string{"ashburn", "umatilla"}, false, []string{"ashburn", "umatilla"}},
	} {
		s.Edges, s.AppendRoaming = tc.edges, tc.roaming
		if err := p.Apply(s, testUsers()); err != nil {
			t.Fatal(err)
		}
		ans, err := c.FetchToken(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(ans.Edges, tc.want) {
			t.Errorf("flip %d: edges %v, want %v", i, ans.Edges, tc.want)
		}
	}

	// A bad reload is refused and the running settings stay.
	bad := s
	bad.Edges = []string{"tokyo"}
	bad.TTL = time.Second
	if err := p.Apply(bad, testUsers()); err == nil || !strings.Contains(err.Error(), "ttl") {
		t.Fatalf("bad apply: %v", err)
	}
	ans, err = c.FetchToken(ctx)
	if err != nil || !slices.Equal(ans.Edges, []string{"ashburn", "umatilla"}) {
		t.Fatalf("after refused apply: %v %v", ans, err)
	}
}

// TestApplyCopiesSettings: the caller may reuse its slices after Apply.
func TestApplyCopiesSettings(t *testing.T) {
	s := testSettings()
	p := newTestProvider(t, s)
	s.Edges[0] = "tokyo"
	s.Keys[0].Secret = "changed"
	rec := call{user: "alice", pass: "alice-pw"}.do(p.Handler())
	if !strings.Contains(rec.Body.String(), `"edges":["ashburn","umatilla"]`) {
		t.Errorf("edges changed behind Apply's back: %s", rec.Body)
	}
}

// TestApplySwapsDirectory: a reload that changes a phone password takes effect.
func TestApplySwapsDirectory(t *testing.T) {
	p := newTestProvider(t, testSettings())
	h := p.Handler()
	if code := (call{user: "alice", pass: "alice-pw"}).do(h).Code; code != 200 {
		t.Fatal(code)
	}
	if err := p.Apply(testSettings(), Passwords{"alice": "new-pw"}); err != nil {
		t.Fatal(err)
	}
	if code := (call{user: "alice", pass: "alice-pw"}).do(h).Code; code != 401 {
		t.Errorf("old password after reload: %d", code)
	}
	if code := (call{user: "alice", pass: "new-pw"}).do(h).Code; code != 200 {
		t.Errorf("new password after reload: %d", code)
	}
	// No directory at all: Basic is unavailable, requests get 401.
	if err := p.Apply(testSettings(), nil); err != nil {
		t.Fatal(err)
	}
	if code := (call{user: "alice", pass: "new-pw"}).do(h).Code; code != 401 {
		t.Errorf("without directory: %d", code)
	}
}

func TestPluggableAuthenticator(t *testing.T) {
	sso := AuthenticatorFunc(func(r *http.Request, _ netip.Addr) (string, error) {
		switch r.Header.Get("X-Test-Ticket") {
		case "":
			return "", ErrNoCredentials
		case "ticket-erin":
			return "erin", nil
		case "ticket-banned":
			return "", errors.Join(ErrForbidden, errTest)
		}
		return "", ErrBadCredentials
	})
	h := newTestProvider(t, testSettings(), WithAuthenticator(sso)).Handler()
	for ticket, want := range map[string]int{"ticket-erin": 200, "ticket-banned": 403, "forged": 401} {
		if code := (call{headers: map[string]string{"X-Test-Ticket": ticket}}).do(h).Code; code != want {
			t.Errorf("ticket %s: %d, want %d", ticket, code, want)
		}
	}
	// Falls through to Basic when it has nothing to say.
	if code := (call{user: "bob", pass: "bob-pw"}).do(h).Code; code != 200 {
		t.Errorf("basic after plug-in: %d", code)
	}
}

// TestServeDrains: cancelling Serve's context lets an in-flight request
// finish, drops readiness meanwhile, and Serve returns nil without leaks.
func TestServeDrains(t *testing.T) {
	checkGoroutines(t)
	entered := make(chan struct{})
	release := make(chan struct{})
	slow := AuthenticatorFunc(func(r *http.Request, _ netip.Addr) (string, error) {
		if r.Header.Get("X-Slow") == "" {
			return "", ErrNoCredentials
		}
		close(entered)
		<-release
		return "slowpoke", nil
	})
	p := newTestProvider(t, testSettings(), WithAuthenticator(slow))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- p.Serve(ctx, ln) }()

	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr}
	type result struct {
		ans *Answer
		err error
	}
	got := make(chan result, 1)
	go func() {
		c := &Client{Providers: []string{"http://" + ln.Addr().String() + PathToken},
			Header: http.Header{"X-Slow": {"1"}}, HTTPClient: hc}
		ans, err := c.FetchToken(context.Background())
		got <- result{ans, err}
	}()
	<-entered
	cancel()
	kit.WaitFor(t, 5*time.Second, "readiness to drop", func() bool {
		ok, why := p.Ready()
		return !ok && why == "draining"
	})
	// New connections are refused while draining.
	kit.WaitFor(t, 5*time.Second, "listener to close", func() bool {
		conn, err := net.Dial("tcp", ln.Addr().String())
		if err == nil {
			conn.Close()
		}
		return err != nil
	})
	select {
	case err := <-served:
		t.Fatalf("Serve returned before the in-flight request finished: %v", err)
	default:
	}
	close(release)
	r := <-got
	if r.err != nil || r.ans.Identity != "slowpoke" {
		t.Fatalf("in-flight request: %+v %v", r.ans, r.err)
	}
	if err := <-served; err != nil {
		t.Fatalf("Serve: %v", err)
	}
	if ok, _ := p.Ready(); !ok {
		t.Error("not ready after Serve returned")
	}
}

// TestServeDrainTimeout: a request that outlives the drain timeout is cut
// off and Serve says so.
func TestServeDrainTimeout(t *testing.T) {
	release := make(chan struct{})
	entered := make(chan struct{})
	stuck := AuthenticatorFunc(func(*http.Request, netip.Addr) (string, error) {
		close(entered)
		<-release
		return "", ErrNoCredentials
	})
	p := newTestProvider(t, testSettings(), WithAuthenticator(stuck), WithDrainTimeout(50*time.Millisecond))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- p.Serve(ctx, ln) }()
	reqDone := make(chan struct{})
	go func() {
		defer close(reqDone)
		c := &Client{Providers: []string{"http://" + ln.Addr().String() + PathToken}}
		_, _ = c.FetchToken(context.Background())
	}()
	<-entered
	cancel()
	err = <-served
	close(release)
	<-reqDone
	if err == nil || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Serve = %v, want a drain deadline error", err)
	}
}
