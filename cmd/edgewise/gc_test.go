package main

import (
	"runtime/debug"
	"testing"
)

func TestTuneGC(t *testing.T) {
	prev := debug.SetGCPercent(100)
	defer debug.SetGCPercent(prev)

	env := func(v string) func(string) string {
		return func(k string) string {
			if k == "GOGC" {
				return v
			}
			return ""
		}
	}
	if got := tuneGC(env("")); got != serveGCPercent {
		t.Fatalf("GOGC unset: tuneGC = %d, want %d", got, serveGCPercent)
	}
	if got := debug.SetGCPercent(100); got != serveGCPercent {
		t.Fatalf("GOGC unset: collector at %d%%, want %d%%", got, serveGCPercent)
	}
	// The operator's GOGC (applied by the runtime at start) is left alone.
	if got := tuneGC(env("off")); got != -1 {
		t.Fatalf("GOGC=off: tuneGC = %d, want -1", got)
	}
	if got := debug.SetGCPercent(100); got != 100 {
		t.Fatalf("GOGC=off: collector changed to %d%%", got)
	}
}
