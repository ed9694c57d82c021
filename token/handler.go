package token

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/edgewise-sip/edgewise/token/clientid"
)

// Paths served by Handler.
const (
	PathToken   = "/v1/token"
	PathSDK     = "/v1/sdk/edgewise.js"
	PathHealthz = "/healthz"
	PathReadyz  = "/readyz"
)

// MaxBodyBytes bounds a token request body; the body is at most a tiny JSON
// object, so anything larger is a mistake or an attack.
const MaxBodyBytes = 4 << 10

// Challenges sent with 401. basicChallenge is for curl and other programs
// (charset per RFC 7617). A browser that gets a Basic challenge on a fetch
// tries to ask the user for a password: a login dialog over the page, or in
// headless Chromium a fetch that never completes. So cross-origin requests
// (they carry Origin) get the same challenge under a scheme browsers do not
// act on; the page's own code supplies the credentials.
const (
	basicChallenge   = `Basic realm="edgewise", charset="UTF-8"`
	browserChallenge = `EdgewiseBasic realm="edgewise", charset="UTF-8"`
)

func challenge(r *http.Request) string {
	if r.Header.Get("Origin") != "" {
		return browserChallenge
	}
	return basicChallenge
}

// Answer is the JSON body of a successful POST /v1/token.
type Answer struct {
	// User is the phone user the credentials are for; Identity is the
	// Twilio client identity in the token (see IdentityOf): the name TwiML
	// dials as <Client>.
	User      string    `json:"user"`
	Identity  string    `json:"identity"`
	Token     string    `json:"token"`
	TTL       int       `json:"ttl"` // seconds
	ExpiresAt time.Time `json:"expires_at"`
	// Edges is the ordered list to pass as Twilio.Device's edge option.
	Edges []string `json:"edges"`
	// Provider is the URL that answered; set by Client, not sent.
	Provider string `json:"-"`
}

// tokenRequest is the optional body of POST /v1/token. Identity, when given,
// must equal the authenticated user or its client identity; it lets a page
// assert whom it expects to be logged in as.
type tokenRequest struct {
	Identity string `json:"identity,omitempty"`
}

// Handler serves the token API, the browser helper, the health checks and,
// with Settings.TwiML, the fallback TwiML app.
func (p *Provider) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc(PathToken, p.serveToken)
	mux.HandleFunc(PathSDK, serveSDK)
	mux.HandleFunc(PathTwiMLVoice, p.serveTwiML)
	mux.HandleFunc(PathTwiMLStatus, p.serveTwiML)
	mux.HandleFunc(PathHealthz, func(w http.ResponseWriter, r *http.Request) {
		noStore(w)
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc(PathReadyz, func(w http.ResponseWriter, r *http.Request) {
		noStore(w)
		if ok, why := p.Ready(); !ok {
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "not ready", "reason": why})
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		noStore(w)
		writeError(w, http.StatusNotFound, "no such path")
	})
	return mux
}

// refusal is an HTTP error answer plus the metric reason it counts under.
type refusal struct {
	status int
	reason string
	msg    string
	retry  time.Duration // Retry-After, for 429
}

func (p *Provider) serveToken(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	defer func() { p.metrics.duration.Observe(time.Since(start).Seconds()) }()
	noStore(w)
	w.Header().Add("Vary", "Origin")

	ans, ref := p.issue(w, r)
	switch {
	case ref != nil:
		p.metrics.refused.WithLabelValues(ref.reason).Inc()
		if ref.status == http.StatusUnauthorized {
			w.Header().Set("WWW-Authenticate", challenge(r))
		}
		if ref.retry > 0 {
			w.Header().Set("Retry-After", strconv.Itoa(retryAfterSeconds(ref.retry)))
		}
		p.log.Debug("token refused", "status", ref.status, "reason", ref.reason,
			"msg", ref.msg, "remote", r.RemoteAddr)
		writeError(w, ref.status, ref.msg)
	case ans == nil: // preflight, already answered
	default:
		p.metrics.issued.Inc()
		p.log.Debug("token issued", "identity", ans.Identity, "remote", r.RemoteAddr,
			"expires_at", ans.ExpiresAt)
		writeJSON(w, http.StatusOK, ans)
	}
}

