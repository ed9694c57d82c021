package token

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/edgewise-sip/edgewise/test/kit"
	"github.com/edgewise-sip/edgewise/token/clientid"
)

const pageOrigin = "https://phones.example.com"

func handlerSettings() Settings {
	s := testSettings()
	s.CORSOrigins = []string{pageOrigin}
	s.IdentityHeader = "X-Forwarded-User"
	s.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("10.9.0.0/16")}
	return s
}

type call struct {
	method  string
	body    string
	remote  string
	user    string // Basic auth when set
	pass    string
	headers map[string]string
}

func (c call) do(h http.Handler) *httptest.ResponseRecorder {
	if c.method == "" {
		c.method = http.MethodPost
	}
	req := httptest.NewRequest(c.method, PathToken, strings.NewReader(c.body))
	req.RemoteAddr = "192.0.2.10:40000"
	if c.remote != "" {
		req.RemoteAddr = c.remote
	}
	if c.user != "" {
		req.SetBasicAuth(c.user, c.pass)
	}
	for k, v := range c.headers {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func TestTokenRequests(t *testing.T) {
	for _, tc := range []struct {
		name     string
		call     call
		status   int
		identity string // on 200
		errText  string // substring of the JSON error
		reason   string // refused_total label that must count
	}{
		{name: "basic ok", call: call{user: "alice", pass: "alice-pw"}, status: 200, identity: "alice"},
		{name: "basic ok empty body", call: call{user: "bob", pass: "bob-pw", body: " "}, status: 200, identity: "bob"},
		{name: "body names the same identity", call: call{user: "bob", pass: "bob-pw", body: `{"identity":"bob"}`}, status: 200, identity: "bob"},
		{name: "no credentials", call: call{}, status: 401, errText: "credentials required", reason: reasonUnauthenticated},
		{name: "wrong password", call: call{user: "alice", pass: "nope"}, status: 401, errText: "wrong user or password", reason: reasonUnauthenticated},
		{name: "unknown user", call: call{user: "mallory", pass: "alice-pw"}, status: 401, reason: reasonUnauthenticated},
		{name: "garbage authorization", call: call{headers: map[string]string{"Authorization": "Basic !!!"}}, status: 401, reason: reasonUnauthenticated},
		{name: "phone user whose name is not a Twilio identity", call: call{user: "carol.smith", pass: "carol-pw"}, status: 200, identity: "carol_2E_smith"},
		{name: "body names another identity", call: call{user: "alice", pass: "alice-pw", body: `{"identity":"bob"}`}, status: 403,
			errText: `asked for "bob"`, reason: reasonForbidden},
		{name: "malformed body", call: call{user: "alice", pass: "alice-pw", body: `{"identity":`}, status: 400, reason: reasonBadRequest},
		{name: "unknown field", call: call{user: "alice", pass: "alice-pw", body: `{"ttl":999999}`}, status: 400, errText: "unknown field", reason: reasonBadRequest},
		{name: "trailing data", call: call{user: "alice", pass: "alice-pw", body: `{} {}`}, status: 400, reason: reasonBadRequest},
		{name: "not an object", call: call{user: "alice", pass: "alice-pw", body: `"alice"`}, status: 400, reason: reasonBadRequest},
		{name: "oversized body", call: call{user: "alice", pass: "alice-pw", body: `{"identity":"` + strings.Repeat("a", MaxBodyBytes) + `"}`}, status: 413, reason: reasonTooLarge},
		{name: "GET", call: call{method: http.MethodGet, user: "alice", pass: "alice-pw"}, status: 405, reason: reasonMethod},
		{name: "foreign origin", call: call{user: "alice", pass: "alice-pw", headers: map[string]string{"Origin": "https://evil.example"}}, status: 403,
			errText: "origin not allowed", reason: reasonOrigin},
		{name: "header from trusted proxy", call: call{remote: "10.9.1.2:5555", headers: map[string]string{"X-Forwarded-User": "dave"}}, status: 200, identity: "dave"},
		{name: "header from trusted proxy, e-mail", call: call{remote: "10.9.1.2:5555", headers: map[string]string{"X-Forwarded-User": "dave@example.com"}}, status: 200, identity: "dave_40_example_2E_com"},
		{name: "header from trusted proxy, not a name", call: call{remote: "10.9.1.2:5555", headers: map[string]string{"X-Forwarded-User": "dave smith"}}, status: 403,
			errText: "printable ASCII", reason: reasonForbidden},
		{name: "header from trusted proxy, too long", call: call{remote: "10.9.1.2:5555", headers: map[string]string{"X-Forwarded-User": strings.Repeat("d", 129)}}, status: 403, reason: reasonForbidden},
		{name: "header from untrusted address is ignored", call: call{remote: "10.8.1.2:5555", headers: map[string]string{"X-Forwarded-User": "alice"}}, status: 401, reason: reasonUnauthenticated},
		{name: "untrusted header does not override basic", call: call{remote: "192.0.2.99:5555", user: "bob", pass: "bob-pw", headers: map[string]string{"X-Forwarded-User": "alice"}}, status: 200, identity: "bob"},
		{name: "trusted proxy without header falls back to basic", call: call{remote: "10.9.1.2:5555", user: "bob", pass: "bob-pw"}, status: 200, identity: "bob"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newTestProvider(t, handlerSettings())
			rec := tc.call.do(p.Handler())
			if rec.Code != tc.status {
				t.Fatalf("status %d, want %d; body %s", rec.Code, tc.status, rec.Body)
			}
			if cc := rec.Header().Get("Cache-Control"); cc != "no-store" {
				t.Errorf("Cache-Control = %q", cc)
			}
			if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
				t.Errorf("Content-Type = %q", ct)
			}
			if tc.status == 401 && rec.Header().Get("WWW-Authenticate") != basicChallenge {
				t.Errorf("401 without WWW-Authenticate: %v", rec.Header())
			}
			if tc.status != 200 {
				var e map[string]string
				if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e["error"] == "" {
					t.Fatalf("error body %q is not {\"error\": ...}", rec.Body)
				}
				if !strings.Contains(e["error"], tc.errText) {
					t.Errorf("error %q does not contain %q", e["error"], tc.errText)
				}
				if got := testutil.ToFloat64(p.metrics.refused.WithLabelValues(tc.reason)); got != 1 {
					t.Errorf("refused_total{reason=%q} = %v, want 1", tc.reason, got)
				}
				return
			}
			var a Answer
			if err := json.Unmarshal(rec.Body.Bytes(), &a); err != nil {
				t.Fatal(err)
			}
			if a.Identity != tc.identity || a.Token == "" || strings.Join(a.Edges, ",") != "ashburn,umatilla" || a.TTL != 3600 {
				t.Errorf("answer %+v", a)
			}
			_, c := parseToken(t, a.Token, testSecret)
			if c["grants"].(map[string]any)["identity"] != tc.identity {
				t.Errorf("token identity %v", c["grants"])
			}
			if got := testutil.ToFloat64(p.metrics.issued); got != 1 {
				t.Errorf("issued_total = %v", got)
			}
		})
	}
}

