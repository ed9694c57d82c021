// Package cluster lets several edgewise nodes share one set of bindings in
// etcd, so that a phone registered through any node is reachable from all
// of them and no node is a single point of failure.
//
// Layout under the key prefix (default "/edgewise/"):
//
//	bindings/<user>/<contact key>  one binding, encoded as the location
//	                               journal encodes a record; the binding
//	                               names the node it arrived through
//
// One key per contact rather than one per user: two nodes registering two
// phones of the same user at the same moment write different keys, so no
// write needs a compare-and-swap and a retry. A phone that moves to another
// node overwrites its own key.
//
// Expiry: every key is attached to an etcd lease that lapses a few seconds
// after the binding does; leases are shared by all bindings of a node that
// expire within the same ten seconds, so a node grants at most one lease per
// ten seconds of expiry, not one per REGISTER (a grant is a raft write). A
// REGISTER that refreshes a binding rewrites its key under a later lease.
// Nodes also drop expired bindings from their own view at once, so a lease
// that lapses late changes nothing.
//
// Writes: Save is called for every change the registrar makes. A writer
// goroutine gathers what is pending (coalesced per key) into transactions
// of at most 128 operations, each with a short deadline, and acknowledges
// the callers once committed: one raft round serves a whole batch. When
// etcd does not answer, the node says so (Degraded), acknowledges from its
// own memory so that phones keep registering, keeps the changes queued and
// writes them when etcd is back.
//
// Reads: at start the node loads every binding, then watches the prefix
// from that revision and applies other nodes' changes to its table
// (location.Table.Apply). A watch that fails (compaction, a long outage)
// is replaced by a full reload.
//
// Owners (owner.go) gives each user exactly one node that registers it at
// Twilio: nodes/<name> (the node's SIP address) and owners/<user> live
// under each node's lease; see its doc for claims, takeover and moving
// back. peers.go signs the forks one node sends another for the phones
// registered there, with the key at secret (made by the first node);
// calls.go collapses Twilio's forks of one call (calls/<CallSid>).
//
// It imports registrar/location and nothing else of edgewise.
package cluster
