package calls

import (
	"context"
	"log/slog"
	"sync"
)

// lazyAttrs is slog's Logger.With for a logger that seldom logs: every call
// gets one carrying its ID, direction and user, and the standard handlers
// format those attributes when the logger is made (ten allocations a call
// at the default level, where a call usually logs nothing). lazyAttrs hands
// them to the real handler only when a record is enabled, so the output is
// the same as With's.
type lazyAttrs struct {
	h     slog.Handler
	attrs []slog.Attr
	once  sync.Once
	built slog.Handler
}

// withLazy is l.With(args...), formatting args on first use.
func withLazy(l *slog.Logger, args ...any) *slog.Logger {
	attrs := make([]slog.Attr, 0, len(args)/2)
	for i := 0; i+1 < len(args); i += 2 {
		k, _ := args[i].(string)
		attrs = append(attrs, slog.Any(k, args[i+1]))
	}
	return slog.New(&lazyAttrs{h: l.Handler(), attrs: attrs})
}

func (l *lazyAttrs) handler() slog.Handler {
	l.once.Do(func() { l.built = l.h.WithAttrs(l.attrs) })
	return l.built
}

func (l *lazyAttrs) Enabled(ctx context.Context, level slog.Level) bool {
	return l.h.Enabled(ctx, level)
}

func (l *lazyAttrs) Handle(ctx context.Context, r slog.Record) error {
	return l.handler().Handle(ctx, r)
}

func (l *lazyAttrs) WithAttrs(attrs []slog.Attr) slog.Handler {
	return l.handler().WithAttrs(attrs)
}

func (l *lazyAttrs) WithGroup(name string) slog.Handler {
	return l.handler().WithGroup(name)
}
