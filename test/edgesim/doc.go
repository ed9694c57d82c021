// Package edgesim simulates the parts of Twilio's SIP edge that edgewise
// depends on, so failover can be demonstrated and tested offline.
//
// A simulated edge (ashburn, umatilla, …) is a SIP registrar/UAS listening on
// each of its loopback IPs, every IP with its own UDP and TCP sockets (and a
// TLS port, when configured, with a certificate for the edge's names from a
// test CA edgesim makes), the way a real Twilio edge FQDN resolves to
// several addresses. All edges share one
// location table, as Twilio's registrar does (README "Twilio facts" 1), and apply
// Twilio's registration rules: digest auth with 401, 423 below 600 s, expiry
// cut to 3600 s, at most 10 bindings and 5 REGISTERs per second per AOR.
//
// Edges also take part in calls: INVITEs from the gateway are challenged
// with 407 as Twilio does, answered (or refused, per the dialled number)
// and their RTP echoed like a far-end phone; and on request
// ([Sim.PlaceCall], POST /v1/calls) edgesim calls a registered user the way
// Twilio does, forking to every binding of the user in parallel.
//
// A small DNS server answers the edge FQDNs with the edges' IPs, and an HTTP
// control API breaks an edge or a single IP (drop, reject, slow, refuse) and
// heals it, makes one present a bad TLS certificate (expired, another
// name, self-signed), places and hangs up calls and lists them with their RTP
// counters. The same operations are methods on [Sim] for tests that embed it.
//
// With a rest section it also serves the SIP Domain part of Twilio's REST
// API (domains, credential lists, credentials, registration and calls
// mappings, IP access control list mappings for calls) over HTTPS on each
// edge, with a certificate from a CA it makes at start; each edge's
// listener can refuse, reject or drop on its own. The registrar
// authenticates against the credential lists that API maps to the domain.
//
// edgesim deliberately shares no code with the edgewise packages it tests:
// a bug in a shared helper would hide itself.
//
// It imports nothing of edgewise: the simulator shares no code with what
// it stands in front of.
package edgesim