// issue runs the checks in order of cost: configuration, origin, method,
// per-address budget, body, credentials, identity, per-identity budget.
// It returns (nil, nil) when it answered a CORS preflight itself.
func (p *Provider) issue(w http.ResponseWriter, r *http.Request) (*Answer, *refusal) {
	st := p.state.Load()
	if st == nil {
		return nil, &refusal{http.StatusServiceUnavailable, reasonNotReady, "token provider is not configured", 0}
	}
	if ref := p.cors(w, r, st); ref != nil || r.Method == http.MethodOptions {
		return nil, ref
	}
	if ok, why := p.Ready(); !ok {
		return nil, &refusal{http.StatusServiceUnavailable, reasonNotReady, "token provider is not ready: " + why, 0}
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST, OPTIONS")
		return nil, &refusal{http.StatusMethodNotAllowed, reasonMethod, "use POST", 0}
	}
	now := p.now()
	peer := peerAddr(r)
	client := clientAddr(r, peer, st.settings.TrustedProxies)
	named, _, _ := r.BasicAuth()
	if p.guard != nil {
		if ok, wait, why := p.guard.Allow(client, named); !ok {
			return nil, &refusal{http.StatusTooManyRequests, reasonLockedOut, "too many failed logins: " + why, wait}
		}
	}
	// The per-address budget does not apply to a client asking for a user
	// it has logged in as before: whoever else shares its address (an
	// office NAT, a proxy that sends no X-Forwarded-For) must not be able
	// to spend the real user's budget. Its own per-identity budget still
	// applies after authentication.
	if p.guard == nil || named == "" || !p.guard.Known(client, named) {
		if ok, wait := p.perAddr.allow(addrKey(client), now); !ok {
			return nil, &refusal{http.StatusTooManyRequests, reasonRateLimited, "too many token requests from this address", wait}
		}
	}
	body, ref := readBody(w, r)
	if ref != nil {
		return nil, ref
	}
	identity, ref := p.authenticate(st, r, peer)
	if ref != nil {
		if ref.status == http.StatusUnauthorized && named != "" && p.guard != nil {
			user := named
			if st.dir == nil || !st.dir.Exists(named) {
				user = "" // nobody to guard
			}
			p.guard.Failed(client, user)
		}
		return nil, ref
	}
	if p.guard != nil {
		p.guard.Succeeded(client, identity)
	}
	clientID := clientid.Of(identity)
	if body.Identity != "" && body.Identity != identity && body.Identity != clientID {
		return nil, &refusal{http.StatusForbidden, reasonForbidden,
			fmt.Sprintf("token asked for %q but the credentials are %q's", body.Identity, identity), 0}
	}
	if ok, wait := p.perID.allow(identity, now); !ok {
		return nil, &refusal{http.StatusTooManyRequests, reasonRateLimited, "too many token requests for this user", wait}
	}
	tok, exp, err := mint(&st.settings, st.signer, clientID, now, st.ttl)
	if err != nil {
		p.log.Error("cannot sign token", "err", err, "key_sid", st.signer.SID)
		return nil, &refusal{http.StatusInternalServerError, reasonInternal, "cannot sign token", 0}
	}
	return &Answer{
		User:      identity,
		Identity:  clientID,
		Token:     tok,
		TTL:       int(st.ttl / time.Second),
		ExpiresAt: exp,
		Edges:     st.edges,
	}, nil
}

