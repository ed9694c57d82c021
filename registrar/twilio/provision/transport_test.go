package provision

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestAttempt covers what the per-attempt RoundTripper does to answers:
// 5xx become serverErrors (with Twilio's code when the body has one), and
// a body longer than any Twilio page is cut off with an error.
func TestAttempt(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/503":
			w.WriteHeader(503)
			_, _ = io.WriteString(w, `{"code":20503,"message":"Service Unavailable","status":503}`)
		case "/502":
			w.WriteHeader(502)
			_, _ = io.WriteString(w, "<html>bad gateway</html>")
		case "/endless":
			chunk := []byte(strings.Repeat("x", 1<<20))
			for range maxBody>>20 + 2 {
				if _, err := w.Write(chunk); err != nil {
					return
				}
			}
		default:
			_, _ = io.WriteString(w, "{}")
		}
	}))
	defer srv.Close()
	get := func(path string) (*http.Response, *attempt, error) {
		at := &attempt{ctx: context.Background(), base: http.DefaultTransport}
		req, _ := http.NewRequest(http.MethodGet, srv.URL+path, nil)
		resp, err := (&http.Client{Transport: at}).Do(req)
		return resp, at, err
	}

	_, at, err := get("/503")
	var se *serverError
	if !errors.As(err, &se) || se.Error() != "503 Service Unavailable (code 20503: Service Unavailable)" || !at.sent.Load() || at.status.Load() != 503 {
		t.Errorf("503: %v (sent %v)", err, at.sent.Load())
	}
	if _, _, err = get("/502"); !errors.As(err, &se) || se.Error() != "502 Bad Gateway" {
		t.Errorf("502: %v", err)
	}
	resp, _, err := get("/endless")
	if err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	var mbe *http.MaxBytesError
	if !errors.As(err, &mbe) || n != maxBody {
		t.Errorf("endless body: read %d, err %v; want %d and a MaxBytesError", n, err, maxBody)
	}
	resp, _, err = get("/ok")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("ok: %v", err)
	}
	resp.Body.Close()
}
