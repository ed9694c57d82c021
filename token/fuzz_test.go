package token

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/edgewise-sip/edgewise/token/clientid"
)

// FuzzParseBody: any body either parses into a request or is refused with
// an error; never a panic.
func FuzzParseBody(f *testing.F) {
	for _, s := range []string{"", " ", "{}", `{"identity":"alice"}`, `{"identity":1}`, `{"x":1}`,
		`{} {}`, `[]`, `null`, `{"identity":"\u0000"}`, "\xff\xfe", `{"identity":"a"}garbage`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var req tokenRequest
		if err := parseBody(data, &req); err != nil {
			return
		}
		// Whatever parsed must round-trip as a JSON object of known fields.
		out, err := json.Marshal(req)
		if err != nil {
			t.Fatalf("parsed body does not marshal: %v", err)
		}
		var again tokenRequest
		if err := parseBody(out, &again); err != nil || again != req {
			t.Fatalf("round trip %q: %v %+v", out, err, again)
		}
	})
}

// FuzzTokenRequest drives the whole handler with arbitrary Authorization
// headers and bodies: answers are one of the documented statuses, errors are
// JSON, and a token is only ever issued to a directory user with their
// password and a valid identity.
func FuzzTokenRequest(f *testing.F) {
	basic := func(s string) string { return "Basic " + base64.StdEncoding.EncodeToString([]byte(s)) }
	for _, seed := range []struct{ auth, body string }{
		{basic("alice:alice-pw"), "{}"},
		{basic("alice:alice-pw"), `{"identity":"alice"}`},
		{basic("carol.smith:carol-pw"), ""},
		{basic("alice:"), ""},
		{basic(":"), ""},
		{basic("alice"), ""},
		{"Basic", ""},
		{"Basic !!", ""},
		{"basic " + base64.StdEncoding.EncodeToString([]byte("bob:bob-pw")), `{"identity":"bob"}`},
		{"Bearer x", "{"},
		{basic("alice:alice-pw:extra"), strings.Repeat(" ", MaxBodyBytes+1)},
		{basic("\x00:\x00"), "\x00"},
	} {
		f.Add(seed.auth, []byte(seed.body))
	}
	p := New(nil)
	if err := p.Apply(testSettings(), testUsers()); err != nil {
		f.Fatal(err)
	}
	h := p.Handler()
	users := testUsers()
	f.Fuzz(func(t *testing.T, auth string, body []byte) {
		req := httptest.NewRequest(http.MethodPost, PathToken, strings.NewReader(string(body)))
		req.Header.Set("Authorization", auth)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		switch rec.Code {
		case 200:
			user, pass, ok := req.BasicAuth()
			if !ok || users[user] != pass {
				t.Fatalf("token issued for auth %q", auth)
			}
			var a Answer
			if err := json.Unmarshal(rec.Body.Bytes(), &a); err != nil || a.User != user || a.Identity != clientid.Of(user) || clientid.Valid(a.Identity) != nil {
				t.Fatalf("answer %s", rec.Body)
			}
		case 400, 401, 403, 413:
			var e map[string]string
			if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e["error"] == "" {
				t.Fatalf("status %d with body %q", rec.Code, rec.Body)
			}
		default:
			t.Fatalf("unexpected status %d: %s", rec.Code, rec.Body)
		}
	})
}
