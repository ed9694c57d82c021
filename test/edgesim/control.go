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
//	GET  /v1/ca.pem                the test CA that signs the edges' TLS certificates
//	GET  /v1/bindings[?user=U]     {"bindings":[Binding…]}
//	GET  /v1/edges                 {"edges":[EdgeStatus…]}
//	GET  /v1/edges/{edge}          EdgeStatus
//	PUT  /v1/edges/{edge}          {"mode":"slow","delay":"2s"} → EdgeStatus
//	GET  /v1/ips/{ip}              IPStatus
//	PUT  /v1/ips/{ip}              {"mode":"drop"} ("inherit" follows the edge again) → IPStatus
//	POST /v1/reset                 {"keep_bindings":true} (body optional) → {"edges":[…]}
//	GET  /v1/dns                   DNSStatus
//	PUT  /v1/dns (or POST)         {"mode":"down"} → DNSStatus
//	GET  /v1/calls[?state=S&direction=D]  {"calls":[CallStatus…]}
//	POST /v1/calls                 {"to":"alice","from":"+15550001111","edge":"ashburn","timeout":"30s"} → 201 CallStatus
//	GET  /v1/calls/{id}            CallStatus
//	DELETE /v1/calls/{id}          hang up → CallStatus (200 once over, 202 if still ending after 5 s)
//
// Errors are {"error":"…"} with 400 (bad body or mode), 404 (unknown edge,
// IP or call), 409 (call already over), 500 (a socket could not be
// re-opened) or 503 (simulator stopping, too many calls).
func (s *Sim) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	s.restControl(mux)
	mux.HandleFunc("GET /v1/ca.pem", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/x-pem-file")
		_, _ = w.Write(s.CAPEM())
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
	mux.HandleFunc("GET /v1/calls", func(w http.ResponseWriter, r *http.Request) {
		state, dir := CallState(r.URL.Query().Get("state")), CallDirection(r.URL.Query().Get("direction"))
		out := []CallStatus{}
		for _, st := range s.Calls() {
			if (state == "" || st.State == state) && (dir == "" || st.Direction == dir) {
				out = append(out, st)
			}
		}
		writeJSON(w, http.StatusOK, map[string]any{"calls": out})
	})
	mux.HandleFunc("POST /v1/calls", func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			To      string `json:"to"`
			From    string `json:"from"`
			Edge    string `json:"edge"`
			Timeout string `json:"timeout"`
		}
		if err := decodeBody(r, &body, false); err != nil {
			respond(w, nil, err)
			return
		}
		req := CallRequest{To: body.To, From: body.From, Edge: body.Edge}
		if body.Timeout != "" {
			d, err := time.ParseDuration(body.Timeout)
			if err != nil {
				respond(w, nil, fmt.Errorf("%w: timeout %q is not a duration like \"30s\"", errBadBody, body.Timeout))
				return
			}
			req.Timeout = d
		}
		id, err := s.PlaceCall(r.Context(), req)
		if err != nil {
			respond(w, nil, err)
			return
		}
		st, err := s.Call(id)
		if err != nil {
			respond(w, nil, err)
			return
		}
		writeJSON(w, http.StatusCreated, st)
	})
	mux.HandleFunc("GET /v1/calls/{id}", func(w http.ResponseWriter, r *http.Request) {
		st, err := s.Call(CallID(r.PathValue("id")))
		respond(w, st, err)
	})
	mux.HandleFunc("DELETE /v1/calls/{id}", func(w http.ResponseWriter, r *http.Request) {
		id := CallID(r.PathValue("id"))
		if err := s.HangUp(id); err != nil {
			respond(w, nil, err)
			return
		}
		// Wait for the BYE or CANCEL to be answered, so a script can go
		// on at once; a peer that does not answer does not hold the
		// request long.
		ctx, cancel := context.WithTimeout(r.Context(), hangUpWait)
		defer cancel()
		st, err := s.WaitCall(ctx, id, CallStatus.IsOver)
		switch {
		case err == nil:
			writeJSON(w, http.StatusOK, st)
		case ctx.Err() != nil:
			writeJSON(w, http.StatusAccepted, st)
		default:
			respond(w, nil, err)
		}
	})
	return mux
}

// hangUpWait bounds how long DELETE /v1/calls/{id} waits for the call to
// be over before it answers 202.
const hangUpWait = 5 * time.Second

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
	case errors.Is(err, ErrInvalidCall):
		writeError(w, http.StatusBadRequest, err)
	case errors.Is(err, ErrUnknownEdge), errors.Is(err, ErrUnknownIP), errors.Is(err, ErrUnknownCall):
		writeError(w, http.StatusNotFound, err)
	case errors.Is(err, ErrInvalidMode), errors.Is(err, errBadBody):
		writeError(w, http.StatusBadRequest, err)
	case errors.Is(err, ErrCallEnded):
		writeError(w, http.StatusConflict, err)
	case errors.Is(err, ErrNotRunning), errors.Is(err, ErrTooManyCalls):
		writeError(w, http.StatusServiceUnavailable, err)
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
