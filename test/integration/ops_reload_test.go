package integration

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edgewise-sip/edgewise/configs"
	"github.com/edgewise-sip/edgewise/test/kit"
)

// The load both reload tests run: SIPp phones keep 50 calls with RTP up
// (rate × call length > 50, so -l 50 holds it there) and keep placing new
// ones at 10 per second; 180 calls in all, about 18 s of arrivals, so the
// run is bounded in count (-m) and time (-timeout).
var opsReloadLoad = opsLoadSpec{calls: 180, rate: 10, limit: 50, hold: 5500 * time.Millisecond}

var opsUsers = []string{"alice", "bob", "carol"}

// TestOpsFlipUnderLoad: the operator reverses twilio.edges by rewriting the
// config file (atomic rename; the daemon watches it) while 50 calls with
// RTP are up and new ones keep coming. Every upstream registration moves to
// the new first edge, calls in progress stay where they are, new calls go
// to the new edge, no call fails or drops, RTP never stalls, and the
// reload record says what changed.
func TestOpsFlipUnderLoad(t *testing.T) {
	s := startSim(t)
	d := startDaemon(t, opsLoadConfig(s))
	registerPhones(t, d, opsUsers...)
	kit.WaitFor(t, 10*time.Second, "every user registered upstream on ashburn", func() bool {
		return opsAllOn(t, d, s, "ashburn", opsUsers...)
	})
	before := opsMustStatus(t, d)
	cfg, err := os.ReadFile(d.cfgPath)
	if err != nil {
		t.Fatal(err)
	}

	var flipAt, movedAt time.Time
	calls := runOpsLoad(t, s, d, opsReloadLoad, func() {
		flipAt = time.Now()
		writeFileAtomic(t, d.cfgPath, strings.Replace(string(cfg), "edges: [ashburn, umatilla]", "edges: [umatilla, ashburn]", 1))
		kit.WaitFor(t, 15*time.Second, "every user registered upstream on umatilla only", func() bool {
			return opsAllOn(t, d, s, "umatilla", opsUsers...)
		})
		movedAt = time.Now()
		t.Logf("every registration on umatilla %v after the file was replaced", movedAt.Sub(flipAt).Round(time.Millisecond))
	})

	// The reload record: the file watcher applied it, it names the edge
	// order as what changed, and nothing needs a restart.
	st := opsMustStatus(t, d)
	last := st.Config.LastReload
	if !last.OK || last.Trigger != "file" || !slices.Contains(last.Changed, "twilio.edges") ||
		len(last.NeedsRestart) != 0 || last.Hash == "" || last.Hash == before.Config.Hash {
		t.Fatalf("last reload %+v, want an applied file reload changing twilio.edges with a new hash (was %s)", last, before.Config.Hash)
	}
	if last.Time.Before(flipAt.Add(-time.Second)) || last.Time.After(movedAt) {
		t.Errorf("reload recorded at %v, the file was replaced at %v", last.Time, flipAt)
	}
	if n := len(st.Config.Reloads); n < 2 || !slices.Contains(st.Config.Reloads[n-1].Changed, "twilio.edges") {
		t.Errorf("reload history %+v, want the startup record and the flip last", st.Config.Reloads)
	}
	if !slices.Equal(st.Config.Edges, []string{"umatilla", "ashburn"}) {
		t.Errorf("running edge order %v after the flip", st.Config.Edges)
	}
	t.Logf("reload record: %s at %s, changed %v, hash %s → %s", last.Trigger, last.Time.Format(time.RFC3339Nano), last.Changed, before.Config.Hash, last.Hash)

	// Calls in progress stayed on their edge; calls placed once the new
	// order applied went to the new first edge. Calls set up in the
	// moment of the swap may go either way.
	var oldEdge, newEdge int
	for _, c := range calls {
		switch {
		case c.StartedAt.Before(flipAt):
			if c.Edge != "ashburn" {
				t.Errorf("call %s started before the flip reached %s", c.ID, c.Edge)
			}
			oldEdge++
		case c.StartedAt.After(last.Time.Add(500 * time.Millisecond)):
			if c.Edge != "umatilla" {
				t.Errorf("call %s started %v after the reload reached %s", c.ID, c.StartedAt.Sub(last.Time), c.Edge)
			}
			newEdge++
		}
	}
	t.Logf("calls: %d on the old edge before the flip, %d on the new edge after it", oldEdge, newEdge)
	if oldEdge < opsReloadLoad.limit-2 || newEdge == 0 {
		t.Fatalf("the flip did not happen under load: %d calls before it, %d after", oldEdge, newEdge)
	}
	if !opsAllOn(t, d, s, "umatilla", opsUsers...) {
		t.Fatal("a registration left umatilla after the load")
	}
	// A planned flip is a reload, not a failure: one active-edge change of
	// kind reload, no failover counted, each registration moved once.
	fams := scrapeMetrics(t, d)
	failovers := fams.value("edgewise_edge_failovers_total")
	reloads := fams.value("edgewise_edge_active_changes_total", "kind", "reload")
	moves := fams.value("edgewise_upstream_moves_total")
	if failovers != 0 || reloads != 1 || moves != float64(len(opsUsers)) {
		t.Errorf("metrics after the flip: %v failovers (want 0), %v reload changes of the active edge (want 1), %v moves (want %d)",
			failovers, reloads, moves, len(opsUsers))
	}
}

