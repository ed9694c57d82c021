package admin

import (
	"bytes"
	"context"
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"html/template"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/edgewise-sip/edgewise/registrar/twilio/edge"
)

// The page is one embedded template so the binary serves it with no external
// assets and no front-end build step.
//
//go:embed page/status.html
var pageFS embed.FS

var pageTmpl = template.Must(template.New("status.html").Funcs(template.FuncMap{
	"ago": func(t time.Time) string {
		if t.IsZero() {
			return "never"
		}
		return t.UTC().Format("2006-01-02 15:04:05Z")
	},
	"join": strings.Join,
}).ParseFS(pageFS, "page/status.html"))

// pageCSP is the status page's Content-Security-Policy for page, the
// rendered HTML: its one inline script and style (allowed by hash; taken
// from the rendered page because html/template drops the script's comments),
// its own event stream, and nothing else; no framing (clickjacking), no
// forms, no base.
func pageCSP(page []byte) string {
	return "default-src 'none'; script-src " + inlineHash(page, "script") + "; style-src " + inlineHash(page, "style") +
		"; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
}

// inlineHash is the CSP source expression ('sha256-…') of the first <tag>
// element's text in page; 'none' when there is none.
func inlineHash(page []byte, tag string) string {
	_, rest, ok := bytes.Cut(page, []byte("<"+tag+">"))
	body, _, ok2 := bytes.Cut(rest, []byte("</"+tag+">"))
	if !ok || !ok2 {
		return "'none'"
	}
	sum := sha256.Sum256(body)
	return "'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"
}

// eventInterval is how often /v1/events sends a fresh status.
const eventInterval = time.Second

// pageView is what the page renders: the status document, as /v1/status
// serves it, and when it was taken. A replica's smaller document simply
// leaves sections empty.
type pageView struct {
	Status
	// Now is when the view was built; shown so a stale page is visible.
	Now time.Time
}

// maxPageEvents bounds the events shown: the story of the current incident,
// not the whole journal (/v1/status has that).
const maxPageEvents = 25

// view builds the page model from the current status.
func (s *Server) view() *pageView {
	v := &pageView{Status: s.opts.Status(), Now: time.Now()}
	if len(v.Events) > maxPageEvents {
		v.Events = v.Events[:maxPageEvents]
	}
	// Show edges in the configured (failover) order, whatever order the
	// edge manager reports them in.
	rank := make(map[string]int, len(v.Config.Edges))
	for i, name := range v.Config.Edges {
		rank[name] = i
	}
	v.Edges = slices.Clone(v.Edges) // the document may share its slice
	slices.SortStableFunc(v.Edges, func(a, b edge.EdgeStatus) int {
		ra, oka := rank[a.Name]
		rb, okb := rank[b.Name]
		switch {
		case oka && okb:
			return ra - rb
		case oka:
			return -1
		case okb:
			return 1
		}
		return 0
	})
	return v
}

// renderBody renders the live part of the page (everything but the shell).
func (s *Server) renderBody() ([]byte, error) {
	var buf bytes.Buffer
	if err := pageTmpl.ExecuteTemplate(&buf, "body", s.view()); err != nil {
		return nil, fmt.Errorf("render status page: %w", err)
	}
	return buf.Bytes(), nil
}

func (s *Server) page(w http.ResponseWriter, _ *http.Request) {
	var buf bytes.Buffer
	if err := pageTmpl.Execute(&buf, s.view()); err != nil {
		s.logger.Error("status page", "error", err)
		http.Error(w, "status unavailable", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Security-Policy", pageCSP(buf.Bytes()))
	_, _ = w.Write(buf.Bytes())
}

// events streams the status as server-sent events every eventInterval until
// the client goes away or the server shuts down (Serve ties every request
// context to its own). By default each event is "status" with the JSON
// document; ?view=html sends "html" events with the rendered page body, which
// is what the page itself listens to, so the rendering lives only on the
// server.
func (s *Server) events(w http.ResponseWriter, r *http.Request) {
	flusher, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "streaming unsupported", http.StatusInternalServerError)
		return
	}
	html := r.URL.Query().Get("view") == "html"
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	s.streamEvents(r.Context(), w, flusher, html)
}

func (s *Server) streamEvents(ctx context.Context, w http.ResponseWriter, flusher http.Flusher, html bool) {
	tick := time.NewTicker(eventInterval)
	defer tick.Stop()
	for {
		if err := s.writeEvent(w, html); err != nil {
			// The client went away mid-write; the context will say so too.
			return
		}
		flusher.Flush()
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func (s *Server) writeEvent(w http.ResponseWriter, html bool) error {
	name := "status"
	var data []byte
	var err error
	if html {
		name = "html"
		data, err = s.renderBody()
		// A bare CR would also end an SSE line; none is meaningful in HTML.
		data = bytes.ReplaceAll(data, []byte("\r"), []byte(" "))
	} else {
		data, err = json.Marshal(s.opts.Status())
	}
	if err != nil {
		s.logger.Warn("status event", "error", err)
		return nil // skip this tick; the next may succeed
	}
	var buf bytes.Buffer
	fmt.Fprintf(&buf, "event: %s\n", name)
	// SSE ends an event at a blank line, so multi-line data goes out as
	// one "data:" line per line; the browser joins them with newlines.
	for line := range strings.SplitSeq(string(data), "\n") {
		fmt.Fprintf(&buf, "data: %s\n", line)
	}
	buf.WriteString("\n")
	_, err = w.Write(buf.Bytes())
	return err
}
