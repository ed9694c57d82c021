package main

import "runtime/debug"

// serveGCPercent is the collector's target for `edgewise serve` when GOGC is
// unset. The registrar allocates a few KB per REGISTER (sipgo parses every
// header into objects) over a live heap that is mostly the bindings, the
// per-user upstream and lockout state and the nonce-count cache, so at
// 20,000 REGISTER/s Go's default of 100 runs a collection every 0.3–0.6 s.
// Marking then competes with the UDP readers for the same cores; when a few
// cycles stretch to 200–400 ms back to back, the socket's receive buffer
// (about 150 ms of traffic at that rate) overflows, clients retransmit, and
// the extra load turns a slowdown into failed registrations. 200 halves the
// number of collections for about 1.5 times the heap (RSS ~270 → ~420 MB at
// 21,000/s with 20,000 users; at low rates the live heap, and so the cost,
// is small).
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
