package integration

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgewise-sip/edgewise/test/kit"
)

// survConfig is strangerConfig (Twilio's ranges are edgesim's own
// addresses, so a phone's media is never in twilio.media_cidrs) with
// extensions 200 (alice) and 201 (bob), standby edges probed every second,
// and calls appended verbatim as the calls: section.
func survConfig(s *sim, calls string) func(ip, dir string) string {
	return func(ip, dir string) string {
		cfg := strangerConfig(s, "")(ip, dir)
		cfg = strings.Replace(cfg, "  keepalive: {method: options, interval: 1s}\n",
			"  keepalive: {method: options, interval: 1s, standby_interval: 1s}\n", 1)
		cfg = strings.Replace(cfg, "    twilio_password: AliceTwilio123\n", "    twilio_password: AliceTwilio123\n    extension: \"200\"\n", 1)
		cfg = strings.Replace(cfg, "    twilio_password: BobTwilio1234\n", "    twilio_password: BobTwilio1234\n    extension: \"201\"\n", 1)
		if calls != "" {
			cfg += "calls:\n" + calls
		}
		return cfg
	}
}

// survDropEdges drops every edgesim edge and waits for edgewise to say it
// is in survival mode.
func survDropEdges(t *testing.T, s *sim, d *daemon) {
	t.Helper()
	for _, e := range []string{"ashburn", "umatilla"} {
		s.setMode(t, "edges/"+e, "drop")
	}
	dropped := time.Now()
	var since time.Time
	kit.WaitFor(t, 20*time.Second, "edgewise in survival mode", func() bool {
		st, err := d.getStatus()
		if err != nil || st.Survival == nil || !st.Survival.Active || st.Survival.Since == nil {
			return false
		}
		since = *st.Survival.Since
		return true
	})
	t.Logf("survival mode began %s after the edges were dropped", since.Sub(dropped).Round(10*time.Millisecond))
}

// TestSurvivalLocalCallEdgesDownAndBack: with every edgesim edge dropped,
// alice (SIPp) dials bob's extension; bob's baresip rings (SIPp requires the
// 180) until the test answers it, RTP flows both ways through the relay,
// edgesim sees no call, and /v1/status says survival mode carried it. The
// edges heal: the next call to the same extension goes through Twilio again.
func TestSurvivalLocalCallEdgesDownAndBack(t *testing.T) {
	requireTool(t, "baresip")
	s := startSim(t)
	d := startDaemon(t, survConfig(s, ""))
	client, answer := startBaresipRinging(t, d, "bob", "bob-secret")
	kit.WaitFor(t, 10*time.Second, "bob's baresip registered", func() bool { return containsHost(d.contacts(t, "bob"), client) })
	survDropEdges(t, s, d)

	res := sippAsync(t, "call_rtp_rings.xml", nextIP(t), d.ip+":5060", dialRow("alice", "201"))
	kit.WaitFor(t, 10*time.Second, "bob's phone ringing", func() bool {
		c := d.calls()
		return len(c) == 1 && c[0].State == "ringing"
	})
	answer()
	checkRTPFlow(t, d, res)
	c := d.calls()
	if len(c) != 1 || c[0].Direction != "local" || c[0].Route != "local" || c[0].To != "bob" || c[0].Callee == nil {
		t.Fatalf("calls in status = %+v, want one local call to bob", c)
	}
	waitSipp(t, res, "alice's call to bob's extension")
	noCallsLeft(t, d)
	if cs := s.mustCalls(t); len(cs) != 0 {
		t.Fatalf("edgesim saw %d calls in survival mode: %+v", len(cs), cs)
	}
	st := d.status(t)
	if sv := st.Survival; sv == nil || !sv.Active || sv.Calls != 1 {
		t.Fatalf("survival = %+v, want active with 1 call carried", sv)
	}
	m := scrapeMetrics(t, d)
	if got := m.value("edgewise_b2bua_survival_calls_total", "route", "local"); got != 1 {
		t.Errorf("survival_calls_total{route=local} = %v, want 1", got)
	}
	if got := m.value("edgewise_b2bua_survival_mode"); got != 1 {
		t.Errorf("survival_mode = %v, want 1", got)
	}

	for _, e := range []string{"ashburn", "umatilla"} {
		s.setMode(t, "edges/"+e, "up")
	}
	kit.WaitFor(t, 20*time.Second, "survival mode over", func() bool {
		st, err := d.getStatus()
		return err == nil && st.Survival != nil && !st.Survival.Active && st.Survival.Ended != nil
	})
	if code, out := sippRun(t, "call.xml", nextIP(t), d.ip+":5060", dialRow("alice", "201"), 1); code != 0 {
		t.Fatalf("the call after the edges healed: sipp exited %d:\n%s", code, out)
	}
	s.onlyCall(t, "edgesim to see the call to 201 through Twilio", func(c simCall) bool {
		return c.To == "201" && c.State == "ended"
	})
	if got := scrapeMetrics(t, d).value("edgewise_b2bua_survival_calls_total", "route", "local"); got != 1 {
		t.Errorf("survival_calls_total{route=local} = %v after the Twilio call, want still 1", got)
	}
}

