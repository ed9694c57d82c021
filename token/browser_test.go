package token

import (
	"context"
	_ "embed"
	"html/template"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/edgewise-sip/edgewise/test/chromium"
)

const chromiumPath = "/usr/bin/chromium"

//go:embed testdata/browser_page.html
var browserPage string

// TestBrowserHelper runs token/web/edgewise.js in headless Chromium: a page
// on its own origin imports the helper from a replica and is given three
// provider URLs, the first dead. It gets its token from the second; then the
// second is stopped, the third is reloaded with a new edge order, the
// page's Device stand-in fires tokenWillExpire, and the helper refreshes
// from the third and moves the device to the new edges.
func TestBrowserHelper(t *testing.T) {
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Skipf("%s not installed (make test installs it): %v", chromiumPath, err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()

	// The page's origin must exist before the providers are configured, and
	// the page names the providers, so it is filled in afterwards.
	var pageHTML atomic.Pointer[string]
	page := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write([]byte(*pageHTML.Load()))
	}))
	defer page.Close()

	s := testSettings()
	s.CORSOrigins = []string{page.URL}
	dead := closedURL(t)
	second := startReplica(t, newTestProvider(t, s))
	third := startReplica(t, newTestProvider(t, s))
	providers := []string{dead + PathToken, second.url + PathToken, third.url + PathToken}

	var b strings.Builder
	tmpl := template.Must(template.New("page").Parse(browserPage))
	if err := tmpl.Execute(&b, map[string]any{"SDK": second.url + PathSDK, "Providers": providers}); err != nil {
		t.Fatal(err)
	}
	html := b.String()
	pageHTML.Store(&html)

	bctx, _ := chromium.DevTools(ctx, t, chromiumPath)
	logConsole(bctx, t)

	if err := chromedp.Do(bctx, chromedp.Navigate(page.URL)); err != nil {
		t.Fatalf("navigate: %v", err)
	}
	if _, err := chromedp.Run(bctx, chromedp.Poll[bool](`window.edgewiseReady === true`,
		chromedp.WithPollingTimeout(20*time.Second))); err != nil {
		t.Fatalf("page did not load the helper: %v", err)
	}

	type first struct {
		Provider, Token, Identity string
		Edges                     []string
		TTL                       int
	}
	got, err := chromedp.Run(bctx, chromedp.Evaluate[first](`window.firstToken()`, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("firstToken: %v", err)
	}
	if got.Provider != second.url+PathToken {
		t.Fatalf("first token from %q, want the second provider %q", got.Provider, second.url+PathToken)
	}
	if got.Identity != "alice" || got.TTL != 3600 || !slices.Equal(got.Edges, []string{"ashburn", "umatilla"}) {
		t.Errorf("first answer %+v", got)
	}
	parseToken(t, got.Token, testSecret)

	second.stop()
	flipped := s
	flipped.Edges = []string{"umatilla", "ashburn"}
	flipped.AppendRoaming = true
	if err := third.p.Apply(flipped, testUsers()); err != nil {
		t.Fatal(err)
	}

	type refresh struct {
		Tokens        []string
		OptionUpdates []struct{ Edge []string }
		Answers       []struct {
			Provider, Identity string
			Edges              []string
		}
		Errors []string
	}
	r, err := chromedp.Run(bctx, chromedp.Evaluate[refresh](`window.expire()`, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("expire: %v", err)
	}
	if len(r.Tokens) != 1 || len(r.Answers) != 1 {
		t.Fatalf("updateToken calls %d, answers %d; errors %v", len(r.Tokens), len(r.Answers), r.Errors)
	}
	if r.Answers[0].Provider != third.url+PathToken {
		t.Errorf("refreshed from %q, want the third provider", r.Answers[0].Provider)
	}
	_, claims := parseToken(t, r.Tokens[0], testSecret)
	if claims["grants"].(map[string]any)["identity"] != "alice" {
		t.Errorf("refreshed token grants %v", claims["grants"])
	}
	wantEdges := []string{"umatilla", "ashburn", "roaming"}
	if len(r.OptionUpdates) != 1 || !slices.Equal(r.OptionUpdates[0].Edge, wantEdges) {
		t.Errorf("updateOptions calls %+v, want one with edge %v", r.OptionUpdates, wantEdges)
	}
	if n := testutil.ToFloat64(third.p.metrics.issued); n != 1 {
		t.Errorf("third replica issued %v tokens, want 1", n)
	}
	if n := testutil.ToFloat64(second.p.metrics.issued); n != 1 {
		t.Errorf("second replica issued %v tokens, want 1", n)
	}

	type refusal struct {
		OK, IsTokenError bool
		Status, Failures int
		Message          string
	}
	wp, err := chromedp.Run(bctx, chromedp.Evaluate[refusal](`window.wrongPassword()`, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatal(err)
	}
	// providers[1] is down now, so providers[2] answers 401 and the helper
	// stops there: the status must be readable through CORS.
	if wp.OK || !wp.IsTokenError || wp.Status != 401 || wp.Failures != 2 {
		t.Errorf("wrong password: %+v", wp)
	}
}

// logConsole copies the page's console into the test log until the test ends.
func logConsole(ctx context.Context, t *testing.T) {
	ctx, cancel := context.WithCancel(ctx)
	messages := chromedp.Console(ctx) // subscribes now, before any navigation
	done := make(chan struct{})
	go func() {
		defer close(done)
		for msg, err := range messages {
			if err != nil || ctx.Err() != nil {
				return
			}
			t.Logf("browser console: %s", msg)
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
}
