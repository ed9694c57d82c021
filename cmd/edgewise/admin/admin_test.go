package admin

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestAdminRoutes(t *testing.T) {
	reloads := 0
	s := New(Options{
		Status: func() Status { return Status{Users: []UserStatus{{User: "alice"}}} },
		Reload: func(trigger string) (any, bool) {
			reloads++
			return map[string]string{"trigger": trigger}, trigger == "api" && reloads == 1
		},
		Ready: func() bool { return true },
	}, nil)

	cases := []struct {
		name, method, path, token string
		setToken                  string
		wantCode                  int
		wantBody                  string
	}{
		{"healthz open", "GET", "/healthz", "", "", 200, `"ok"`},
		{"status open without token", "GET", "/v1/status", "", "", 200, `"alice"`},
		{"reload ok", "POST", "/v1/reload", "", "", 200, `"api"`},
		{"reload refused", "POST", "/v1/reload", "", "", 422, `"api"`},
		{"reload needs POST", "GET", "/v1/reload", "", "", 405, ""},
		{"status needs token when set", "GET", "/v1/status", "", "s3cret", 401, "admin token required"},
		{"status wrong token", "GET", "/v1/status", "nope", "s3cret", 401, ""},
		{"status right token", "GET", "/v1/status", "s3cret", "s3cret", 200, `"alice"`},
		{"healthz open with token set", "GET", "/healthz", "", "s3cret", 200, `"ok"`},
		{"pprof needs token when set", "GET", "/debug/pprof/", "", "s3cret", 401, ""},
		{"pprof with token", "GET", "/debug/pprof/goroutine?debug=1", "s3cret", "s3cret", 200, "goroutine profile"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s.SetToken(tc.setToken)
			req := httptest.NewRequest(tc.method, tc.path, nil)
			req.Host = "127.0.0.1:9060"
			if tc.token != "" {
				req.Header.Set("Authorization", "Bearer "+tc.token)
			}
			rec := httptest.NewRecorder()
			s.Handler().ServeHTTP(rec, req)
			if rec.Code != tc.wantCode {
				t.Fatalf("%s %s: code %d, want %d (body %s)", tc.method, tc.path, rec.Code, tc.wantCode, rec.Body)
			}
			if !strings.Contains(rec.Body.String(), tc.wantBody) {
				t.Fatalf("body %q does not contain %q", rec.Body, tc.wantBody)
			}
			if tc.wantCode == http.StatusUnauthorized && rec.Header().Get("WWW-Authenticate") == "" {
				t.Fatal("401 without WWW-Authenticate")
			}
		})
	}
}

// TestAdminGuard plays a web page in the operator's browser: DNS rebinding
// (a foreign Host header) and cross-site POSTs are refused; the operator's
// own clients, addressed by IP, localhost or a listed name, are served, as
// is the status page's own same-origin request. The profiler's duration is
// capped.
func TestAdminGuard(t *testing.T) {
	reloads := 0
	s := New(Options{
		Status:       func() Status { return Status{Users: []UserStatus{{User: "alice"}}} },
		Reload:       func(string) (any, bool) { reloads++; return "ok", true },
		AllowedHosts: []string{"edgewise.corp.example"},
	}, nil)
	cases := []struct {
		name, method, path, host string
		headers                  map[string]string
		want                     int
	}{
		{"rebinding: foreign Host", "GET", "/v1/status", "evil.example", nil, 421},
		{"rebinding: foreign Host with port", "GET", "/v1/status", "evil.example:9060", nil, 421},
		{"rebinding: no Host", "GET", "/v1/status", "", nil, 421},
		{"IPv4 literal", "GET", "/v1/status", "127.0.0.1:9060", nil, 200},
		{"IPv6 literal", "GET", "/v1/status", "[::1]:9060", nil, 200},
		{"localhost", "GET", "/v1/status", "localhost:9060", nil, 200},
		{"listed name", "GET", "/v1/status", "EDGEWISE.corp.example:9060", nil, 200},
		{"CSRF: cross-site POST", "POST", "/v1/reload", "127.0.0.1:9060", map[string]string{"Origin": "http://evil.example"}, 403},
		{"CSRF: null origin", "POST", "/v1/reload", "127.0.0.1:9060", map[string]string{"Origin": "null"}, 403},
		{"CSRF: Sec-Fetch-Site cross-site", "POST", "/v1/reload", "127.0.0.1:9060", map[string]string{"Sec-Fetch-Site": "cross-site"}, 403},
		{"same-origin POST", "POST", "/v1/reload", "127.0.0.1:9060", map[string]string{"Origin": "http://127.0.0.1:9060"}, 200},
		{"curl POST (no Origin)", "POST", "/v1/reload", "127.0.0.1:9060", nil, 200},
		{"cross-site GET is read-only and allowed", "GET", "/v1/status", "127.0.0.1:9060", map[string]string{"Origin": "http://evil.example"}, 200},
		{"profile over the cap", "GET", "/debug/pprof/profile?seconds=600", "127.0.0.1:9060", nil, 400},
		{"trace over the cap", "GET", "/debug/pprof/trace?seconds=11", "127.0.0.1:9060", nil, 400},
		{"trace not a number", "GET", "/debug/pprof/trace?seconds=forever", "127.0.0.1:9060", nil, 400},
		{"trace within the cap", "GET", "/debug/pprof/trace?seconds=0.05", "127.0.0.1:9060", nil, 200},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req := httptest.NewRequest(tc.method, tc.path, nil)
			req.Host = tc.host
			for k, v := range tc.headers {
				req.Header.Set(k, v)
			}
			rec := httptest.NewRecorder()
			s.Handler().ServeHTTP(rec, req)
			if rec.Code != tc.want {
				t.Fatalf("code %d, want %d (body %s)", rec.Code, tc.want, rec.Body)
			}
			if rec.Header().Get("X-Frame-Options") != "DENY" || rec.Header().Get("X-Content-Type-Options") != "nosniff" {
				t.Errorf("security headers missing: %v", rec.Header())
			}
		})
	}
	if reloads != 2 {
		t.Errorf("reload ran %d times, want 2 (the same-origin and the curl POST)", reloads)
	}
}

// TestAdminOneProfileAtATime: a second profile while one runs is refused.
func TestAdminOneProfileAtATime(t *testing.T) {
	s := New(Options{}, nil)
	s.guard.profiling.Store(1) // one is running
	req := httptest.NewRequest("GET", "/debug/pprof/profile?seconds=1", nil)
	req.Host = "127.0.0.1"
	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, req)
	if rec.Code != http.StatusTooManyRequests || rec.Header().Get("Retry-After") == "" {
		t.Fatalf("second profile: %d %v", rec.Code, rec.Header())
	}
}