// survSippUAS runs a SIPp UAS scenario on ip:5060 for calls calls, in the
// background (sippUAS, for more than one call).
func survSippUAS(t *testing.T, scenario, ip string, calls int) <-chan sippResult {
	t.Helper()
	requireTool(t, "sipp")
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	cmd := exec.CommandContext(ctx, "sipp",
		"-sf", filepath.Join(repoDir, "test", "sipp", scenario),
		"-i", ip, "-p", "5060", "-m", fmt.Sprint(calls),
		"-timeout", "50s", "-timeout_error",
		"-nostdin", "-trace_err", "-error_file", filepath.Join(dir, "errors.log"))
	cmd.Dir = dir
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("start sipp uas: %v", err)
	}
	ch := make(chan sippResult, 1)
	done := make(chan struct{})
	go func() {
		defer cancel()
		defer close(done)
		_ = cmd.Wait()
		errs, _ := os.ReadFile(filepath.Join(dir, "errors.log"))
		ch <- sippResult{cmd.ProcessState.ExitCode(), out.String() + "\n" + string(errs)}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	kit.WaitFor(t, 10*time.Second, "sipp UAS bound to "+ip+":5060", func() bool {
		select {
		case r := <-ch:
			t.Fatalf("sipp UAS exited early (%d):\n%s", r.code, r.out)
		default:
		}
		return survUDPBound(ip + ":5060")
	})
	return ch
}

// survUDPBound reports whether something listens on the UDP address.
func survUDPBound(addr string) bool {
	c, err := net.ListenPacket("udp", addr)
	if err != nil {
		return true
	}
	c.Close()
	return false
}

// TestSurvivalFallbackTargetAndEmergency: with every edge dropped, alice's
// call to a number reaches the SIPp UAS configured as the fallback target
// (which checks it was asked for the number dialled). While that call
// talks, alice is at calls.max_per_user 1: her next call gets 486, but the
// emergency number 911 reaches the fallback target all the same.
func TestSurvivalFallbackTargetAndEmergency(t *testing.T) {
	s := startSim(t)
	target := nextIP(t)
	d := startDaemon(t, survConfig(s, fmt.Sprintf(`  max_per_user: 1
  fallback_targets: [{uri: "sip:%s:5060"}]
  emergency_numbers: ["911"]
`, target)))
	uas := survSippUAS(t, "uas_fallback.xml", target, 2)
	survDropEdges(t, s, d)

	first := sippAsync(t, "call_rtp.xml", nextIP(t), d.ip+":5060", dialRow("alice", "15550001111"))
	checkRTPFlow(t, d)
	if c := d.calls(); len(c) != 1 || c[0].Route != "fallback" || c[0].Target != target+":5060" {
		t.Fatalf("calls = %+v, want one to the fallback target %s:5060", c, target)
	}
	if code, out := sippRun(t, "call_busy.xml", nextIP(t), d.ip+":5060", dialRow("alice", "15550002222"), 1); code != 0 {
		t.Fatalf("alice's second call at the per-user limit: sipp exited %d, want 486:\n%s", code, out)
	}
	if code, out := sippRun(t, "call.xml", nextIP(t), d.ip+":5060", dialRow("alice", "911"), 1); code != 0 {
		t.Fatalf("alice's emergency call at the per-user limit: sipp exited %d:\n%s", code, out)
	}
	waitSipp(t, first, "alice's call to the fallback target")
	waitSipp(t, uas, "the fallback target (two calls)")
	noCallsLeft(t, d)
	if cs := s.mustCalls(t); len(cs) != 0 {
		t.Fatalf("edgesim saw %d calls with every edge dropped", len(cs))
	}
	m := scrapeMetrics(t, d)
	if got := m.value("edgewise_b2bua_call_setups_total", "direction", "outbound", "outcome", "user_call_limit"); got != 1 {
		t.Errorf("user_call_limit setups = %v, want 1", got)
	}
	if got := m.value("edgewise_b2bua_survival_calls_total", "route", "fallback"); got != 2 {
		t.Errorf("survival_calls_total{route=fallback} = %v, want 2", got)
	}
	if sv := d.status(t).Survival; sv == nil || sv.Calls != 2 || sv.FallbackTargets != 1 {
		t.Errorf("survival = %+v, want 2 calls carried, 1 fallback target", sv)
	}
}