// TestIdentityOfEveryUser: every user name the config accepts gets a token
// whose identity Twilio accepts; a proxy cannot assert a name whose identity
// is another user's.
func TestIdentityOfEveryUser(t *testing.T) {
	long := strings.Repeat("a", clientid.MaxLen)
	users := Passwords{long: "pw", long + "a": "pw", "anna.lee": "pw", "bob-smith": "pw", "carol_x": "pw"}
	s := handlerSettings()
	p := New(kit.Logger(t))
	if err := p.Apply(s, users); err != nil {
		t.Fatal(err)
	}
	for user, want := range map[string]string{
		long:        long,
		"anna.lee":  "anna_2E_lee",
		"bob-smith": "bob_2D_smith",
		"carol_x":   "carol_x",
		long + "a":  clientid.Of(long + "a"),
	} {
		rec := (call{user: user, pass: "pw"}).do(p.Handler())
		if rec.Code != 200 {
			t.Errorf("%s: %d %s", user, rec.Code, rec.Body)
			continue
		}
		var a Answer
		if err := json.Unmarshal(rec.Body.Bytes(), &a); err != nil {
			t.Fatal(err)
		}
		_, claims := parseToken(t, a.Token, testSecret)
		grants, _ := claims["grants"].(map[string]any)
		if a.User != user || a.Identity != want || grants["identity"] != want || clientid.Valid(want) != nil {
			t.Errorf("%s: answer user=%q identity=%q, token identity %v; want %q", user, a.User, a.Identity, grants["identity"], want)
		}
	}

	// A page may name either the user or its identity.
	for _, named := range []string{"anna.lee", "anna_2E_lee"} {
		if rec := (call{user: "anna.lee", pass: "pw", body: `{"identity":"` + named + `"}`}).do(p.Handler()); rec.Code != 200 {
			t.Errorf("body identity %q: %d %s", named, rec.Code, rec.Body)
		}
	}

	// The trusted proxy asserts "anna_2E_lee", a name of no phone whose
	// identity would be anna.lee's.
	rec := call{remote: "10.9.0.1:5000", headers: map[string]string{"X-Forwarded-User": "anna_2E_lee"}}.do(p.Handler())
	if rec.Code != 403 || !strings.Contains(rec.Body.String(), `user \"anna.lee\"'s`) {
		t.Errorf("proxy-asserted look-alike: %d %s", rec.Code, rec.Body)
	}
	rec = call{remote: "10.9.0.1:5000", headers: map[string]string{"X-Forwarded-User": "dave.jones"}}.do(p.Handler())
	if rec.Code != 200 || !strings.Contains(rec.Body.String(), `"identity":"dave_2E_jones"`) {
		t.Errorf("proxy-asserted dave.jones: %d %s", rec.Code, rec.Body)
	}
}

