package token

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestClientFailover(t *testing.T) {
	good := startReplica(t, newTestProvider(t, testSettings()))
	status := func(code int) string {
		s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			writeError(w, code, "test says "+http.StatusText(code))
		}))
		t.Cleanup(s.Close)
		return s.URL + PathToken
	}
	hang := make(chan struct{})
	hung := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-hang:
		}
	}))
	t.Cleanup(hung.Close)
	t.Cleanup(func() { close(hang) }) // runs before hung.Close
	notToken := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(`{"hello":"world"}`))
	}))
	t.Cleanup(notToken.Close)
	goodURL := good.url + PathToken

	for _, tc := range []struct {
		name      string
		providers []string
		user      string
		wantFrom  string // provider expected to answer; "" = error
		final     int    // status of the final refusal, when expected
	}{
		{"first answers", []string{goodURL, closedURL(t)}, "alice", goodURL, 0},
		{"dead port skipped", []string{closedURL(t) + PathToken, goodURL}, "alice", goodURL, 0},
		{"5xx skipped", []string{status(503), status(500), goodURL}, "alice", goodURL, 0},
		{"429 skipped", []string{status(429), goodURL}, "alice", goodURL, 0},
		{"hung provider times out", []string{hung.URL + PathToken, goodURL}, "alice", goodURL, 0},
		{"non-token answer skipped", []string{notToken.URL, goodURL}, "alice", goodURL, 0},
		{"401 is final", []string{status(401), goodURL}, "alice", "", 401},
		{"403 is final", []string{status(403), goodURL}, "alice", "", 403},
		{"all dead", []string{closedURL(t), status(502)}, "alice", "", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &Client{Providers: tc.providers, Timeout: time.Second,
				Username: tc.user, Password: testUsers()[tc.user]}
			ans, err := c.FetchToken(t.Context())
			if tc.wantFrom != "" {
				if err != nil {
					t.Fatalf("FetchToken: %v", err)
				}
				if ans.Provider != tc.wantFrom || ans.Identity != tc.user {
					t.Fatalf("answer from %s for %s", ans.Provider, ans.Identity)
				}
				return
			}
			var pe *ProviderError
			switch {
			case err == nil:
				t.Fatalf("no error; answer from %s", ans.Provider)
			case tc.final != 0 && (!errors.As(err, &pe) || pe.Status != tc.final):
				t.Fatalf("err %v, want final %d", err, tc.final)
			case tc.final == 0 && !errors.Is(err, ErrNoProvider):
				t.Fatalf("err %v, want ErrNoProvider", err)
			}
		})
	}
	if _, err := (&Client{}).FetchToken(t.Context()); !errors.Is(err, ErrNoProvider) {
		t.Errorf("no providers: %v", err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := (&Client{Providers: []string{goodURL}}).FetchToken(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}
}

// killable is a replica whose process death is simulated by closing the
// listener and every connection at once, with requests possibly in flight.
type killable struct {
	srv  *httptest.Server
	p    *Provider
	hits atomic.Int64
}

func startKillable(t *testing.T) *killable {
	k := &killable{p: newTestProvider(t, testSettings())}
	h := k.p.Handler()
	k.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		k.hits.Add(1)
		h.ServeHTTP(w, r)
	}))
	k.srv.Listener.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	k.srv.Listener = ln
	k.srv.Start()
	t.Cleanup(k.srv.Close)
	return k
}

// TestReplicasUnderLoad: three replicas, bounded concurrent load through
// Client, the preferred replica killed mid-run: no client sees a failure.
func TestReplicasUnderLoad(t *testing.T) {
	reps := []*killable{startKillable(t), startKillable(t), startKillable(t)}
	urls := make([]string, len(reps))
	for i, r := range reps {
		urls[i] = r.srv.URL + PathToken
	}
	tr := &http.Transport{MaxIdleConnsPerHost: 16}
	defer tr.CloseIdleConnections()
	client := &Client{Providers: urls, Timeout: 2 * time.Second, Username: "alice", Password: "alice-pw",
		HTTPClient: &http.Client{Transport: tr}}

	const clients, perClient = 8, 150
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	var (
		done     atomic.Int64
		failures atomic.Int64
		firstErr atomic.Value
		wg       sync.WaitGroup
		killOnce sync.Once
		killed   = make(chan struct{})
	)
	for range clients {
		wg.Go(func() {
			for range perClient {
				ans, err := client.FetchToken(ctx)
				if err != nil {
					failures.Add(1)
					firstErr.CompareAndSwap(nil, err)
					continue
				}
				if ans.Identity != "alice" || len(ans.Edges) != 2 {
					failures.Add(1)
					firstErr.CompareAndSwap(nil, errors.New("bad answer"))
				}
				// Kill the preferred replica a third into the run, while
				// the other clients have requests in flight.
				if done.Add(1) == clients*perClient/3 {
					killOnce.Do(func() {
						reps[0].srv.CloseClientConnections()
						reps[0].srv.Listener.Close()
						reps[0].srv.CloseClientConnections()
						close(killed)
					})
				}
			}
		})
	}
	wg.Wait()
	select {
	case <-killed:
	default:
		t.Fatal("replica was never killed")
	}
	if n := failures.Load(); n != 0 {
		t.Fatalf("%d failed token fetches; first: %v", n, firstErr.Load())
	}
	h0, h1, h2 := reps[0].hits.Load(), reps[1].hits.Load(), reps[2].hits.Load()
	t.Logf("requests: replica0 (killed) %d, replica1 %d, replica2 %d; %d tokens", h0, h1, h2, done.Load())
	if h0 == 0 || h1 == 0 {
		t.Errorf("load did not move from the killed replica to the next one: %d %d", h0, h1)
	}
	if done.Load() != clients*perClient {
		t.Errorf("%d tokens, want %d", done.Load(), clients*perClient)
	}
}
