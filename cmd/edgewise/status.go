package main

import (
	"net"
	"net/netip"
	"slices"
	"sort"
	"time"

	"github.com/edgewise-sip/edgewise/configs"
	"github.com/edgewise-sip/edgewise/registrar/calls"
	"github.com/edgewise-sip/edgewise/registrar/location"
	"github.com/edgewise-sip/edgewise/registrar/twilio/edge"
	"github.com/edgewise-sip/edgewise/registrar/twilio/upstream"
)

// statusDoc is GET /v1/status. Field names are part of the admin API.
type statusDoc struct {
	Version   string             `json:"version"`
	StartedAt time.Time          `json:"started_at"`
	Config    configStatus       `json:"config"`
	Users     []userStatus       `json:"users"`
	Edges     []edge.EdgeStatus  `json:"edges"`
	Calls     []calls.CallStatus `json:"calls"`
	Store     storeStatus        `json:"store"`
	Events    []event            `json:"events"` // newest first
}

type configStatus struct {
	Path       string                 `json:"path"`
	Version    string                 `json:"version"`
	Hash       string                 `json:"hash"`
	Edges      []string               `json:"edges"`
	LastReload configs.ReloadResult   `json:"last_reload"`
	Reloads    []configs.ReloadResult `json:"reloads"`
}

type userStatus struct {
	User     string           `json:"user"`
	Contacts []contactStatus  `json:"contacts"`
	Upstream *upstream.Status `json:"upstream,omitempty"`
}

type contactStatus struct {
	URI       string    `json:"uri"`
	Source    string    `json:"source"`
	Transport string    `json:"transport"`
	ExpiresAt time.Time `json:"expires_at"`
	ExpiresIn int       `json:"expires_in"`
	UserAgent string    `json:"user_agent,omitempty"`
	Reachable string    `json:"reachable"`
}

type storeStatus struct {
	Path     string `json:"path"`
	Bindings int    `json:"bindings"`
}

// buildStatus assembles the status document: every configured user (with or
// without contacts) plus any user still holding bindings after a reload
// removed it, sorted by name.
func buildStatus(started time.Time, live *configs.Live, table *location.Table, now time.Time) statusDoc {
	cfg := live.Current()
	doc := statusDoc{
		Version:   version,
		StartedAt: started,
		Config: configStatus{
			Path:       cfg.Path,
			Version:    cfg.Version,
			Hash:       cfg.Hash,
			Edges:      cfg.Twilio.Edges,
			LastReload: live.Last(),
			Reloads:    live.History(),
		},
		Store: storeStatus{Path: cfg.Store.Path, Bindings: table.Len()},
	}
	byUser := map[string]*userStatus{}
	for _, p := range cfg.Phones {
		byUser[p.User] = &userStatus{User: p.User, Contacts: []contactStatus{}}
	}
	for _, b := range table.Snapshot() {
		if !b.Live(now) {
			continue
		}
		u := byUser[b.User]
		if u == nil {
			u = &userStatus{User: b.User}
			byUser[b.User] = u
		}
		u.Contacts = append(u.Contacts, contactStatus{
			URI:       b.Contact,
			Source:    b.Source.String(),
			Transport: b.Transport,
			ExpiresAt: b.Expires.UTC(),
			ExpiresIn: int(b.Expires.Sub(now).Seconds()),
			UserAgent: b.UserAgent,
			Reachable: b.Reachable.String(),
		})
	}
	doc.Users = make([]userStatus, 0, len(byUser))
	for _, u := range byUser {
		doc.Users = append(doc.Users, *u)
	}
	sort.Slice(doc.Users, func(i, j int) bool { return doc.Users[i].User < doc.Users[j].User })
	return doc
}

// adminHosts are the names the admin API answers to besides IP literals and
// localhost: admin.allowed_hosts, and admin.listen's host when it is a name.
func adminHosts(cfg *configs.Config) []string {
	hosts := slices.Clone(cfg.Admin.AllowedHosts)
	if h, _, err := net.SplitHostPort(cfg.Admin.Listen); err == nil {
		if _, err := netip.ParseAddr(h); err != nil && h != "" {
			hosts = append(hosts, h)
		}
	}
	return hosts
}
