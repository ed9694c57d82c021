package webrtc

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/pion/logging"
)

// pionLogs hands pion's scoped loggers to slog. Everything pion says is
// Debug: the conditions that matter (ICE, DTLS, consent) are reported by
// the bridge itself with the call's id, and pion's errors for a browser
// that went away would otherwise flood the log at warn.
type pionLogs struct{ log *slog.Logger }

var _ logging.LoggerFactory = pionLogs{}

func (p pionLogs) NewLogger(scope string) logging.LeveledLogger {
	return pionLogger{log: p.log.With("pion", scope)}
}

type pionLogger struct{ log *slog.Logger }

func (l pionLogger) on() bool { return l.log.Enabled(context.Background(), slog.LevelDebug) }

func (l pionLogger) Trace(string)          {}
func (l pionLogger) Tracef(string, ...any) {}
func (l pionLogger) Debug(msg string)      { l.log.Debug(msg) }
func (l pionLogger) Debugf(f string, a ...any) {
	if l.on() {
		l.log.Debug(fmt.Sprintf(f, a...))
	}
}
func (l pionLogger) Info(msg string) { l.log.Debug(msg) }
func (l pionLogger) Infof(f string, a ...any) {
	if l.on() {
		l.log.Debug(fmt.Sprintf(f, a...))
	}
}
func (l pionLogger) Warn(msg string) { l.log.Debug(msg, "level", "warn") }
func (l pionLogger) Warnf(f string, a ...any) {
	if l.on() {
		l.log.Debug(fmt.Sprintf(f, a...), "level", "warn")
	}
}
func (l pionLogger) Error(msg string) { l.log.Debug(msg, "level", "error") }
func (l pionLogger) Errorf(f string, a ...any) {
	if l.on() {
		l.log.Debug(fmt.Sprintf(f, a...), "level", "error")
	}
}
