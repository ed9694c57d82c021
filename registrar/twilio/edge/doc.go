// Package edge is the edge monitor: it decides which Twilio edge, and which
// of its IPs, upstream requests go to (README, "Upstream registration and
// edge failover" and "Twilio facts").
//
// For every configured edge it resolves all A records of
// <domain>.sip.<edge>.twilio.com, honours their TTL and keeps serving the
// last good answer when DNS fails. It keeps one health state per edge and
// per IP, shared by everything that talks to Twilio: its own probes (OPTIONS
// keepalives to the active edge, probes of down edges and down IPs) and the
// outcomes of real requests fed back with Report. Any SIP response below 500
// proves an IP alive; silence within Settings.Timeout, a transport error,
// 408 and 5xx count against it, and a Retry-After keeps that IP last until
// it passes. An edge is down when every IP has failed; the active edge is
// then the next one in configured order. A recovered, more-preferred edge
// becomes active again only after FailbackHold of continuous health. A
// reload (Apply) with a new order switches at once.
//
// How callers use it:
//
//   - cmd builds Settings from the twilio: section, calls New, runs
//     Monitor.Run under its errgroup, calls Apply on each reload, registers
//     the Monitor as a Prometheus collector and serves Status in /v1/status.
//   - The upstream registration manager sends each REGISTER to
//     Targets(Active()) in order (Direct sets the explicit IP; the
//     Request-URI is Target.URI), bounded by Settings.Timeout, Reports every
//     outcome, moves on to the next IP on failure, and re-reads Active when
//     an edge's IPs are exhausted. It Subscribes to Changes and moves
//     registrations, logging "<Change.Reason>; moving N registrations to <To>".
//     With keepalive.method register its REGISTER outcomes are the only
//     signal for the active edge.
//   - The B2BUA walks Plan for each new outbound INVITE (reporting the first
//     response, 100 Trying included, or the silence) and leaves calls in
//     progress where they are.
//   - Over TLS the explicit IP is dialled but SNI and certificate checks use
//     the FQDN: use one client per FQDN from TLSClients (sipgo takes the name
//     from the UA's tls.Config). TLSClients verifies each certificate itself
//     against roots SetRoots can replace (twilio.ca_file on reload); a
//     certificate it refuses (expired, another name, unknown authority)
//     fails the handshake at once with a CertError, which the Monitor
//     counts as that IP down (class "tls"), with the reason in the IP's
//     last_error and one warning per IP and reason.
//
// It imports nothing of edgewise.
package edge
