package integration

import (
	"bytes"
	"context"
	"image"
	"image/png"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/edgewise-sip/edgewise/test/chromium"
	"github.com/edgewise-sip/edgewise/test/kit"
)

// TestOpsStatusPageInChromium: with phones registered through edgewise and
// upstream on ashburn, headless Chromium opens the admin status page. Then
// edgesim's ashburn stops answering. Without the page being reloaded, it
// comes to show ashburn down (in red), the users on umatilla and the
// failover in its recent events. A screenshot of that is saved as a test
// artifact.
func TestOpsStatusPageInChromium(t *testing.T) {
	s := startSim(t)
	d := startDaemon(t, upstreamConfig(s, ""))
	users := []string{"alice", "carol"}
	registerPhones(t, d, users...)
	kit.WaitFor(t, 10*time.Second, "alice and carol registered upstream on ashburn", func() bool {
		return opsAllOn(t, d, s, "ashburn", users...)
	})

	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	bctx, _ := chromium.DevTools(ctx, t, requireTool(t, "chromium"))
	if err := chromedp.Do(bctx, chromedp.EmulateViewport(1280, 900), chromedp.Navigate(d.adminURL+"/")); err != nil {
		t.Fatalf("open the status page: %v", err)
	}
	// What the page shows, read from its DOM: the edge rows' states, the
	// users' upstream edges, and the live indicator. The marker survives
	// only if the document is never reloaded or replaced.
	const shown = `(() => {
		const edges = {}, users = {};
		document.querySelectorAll("#edges tr[data-edge]").forEach(r => { edges[r.dataset.edge] = r.dataset.state; });
		document.querySelectorAll("#users tr[data-user]").forEach(r => { users[r.dataset.user] = r.dataset.edge || ""; });
		const badge = document.querySelector('#edges tr[data-edge="ashburn"] .state');
		return {
			edges, users,
			order: Array.from(document.querySelectorAll("#edges tr[data-edge]"), r => r.dataset.edge),
			ashburnBadge: badge ? badge.textContent.trim() : "",
			ashburnBadgeColour: badge ? getComputedStyle(badge).backgroundColor : "",
			live: document.getElementById("live").textContent,
			events: Array.from(document.querySelectorAll("#events tr[data-kind]"), r => r.dataset.kind),
			marker: window.opsNotReloaded === true,
			updates: window.opsUpdates || 0,
		};
	})()`
	type view struct {
		Edges              map[string]string `json:"edges"`
		Users              map[string]string `json:"users"`
		Order              []string          `json:"order"`
		AshburnBadge       string            `json:"ashburnBadge"`
		AshburnBadgeColour string            `json:"ashburnBadgeColour"`
		Live               string            `json:"live"`
		Events             []string          `json:"events"`
		Marker             bool              `json:"marker"`
		Updates            int               `json:"updates"`
	}
	usersOn := func(edge string) string {
		var conds []string
		for _, u := range users {
			conds = append(conds, `document.querySelector('#users tr[data-user="`+u+`"]')?.dataset.edge === "`+edge+`"`)
		}
		return strings.Join(conds, " && ")
	}

	if _, err := chromedp.Run(bctx, chromedp.Poll[bool](
		`document.querySelector('#edges tr[data-edge="ashburn"]')?.dataset.state === "up" && `+usersOn("ashburn"),
		chromedp.WithPollingInterval(100*time.Millisecond), chromedp.WithPollingTimeout(10*time.Second))); err != nil {
		v, _ := chromedp.Run(bctx, chromedp.Evaluate[view](shown))
		t.Fatalf("the page does not show ashburn up with the users on it: %v; page shows %+v", err, v)
	}
	// Mark the document and count the live updates the page swaps in.
	if err := chromedp.Do(bctx, chromedp.Evaluate[chromedp.Void](`
		window.opsNotReloaded = true;
		window.opsUpdates = 0;
		new MutationObserver(() => { window.opsUpdates++; }).observe(document.getElementById("status"), {childList: true});
	`)); err != nil {
		t.Fatal(err)
	}

	dropped := time.Now()
	s.setMode(t, "edges/ashburn", "drop")
	if _, err := chromedp.Run(bctx, chromedp.Poll[bool](
		`window.opsNotReloaded === true && document.querySelector('#edges tr[data-edge="ashburn"]')?.dataset.state === "down" && `+usersOn("umatilla"),
		chromedp.WithPollingInterval(100*time.Millisecond), chromedp.WithPollingTimeout(20*time.Second))); err != nil {
		v, _ := chromedp.Run(bctx, chromedp.Evaluate[view](shown))
		t.Fatalf("the page did not come to show ashburn down and the users on umatilla: %v; page shows %+v; /v1/status: %+v", err, v, opsMustStatus(t, d))
	}
	t.Logf("the page showed ashburn down and the users on umatilla %v after the drop", time.Since(dropped).Round(time.Millisecond))

	v, err := chromedp.Run(bctx, chromedp.Evaluate[view](shown))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("page: %+v", v)
	if !v.Marker || v.Updates == 0 {
		t.Errorf("page reloaded (marker %v) or not updated live (%d updates)", v.Marker, v.Updates)
	}
	if v.Live != "live" {
		t.Errorf("live indicator says %q", v.Live)
	}
	// Down must be obvious: configured order kept, the badge says so, in red.
	if strings.Join(v.Order, ",") != "ashburn,umatilla" {
		t.Errorf("edges shown in order %v, want the configured ashburn, umatilla", v.Order)
	}
	if !strings.Contains(strings.ToLower(v.AshburnBadge), "down") || v.AshburnBadgeColour != "rgb(198, 40, 40)" {
		t.Errorf("ashburn's badge %q on %s, want \"down\" on red rgb(198, 40, 40)", v.AshburnBadge, v.AshburnBadgeColour)
	}

	// The story is there too: the failover heads the recent events, with
	// only the moves it caused (if they are done yet) above it.
	i := slices.Index(v.Events, "edge_failover")
	if i < 0 || slices.ContainsFunc(v.Events[:i], func(k string) bool { return k != "moved" }) {
		t.Errorf("recent events on the page %v, want the edge failover first (after its moves)", v.Events)
	}

	shot, err := chromedp.Run(bctx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	path := filepath.Join(opsArtifactDir(t), "status-page-edge-down.png")
	if err := os.WriteFile(path, shot, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot saved: %s (%d bytes)", path, len(shot))
	img, err := png.Decode(bytes.NewReader(shot))
	if err != nil {
		t.Fatalf("screenshot is not a PNG: %v", err)
	}
	b := img.Bounds()
	if b.Dx() < 640 || b.Dy() < 400 {
		t.Fatalf("screenshot is %dx%d", b.Dx(), b.Dy())
	}
	// The down badge and row are visible as red in the picture itself.
	if n := opsRedPixels(img); n < 200 {
		t.Errorf("screenshot has %d strongly red pixels; the down edge should stand out", n)
	}
}

// opsRedPixels counts pixels close to the page's "down" red (#c62828).
func opsRedPixels(img image.Image) int {
	n := 0
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			r, g, bl, _ := img.At(x, y).RGBA()
			if r>>8 > 170 && g>>8 < 80 && bl>>8 < 80 {
				n++
			}
		}
	}
	return n
}

// opsArtifactDir is $EDGEWISE_ARTIFACTS when set (CI keeps it), else a
// directory that lives as long as the test.
func opsArtifactDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("EDGEWISE_ARTIFACTS")
	if dir == "" {
		return t.TempDir()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("artifact directory: %v", err)
	}
	return dir
}