// TestOpsBrokenReloadUnderLoad: under the same load the config file is
// replaced by a broken one (edge order reversed with a misspelt edge, and an
// unknown key). The file watcher and POST /v1/reload both refuse it with
// FILE:LINE problems; the running config, the registrations and the calls
// are untouched.
func TestOpsBrokenReloadUnderLoad(t *testing.T) {
	s := startSim(t)
	d := startDaemon(t, opsLoadConfig(s))
	registerPhones(t, d, opsUsers...)
	kit.WaitFor(t, 10*time.Second, "every user registered upstream on ashburn", func() bool {
		return opsAllOn(t, d, s, "ashburn", opsUsers...)
	})
	before := opsMustStatus(t, d)
	movesBefore := scrapeMetrics(t, d).value("edgewise_upstream_moves_total")
	cfg, err := os.ReadFile(d.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	broken := strings.Replace(string(cfg), "edges: [ashburn, umatilla]", "edges: [umatilla, ashbrun]", 1)
	broken = strings.Replace(broken, "  realm: edgewise.test\n", "  realm: edgewise.test\n  max_expirse: 60s\n", 1)
	wantProblems := []string{
		fmt.Sprintf("%s:%d: sip.max_expirse: unknown key", d.cfgPath, opsLineOf(t, broken, "max_expirse")),
		fmt.Sprintf("%s:%d: twilio.edges[1]: unknown edge \"ashbrun\"", d.cfgPath, opsLineOf(t, broken, "ashbrun")),
	}

	// The same load, shorter: the refusal takes a moment, and the calls
	// placed after it need only show that nothing moved.
	spec := opsReloadLoad
	spec.calls = 110
	calls := runOpsLoad(t, s, d, spec, func() {
		writeFileAtomic(t, d.cfgPath, broken)
		var last configs.ReloadResult
		kit.WaitFor(t, 10*time.Second, "the file watcher to refuse the broken file", func() bool {
			st, err := opsGetStatus(d)
			last = st.Config.LastReload
			return err == nil && last.Trigger == "file" && !last.OK
		})
		opsHasProblems(t, "file reload", last.Problems, wantProblems)

		resp, err := http.Post(d.adminURL+"/v1/reload", "", nil)
		if err != nil {
			t.Fatal(err)
		}
		var res configs.ReloadResult
		err = json.NewDecoder(resp.Body).Decode(&res)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusUnprocessableEntity || res.OK {
			t.Fatalf("POST /v1/reload of the broken file: %s ok=%v (%v), want 422", resp.Status, res.OK, err)
		}
		opsHasProblems(t, "POST /v1/reload", res.Problems, wantProblems)
		t.Logf("refused with:\n%s", strings.Join(res.Problems, "\n"))

		st := opsMustStatus(t, d)
		if st.Config.Hash != before.Config.Hash || !slices.Equal(st.Config.Edges, []string{"ashburn", "umatilla"}) {
			t.Fatalf("running config changed by a refused reload: hash %s → %s, edges %v", before.Config.Hash, st.Config.Hash, st.Config.Edges)
		}
	})

	// Nothing moved: the registrations never left ashburn, no move was
	// counted, and every call went to ashburn.
	if !opsAllOn(t, d, s, "ashburn", opsUsers...) {
		t.Fatal("registrations left ashburn after a refused reload")
	}
	if moves := scrapeMetrics(t, d).value("edgewise_upstream_moves_total"); moves != movesBefore {
		t.Fatalf("edgewise_upstream_moves_total went %v → %v across a refused reload", movesBefore, moves)
	}
	for _, c := range calls {
		if c.Edge != "ashburn" {
			t.Errorf("call %s went to %s after a refused reload", c.ID, c.Edge)
		}
	}
	if st := opsMustStatus(t, d); st.Config.LastReload.OK || st.Config.Hash != before.Config.Hash {
		t.Fatalf("after the load: last reload %+v, hash %s (was %s)", st.Config.LastReload, st.Config.Hash, before.Config.Hash)
	}
}

// runOpsLoad runs spec against the daemon, calls op once all but two of the
// concurrent calls are up, checks op finished while calls were still up,
// and then that nothing was lost: SIPp failed no call, edgesim saw every
// call answered and ended by the phone's BYE with RTP both ways, edgewise
// counted every setup as answered and has no call left, and the relay
// showed no loss or stall beyond jitter. It returns edgesim's calls.
func runOpsLoad(t *testing.T, s *sim, d *daemon, spec opsLoadSpec, op func()) []simCall {
	t.Helper()
	m0 := scrapeMetrics(t, d)
	// RTP must flow from shortly after the answer (setup on this busy box
	// takes up to a second) until the phone's BYE.
	watch := watchOpsCalls(t, d, 1500*time.Millisecond, spec.hold)
	load := startOpsLoad(t, d, spec, opsUsers...)
	started := time.Now()
	kit.WaitFor(t, spec.hold+20*time.Second, fmt.Sprintf("%d calls answered at once", spec.limit-2), func() bool {
		if !load.running() {
			t.Fatalf("sipp ended before the calls were up:\n%s", load.report())
		}
		st, err := opsGetStatus(d)
		if err != nil {
			return false
		}
		n := 0
		for _, c := range st.Calls {
			if c.State == "answered" {
				n++
			}
		}
		return n >= spec.limit-2
	})
	t.Logf("%d calls up after %v", spec.limit-2, time.Since(started).Round(time.Millisecond))
	op()
	if !load.running() {
		t.Fatalf("the load ended before the operation did; it did not happen under load:\n%s", load.report())
	}
	stats := load.wait(t, 2*time.Minute)
	watch.close()
	t.Logf("sipp: %d created, %d successful, %d failed, %d retransmissions, exit %d, %v in all",
		stats.Created, stats.Successful, stats.Failed, stats.Retransmissions, load.code, time.Since(started).Round(time.Millisecond))
	if load.code != 0 || stats.Failed != 0 || stats.Successful != spec.calls {
		t.Fatalf("sipp: %d of %d calls successful, %d failed:\n%s", stats.Successful, spec.calls, stats.Failed, load.report())
	}

	calls := checkOpsSimCalls(t, s, spec.calls)

	noCallsLeft(t, d)
	m1 := scrapeMetrics(t, d)
	answered := m1.value("edgewise_b2bua_call_setups_total", "direction", "outbound", "outcome", "answered") -
		m0.value("edgewise_b2bua_call_setups_total", "direction", "outbound", "outcome", "answered")
	all := m1.value("edgewise_b2bua_call_setups_total") - m0.value("edgewise_b2bua_call_setups_total")
	timeouts := m1.value("edgewise_media_timeouts_total") - m0.value("edgewise_media_timeouts_total")
	if int(answered) != spec.calls || all != answered || timeouts != 0 {
		t.Fatalf("edgewise counted %v setups, %v answered, %v media timeouts; want %d answered and nothing else", all, answered, timeouts, spec.calls)
	}
	if active := m1.value("edgewise_b2bua_calls_active"); active != 0 {
		t.Fatalf("edgewise_b2bua_calls_active = %v after the load", active)
	}

	sum := watch.summary()
	t.Logf("relay: %d calls seen in %d polls, at most %d at once, %d RTP packets received on both legs, %d lost (worst call %d), longest silence on a talking leg %d ms (%s), calls by edge %v",
		sum.calls, sum.polls, sum.maxConcurrent, sum.packets, sum.lost, sum.worstLost, sum.worstIdleMs, sum.worstIdleCall, sum.byEdge)
	if sum.maxConcurrent < spec.limit-2 {
		t.Errorf("at most %d calls at once in edgewise's status, want about %d", sum.maxConcurrent, spec.limit)
	}
	// Loopback loses nothing, so any loss is the relay's. Allow one
	// packet in a thousand for a socket buffer overrun on a box shared
	// with other test suites; a stalled relay during the reload would lose
	// far more than that.
	if sum.lost > int64(sum.packets/1000)+1 {
		t.Errorf("relay saw %d of %d RTP packets lost (worst call %s: %d)", sum.lost, sum.packets, sum.worstLostCall, sum.worstLost)
	}
	// Packets come every 30 ms; a pause of a second on a talking leg is a
	// stall, not jitter, even on a busy 2-core box.
	if sum.worstIdleMs > 1000 {
		t.Errorf("a talking leg went %d ms without RTP (%s)", sum.worstIdleMs, sum.worstIdleCall)
	}
	return calls
}

// opsLineOf is the 1-based line of the first line containing sub.
func opsLineOf(t *testing.T, content, sub string) int {
	t.Helper()
	for i, line := range strings.Split(content, "\n") {
		if strings.Contains(line, sub) {
			return i + 1
		}
	}
	t.Fatalf("%q not in the file", sub)
	return 0
}

func opsHasProblems(t *testing.T, what string, got, want []string) {
	t.Helper()
	for _, w := range want {
		found := false
		for _, g := range got {
			found = found || strings.HasPrefix(g, w)
		}
		if !found {
			t.Errorf("%s: problems lack %q:\n%s", what, w, strings.Join(got, "\n"))
		}
	}
}

// opsLoadConfig is upstreamConfig without the per-user call limit: the
// load's dozens of calls come from three users.
func opsLoadConfig(s *sim) func(ip, dir string) string {
	return func(ip, dir string) string {
		return upstreamConfig(s, "")(ip, dir) + "calls:\n  max_per_user: 0\n"
	}
}
