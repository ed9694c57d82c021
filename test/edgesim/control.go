package edgesim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"
)

// maxBody bounds control API request bodies; they are a few bytes of JSON.
const maxBody = 64 << 10

// Handler returns the control API:
//
//	GET  /healthz                  {"status":"ok"}
//	GET  /v1/bindings[?user=U]     {"bindings":[Binding…]}
//	GET  /v1/edges                 {"edges":[EdgeStatus…]}
//	GET  /v1/edges/{edge}          EdgeStatus
//	PUT  /v1/edges/{edge}          {"mode":"slow","delay":"2s"} → EdgeStatus
//	GET  /v1/ips/{ip}              IPStatus
//	PUT  /v1/ips/{ip}              {"mode":"drop"} ("inherit" follows the edge again) → IPStatus
//	POST /v1/reset                 {"keep_bindings":true} (body optional) → {"edges":[…]}
//	GET  /v1/dns                   DNSStatus
//	PUT  /v1/dns (or POST)         {"mode":"down"} → DNSStatus
//
// Errors are {"error":"…"} with 400 (bad body or mode), 404 (unknown edge or
// IP) or 500 (a socket could not be re-opened).
func (s *Sim) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /v1/bindings", func(w http.ResponseWriter, r *http.Request) {
		bs := s.Bindings(r.URL.Query().Get("user"))
		if bs == nil {
			bs = []Binding{}
		}
		writeJSON(w, http.StatusOK, map[string]any{"bindings": bs})
	})
	mux.HandleFunc("GET /v1/edges", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"edges": s.Edges()})
	})
	mux.HandleFunc("GET /v1/edges/{edge}", func(w http.ResponseWriter, r *http.Request) {
		st, err := s.Edge(r.PathValue("edge"))
		respond(w, st, err)
	})
	mux.HandleFunc("PUT /v1/edges/{edge}", func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("edge")
		m, err := decodeMode(r)
		if err == nil {
			err = s.SetEdgeMode(name, m)
		}
		if err != nil {
			respond(w, nil, err)
			return
		}
		st, err := s.Edge(name)
		respond(w, st, err)
	})
	mux.HandleFunc("GET /v1/ips/{ip}", func(w http.ResponseWriter, r *http.Request) {
		st, err := s.IP(r.PathValue("ip"))
		respond(w, st, err)
	})
	mux.HandleFunc("PUT /v1/ips/{ip}", func(w http.ResponseWriter, r *http.Request) {
		ip := r.PathValue("ip")
		m, err := decodeMode(r)
		if err == nil {
			err = s.SetIPMode(ip, m)
		}
		if err != nil {
			respond(w, nil, err)
			return
		}
		st, err := s.IP(ip)
		respond(w, st, err)
	})
	mux.HandleFunc("POST /v1/reset", func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			KeepBindings bool `json:"keep_bindings"`
		}
		if err := decodeBody(r, &body, true); err != nil {
			respond(w, nil, err)
			return
		}
		if q := r.URL.Query().Get("keep_bindings"); q != "" {
			keep, err := strconv.ParseBool(q)
			if err != nil {
				respond(w, nil, fmt.Errorf("%w: keep_bindings=%q is not a boolean", errBadBody, q))
				return
			}
			body.KeepBindings = body.KeepBindings || keep
		}
		if err := s.Reset(body.KeepBindings); err != nil {
			writeError(w, http.StatusInternalServerError, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"edges": s.Edges()})
	})
	mux.HandleFunc("GET /v1/dns", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, s.DNS())
	})
	setDNS := func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			Mode string `json:"mode"`
		}
		err := decodeBody(r, &body, false)
		if err == nil {
			err = s.SetDNSMode(body.Mode)
		}
		if err != nil {
			respond(w, nil, err)
			return
		}
		writeJSON(w, http.StatusOK, s.DNS())
	}
	mux.HandleFunc("PUT /v1/dns", setDNS)
	mux.HandleFunc("POST /v1/dns", setDNS)
	return mux
}

var errBadBody = errors.New("bad request body")

// decodeMode reads {"mode": "...", "delay": "2s"}.
func decodeMode(r *http.Request) (ModeSetting, error) {
	var body struct {
		Mode  string `json:"mode"`
		Delay string `json:"delay"`
	}
	if err := decodeBody(r, &body, false); err != nil {
		return ModeSetting{}, err
	}
	if body.Mode == "" {
		return ModeSetting{}, fmt.Errorf("%w: mode is required", errBadBody)
	}
	m := ModeSetting{Mode: Mode(body.Mode)}
	if body.Delay != "" {
		d, err := time.ParseDuration(body.Delay)
		if err != nil {
			return ModeSetting{}, fmt.Errorf("%w: delay %q is not a duration like \"2s\"", errBadBody, body.Delay)
		}
		m.Delay = d
	}
	return m, nil
}

// decodeBody decodes a JSON object strictly; an empty body is allowed when
// optional.
func decodeBody(r *http.Request, v any, optional bool) error {
	dec := json.NewDecoder(io.LimitReader(r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		if errors.Is(err, io.EOF) && optional {
			return nil
		}
		if errors.Is(err, io.EOF) {
			return fmt.Errorf("%w: empty body, want a JSON object", errBadBody)
		}
		return fmt.Errorf("%w: %v", errBadBody, err)
	}
	if dec.More() {
		return fmt.Errorf("%w: trailing data after the JSON object", errBadBody)
	}
	return nil
}

func respond(w http.ResponseWriter, v any, err error) {
	switch {
	case err == nil:
		writeJSON(w, http.StatusOK, v)
	case errors.Is(err, ErrUnknownEdge), errors.Is(err, ErrUnknownIP):
		writeError(w, http.StatusNotFound, err)
	case errors.Is(err, ErrInvalidMode), errors.Is(err, errBadBody):
		writeError(w, http.StatusBadRequest, err)
	default:
		writeError(w, http.StatusInternalServerError, err)
	}
}

func writeError(w http.ResponseWriter, code int, err error) {
	writeJSON(w, code, map[string]string{"error": err.Error()})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// controlServer is the HTTP listener of the control API.
type controlServer struct {
	srv *http.Server
	ln  net.Listener
}

func (s *Sim) bindControl() (*controlServer, error) {
	if s.cfg.Control.Listen == "" {
		return nil, nil
	}
	ln, err := net.Listen("tcp", s.cfg.Control.Listen)
	if err != nil {
		return nil, fmt.Errorf("control listen on %s: %w", s.cfg.Control.Listen, err)
	}
	s.controlAddr = ln.Addr().String()
	return &controlServer{
		srv: &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 5 * time.Second},
		ln:  ln,
	}, nil
}

func (c *controlServer) serve() error {
	if err := c.srv.Serve(c.ln); !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("control server: %w", err)
	}
	return nil
}

func (c *controlServer) shutdown(ctx context.Context) error {
	return c.srv.Shutdown(ctx)
}

func (c *controlServer) close() { _ = c.ln.Close() }