func TestCORS(t *testing.T) {
	p := newTestProvider(t, handlerSettings())
	h := p.Handler()

	pre := call{method: http.MethodOptions, headers: map[string]string{
		"Origin":                         pageOrigin,
		"Access-Control-Request-Method":  "POST",
		"Access-Control-Request-Headers": "authorization, content-type",
	}}.do(h)
	if pre.Code != http.StatusNoContent {
		t.Fatalf("preflight %d %s", pre.Code, pre.Body)
	}
	for k, v := range map[string]string{
		"Access-Control-Allow-Origin":      pageOrigin,
		"Access-Control-Allow-Credentials": "true",
		"Access-Control-Allow-Methods":     "POST",
		"Access-Control-Allow-Headers":     "Authorization, Content-Type",
	} {
		if got := pre.Header().Get(k); got != v {
			t.Errorf("preflight %s = %q, want %q", k, got, v)
		}
	}

	ok := call{user: "alice", pass: "alice-pw", headers: map[string]string{"Origin": pageOrigin}}.do(h)
	if ok.Code != 200 || ok.Header().Get("Access-Control-Allow-Origin") != pageOrigin ||
		!strings.Contains(ok.Header().Get("Vary"), "Origin") {
		t.Errorf("allowed origin: %d %v", ok.Code, ok.Header())
	}

	bad := call{method: http.MethodOptions, headers: map[string]string{"Origin": "https://evil.example"}}.do(h)
	if bad.Code != http.StatusForbidden || bad.Header().Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("foreign preflight: %d %v", bad.Code, bad.Header())
	}
	// Errors carry CORS headers too, so the page can read why (e.g. 401).
	unauth := call{headers: map[string]string{"Origin": pageOrigin}}.do(h)
	if unauth.Code != 401 || unauth.Header().Get("Access-Control-Allow-Origin") != pageOrigin ||
		unauth.Header().Get("WWW-Authenticate") != browserChallenge {
		t.Errorf("401 for allowed origin: %d %v", unauth.Code, unauth.Header())
	}
}

