package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/edgewise-sip/edgewise/cmd/edgewise/admin"
	"github.com/edgewise-sip/edgewise/registrar/calls"
)

// TestStatusPrintsSurvivalMode: `edgewise status` says survival mode, since
// when and the calls carried, and a local call's route where the edge goes.
func TestStatusPrintsSurvivalMode(t *testing.T) {
	since := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	now := since.Add(90 * time.Second)
	st := &admin.Status{
		Survival: &calls.SurvivalStatus{Active: true, Since: &since, Calls: 2},
		Calls:    []calls.CallStatus{{ID: "c1", Direction: "local", Route: "local", User: "alice", To: "bob", State: "answered", Started: since}},
	}
	var out bytes.Buffer
	printStatus(&out, st, now)
	got := out.String()
	for _, want := range []string{
		"SURVIVAL MODE since 2026-01-02T03:04:05Z (1m30s): no Twilio edge is usable; 2 calls carried without Twilio",
		"c1    local      alice  bob  local",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("status lacks %q:\n%s", want, got)
		}
	}
	st.Survival.Active = false
	out.Reset()
	printStatus(&out, st, now)
	if strings.Contains(out.String(), "SURVIVAL") {
		t.Errorf("survival shown while over:\n%s", out.String())
	}
}
