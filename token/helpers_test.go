package token

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/edgewise-sip/edgewise/test/kit"
)

// Fixed, fake SIDs: the shape Twilio uses, values nobody owns.
const (
	testAccount = "AC0123456789abcdef0123456789abcdef"
	testKeySID  = "SK0123456789abcdef0123456789abcdef"
	testKey2SID = "SKfedcba9876543210fedcba9876543210"
	testApp     = "AP0123456789abcdef0123456789abcdef"
	testPush    = "CR0123456789abcdef0123456789abcdef"
	testSecret  = "test-secret-0123456789"
)

func testSettings() Settings {
	return Settings{
		AccountSID:        testAccount,
		Keys:              []Key{{SID: testKeySID, Secret: testSecret}, {SID: testKey2SID, Secret: "old-secret"}},
		TwiMLAppSID:       testApp,
		PushCredentialSID: testPush,
		TTL:               time.Hour,
		Edges:             []string{"ashburn", "umatilla"},
	}
}

// testUsers: alice and bob are valid identities; "carol.smith" is a valid
// phone user that Twilio would refuse as an identity.
func testUsers() Passwords {
	return Passwords{"alice": "alice-pw", "bob": "bob-pw", "carol.smith": "carol-pw"}
}

func newTestProvider(t testing.TB, s Settings, opts ...Option) *Provider {
	t.Helper()
	p := New(kit.Logger(t), opts...)
	if err := p.Apply(s, testUsers()); err != nil {
		t.Fatalf("apply: %v", err)
	}
	return p
}

// replica is a Provider serving on 127.0.0.1:0 through Serve.
type replica struct {
	p    *Provider
	url  string // base URL, no path
	stop func() // graceful stop; waits for Serve to return
}

func startReplica(t testing.TB, p *Provider) *replica {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Serve(ctx, ln) }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	}
	t.Cleanup(stop)
	return &replica{p: p, url: "http://" + ln.Addr().String(), stop: stop}
}

// closedURL returns a URL on a loopback port that was just closed, so
// connecting to it is refused.
func closedURL(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return "http://" + addr
}

// postToken does a raw POST /v1/token and decodes either answer shape.
func postToken(t testing.TB, base string, user, password string) (int, *Answer, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, base+PathToken, strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	if user != "" {
		req.SetBasicAuth(user, password)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusOK {
		var e struct{ Error string }
		_ = json.Unmarshal(body, &e)
		return res.StatusCode, nil, e.Error
	}
	var a Answer
	if err := json.Unmarshal(body, &a); err != nil {
		t.Fatalf("decode %s: %v", body, err)
	}
	return res.StatusCode, &a, ""
}

// checkGoroutines fails the test if, after cleanup, goroutines started
// during it are still running (idle HTTP keep-alives are closed first).
func checkGoroutines(t *testing.T) {
	leaks := goleak.IgnoreCurrent()
	t.Cleanup(func() {
		http.DefaultClient.CloseIdleConnections()
		goleak.VerifyNone(t, leaks)
	})
}

var errTest = errors.New("test error")
