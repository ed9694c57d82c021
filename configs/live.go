package configs

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// historySize bounds Live's reload history.
const historySize = 50

// ReloadResult records one load attempt (startup or reload).
type ReloadResult struct {
	Time         time.Time `json:"time"`
	Trigger      string    `json:"trigger"` // startup|sighup|file|api
	Version      string    `json:"version,omitempty"`
	Hash         string    `json:"hash,omitempty"`
	OK           bool      `json:"ok"`
	Unchanged    bool      `json:"unchanged"`
	Problems     []string  `json:"problems,omitempty"`      // "FILE:LINE: field: problem" lines
	Changed      []string  `json:"changed,omitempty"`       // field paths, see Diff
	NeedsRestart []string  `json:"needs_restart,omitempty"` // changed fields not applied until restart
}

// Live holds the running config. Readers call Current (one atomic load) and
// keep the snapshot for the whole unit of work (a dialog, a request); a
// reload builds and validates a new Config, then swaps the pointer.
type Live struct {
	cur atomic.Pointer[Config]
	log *slog.Logger

	reloadMu sync.Mutex // serialises Reload

	subMu sync.Mutex // separate so a component may register or read history
	comps []component

	histMu sync.Mutex
	hist   []ReloadResult // ring, oldest first after rotation
	next   int

	reloads reloadCounts // for the Prometheus collector

	watching func() // test hook: called once Watch has its fsnotify watch in place
}

// NewLive starts holding cfg (already loaded; its Path is what Reload
// re-reads) and records it as the "startup" result. A nil logger discards.
func NewLive(cfg *Config, logger *slog.Logger) *Live {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	l := &Live{log: logger}
	l.cur.Store(cfg)
	l.record(ReloadResult{Time: time.Now(), Trigger: "startup", Version: cfg.Version, Hash: cfg.Hash, OK: true})
	return l
}

// Current returns the running config. Never nil; never modify it.
func (l *Live) Current() *Config { return l.cur.Load() }

// Prepare is a component's half of a reload: it builds the state the new
// config asks of it and checks it, changing nothing in force, and returns
// commit, which puts that state in force and cannot fail. An error refuses
// the whole reload: no component changes, and the error, prefixed with the
// component's name, is the reload's problem.
type Prepare func(old, new *Config) (commit func(), err error)

type component struct {
	name    string
	prepare Prepare
}

// OnReload registers a component. On every reload that changes something,
// each component prepares in registration order; if all succeed the config
// is swapped and each commit runs, in the same order; if one refuses,
// nothing is swapped and no commit runs. prepare and commit run while the
// reload lock is held: they must not call Reload (Current, Last and History
// are fine).
func (l *Live) OnReload(name string, prepare Prepare) {
	l.subMu.Lock()
	l.comps = append(l.comps, component{name, prepare})
	l.subMu.Unlock()
}

// Reload re-reads the current config's file. On any problem the running
// config stays and every problem is logged; when neither the file nor what
// it resolves to (secret files, env vars) changed, the result is Unchanged
// and nobody is notified.
func (l *Live) Reload(trigger string) ReloadResult {
	l.reloadMu.Lock()
	defer l.reloadMu.Unlock()

	old := l.Current()
	res := ReloadResult{Time: time.Now(), Trigger: trigger}
	data, err := os.ReadFile(old.Path)
	var cfg *Config
	if err == nil {
		// Hash what was read even if it is refused, so the history shows
		// which file version failed.
		sum := sha256.Sum256(data)
		res.Hash = hex.EncodeToString(sum[:])
		res.Version = res.Hash[:12]
		cfg, err = Parse(old.Path, data)
	} else {
		err = fmt.Errorf("%s: read config: %w", old.Path, err)
	}
	if err != nil {
		res.Problems = problemLines(err)
		l.record(res)
		for _, p := range res.Problems {
			l.log.Error("config problem", "problem", p)
		}
		l.log.Error("config reload refused; keeping the running config", "trigger", trigger,
			"file", old.Path, "problems", len(res.Problems), "running_version", old.Version)
		return res
	}
	res.Version, res.Hash, res.OK = cfg.Version, cfg.Hash, true
	res.Changed = Diff(old, cfg)
	if len(res.Changed) == 0 {
		// Same file and same resolved values: swapping would only make
		// subscribers redo work. A changed secret file with an unchanged
		// YAML file still counts as a change.
		res.Unchanged = true
		l.record(res)
		l.log.Info("config unchanged", "trigger", trigger, "version", cfg.Version)
		return res
	}
	res.NeedsRestart = NeedsRestart(res.Changed)

	// All or nothing: every component builds and checks its new state
	// before anything changes.
	l.subMu.Lock()
	comps := append([]component{}, l.comps...)
	l.subMu.Unlock()
	commits := make([]func(), 0, len(comps))
	for _, c := range comps {
		commit, err := c.prepare(old, cfg)
		if err != nil {
			res.OK = false
			res.Problems = []string{fmt.Sprintf("%s: %s refused the new config: %v", old.Path, c.name, err)}
			l.record(res)
			l.log.Error("config reload refused; keeping the running config", "trigger", trigger, "file", old.Path,
				"component", c.name, "error", err, "running_version", old.Version)
			return res
		}
		commits = append(commits, commit)
	}
	l.cur.Store(cfg)
	l.record(res)
	l.log.Info("config reloaded", "trigger", trigger, "version", cfg.Version, "previous", old.Version, "changed", res.Changed)
	if len(res.NeedsRestart) > 0 {
		l.log.Warn("config fields changed that apply only after a restart", "fields", res.NeedsRestart)
	}
	for _, commit := range commits {
		if commit != nil {
			commit()
		}
	}
	return res
}

// Last returns the most recent result.
func (l *Live) Last() ReloadResult {
	l.histMu.Lock()
	defer l.histMu.Unlock()
	return l.hist[(l.next-1+len(l.hist))%len(l.hist)]
}

// History returns up to the last 50 results, oldest first.
func (l *Live) History() []ReloadResult {
	l.histMu.Lock()
	defer l.histMu.Unlock()
	out := make([]ReloadResult, 0, len(l.hist))
	if len(l.hist) == historySize {
		out = append(out, l.hist[l.next:]...)
		out = append(out, l.hist[:l.next]...)
	} else {
		out = append(out, l.hist...)
	}
	return out
}

func (l *Live) record(r ReloadResult) {
	l.reloads.count(r)
	l.histMu.Lock()
	defer l.histMu.Unlock()
	if len(l.hist) < historySize {
		l.hist = append(l.hist, r)
		l.next = len(l.hist) % historySize
		return
	}
	l.hist[l.next] = r
	l.next = (l.next + 1) % historySize
}

func problemLines(err error) []string {
	var ps Problems
	if errors.As(err, &ps) {
		return ps.Strings()
	}
	return []string{err.Error()}
}
