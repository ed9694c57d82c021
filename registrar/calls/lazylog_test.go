package calls

import (
	"bytes"
	"io"
	"log/slog"
	"regexp"
	"testing"
)

// TestLazyAttrsLogsAsWith: a call's logger writes the same lines as
// Logger.With would, attributes and groups included.
func TestLazyAttrsLogsAsWith(t *testing.T) {
	var want, got bytes.Buffer
	opts := &slog.HandlerOptions{Level: slog.LevelInfo}
	base := func(w io.Writer) *slog.Logger { return slog.New(slog.NewJSONHandler(w, opts)) }
	args := []any{"call", "c-1", "direction", "outbound", "user", "alice"}
	for _, l := range []struct {
		log *slog.Logger
		buf *bytes.Buffer
	}{{base(&want).With(args...), &want}, {withLazy(base(&got), args...), &got}} {
		l.log.Debug("hidden")
		l.log.Info("answered", "code", 200)
		l.log.With("side", "a").WithGroup("g").Warn("bye", "n", 1)
	}
	times := regexp.MustCompile(`"time":"[^"]*"`)
	w, g := times.ReplaceAllString(want.String(), ""), times.ReplaceAllString(got.String(), "")
	if w != g || w == "" {
		t.Fatalf("got\n%s\nwant\n%s", g, w)
	}
}

// BenchmarkCallLogger is the logger every call gets, at the default level
// where a call that goes well logs nothing.
func BenchmarkCallLogger(b *testing.B) {
	base := slog.New(slog.NewJSONHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelWarn}))
	b.ReportAllocs()
	for b.Loop() {
		l := withLazy(base, "call", "c-0123456789", "direction", "outbound", "user", "c001")
		l.Debug("setup")
	}
}
