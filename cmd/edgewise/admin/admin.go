// Package admin serves edgewise's operator API: health, status, a live
// status page, reload and metrics. It listens on loopback by default;
// anything it exposes beyond /healthz needs the configured bearer token when
// one is set, because status names users and contacts and reload changes
// what the daemon does. Whatever the token, it answers only to an IP
// literal, localhost or a configured name in the Host header (DNS
// rebinding), refuses cross-site POSTs (CSRF), and caps the profiler (see
// guard.go).
//
// It imports configs and the status types of registrar/calls,
// registrar/twilio/edge and registrar/twilio/upstream, and calls nothing
// in them: the daemon hands it a Status function.
package admin

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Reloader re-reads and applies the configuration; the result is reported
// verbatim to the caller (it is JSON-ready).
type Reloader func(trigger string) (result any, ok bool)

// Options wires the admin API to the rest of the daemon.
type Options struct {
	// Status returns the status document.
	Status func() Status
	// Reload is called for POST /v1/reload.
	Reload Reloader
	// Ready reports whether the daemon takes traffic (false while starting
	// and draining).
	Ready func() bool
	// Degraded, when set, says why the daemon serves with less than it
	// should ("" when it does not): /readyz stays 200, so traffic keeps
	// coming, and says "degraded" with the reason.
	Degraded func() string
	// Gatherer serves /metrics; nil disables the endpoint.
	Gatherer prometheus.Gatherer
	// AllowedHosts are names, besides IP literals and localhost, that
	// requests may carry in their Host header (admin.allowed_hosts).
	AllowedHosts []string
}

// Server is the admin HTTP API.
type Server struct {
	opts    Options
	token   atomic.Pointer[string]
	logger  *slog.Logger
	mux     *http.ServeMux
	guard   *guard
	handler http.Handler // mux behind the guard
}

// New builds the admin API. Call SetToken to require a bearer token.
func New(opts Options, logger *slog.Logger) *Server {
	if logger == nil {
		logger = slog.Default()
	}
	s := &Server{opts: opts, logger: logger, mux: http.NewServeMux(), guard: newGuard()}
	s.guard.setHosts(opts.AllowedHosts)
	s.handler = s.guard.wrap(s, s.mux)
	s.mux.HandleFunc("GET /healthz", s.healthz)
	s.mux.HandleFunc("GET /readyz", s.authed(s.readyz))
	s.mux.HandleFunc("GET /v1/status", s.authed(s.status))
	s.mux.HandleFunc("GET /v1/events", s.authed(s.events))
	s.mux.HandleFunc("GET /{$}", s.authed(s.page))
	s.mux.HandleFunc("POST /v1/reload", s.authed(s.reload))
	if opts.Gatherer != nil {
		s.mux.Handle("GET /metrics", s.authed(promhttp.HandlerFor(opts.Gatherer, promhttp.HandlerOpts{}).ServeHTTP))
	}
	// Go's profiler, for "why is it using a core" during an incident: as
	// private as the rest of the admin API (loopback, or the token).
	s.mux.HandleFunc("GET /debug/pprof/", s.authed(pprof.Index))
	s.mux.HandleFunc("GET /debug/pprof/cmdline", s.authed(pprof.Cmdline))
	s.mux.HandleFunc("GET /debug/pprof/profile", s.authed(s.guard.capped(s, maxProfile, pprof.Profile)))
	s.mux.HandleFunc("GET /debug/pprof/symbol", s.authed(pprof.Symbol))
	s.mux.HandleFunc("GET /debug/pprof/trace", s.authed(s.guard.capped(s, maxTrace, pprof.Trace)))
	return s
}

// SetToken sets (or, with "", clears) the bearer token; safe to call on reload.
func (s *Server) SetToken(token string) { s.token.Store(&token) }

// SetAllowedHosts replaces Options.AllowedHosts; safe to call on reload.
func (s *Server) SetAllowedHosts(names []string) { s.guard.setHosts(names) }

// Collector returns the admin API's own metrics (edgewise_admin_*).
func (s *Server) Collector() prometheus.Collector { return s.guard.refused }

// Handler returns the routes behind the guard, for tests and embedding.
func (s *Server) Handler() http.Handler { return s.handler }

// Serve answers on ln until ctx is done, then drains in-flight requests for up
// to five seconds.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 5 * time.Second,
		ErrorLog:          slog.NewLogLogger(s.logger.Handler(), slog.LevelWarn),
		// Request contexts end with ctx, so long-lived /v1/events streams
		// stop on shutdown instead of holding Shutdown for its full drain.
		BaseContext: func(net.Listener) context.Context { return ctx },
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := srv.Shutdown(shutdownCtx)
	<-errc
	return err
}

func (s *Server) authed(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if tok := s.token.Load(); tok != nil && *tok != "" {
			got, found := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
			if !found || subtle.ConstantTimeCompare([]byte(got), []byte(*tok)) != 1 {
				w.Header().Set("WWW-Authenticate", `Bearer realm="edgewise-admin"`)
				writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "admin token required"})
				return
			}
		}
		h(w, r)
	}
}

func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	if s.opts.Ready != nil && !s.opts.Ready() {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "not ready"})
		return
	}
	if s.opts.Degraded != nil {
		if why := s.opts.Degraded(); why != "" {
			writeJSON(w, http.StatusOK, map[string]string{"status": "degraded", "reason": why})
			return
		}
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

func (s *Server) status(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, s.opts.Status())
}

func (s *Server) reload(w http.ResponseWriter, _ *http.Request) {
	if s.opts.Reload == nil {
		writeJSON(w, http.StatusNotImplemented, map[string]string{"error": "reload not available"})
		return
	}
	res, ok := s.opts.Reload("api")
	code := http.StatusOK
	if !ok {
		// The file was refused; the running config is unchanged.
		code = http.StatusUnprocessableEntity
	}
	writeJSON(w, code, res)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	// An error here means the client went away mid-answer; nothing to do.
	_ = enc.Encode(v)
}