// cors allows only configured origins. Requests without Origin (curl,
// server-side callers) pass; a browser request from elsewhere is refused
// before it can spend rate-limit budget or test passwords.
func (p *Provider) cors(w http.ResponseWriter, r *http.Request, st *state) *refusal {
	origin := r.Header.Get("Origin")
	if origin == "" {
		if r.Method == http.MethodOptions {
			w.Header().Set("Allow", "POST, OPTIONS")
			w.WriteHeader(http.StatusNoContent)
		}
		return nil
	}
	if !st.origins[origin] {
		return &refusal{http.StatusForbidden, reasonOrigin, "origin not allowed", 0}
	}
	h := w.Header()
	h.Set("Access-Control-Allow-Origin", origin)
	// Credentials: Basic auth or the cookies of an authenticating proxy.
	h.Set("Access-Control-Allow-Credentials", "true")
	h.Set("Access-Control-Expose-Headers", "Retry-After")
	if r.Method == http.MethodOptions {
		h.Set("Access-Control-Allow-Methods", "POST")
		h.Set("Access-Control-Allow-Headers", "Authorization, Content-Type")
		h.Set("Access-Control-Max-Age", "600")
		w.WriteHeader(http.StatusNoContent)
	}
	return nil
}

// authenticate asks each authenticator in turn; the first that recognises
// credentials decides.
func (p *Provider) authenticate(st *state, r *http.Request, peer netip.Addr) (string, *refusal) {
	for _, a := range st.auth {
		id, err := a.Authenticate(r, peer)
		switch {
		case errors.Is(err, ErrNoCredentials):
			continue
		case errors.Is(err, ErrForbidden):
			return "", &refusal{http.StatusForbidden, reasonForbidden, err.Error(), 0}
		case err != nil:
			return "", &refusal{http.StatusUnauthorized, reasonUnauthenticated, err.Error(), 0}
		}
		if err := assertable(id); err != nil {
			return "", &refusal{http.StatusForbidden, reasonForbidden,
				fmt.Sprintf("identity %q cannot get a browser token: %v", id, err), 0}
		}
		// A trusted proxy may assert a name that is not a phone user but
		// whose identity spells one ("a_2E_b" is "a.b"'s); that token would
		// ring the phone user's browsers.
		if other, ok := clientid.UserOf(clientid.Of(id)); ok && other != id && st.dir != nil && st.dir.Exists(other) {
			return "", &refusal{http.StatusForbidden, reasonForbidden,
				fmt.Sprintf("user %q cannot get a browser token: its identity %s is user %q's", id, clientid.Of(id), other), 0}
		}
		return id, nil
	}
	return "", &refusal{http.StatusUnauthorized, reasonUnauthenticated, "credentials required", 0}
}

// maxUserLen bounds the names an authenticator may assert: the config's
// limit for phone users, which a proxy's header must not exceed either.
const maxUserLen = 128

// assertable refuses names no user could have: a proxy's header is trusted
// for who, not for being well formed.
func assertable(id string) error {
	if id == "" || len(id) > maxUserLen {
		return fmt.Errorf("must be 1..%d characters", maxUserLen)
	}
	for i := 0; i < len(id); i++ {
		if id[i] <= ' ' || id[i] > '~' {
			return errors.New("only printable ASCII without spaces is allowed")
		}
	}
	return nil
}

// readBody accepts an empty body or one JSON object with known fields only.
func readBody(w http.ResponseWriter, r *http.Request) (tokenRequest, *refusal) {
	var req tokenRequest
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return req, &refusal{http.StatusRequestEntityTooLarge, reasonTooLarge,
				fmt.Sprintf("body larger than %d bytes", MaxBodyBytes), 0}
		}
		return req, &refusal{http.StatusBadRequest, reasonBadRequest, "cannot read body", 0}
	}
	if err := parseBody(data, &req); err != nil {
		return req, &refusal{http.StatusBadRequest, reasonBadRequest, err.Error(), 0}
	}
	return req, nil
}

// parseBody is separate from readBody so it can be fuzzed directly.
func parseBody(data []byte, req *tokenRequest) error {
	if len(bytes.TrimSpace(data)) == 0 {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(req); err != nil {
		return fmt.Errorf("body is not a JSON object of known fields: %w", err)
	}
	if dec.More() {
		return errors.New("body has data after the JSON object")
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("body has data after the JSON object")
	}
	return nil
}

func noStore(w http.ResponseWriter) {
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v) // the client went away; nothing to do
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": strings.TrimSpace(msg)})
}
