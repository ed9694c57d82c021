package configs

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgewise-sip/edgewise/test/kit"
)

const liveBase = `twilio:
  domain: example
  edges: [ashburn, umatilla]
store:
  path: /var/lib/edgewise/e.db
phones:
  - user: alice
    password: a
    twilio_password: t
`

// writeFile replaces path's content in place.
func writeFile(t *testing.T, path, content string) {
	t.Helper()
	must(t, os.WriteFile(path, []byte(content), 0o600))
}

// renameInto replaces path atomically, the way editors and config managers do.
func renameInto(t *testing.T, path, content string) {
	t.Helper()
	tmp := filepath.Join(filepath.Dir(path), ".tmp-"+filepath.Base(path))
	writeFile(t, tmp, content)
	must(t, os.Rename(tmp, path))
}

// newLive loads content from a fresh file and wraps it in a Live whose log
// lines go to the returned buffer.
func newLive(t *testing.T, content string) (*Live, string, *syncBuf) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "edgewise.yaml")
	writeFile(t, path, content)
	cfg, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	buf := &syncBuf{}
	return NewLive(cfg, slog.New(slog.NewTextHandler(buf, nil))), path, buf
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestLiveReload(t *testing.T) {
	live, path, logs := newLive(t, liveBase)
	first := live.Current()
	if r := live.Last(); r.Trigger != "startup" || !r.OK || r.Version != first.Version {
		t.Fatalf("startup result %+v", r)
	}

	var calls []string
	live.OnReload("one", func(old, new *Config) (func(), error) {
		return func() { calls = append(calls, "1:"+old.Version+">"+new.Version) }, nil
	})
	live.OnReload("two", func(old, new *Config) (func(), error) {
		if live.Current() != old {
			t.Error("a component prepares after the swap")
		}
		return func() {
			calls = append(calls, "2:"+old.Version+">"+new.Version)
			if live.Current() != new || live.Last().Version != new.Version {
				t.Error("commit runs before the swap is visible")
			}
		}, nil
	})

	// Unchanged file: nothing happens.
	r := live.Reload("sighup")
	if !r.OK || !r.Unchanged || len(calls) != 0 || live.Current() != first {
		t.Fatalf("unchanged reload %+v calls %v", r, calls)
	}

	// Broken file: refused, old config kept, every problem logged with FILE:LINE.
	writeFile(t, path, strings.Replace(liveBase, "umatilla]", "umatila, roaming]", 1)+"bogus: 1\n")
	r = live.Reload("api")
	if r.OK || live.Current() != first || len(calls) != 0 {
		t.Fatalf("broken reload %+v", r)
	}
	wantProblems := []string{
		path + `:3: twilio.edges[1]: unknown edge "umatila" (hint: did you mean "umatilla"?)`,
		path + `:3: twilio.edges[2]: "roaming" is not available for SIP Domains (hint: list edges explicitly in order of preference, e.g. [ashburn, umatilla])`,
		path + `:10: bogus: unknown key (hint: known keys: log, sip, twilio, phones, store, cluster, admin, media, calls, token, shutdown)`,
	}
	if !reflect.DeepEqual(r.Problems, wantProblems) {
		t.Errorf("problems\n%s\nwant\n%s", strings.Join(r.Problems, "\n"), strings.Join(wantProblems, "\n"))
	}
	if r.Version == "" || r.Version == first.Version || r.Trigger != "api" {
		t.Errorf("failed result should carry the refused file's version: %+v", r)
	}
	for _, p := range wantProblems {
		if !strings.Contains(logs.String(), "level=ERROR") || !strings.Contains(logs.String(), strings.ReplaceAll(p, `"`, `\"`)) {
			t.Errorf("problem not logged at error level: %s\nlogs:\n%s", p, logs)
		}
	}

	// Good file: swapped, subscribers called in order, diff reported.
	good := strings.Replace(liveBase, "[ashburn, umatilla]", "[umatilla, ashburn]", 1)
	good = strings.Replace(good, "/var/lib/edgewise/e.db", "/var/lib/edgewise/other.db", 1)
	writeFile(t, path, good)
	r = live.Reload("sighup")
	second := live.Current()
	if !r.OK || r.Unchanged || second == first || second.Version != r.Version {
		t.Fatalf("good reload %+v", r)
	}
	if !reflect.DeepEqual(r.Changed, []string{"twilio.edges", "store.path"}) || !reflect.DeepEqual(r.NeedsRestart, []string{"store.path"}) {
		t.Errorf("changed %v needs restart %v", r.Changed, r.NeedsRestart)
	}
	wantCalls := []string{"1:" + first.Version + ">" + second.Version, "2:" + first.Version + ">" + second.Version}
	if !reflect.DeepEqual(calls, wantCalls) {
		t.Errorf("calls %v want %v", calls, wantCalls)
	}

	// Missing file: refused, old kept.
	must(t, os.Remove(path))
	if r = live.Reload("file"); r.OK || live.Current() != second || len(r.Problems) != 1 {
		t.Errorf("missing file reload %+v", r)
	}

	h := live.History()
	var triggers []string
	for _, x := range h {
		triggers = append(triggers, x.Trigger)
	}
	if !reflect.DeepEqual(triggers, []string{"startup", "sighup", "api", "sighup", "file"}) {
		t.Errorf("history %v", triggers)
	}
}

