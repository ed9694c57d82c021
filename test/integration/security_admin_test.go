package integration

import (
	"net/http"
	"strings"
	"testing"
)

// TestSecurityAdminFromAWebPage plays a web page in the operator's browser
// against the admin API on loopback with no token: DNS rebinding (a request
// that says "Host: evil.example") and a cross-site POST to /v1/reload are
// both refused, while `edgewise status` and curl-style requests by IP work.
func TestSecurityAdminFromAWebPage(t *testing.T) {
	d := startDaemon(t, defaultConfig)
	do := func(method, path string, headers map[string]string) int {
		t.Helper()
		req, err := http.NewRequest(method, d.adminURL+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range headers {
			if k == "Host" {
				req.Host = v
				continue
			}
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := do("GET", "/v1/status", map[string]string{"Host": "evil.example:9060"}); code != http.StatusMisdirectedRequest {
		t.Errorf("rebound GET /v1/status: %d, want 421", code)
	}
	if code := do("POST", "/v1/reload", map[string]string{"Origin": "http://evil.example"}); code != http.StatusForbidden {
		t.Errorf("cross-site POST /v1/reload: %d, want 403", code)
	}
	if code := do("GET", "/debug/pprof/profile?seconds=3600", nil); code != http.StatusBadRequest {
		t.Errorf("hour-long profile: %d, want 400", code)
	}
	if code := do("POST", "/v1/reload", nil); code != http.StatusOK {
		t.Errorf("POST /v1/reload without Origin (curl): %d, want 200", code)
	}
	if out := opsStatusCmd(t, d); !strings.Contains(out, "EDGE") {
		t.Errorf("edgewise status:\n%s", out)
	}
	if got := scrapeMetrics(t, d).value("edgewise_admin_refused_total"); got != 3 {
		t.Errorf("admin_refused_total = %v, want 3", got)
	}
}
