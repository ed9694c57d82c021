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
		Status: func() any { return map[string]any{"users": []string{"alice"}} },
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
