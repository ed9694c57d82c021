package main

import "runtime/debug"

// serveGCPercent is the collector's target for `edgewise serve` when GOGC is
// unset. The registrar allocates a few KB per REGISTER (sipgo parses every
// header into objects) over a live heap of about 100 MB at 20,000 users under
// load (bindings, per-user upstream and lockout state, the nonce-count cache),
// so with Go's default of 100 it collects every 0.3–0.6 s at 20,000
// REGISTER/s and marking takes about a fifth of the process's CPU. 200 halves
// the collections: 7–9 % less CPU per REGISTER at 22,000–24,000/s in the
// registrar benchmark, for about 1.5 times the RSS (≈270 → ≈420 MB at
// 21,000/s with 20,000 users). At low rates the live heap, and so the extra
// memory, is small.
const serveGCPercent = 200

// tuneGC applies serveGCPercent unless the operator set GOGC, which the Go
// runtime has already applied. It reports the percent it set, or -1.
func tuneGC(getenv func(string) string) int {
	if getenv("GOGC") != "" {
		return -1
	}
	debug.SetGCPercent(serveGCPercent)
	return serveGCPercent
}