func TestLiveSecretFileChangeIsAChange(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "pw"), "one\n")
	path := filepath.Join(dir, "c.yaml")
	writeFile(t, path, strings.Replace(liveBase, "password: a", "password_file: pw", 1))
	cfg, err := Load(path)
	must(t, err)
	live := NewLive(cfg, nil)
	writeFile(t, filepath.Join(dir, "pw"), "two\n")
	r := live.Reload("sighup")
	if r.Unchanged || !reflect.DeepEqual(r.Changed, []string{"phones[alice].password", "phones[alice].ha1"}) {
		t.Errorf("rotated secret file: %+v", r)
	}
	if p, _ := live.Current().Phone("alice"); p.Password.Value() != "two" {
		t.Error("new secret not applied")
	}
}

func TestLiveHistoryBounded(t *testing.T) {
	live, _, _ := newLive(t, liveBase)
	for i := 0; i < historySize+7; i++ {
		live.Reload("api")
	}
	h := live.History()
	if len(h) != historySize {
		t.Fatalf("history len %d", len(h))
	}
	for i := 1; i < len(h); i++ {
		if h[i].Time.Before(h[i-1].Time) || h[i].Trigger != "api" {
			t.Fatalf("history not oldest-first or startup not rotated out at %d: %+v", i, h[i])
		}
	}
	if !reflect.DeepEqual(live.Last(), h[len(h)-1]) {
		t.Error("Last is not the newest history entry")
	}
}

func TestLiveConcurrentReloadAndRead(t *testing.T) {
	live, path, _ := newLive(t, liveBase)
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(2)
		go func() {
			defer wg.Done()
			for j := 0; j < 20; j++ {
				live.Reload("api")
			}
		}()
		go func(i int) {
			defer wg.Done()
			for j := 0; j < 20; j++ {
				if live.Current() == nil {
					t.Error("nil config")
				}
				_ = live.History()
				if i == 0 {
					edges := []string{"[ashburn, umatilla]", "[umatilla, ashburn]"}[j%2]
					tmp := path + ".tmp"
					if err := os.WriteFile(tmp, []byte(strings.Replace(liveBase, "[ashburn, umatilla]", edges, 1)), 0o600); err != nil {
						t.Error(err)
					} else if err := os.Rename(tmp, path); err != nil {
						t.Error(err)
					}
				}
			}
		}(i)
	}
	wg.Wait()
}

func TestDiff(t *testing.T) {
	base, err := Parse("c.yaml", []byte(liveBase))
	must(t, err)
	tests := []struct {
		name string
		edit func(string) string
		want []string
	}{
		{"same", func(s string) string { return s }, nil},
		{"edges and listen", func(s string) string {
			return strings.Replace(s, "[ashburn, umatilla]", "[dublin]", 1) + "sip:\n  listen: [\"udp:127.0.0.1:5070\"]\n  lockout: {window: 2m}\n"
		}, []string{"sip.listen", "sip.lockout.window", "twilio.edges"}},
		{"phone added and changed", func(s string) string {
			s = strings.Replace(s, "password: a", "password: b", 1)
			return s + "  - user: bob\n    password: b\n    twilio_password: t\n"
		}, []string{"phones[alice].password", "phones[alice].ha1", "phones[bob]"}},
		{"phone removed", func(s string) string {
			return strings.Replace(s, "phones:\n  - user: alice\n    password: a\n    twilio_password: t\n", "", 1)
		}, []string{"phones[alice]"}},
		{"token added", func(s string) string {
			return s + "token: {account_sid: AC0123456789abcdef0123456789abcdef, twiml_app_sid: AP0123456789abcdef0123456789abcdef, api_keys: [{sid: SK0123456789abcdef0123456789abcdef, secret: s}]}\n"
		}, []string{"token"}},
		{"log and admin", func(s string) string {
			return s + "log: {level: debug}\nadmin: {listen: 127.0.0.1:9999}\n"
		}, []string{"log.level", "admin.listen"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			next, err := Parse("c.yaml", []byte(tc.edit(liveBase)))
			must(t, err)
			if got := Diff(base, next); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("Diff = %v, want %v", got, tc.want)
			}
		})
	}

	// Keyed lists: order of API keys matters (the first signs).
	tok := liveBase + "token:\n  account_sid: AC0123456789abcdef0123456789abcdef\n  twiml_app_sid: AP0123456789abcdef0123456789abcdef\n  api_keys:\n    - {sid: SK0123456789abcdef0123456789abcdef, secret: s}\n    - {sid: SKfedcba9876543210fedcba9876543210, secret: t}\n"
	a, err := Parse("c.yaml", []byte(tok))
	must(t, err)
	swapped := strings.Replace(strings.Replace(tok, "SK0123456789abcdef0123456789abcdef, secret: s", "X", 1),
		"SKfedcba9876543210fedcba9876543210, secret: t", "SK0123456789abcdef0123456789abcdef, secret: s", 1)
	swapped = strings.Replace(swapped, "X", "SKfedcba9876543210fedcba9876543210, secret: t", 1)
	b, err := Parse("c.yaml", []byte(swapped))
	must(t, err)
	if got := Diff(a, b); !reflect.DeepEqual(got, []string{"token.api_keys"}) {
		t.Errorf("reordered keys: %v", got)
	}
	if got := NeedsRestart([]string{"token", "token.ttl", "admin.listen", "phones[a]"}); !reflect.DeepEqual(got, []string{"token", "admin.listen"}) {
		t.Errorf("NeedsRestart %v", got)
	}
}

