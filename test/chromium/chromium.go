// Package chromium starts headless Chromium for edgewise's tests: a fresh
// profile, the flags the project runs it with, its own process group (the
// renderer, GPU and network helpers go with it), and its output kept for
// the test log. Launch opens a page; DevTools also attaches chromedp for
// tests that drive the page.
package chromium

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/remote"
)

// flags are the project's rules for headless Chromium in tests: no
// sandbox, GPU, first-run UI or background traffic (the machine has no
// internet, and tests only talk to loopback).
var flags = []string{
	"--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
	"--disable-background-networking", "--disable-component-update", "--disable-sync",
	"--disable-dev-shm-usage",
}

// Browser is one running Chromium.
type Browser struct {
	// Exited is closed when the browser process has exited.
	Exited <-chan struct{}
	// Profile is its user-data directory.
	Profile string

	cmd     *exec.Cmd
	logPath string
	once    sync.Once
	exited  chan struct{}
}

// Launch starts Chromium at bin on url with a fresh profile and extra
// flags. The test's cleanup closes it.
func Launch(t testing.TB, bin, url string, extra ...string) *Browser {
	t.Helper()
	dir := t.TempDir()
	b := &Browser{Profile: filepath.Join(dir, "profile"), logPath: filepath.Join(dir, "chromium.log"), exited: make(chan struct{})}
	b.Exited = b.exited
	logf, err := os.Create(b.logPath)
	if err != nil {
		t.Fatal(err)
	}
	args := append(append(append([]string{}, flags...), extra...), "--user-data-dir="+b.Profile, url)
	b.cmd = exec.Command(bin, args...)
	b.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	b.cmd.Stdout, b.cmd.Stderr = logf, logf
	if err := b.cmd.Start(); err != nil {
		logf.Close()
		t.Fatalf("start chromium: %v", err)
	}
	go func() { // ends when the process does; Close makes sure it does
		_ = b.cmd.Wait()
		logf.Close()
		close(b.exited)
	}()
	t.Cleanup(func() {
		b.Close()
		if t.Failed() {
			t.Logf("chromium output:\n%s", b.Log())
		}
	})
	return b
}

// Close ends the browser at once, as a user killing it would: every
// connection it had goes with it (SIGKILL to its process group).
func (b *Browser) Close() {
	b.once.Do(func() {
		_ = syscall.Kill(-b.cmd.Process.Pid, syscall.SIGKILL)
		<-b.exited
	})
}

// Signal sends sig to the browser's whole process group (SIGSTOP freezes
// it: a browser that vanished without closing anything).
func (b *Browser) Signal(sig syscall.Signal) {
	_ = syscall.Kill(-b.cmd.Process.Pid, sig)
}

// Log is what the browser printed so far.
func (b *Browser) Log() string {
	data, _ := os.ReadFile(b.logPath)
	return string(data)
}

// DevTools launches Chromium with remote debugging on an ephemeral
// loopback port and returns a chromedp context attached to one tab. The
// test's cleanup detaches and closes the browser.
func DevTools(ctx context.Context, t testing.TB, bin string, extra ...string) (context.Context, *Browser) {
	t.Helper()
	b := Launch(t, bin, "about:blank", append([]string{"--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0"}, extra...)...)
	var port, path string
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-b.Exited:
			t.Fatalf("chromium exited early:\n%s", b.Log())
		default:
		}
		data, err := os.ReadFile(filepath.Join(b.Profile, "DevToolsActivePort"))
		lines := strings.Split(strings.TrimSpace(string(data)), "\n")
		if err == nil && len(lines) == 2 {
			port, path = lines[0], lines[1]
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no DevToolsActivePort from chromium within 30s:\n%s", b.Log())
		}
		time.Sleep(20 * time.Millisecond)
	}
	actx, acancel := remote.NewAllocator(ctx, "ws://127.0.0.1:"+port+path, remote.NoModifyURL)
	bctx, bcancel := chromedp.NewContext(actx)
	t.Cleanup(func() { // runs before Launch's: detach, then kill
		bcancel()
		acancel()
	})
	// Attach and open the tab now, before several goroutines use it.
	if err := chromedp.Do(bctx); err != nil {
		t.Fatalf("attach to chromium: %v", err)
	}
	return bctx, b
}
