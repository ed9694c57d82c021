package edgesim

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// RESTMode is how one edge's REST listener behaves.
type RESTMode string

const (
	// RESTUp serves the API.
	RESTUp RESTMode = "up"
	// RESTRefuse closes the listener and its connections: connects are
	// refused, as when an edge's API front end is unreachable.
	RESTRefuse RESTMode = "refuse"
	// RESTReject answers every request with 503 and a Twilio error body.
	RESTReject RESTMode = "reject"
	// RESTDrop reads requests and never answers, until the client gives up.
	RESTDrop RESTMode = "drop"
)

// ErrRESTOff is returned by the REST methods when the config has no rest
// section.
var ErrRESTOff = errors.New("rest API is not configured")

// restServer is the REST API's HTTPS listeners, one per edge on the edge's
// first IP, all on one port, with a certificate from a CA made at start.
type restServer struct {
	sim    *Sim
	api    *restAPI
	tlsCfg *tls.Config
	caPEM  []byte
	edges  []*restEdge

	mu      sync.Mutex // guards port, serving and each edge's mode and srv
	port    int
	serving bool
	wg      sync.WaitGroup // Serve loops
}

type restEdge struct {
	name string
	host string // api.<edge>.<region>.twilio.com
	ip   netip.Addr
	mode RESTMode      // guarded by restServer.mu
	srv  *http.Server  // nil while closed; guarded by restServer.mu
	ln   net.Listener  // srv's; guarded by restServer.mu
	reqs atomic.Uint64 // requests received since the last reset
}

// restHosts returns the REST host names with the IP each resolves to:
// api.<edge>.<region>.twilio.com per edge, and api.<region>.twilio.com and
// api.twilio.com at the home edge (ashburn, else the first).
func restHosts(cfg Config) map[string]netip.Addr {
	out := map[string]netip.Addr{}
	if cfg.REST == nil {
		return out
	}
	home := netip.MustParseAddr(cfg.Edges[0].IPs[0]).Unmap()
	for _, e := range cfg.Edges {
		ip := netip.MustParseAddr(e.IPs[0]).Unmap()
		out["api."+e.Name+"."+cfg.REST.Region+".twilio.com"] = ip
		if e.Name == "ashburn" {
			home = ip
		}
	}
	out["api."+cfg.REST.Region+".twilio.com"] = home
	out["api.twilio.com"] = home
	return out
}

func newRESTServer(s *Sim) (*restServer, error) {
	cfg := s.cfg.REST
	keys := map[string]string{}
	for _, k := range cfg.APIKeys {
		keys[k.SID] = k.Secret
	}
	rs := &restServer{sim: s, api: &restAPI{st: s.restStore, keys: keys}, port: cfg.Port}
	hosts := restHosts(s.cfg)
	for _, e := range s.cfg.Edges {
		host := "api." + e.Name + "." + cfg.Region + ".twilio.com"
		rs.edges = append(rs.edges, &restEdge{name: e.Name, host: host, ip: hosts[host], mode: RESTUp})
	}
	var names []string
	var ips []net.IP
	for h, ip := range hosts {
		names = append(names, h)
		ips = append(ips, ip.AsSlice())
	}
	var err error
	rs.caPEM = s.ca.pem
	rs.tlsCfg, err = s.ca.serverConfig(names, ips)
	if err != nil {
		return nil, fmt.Errorf("rest certificate: %w", err)
	}
	return rs, nil
}

// open binds every edge's listener, all on one port (with port 0 the one
// the first edge got, starting over when another edge's IP has it taken),
// and writes the CA file when configured.
func (rs *restServer) open() error {
	if f := rs.sim.cfg.REST.CAFile; f != "" {
		if err := os.WriteFile(f, rs.caPEM, 0o644); err != nil {
			return fmt.Errorf("rest ca_file: %w", err)
		}
	}
	rs.mu.Lock()
	defer rs.mu.Unlock()
	var err error
	for range 20 {
		if err = rs.openAllLocked(); err == nil {
			rs.serving = true
			return nil
		}
		rs.closeAllLocked()
		if rs.sim.cfg.REST.Port != 0 {
			break
		}
		rs.port = 0
	}
	return err
}

func (rs *restServer) openAllLocked() error {
	for _, e := range rs.edges {
		if e.mode == RESTRefuse {
			continue
		}
		if err := rs.openLocked(e); err != nil {
			return err
		}
	}
	return nil
}

