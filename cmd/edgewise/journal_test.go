package main

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/edgewise-sip/edgewise/cmd/edgewise/admin"
	"github.com/edgewise-sip/edgewise/configs"
	"github.com/edgewise-sip/edgewise/registrar/twilio/edge"
)

func TestJournal(t *testing.T) {
	var j journal
	t0 := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	j.edgeChange(edge.Change{From: "ashburn", To: "umatilla", Kind: edge.ChangeFailover, Reason: "no answer from any IP", At: t0.Add(time.Minute)})
	j.edgeChange(edge.Change{From: "umatilla", To: "ashburn", Kind: edge.ChangeFailback, At: t0.Add(3 * time.Minute)})
	j.edgeState("ashburn", false, "edge ashburn up: 127.0.1.1 answered 200 in 1ms", t0.Add(2*time.Minute+30*time.Second))
	reloads := []configs.ReloadResult{
		{Time: t0, Trigger: "startup", OK: true, Version: "abc"},
		{Time: t0.Add(2 * time.Minute), Trigger: "file", OK: false, Problems: []string{"e.yaml:3: twilio.edges: unknown edge"}},
		{Time: t0.Add(4 * time.Minute), Trigger: "api", OK: true, Version: "def", Changed: []string{"twilio.edges"}},
	}
	got := j.recent(reloads)
	want := []string{
		"reload info config reload (api) → def: changed twilio.edges",
		"edge_failback info active edge umatilla → ashburn",
		"edge_up info edge ashburn up: 127.0.1.1 answered 200 in 1ms",
		"reload_refused error config reload (file) refused: e.yaml:3: twilio.edges: unknown edge",
		"edge_failover warn active edge ashburn → umatilla: no answer from any IP",
		"reload info started with config abc",
	}
	if len(got) != len(want) {
		t.Fatalf("got %d events: %+v", len(got), got)
	}
	for i, e := range got {
		if s := e.Kind + " " + e.Severity + " " + e.Text; s != want[i] {
			t.Errorf("event %d = %q, want %q", i, s, want[i])
		}
	}

	// Bounded: the oldest go first.
	for i := range journalSize + 5 {
		j.add(admin.Event{At: t0.Add(time.Hour + time.Duration(i)*time.Second), Kind: "lockout", Text: fmt.Sprint(i)})
	}
	got = j.recent(nil)
	if len(got) != journalSize || got[0].Text != fmt.Sprint(journalSize+4) || strings.HasPrefix(got[len(got)-1].Kind, "edge") {
		t.Errorf("after overflow: %d events, newest %q, oldest %q", len(got), got[0].Text, got[len(got)-1].Kind)
	}
}

// TestJournalSameInstant: the failover an edge's fall causes is listed
// above the fall, though both carry the same time.
func TestJournalSameInstant(t *testing.T) {
	var j journal
	at := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	j.edgeState("ashburn", true, "edge ashburn down: 3/3 IPs timed out after 4s", at)
	j.edgeChange(edge.Change{From: "ashburn", To: "umatilla", Kind: edge.ChangeFailover, At: at})
	got := j.recent(nil)
	if len(got) != 2 || got[0].Kind != "edge_failover" || got[1].Kind != "edge_down" {
		t.Errorf("order %+v, want the failover above the edge going down", got)
	}
}
