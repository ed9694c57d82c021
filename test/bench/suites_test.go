package main

import (
	"go/build"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestSuiteProgramsExist: the programs the relay and WebRTC suites `go run`
// are main packages where the suites look for them (a package move once left
// both pointing at folders that no longer existed).
func TestSuiteProgramsExist(t *testing.T) {
	root := filepath.Join("..", "..")
	for _, pkg := range []string{relayBenchPkg, webrtcBenchPkg} {
		p, err := build.ImportDir(filepath.Join(root, pkg), 0)
		if err != nil {
			t.Errorf("%s: %v", pkg, err)
			continue
		}
		if p.Name != "main" {
			t.Errorf("%s is package %s, not a program", pkg, p.Name)
		}
	}
}

// TestRenderCallsStoppedRun: a run that overloaded edgewise past recovering
// is a row of the table, not the end of the benchmark.
func TestRenderCallsStoppedRun(t *testing.T) {
	runs := []callsRun{
		{steps: []callsStep{{rate: 100, calls: 1000, ok: 1000, elapsed: 11 * time.Second, hold: time.Second}}},
		{steps: []callsStep{{rate: 100, calls: 1000, ok: 1000, elapsed: 11 * time.Second, hold: time.Second}},
			stopped: "800/s not run: the previous step's calls were still up 60 s after it"},
	}
	out := renderCalls(runs, callsOptions{hold: time.Second, step: 10 * time.Second, memCalls: 10})
	if !strings.Contains(out, "| 2 | edgewise | run stopped: 800/s not run") || !strings.Contains(out, "offered 100/s: edgewise median achieved") {
		t.Fatalf("table:\n%s", out)
	}
}

// TestRenderCallsPeer: the peer's steps are rows beside edgewise's, a peer
// that failed to start is a row too, and the ratios compare the same run's
// figures at the highest rate both ran clean.
func TestRenderCallsPeer(t *testing.T) {
	step := func(rate, ok int, cpu time.Duration) callsStep {
		return callsStep{rate: rate, calls: rate * 10, ok: ok, failed: rate*10 - ok, elapsed: 11 * time.Second, hold: time.Second, ew: cpu}
	}
	runs := []callsRun{
		{steps: []callsStep{step(100, 1000, time.Second), step(200, 2000, 2*time.Second), step(400, 3000, 3*time.Second)},
			peerSteps: []callsStep{step(100, 1000, 3*time.Second), step(200, 2000, 6*time.Second), step(400, 1000, time.Second)}},
		{steps: []callsStep{step(100, 1000, time.Second)}, peerStopped: "peer not started: kamailio not installed"},
	}
	out := renderCalls(runs, callsOptions{rates: []int{100, 200, 400}, hold: time.Second, step: 10 * time.Second, memCalls: 10})
	for _, want := range []string{
		"| 1 | peer | 200 | 2000 | 2000 | 0 | 0 | 200 ✓ |",
		"| 2 | peer | peer not started: kamailio not installed",
		"run 1: best clean edgewise 200/s, peer 200/s, ratio 1.00; CPU per call at 200/s (both clean): edgewise 1000 µs, peer 3000 µs, peer/edgewise 3.00",
		"efficiency edgewise over peer (peer µs / edgewise µs): median 3.00 over 1 runs",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in table:\n%s", want, out)
		}
	}
}
