package admin

import (
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// The admin API listens on loopback without a token by default, which a web
// page in the operator's browser could otherwise reach:
//
//   - DNS rebinding: a page on evil.example re-resolves its own name to
//     127.0.0.1 and reads /v1/status as same-origin. Its requests still carry
//     "Host: evil.example", so only IP literals, localhost and names the
//     operator lists (admin.allowed_hosts) are served; anything else gets
//     421 Misdirected Request.
//   - CSRF: a page POSTs to http://127.0.0.1:9060/v1/reload. A browser marks
//     such a request with its Origin (or Sec-Fetch-Site): a POST from another
//     origin gets 403. Clients that are not browsers (curl, edgewise status)
//     send neither and are served.
//
// The profiler is capped too: a CPU profile runs at most maxProfile, a trace
// at most maxTrace, one at a time, since each costs the daemon while it runs.
const (
	maxProfile = 60 * time.Second
	maxTrace   = 10 * time.Second
)

// refusal reasons, the "reason" label of admin_refused_total.
const (
	refusedHost   = "host"
	refusedOrigin = "origin"
	refusedPprof  = "pprof"
)

type guard struct {
	hosts   atomic.Pointer[map[string]bool] // lower-case names besides IP literals and localhost
	refused *prometheus.CounterVec
	// logged keeps refusals to one log line per host or origin.
	mu     sync.Mutex
	logged map[string]bool
	// profiling is 1 while a CPU profile or trace runs.
	profiling atomic.Int32
}

func newGuard() *guard {
	g := &guard{
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "edgewise", Subsystem: "admin", Name: "refused_total",
			Help: "Admin API requests refused: host (DNS rebinding), origin (cross-site POST), pprof (over the duration cap or busy).",
		}, []string{"reason"}),
		logged: map[string]bool{},
	}
	for _, r := range []string{refusedHost, refusedOrigin, refusedPprof} {
		g.refused.WithLabelValues(r)
	}
	g.setHosts(nil)
	return g
}

func (g *guard) setHosts(names []string) {
	m := make(map[string]bool, len(names)+1)
	m["localhost"] = true
	for _, n := range names {
		m[strings.ToLower(strings.TrimSuffix(n, "."))] = true
	}
	g.hosts.Store(&m)
}

// hostAllowed reports whether a Host header names this server as something
// a rebinding attack cannot fake: an IP literal, localhost, or a listed name.
func (g *guard) hostAllowed(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.Trim(host, "[]")
	if host == "" {
		return false
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return true
	}
	return (*g.hosts.Load())[strings.ToLower(strings.TrimSuffix(host, "."))]
}

// crossSite reports whether a state-changing request comes from another
// site's page.
func crossSite(r *http.Request) bool {
	if o := r.Header.Get("Origin"); o != "" {
		u, err := url.Parse(o)
		return err != nil || o == "null" || !strings.EqualFold(u.Host, r.Host)
	}
	switch r.Header.Get("Sec-Fetch-Site") {
	case "", "same-origin", "none":
		return false
	}
	return true
}

func (g *guard) refuse(w http.ResponseWriter, s *Server, reason, key string, code int, msg string) {
	g.refused.WithLabelValues(reason).Inc()
	g.mu.Lock()
	first := !g.logged[reason+" "+key]
	if first {
		if len(g.logged) > 1024 {
			clear(g.logged)
		}
		g.logged[reason+" "+key] = true
	}
	g.mu.Unlock()
	if first {
		s.logger.Warn("admin request refused (logged once per "+reason+")", "reason", reason, reason, key, "status", code)
	}
	writeJSON(w, code, map[string]string{"error": msg})
}

// wrap applies the host and origin checks and the security headers to
// every request.
func (g *guard) wrap(s *Server, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		if !g.hostAllowed(r.Host) {
			g.refuse(w, s, refusedHost, r.Host, http.StatusMisdirectedRequest,
				"this admin API answers to its IP address, localhost or admin.allowed_hosts, not the Host header given")
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead && crossSite(r) {
			g.refuse(w, s, refusedOrigin, r.Header.Get("Origin")+r.Header.Get("Sec-Fetch-Site"), http.StatusForbidden,
				"cross-site request refused")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// capped runs a profiler handler (profile or trace) if its seconds
// parameter is within limit and no other profile or trace runs.
func (g *guard) capped(s *Server, limit time.Duration, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if v := r.URL.Query().Get("seconds"); v != "" {
			secs, err := strconv.ParseFloat(v, 64)
			if err != nil || secs <= 0 || time.Duration(secs*float64(time.Second)) > limit {
				g.refuse(w, s, refusedPprof, "seconds", http.StatusBadRequest,
					"seconds must be a positive number up to "+strconv.Itoa(int(limit/time.Second)))
				return
			}
		}
		if !g.profiling.CompareAndSwap(0, 1) {
			w.Header().Set("Retry-After", strconv.Itoa(int(limit/time.Second)))
			g.refuse(w, s, refusedPprof, "busy", http.StatusTooManyRequests, "a profile or trace is already running")
			return
		}
		defer g.profiling.Store(0)
		h(w, r)
	}
}
