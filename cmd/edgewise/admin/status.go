package admin

import (
	"time"

	"github.com/edgewise-sip/edgewise/configs"
	"github.com/edgewise-sip/edgewise/registrar/calls"
	"github.com/edgewise-sip/edgewise/registrar/twilio/edge"
	"github.com/edgewise-sip/edgewise/registrar/twilio/upstream"
)

// Status is the document GET /v1/status serves and /v1/events streams. The
// daemon builds it, the status page renders it, `edgewise status` and the
// tests decode it: one type, so a renamed field breaks the build instead of
// silently decoding to zero. Field names are part of the admin API.
//
// A standalone token replica fills only Version, StartedAt, Config, Ready
// and Reason; the sections it has no part in are left out of its JSON.
type Status struct {
	Version   string       `json:"version"`
	StartedAt time.Time    `json:"started_at"`
	Config    ConfigStatus `json:"config"`
	// Ready and Reason are a token replica's readiness (its keys loaded).
	Ready  *bool  `json:"ready,omitempty"`
	Reason string `json:"reason,omitempty"`

	Users []UserStatus       `json:"users,omitempty"`
	Edges []edge.EdgeStatus  `json:"edges,omitempty"`
	Calls []calls.CallStatus `json:"calls,omitempty"`
	// Survival says whether edgewise carries calls without Twilio (no edge
	// usable), since when, and how many.
	Survival *calls.SurvivalStatus `json:"survival,omitempty"`
	Store    *StoreStatus          `json:"store,omitempty"`
	// Events are the recent events, newest first.
	Events []Event `json:"events,omitempty"`
}

// ConfigStatus is the running configuration and its reloads.
type ConfigStatus struct {
	Path       string                 `json:"path"`
	Version    string                 `json:"version"`
	Hash       string                 `json:"hash"`
	Edges      []string               `json:"edges"`
	LastReload configs.ReloadResult   `json:"last_reload"`
	Reloads    []configs.ReloadResult `json:"reloads"`
}

// UserStatus is one configured phone user: its local contacts and its
// registration at Twilio.
type UserStatus struct {
	User     string           `json:"user"`
	Contacts []ContactStatus  `json:"contacts"`
	Upstream *upstream.Status `json:"upstream,omitempty"`
}

// ContactStatus is one live local binding.
type ContactStatus struct {
	URI       string    `json:"uri"`
	Source    string    `json:"source"`
	Transport string    `json:"transport"`
	ExpiresAt time.Time `json:"expires_at"`
	ExpiresIn int       `json:"expires_in"`
	UserAgent string    `json:"user_agent,omitempty"`
	Reachable string    `json:"reachable"`
	// Node is the cluster node the phone registered through ("" for this
	// node, or with one node).
	Node string `json:"node,omitempty"`
}

// StoreStatus is the bindings store.
type StoreStatus struct {
	Path     string `json:"path"`
	Bindings int    `json:"bindings"`
	// Backend is "etcd" for a cluster node (Node names it), else "bbolt".
	Backend string `json:"backend,omitempty"`
	Node    string `json:"node,omitempty"`
	// Nodes are the cluster's nodes with a live lease; Owned counts the
	// users this node registers at Twilio.
	Nodes []string `json:"nodes,omitempty"`
	Owned int      `json:"owned,omitempty"`
	// DegradedSince is set while etcd is unreachable: the node serves from
	// memory and queues its changes.
	DegradedSince *time.Time `json:"degraded_since,omitempty"`
}

// Event is one entry of the daemon's journal: edge changes, moves,
// reloads, lockouts, drains.
type Event struct {
	At       time.Time `json:"at"`
	Kind     string    `json:"kind"`     // edge_down, edge_up, edge_failover, edge_failback, edge_reload, edge_unavailable, edge_available, moved, reload, reload_refused, lockout, drain, tls_certificate
	Severity string    `json:"severity"` // info, warn, error
	Text     string    `json:"text"`
}
