package main

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/edgewise-sip/edgewise/cmd/edgewise/admin"
	"github.com/edgewise-sip/edgewise/configs"
	"github.com/edgewise-sip/edgewise/registrar/lockout"
	"github.com/edgewise-sip/edgewise/registrar/twilio/edge"
)

// journalSize bounds the recent events kept for the status page: enough for
// an incident's story (a failover, the moves, a reload, the failback).
const journalSize = 100

// journal keeps the most recent events in memory. Reloads are not written
// here: configs.Live keeps their history, and recent merges it in.
type journal struct {
	mu     sync.Mutex
	events []admin.Event // oldest first, at most journalSize
}

func (j *journal) add(e admin.Event) {
	if e.At.IsZero() {
		e.At = time.Now()
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	if len(j.events) == journalSize {
		j.events = slices.Delete(j.events, 0, 1)
	}
	j.events = append(j.events, e)
}

// edgeChange records a change of the active edge.
func (j *journal) edgeChange(c edge.Change) {
	sev := "info"
	switch c.Kind {
	case edge.ChangeFailover:
		sev = "warn"
	case edge.ChangeUnavailable:
		sev = "error"
	}
	text := fmt.Sprintf("active edge %s → %s", orNone(c.From), orNone(c.To))
	if c.Reason != "" {
		text += ": " + c.Reason
	}
	j.add(admin.Event{At: c.At, Kind: "edge_" + string(c.Kind), Severity: sev, Text: text})
}

// edgeState records an edge going down or coming back up, active or not.
func (j *journal) edgeState(edge string, down bool, reason string, at time.Time) {
	e := admin.Event{At: at, Kind: "edge_up", Severity: "info", Text: reason}
	if down {
		e.Kind, e.Severity = "edge_down", "warn"
	}
	j.add(e)
}

// recent returns the events and the reload history, newest first, at most
// journalSize of them.
func (j *journal) recent(reloads []configs.ReloadResult) []admin.Event {
	j.mu.Lock()
	out := slices.Clone(j.events)
	j.mu.Unlock()
	// Newest first, and among events of the same instant the later one
	// first: an edge going down comes before the failover it causes.
	slices.Reverse(out)
	for _, r := range reloads {
		out = append(out, reloadEvent(r))
	}
	slices.SortStableFunc(out, func(a, b admin.Event) int { return b.At.Compare(a.At) })
	if len(out) > journalSize {
		out = out[:journalSize]
	}
	return out
}

func reloadEvent(r configs.ReloadResult) admin.Event {
	e := admin.Event{At: r.Time, Kind: "reload", Severity: "info"}
	switch {
	case !r.OK:
		e.Kind, e.Severity = "reload_refused", "error"
		e.Text = fmt.Sprintf("config reload (%s) refused: %s", r.Trigger, strings.Join(r.Problems, "; "))
	case r.Trigger == "startup":
		e.Text = "started with config " + r.Version
	case r.Unchanged:
		e.Text = fmt.Sprintf("config reload (%s): nothing changed", r.Trigger)
	default:
		e.Text = fmt.Sprintf("config reload (%s) → %s: changed %s", r.Trigger, r.Version, strings.Join(r.Changed, ", "))
		if len(r.NeedsRestart) > 0 {
			e.Severity = "warn"
			e.Text += "; needs a restart: " + strings.Join(r.NeedsRestart, ", ")
		}
	}
	return e
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// lockoutEvent describes a source lockout or a user guard for the status
// page's recent events.
func lockoutEvent(ev lockout.Event) admin.Event {
	until := ev.Until.UTC().Format(time.TimeOnly)
	if ev.User != "" {
		return admin.Event{Kind: "lockout", Severity: "warn",
			Text: fmt.Sprintf("user %s under guard until %s after failed logins from many sources: only sources that logged in as %s before may try", ev.User, until, ev.User)}
	}
	return admin.Event{Kind: "lockout", Severity: "warn",
		Text: fmt.Sprintf("source %s locked out until %s after failed logins (last user %s)", ev.Source, until, ev.LastUser)}
}
