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
	if !strings.Contains(out, "| 2 | run stopped: 800/s not run") || !strings.Contains(out, "offered 100/s: median achieved") {
		t.Fatalf("table:\n%s", out)
	}
}