func TestRateLimits(t *testing.T) {
	s := handlerSettings()
	s.RateLimit = RateLimit{PerIdentity: 2, PerAddress: 4, Window: time.Minute}
	p := newTestProvider(t, s)
	now := time.Unix(1_700_000_000, 0)
	p.now = func() time.Time { return now }
	h := p.Handler()

	alice := call{user: "alice", pass: "alice-pw", remote: "192.0.2.1:1000"}
	for i := range 2 {
		if rec := alice.do(h); rec.Code != 200 {
			t.Fatalf("alice #%d: %d", i, rec.Code)
		}
	}
	rec := alice.do(h)
	if rec.Code != 429 {
		t.Fatalf("alice over per-identity limit: %d", rec.Code)
	}
	// 2 per minute: a new token every 30 s.
	if ra := rec.Header().Get("Retry-After"); ra != "30" {
		t.Errorf("Retry-After = %q, want 30", ra)
	}
	// Same address, other user: per-address budget (4) still has one left.
	if rec := (call{user: "bob", pass: "bob-pw", remote: "192.0.2.1:1001"}).do(h); rec.Code != 200 {
		t.Fatalf("bob: %d", rec.Code)
	}
	// The address is now spent (4 requests), whoever asks, even without credentials.
	rec = call{remote: "192.0.2.1:1002"}.do(h)
	if rec.Code != 429 || rec.Header().Get("Retry-After") == "" {
		t.Fatalf("address over limit: %d %v", rec.Code, rec.Header())
	}
	// Another address is unaffected.
	if rec := (call{user: "bob", pass: "bob-pw", remote: "192.0.2.2:1000"}).do(h); rec.Code != 200 {
		t.Fatalf("bob elsewhere: %d", rec.Code)
	}
	// After the refill time alice may ask again.
	now = now.Add(30 * time.Second)
	if rec := (call{user: "alice", pass: "alice-pw", remote: "192.0.2.3:1000"}).do(h); rec.Code != 200 {
		t.Fatalf("alice after refill: %d %s", rec.Code, rec.Body)
	}
	if got := testutil.ToFloat64(p.metrics.refused.WithLabelValues(reasonRateLimited)); got < 2 {
		t.Errorf("refused_total{rate_limited} = %v", got)
	}
}

func TestRateLimitBehindProxy(t *testing.T) {
	s := handlerSettings()
	s.RateLimit = RateLimit{PerAddress: 1}
	h := newTestProvider(t, s).Handler()
	viaProxy := func(xff string) int {
		return call{remote: "10.9.0.1:1", headers: map[string]string{"X-Forwarded-User": "dave", "X-Forwarded-For": xff}}.do(h).Code
	}
	// Each client behind the proxy has its own budget ...
	for _, c := range []string{"198.51.100.1", "198.51.100.2", "198.51.100.3"} {
		if code := viaProxy(c); code != 200 {
			t.Fatalf("client %s via proxy: %d", c, code)
		}
	}
	// ... keyed by the rightmost hop the proxies did not add; a client cannot
	// escape its budget by prepending addresses.
	if code := viaProxy("203.0.113.7, 198.51.100.1, 10.9.0.2"); code != 429 {
		t.Errorf("spent client via two proxies: %d", code)
	}
	// An untrusted peer's X-Forwarded-For is ignored: the peer address counts.
	direct := call{user: "bob", pass: "bob-pw", remote: "192.0.2.50:1", headers: map[string]string{"X-Forwarded-For": "198.51.100.9"}}
	if code := direct.do(h).Code; code != 200 {
		t.Fatalf("direct: %d", code)
	}
	direct.headers["X-Forwarded-For"] = "198.51.100.10"
	if code := direct.do(h).Code; code != 429 {
		t.Errorf("direct with a new forged X-Forwarded-For: %d", code)
	}
}