func (rs *restServer) openLocked(e *restEdge) error {
	ln, err := net.Listen("tcp", netip.AddrPortFrom(e.ip, uint16(rs.port)).String())
	if err != nil {
		return fmt.Errorf("rest listen for edge %s: %w", e.name, err)
	}
	if rs.port == 0 {
		rs.port = ln.Addr().(*net.TCPAddr).Port
	}
	srv := &http.Server{
		Handler:           rs.handler(e),
		ReadHeaderTimeout: 5 * time.Second,
		// TLS handshake failures (a client that does not trust the test
		// CA) are expected in tests; keep them out of stderr.
		ErrorLog: slog.NewLogLogger(rs.sim.log.Handler(), slog.LevelDebug),
	}
	e.srv, e.ln = srv, ln
	tln := tls.NewListener(ln, rs.tlsCfg)
	rs.wg.Go(func() { _ = srv.Serve(tln) })
	rs.sim.log.Info("rest API listening", "edge", e.name, "url", "https://"+e.host+":"+fmt.Sprint(rs.port), "addr", ln.Addr().String())
	return nil
}

func (rs *restServer) closeAllLocked() {
	for _, e := range rs.edges {
		rs.closeLocked(e)
	}
}

// closeLocked closes an edge's listener and connections. The listener is
// closed here too: srv.Close only closes listeners Serve has begun
// tracking, and until the Serve goroutine runs, connects would still land
// in the backlog (to be reset later) instead of being refused.
func (rs *restServer) closeLocked(e *restEdge) {
	if e.srv == nil {
		return
	}
	_ = e.ln.Close()
	_ = e.srv.Close()
	e.srv, e.ln = nil, nil
}

// close closes every listener and waits for the Serve loops.
func (rs *restServer) close() {
	rs.mu.Lock()
	rs.serving = false
	rs.closeAllLocked()
	rs.mu.Unlock()
	rs.wg.Wait()
}

// handler counts requests and applies the edge's mode before the API.
func (rs *restServer) handler(e *restEdge) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.reqs.Add(1)
		rs.mu.Lock()
		mode := e.mode
		rs.mu.Unlock()
		rs.sim.log.Debug("rest request", "edge", e.name, "method", r.Method, "path", r.URL.Path, "mode", mode)
		switch mode {
		case RESTReject:
			restError(w, http.StatusServiceUnavailable, 20503, "Service Unavailable")
			return
		case RESTDrop:
			// Ends when the client hangs up or the listener closes.
			<-r.Context().Done()
			return
		}
		rs.api.ServeHTTP(w, r)
	})
}

func (rs *restServer) setMode(edge string, m RESTMode) error {
	switch m {
	case RESTUp, RESTRefuse, RESTReject, RESTDrop:
	default:
		return fmt.Errorf("%w: rest mode %q (up, refuse, reject, drop)", ErrInvalidMode, m)
	}
	rs.mu.Lock()
	defer rs.mu.Unlock()
	for _, e := range rs.edges {
		if e.name != edge {
			continue
		}
		e.mode = m
		rs.sim.log.Info("rest mode changed", "edge", edge, "mode", m)
		if !rs.serving {
			return nil
		}
		switch {
		case m == RESTRefuse && e.srv != nil:
			rs.closeLocked(e)
		case m != RESTRefuse && e.srv == nil:
			return rs.openLocked(e)
		}
		return nil
	}
	return fmt.Errorf("%w %q", ErrUnknownEdge, edge)
}

// RESTEdgeStatus is one edge's REST listener as the control API shows it.
type RESTEdgeStatus struct {
	Name     string   `json:"name"`
	Host     string   `json:"host"`
	Addr     string   `json:"addr"`
	Mode     RESTMode `json:"mode"`
	Open     bool     `json:"open"`
	Requests uint64   `json:"requests"`
}

func (rs *restServer) edgeStatus() []RESTEdgeStatus {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	out := make([]RESTEdgeStatus, 0, len(rs.edges))
	for _, e := range rs.edges {
		out = append(out, RESTEdgeStatus{
			Name: e.name, Host: e.host, Addr: netip.AddrPortFrom(e.ip, uint16(rs.port)).String(),
			Mode: e.mode, Open: e.srv != nil, Requests: e.reqs.Load(),
		})
	}
	return out
}

// reset puts every edge back up and zeroes the counters.
func (rs *restServer) reset() error {
	var errs []error
	for _, e := range rs.edges {
		errs = append(errs, rs.setMode(e.name, RESTUp))
		e.reqs.Store(0)
	}
	return errors.Join(errs...)
}
