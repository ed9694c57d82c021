package main

import (
	"net"
	"net/netip"
	"slices"
	"sort"
	"time"

	"github.com/edgewise-sip/edgewise/cmd/edgewise/admin"
	"github.com/edgewise-sip/edgewise/configs"
	"github.com/edgewise-sip/edgewise/registrar/location"
)

// buildStatus assembles the status document: every configured user (with or
// without contacts) plus any user still holding bindings after a reload
// removed it, sorted by name.
func buildStatus(started time.Time, live *configs.Live, table *location.Table, now time.Time) admin.Status {
	cfg := live.Current()
	doc := admin.Status{
		Version:   version,
		StartedAt: started,
		Config: admin.ConfigStatus{
			Path:       cfg.Path,
			Version:    cfg.Version,
			Hash:       cfg.Hash,
			Edges:      cfg.Twilio.Edges,
			LastReload: live.Last(),
			Reloads:    live.History(),
		},
		Store: &admin.StoreStatus{Path: cfg.Store.Path, Bindings: table.Len()},
	}
	byUser := map[string]*admin.UserStatus{}
	for _, p := range cfg.Phones {
		byUser[p.User] = &admin.UserStatus{User: p.User, Contacts: []admin.ContactStatus{}}
	}
	for _, b := range table.Snapshot() {
		if !b.Live(now) {
			continue
		}
		u := byUser[b.User]
		if u == nil {
			u = &admin.UserStatus{User: b.User}
			byUser[b.User] = u
		}
		u.Contacts = append(u.Contacts, admin.ContactStatus{
			URI:       b.Contact,
			Source:    b.Source.String(),
			Transport: b.Transport,
			ExpiresAt: b.Expires.UTC(),
			ExpiresIn: int(b.Expires.Sub(now).Seconds()),
			UserAgent: b.UserAgent,
			Reachable: b.Reachable.String(),
			Node:      b.Node,
		})
	}
	doc.Users = make([]admin.UserStatus, 0, len(byUser))
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