func TestNotReady(t *testing.T) {
	p := New(kit.Logger(t))
	h := p.Handler()
	get := func(path string) *httptest.ResponseRecorder {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		return rec
	}
	if rec := get(PathHealthz); rec.Code != 200 {
		t.Errorf("healthz before Apply: %d", rec.Code)
	}
	if rec := get(PathReadyz); rec.Code != 503 || !strings.Contains(rec.Body.String(), "not configured") {
		t.Errorf("readyz before Apply: %d %s", rec.Code, rec.Body)
	}
	if rec := (call{user: "alice", pass: "alice-pw"}).do(h); rec.Code != 503 {
		t.Errorf("token before Apply: %d", rec.Code)
	}

	s := testSettings()
	for i := range s.Keys {
		s.Keys[i].Secret = ""
	}
	if err := p.Apply(s, testUsers()); err != nil {
		t.Fatal(err)
	}
	if rec := get(PathReadyz); rec.Code != 503 || !strings.Contains(rec.Body.String(), "no usable API key") {
		t.Errorf("readyz without secrets: %d %s", rec.Code, rec.Body)
	}
	if rec := (call{user: "alice", pass: "alice-pw"}).do(h); rec.Code != 503 {
		t.Errorf("token without secrets: %d", rec.Code)
	}

	// The second key signs when the first has no secret: rotation leftovers
	// must not stop issuance.
	s.Keys[1].Secret = "old-secret"
	if err := p.Apply(s, testUsers()); err != nil {
		t.Fatal(err)
	}
	if rec := get(PathReadyz); rec.Code != 200 {
		t.Errorf("readyz with second key: %d %s", rec.Code, rec.Body)
	}
	rec := call{user: "alice", pass: "alice-pw"}.do(h)
	var a Answer
	_ = json.Unmarshal(rec.Body.Bytes(), &a)
	if _, c := parseToken(t, a.Token, "old-secret"); c["iss"] != testKey2SID {
		t.Errorf("iss = %v, want second key", c["iss"])
	}
	if got := testutil.ToFloat64(p.metrics.ready); got != 1 {
		t.Errorf("ready gauge = %v", got)
	}
}

func TestSDKRoute(t *testing.T) {
	h := New(nil).Handler() // served even before Apply
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, PathSDK, nil))
	if rec.Code != 200 || !strings.HasPrefix(rec.Header().Get("Content-Type"), "text/javascript") ||
		rec.Header().Get("Access-Control-Allow-Origin") != "*" {
		t.Fatalf("sdk: %d %v", rec.Code, rec.Header())
	}
	body, _ := io.ReadAll(rec.Body)
	for _, export := range []string{"export async function fetchToken", "export function keepFresh", "export class TokenError"} {
		if !strings.Contains(string(body), export) {
			t.Errorf("sdk lacks %q", export)
		}
	}
	req := httptest.NewRequest(http.MethodGet, PathSDK, nil)
	req.Header.Set("If-None-Match", rec.Header().Get("ETag"))
	rec2 := httptest.NewRecorder()
	h.ServeHTTP(rec2, req)
	if rec2.Code != http.StatusNotModified {
		t.Errorf("conditional GET: %d", rec2.Code)
	}
	rec3 := httptest.NewRecorder()
	h.ServeHTTP(rec3, httptest.NewRequest(http.MethodGet, "/nope", nil))
	if rec3.Code != 404 || !strings.Contains(rec3.Body.String(), `"error"`) {
		t.Errorf("unknown path: %d %s", rec3.Code, rec3.Body)
	}
}
