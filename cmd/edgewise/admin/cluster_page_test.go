package admin

import (
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestPageShowsCluster: a cluster node says which it is, which nodes are
// alive and how many users it registers; with etcd gone it says so loudly.
func TestPageShowsCluster(t *testing.T) {
	since := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, tt := range []struct {
		name  string
		store StoreStatus
		want  []string
		not   []string
	}{
		{"healthy", StoreStatus{Backend: "etcd", Node: "node-b", Nodes: []string{"node-a", "node-b"}, Owned: 12},
			[]string{`data-degraded="false"`, `cluster node <strong>node-b</strong> of 2 (node-a, node-b); registers 12 users at Twilio`},
			[]string{`etcd unreachable`}},
		{"degraded", StoreStatus{Backend: "etcd", Node: "node-b", Nodes: []string{"node-b"}, Owned: 3, DegradedSince: &since},
			[]string{`data-degraded="true"`, `<strong>etcd unreachable</strong> since 2026-01-02 03:04:05Z`}, nil},
		{"one node", StoreStatus{Path: "/x"}, nil, []string{`id="cluster"`}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			st := tt.store
			doc := Status{Version: "test", Store: &st}
			s := New(Options{Status: func() Status { return doc }, AllowedHosts: []string{"example.com"}}, nil)
			rec := httptest.NewRecorder()
			s.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
			body := rec.Body.String()
			for _, w := range tt.want {
				if !strings.Contains(body, w) {
					t.Errorf("page lacks %q", w)
				}
			}
			for _, w := range tt.not {
				if strings.Contains(body, w) {
					t.Errorf("page shows %q", w)
				}
			}
		})
	}
}

// TestReadyzDegraded: a node serving without its store says so on /readyz
// and stays ready; a draining one is not ready whatever else.
func TestReadyzDegraded(t *testing.T) {
	why, ready := "", true
	s := New(Options{
		Status:       func() Status { return Status{} },
		Ready:        func() bool { return ready },
		Degraded:     func() string { return why },
		AllowedHosts: []string{"example.com"},
	}, nil)
	get := func() (int, string) {
		rec := httptest.NewRecorder()
		s.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/readyz", nil))
		return rec.Code, strings.TrimSpace(rec.Body.String())
	}
	if code, body := get(); code != 200 || !strings.Contains(body, `"status": "ready"`) {
		t.Errorf("healthy: %d %s", code, body)
	}
	why = "etcd unreachable since 2026-01-02T03:04:05Z"
	if code, body := get(); code != 200 || !strings.Contains(body, `"status": "degraded"`) || !strings.Contains(body, "etcd unreachable") {
		t.Errorf("degraded: %d %s", code, body)
	}
	ready = false
	if code, _ := get(); code != 503 {
		t.Errorf("draining and degraded: %d", code)
	}
}
