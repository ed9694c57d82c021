package token

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"
)

// Serve answers HTTP on ln until ctx is cancelled, then stops accepting,
// lets in-flight requests finish for up to the drain timeout, and closes the
// rest. It returns nil after a clean drain. ln is closed on return.
func (p *Provider) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           p.Handler(),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      10 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(p.log.Handler(), slog.LevelDebug),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	p.log.Info("token provider listening", "addr", ln.Addr().String())

	select {
	case err := <-errc:
		return fmt.Errorf("token serve %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}

	p.draining.Add(1)
	p.updateReady()
	defer func() {
		p.draining.Add(-1)
		p.updateReady()
	}()
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.drain)
	defer cancel()
	err := srv.Shutdown(dctx)
	<-errc // http.ErrServerClosed once Shutdown has begun
	if err != nil {
		closeErr := srv.Close()
		return fmt.Errorf("token serve %s: drain: %w", ln.Addr(), errors.Join(err, closeErr))
	}
	p.log.Info("token provider stopped", "addr", ln.Addr().String())
	return nil
}
