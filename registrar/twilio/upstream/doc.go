// Package upstream is the upstream registration manager: it keeps every
// phone user that has a live local binding registered at Twilio, on the
// edge the edge monitor says is active (README, "Upstream registration and
// edge failover" and "Twilio facts").
//
// What it does, per user:
//
//   - AOR sip:<twilio_user>@<domain>.sip.twilio.com, Request-URI the edge
//     FQDN, each request sent to one explicit IP of the active edge
//     (edge.Direct), digest auth with the user's Twilio credentials (the last
//     challenge is reused with a rising nonce count, so refreshes cost one
//     request), User-Agent from Settings.
//   - A Contact per edge, sip:<user>~<edge>@<public address>, so a move
//     registers a new binding and never overwrites the old one (Twilio shares
//     bindings across edges). directory.ParseContact reads user and edge back from an
//     inbound INVITE's Request-URI.
//   - Refresh at about half the granted expiry minus up to a tenth (jitter);
//     at most 5 REGISTERs per 1.1 s per user (Twilio allows 5/s per AOR).
//   - Every IP of the active edge in the monitor's order, each bounded by the
//     monitor's Settings.Timeout (the transaction is cancelled: no 32 s Timer
//     F); silence, transport errors, 408 and 5xx are reported (Report) and
//     the next IP is tried; when the monitor gives the edge up, the next
//     active edge. 401/407 are answered, 423 retried with Min-Expires.
//     403/404 (any other 4xx/6xx) are the user's problem: no edge hop, slow
//     backoff, shown in Status. A 503 carrying Twilio's 32008 warning is the
//     per-AOR rate limit, not an edge failure: not reported, retried after
//     Retry-After.
//   - Never gives up: capped, jittered backoff (1 s → 1 min for edge
//     failures, 30 s → 10 min for the user's own), Status says since when.
//   - Unregisters (Expires: 0) when the last local binding goes, when the
//     phone is removed from the config, or for the old AOR when its
//     twilio_user changes.
//
// Moves. Each edge.Change (failover, failback, reload, available) moves
// every registration elsewhere to Change.To, logging one line per batch:
// "<Change.Reason>; moving N registrations to <To>". Moves are paced by
// Settings.MoveRate (starts per second) and MoveConcurrency (exchanges in
// flight), and are make-before-break: register the new edge's Contact, then
// Expires: 0 for the old one, through the old edge while the monitor has it
// up, else through the new edge (the registrar is shared), so the dead edge's
// binding does not linger until it expires. With keepalive method register
// the Manager refreshes one user early whenever no REGISTER reached the
// active edge for a keepalive interval: its REGISTERs are that edge's only
// probe.
//
// State. With Options.DB the state (AOR, Call-ID, a CSeq ceiling, edge, IP,
// Contact, expiry, contacts still to remove) is written through to the
// bucket "upstream.v1" of the bbolt file the location table uses. A restart
// resumes it: registrations still valid are left alone until their refresh
// (no storm), the Call-ID continues above every CSeq sent, a user whose
// bindings went while edgewise was down is unregistered, and contacts that
// may still be bound (an old edge's, one asked for just before a crash, an
// old public address's) are removed.
//
// Wiring (cmd/edgewise):
//
//	mon, _ := edge.New(edgeSettings(cfg), edge.NewSIPProber(client, ...), log)
//	mgr, _ := upstream.New(upstreamSettings(cfg), directory(cfg), upstream.Options{
//		Edges: mon, Bindings: table, DB: db,
//		Sender: upstream.ClientSender{Client: client, TLS: tlsClients.Client},
//		Logger: log.With("component", "upstream"),
//	})
//	reg.MustRegister(mon, mgr)
//	g.Go(func() error { return mon.Run(ctx) })
//	g.Go(func() error { return mgr.Run(ctx) })
//	// on every accepted reload, monitor first:
//	mon.Apply(edgeSettings(cur)); mgr.Apply(upstreamSettings(cur), directory(cur))
//
// Status/Statuses feed /v1/status ("upstream" per user); the Manager is a
// prometheus.Collector (edgewise_upstream_*). Collapsing the duplicate
// INVITEs Twilio forks to both contacts during a move's overlap (482 for a
// merged request, the same X-Twilio-CallSid) is the B2BUA's job.
//
// It may import registrar/directory, registrar/location,
// registrar/sip/digest and registrar/twilio/edge; nothing above them.
package upstream
