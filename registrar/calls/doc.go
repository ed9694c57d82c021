// Package calls bridges calls through edgewise (README, "Calls both ways"). Every call is two SIP dialogs — the phone's (side A) and
// Twilio's (side B) — and one media.Session relaying the RTP between them,
// so phones behind NAT work and Twilio only ever sees edgewise.
//
// Phone → Twilio. A phone's INVITE is authenticated with a proxy challenge
// (407, the registrar's realm and credentials; unknown users look like wrong
// passwords). edgewise then sends INVITE sip:<dialled>@<domain>.sip.<edge>.
// twilio.com as the user's Twilio identity, to one explicit IP at a time
// from the edge monitor's Plan (every IP of the active edge, then the other
// edges), answering Twilio's 401/407 with the user's Twilio credentials.
// An IP that says nothing at all within Settings.Timeout (4 s, not Timer
// B's 32 s), fails at the transport, or answers 408/5xx before any
// provisional response is left for the next; once anything provisional
// arrived the call stays where it is. Every first response (or silence) is
// reported to the monitor. All IPs silent gives the phone 408, other
// failures 503, both with a Reason header; Twilio's own final responses
// pass through (486 stays 486).
//
// Twilio → phone. An INVITE whose Request-URI is a Contact edgewise
// registered upstream (directory.ParseContact: sip:<user>~<edge>@…) is a
// call from Twilio. It is accepted only from Settings.SignallingCIDRs
// (default: every edge's published ranges); others get 403 over TCP and
// silence over UDP. Twilio forks a call to every Contact of the user, so
// during a registration move the same call arrives twice: a merged request
// (same Call-ID, From tag and CSeq, another branch; RFC 3261 §8.2.2.2) and
// an INVITE carrying the X-Twilio-CallSid of a call in progress both get
// 482, and the phone rings once. The call is forked in parallel to every
// routable binding, each INVITE sent to the binding's source address over
// its transport from the socket that received its REGISTER (NAT); the
// first 2xx wins and the others are cancelled with "Call completed
// elsewhere". A binding silent for Timeout is dropped. No binding gives 480
// (so Twilio's fallback runs), an unknown user 404; when every phone fails
// the best response is relayed (6xx, then 486, …; "no answer" is 480).
//
// Without Twilio (survival mode). While the edge monitor finds no edge
// usable (Edges.Active), an authenticated phone's call to another local
// user — the Request-URI user is an extension (Settings.Extensions) or a
// user name — is connected by edgewise itself (Settings.Local: also always,
// or never): forked to every binding of the callee and then the callee's
// fixed targets exactly as a call from Twilio is, with the calling phone in
// Twilio's place. The caller stays on media side A, the callee's forks are
// on side B, where SDP carries the relay's local address and the callee's
// address replaces Twilio's media ranges. A call to any other number goes
// to Settings.FallbackTargets the same way, one at a time, with the number
// dialled as the Request-URI user; with an edge usable it goes to Twilio
// first and to the callee or the fallback targets only when every Twilio
// address failed. Settings.EmergencyNumbers take that same way and are
// never refused for the call limits. Nothing here is reachable without the
// phone's digest credentials: an INVITE without them gets the 407 (a call
// from Twilio's ranges too), and Twilio's own calls come in through
// Contacts, which ring only their user. Survival reports when the mode
// began, ended and how many calls it carried.
//
// In the dialogs. 1xx (with early-media SDP), the final response, ACK,
// CANCEL from either caller, BYE from either side, re-INVITE (hold,
// resume, a new address; 491 on glare), UPDATE, INFO and in-dialog OPTIONS
// are relayed; SDP is carried across the relay by media.Session.Translate
// (each side sees edgewise's address for that side), other bodies pass
// unchanged. A delayed offer (INVITE without SDP) is supported: the answer
// travels in the ACK. 2xx responses are repeated until ACKed (RFC 6026
// leaves that to the TU) and ACKs repeated for repeated 2xx. A media leg
// silent for the relay's timeout ends the call with BYE on both dialogs;
// every end path (failure, CANCEL, BYE, timeout, shutdown) closes the
// media session, which returns its ports. SDP that cannot be parsed gets
// 488, a BYE for no dialog 481, Require 420.
//
// Wiring (cmd/edgewise): see README.md.
//
// It may import registrar (the digest rules shared with REGISTER),
// registrar/directory, registrar/sip/..., registrar/lockout,
// registrar/location, registrar/twilio/edge and media/...; not
// registrar/twilio/upstream (it asks through Contacts) and never configs.
package calls
