package admin

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/edgewise-sip/edgewise/registrar/calls"
)

// TestPageShowsSurvivalMode: while no edge is usable the page says so
// first, since when and how many calls edgewise carried itself; a local
// call shows its route; once over, a quiet line remembers the last period.
func TestPageShowsSurvivalMode(t *testing.T) {
	since := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	ended := since.Add(10 * time.Minute)
	for _, tt := range []struct {
		name string
		sv   calls.SurvivalStatus
		want []string
		not  []string
	}{
		{"active", calls.SurvivalStatus{Active: true, Since: &since, Calls: 3, FallbackTargets: 2}, []string{
			`data-active="true"`, `SURVIVAL MODE</strong> since 2026-01-02 03:04:05Z`, `fallback targets (2)`, `3 calls carried so far`,
			`<td>local</td>`, `<td>outbound (emergency)</td>`, `<td>fallback 192.0.2.30:5060</td>`,
		}, nil},
		{"over", calls.SurvivalStatus{Since: &since, Ended: &ended, Calls: 3}, []string{
			`data-active="false"`, `last survival mode 2026-01-02 03:04:05Z to 2026-01-02 03:14:05Z: 3 calls carried`,
		}, []string{`SURVIVAL MODE`}},
		{"never", calls.SurvivalStatus{}, nil, []string{`id="survival"`}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			sv := tt.sv
			doc := Status{Version: "test", Survival: &sv, Calls: []calls.CallStatus{
				{ID: "c1", Direction: "local", Route: "local", User: "alice", From: "alice", To: "bob", State: "answered"},
				{ID: "c2", Direction: "outbound", Route: "fallback", Emergency: true, User: "alice", To: "911", Target: "192.0.2.30:5060", State: "answered"},
			}}
			s := New(Options{Status: func() Status { return doc }, AllowedHosts: []string{"example.com"}}, nil)
			rec := httptest.NewRecorder()
			s.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
			if rec.Code != http.StatusOK {
				t.Fatalf("code %d: %s", rec.Code, rec.Body)
			}
			body := rec.Body.String()
			for _, w := range tt.want {
				if !strings.Contains(body, w) {
					t.Errorf("page lacks %q", w)
				}
			}
			for _, w := range tt.not {
				if strings.Contains(body, w) {
					t.Errorf("page shows %q", w)
				}
			}
		})
	}
}