func TestWatch(t *testing.T) {
	live, path, _ := newLive(t, liveBase)
	ready := make(chan struct{})
	live.watching = func() { close(ready) }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- live.Watch(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Watch: %v", err)
		}
	}()
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("Watch ended early: %v", err)
	}

	edgesNow := func(want ...string) func() bool {
		return func() bool { return reflect.DeepEqual(live.Current().Twilio.Edges, want) }
	}

	// 1. Write in place.
	writeFile(t, path, strings.Replace(liveBase, "[ashburn, umatilla]", "[dublin, ashburn]", 1))
	kit.WaitFor(t, 10*time.Second, "in-place write to apply", edgesNow("dublin", "ashburn"))
	if r := live.Last(); r.Trigger != "file" || !r.OK {
		t.Errorf("last %+v", r)
	}

	// 2. A broken file does not stop the watcher ...
	writeFile(t, path, "twilio: [\n")
	kit.WaitFor(t, 10*time.Second, "broken file to be refused", func() bool { r := live.Last(); return !r.OK && r.Trigger == "file" })
	if !reflect.DeepEqual(live.Current().Twilio.Edges, []string{"dublin", "ashburn"}) {
		t.Error("broken file replaced the running config")
	}

	// 3. ... and an atomic rename is picked up.
	renameInto(t, path, strings.Replace(liveBase, "[ashburn, umatilla]", "[tokyo]", 1))
	kit.WaitFor(t, 10*time.Second, "renamed file to apply", edgesNow("tokyo"))

	// 4. Other files in the directory do not trigger reloads.
	n := len(live.History())
	writeFile(t, filepath.Join(filepath.Dir(path), "unrelated.txt"), "x")
	renameInto(t, path, strings.Replace(liveBase, "[ashburn, umatilla]", "[sydney]", 1))
	kit.WaitFor(t, 10*time.Second, "second rename to apply", edgesNow("sydney"))
	if got := len(live.History()) - n; got != 1 {
		t.Errorf("%d reloads for one change next to an unrelated write", got)
	}
}

// TestLiveReloadAllOrNothing: when one component refuses the new config,
// the reload fails with its reason, no component commits (the ones that
// prepared before it included) and the running config stays.
func TestLiveReloadAllOrNothing(t *testing.T) {
	live, path, logs := newLive(t, liveBase)
	first := live.Current()
	var committed []string
	for _, name := range []string{"registrar", "edges", "calls"} {
		live.OnReload(name, func(old, new *Config) (func(), error) {
			if name == "edges" {
				return nil, errors.New("an edge the monitor cannot use")
			}
			return func() { committed = append(committed, name) }, nil
		})
	}
	writeFile(t, path, strings.Replace(liveBase, "[ashburn, umatilla]", "[umatilla, ashburn]", 1))
	r := live.Reload("api")
	if r.OK || live.Current() != first || len(committed) != 0 {
		t.Fatalf("refused reload: %+v, current changed %v, committed %v", r, live.Current() != first, committed)
	}
	if len(r.Problems) != 1 || !strings.Contains(r.Problems[0], "edges refused the new config: an edge the monitor cannot use") {
		t.Fatalf("problems %q", r.Problems)
	}
	if !strings.Contains(logs.String(), "component=edges") {
		t.Errorf("refusal not logged with its component:\n%s", logs)
	}
	if last := live.Last(); last.OK || last.Trigger != "api" {
		t.Errorf("history %+v", last)
	}
}
