package frontend

import (
	"context"
	"net/netip"
	"sync"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

// OnConnClosed sets fn to be told when a WebSocket connection that
// completed its upgrade closes, by either side, with the transport (ws or
// wss) and the browser's address: the source of every request that came
// over it. The registrar removes the bindings registered over it (RFC 7118
// §5: nothing can reach a browser but through its connection). Calls come
// from one goroutine, in order, not while the server is stopping. Call
// before Run.
func (s *Server) OnConnClosed(fn func(transport string, remote netip.AddrPort)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.running {
		panic("frontend: OnConnClosed after Run")
	}
	s.onClosed = fn
}

type closedConn struct {
	transport string
	remote    netip.AddrPort
}

// connClosed queues a closed connection for closedLoop. It never blocks:
// it runs inside sipgo's connection pool lock.
func (s *Server) connClosed(transport string, remote netip.AddrPort) {
	if s.onClosed == nil {
		return
	}
	s.closedMu.Lock()
	s.closedQ = append(s.closedQ, closedConn{transport, remote})
	s.closedMu.Unlock()
	select {
	case s.closedCh <- struct{}{}:
	default:
	}
}

// closedLoop calls OnConnClosed's function for queued connections until
// ctx is done.
func (s *Server) closedLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.closedCh:
		}
		s.closedMu.Lock()
		q := s.closedQ
		s.closedQ = nil
		s.closedMu.Unlock()
		for _, c := range q {
			if ctx.Err() != nil {
				return
			}
			s.onClosed(c.transport, c.remote)
		}
	}
}

// Connected reports whether a WebSocket connection (transport ws or wss)
// from remote is open. Send a request to a browser only when it is: sipgo
// would otherwise try to dial the browser, which listens nowhere.
func (s *Server) Connected(transport string, remote netip.AddrPort) bool {
	select {
	case <-s.ready:
	default:
		return false // listeners are not set up yet
	}
	return s.wsConnFor(transport, remote) != nil
}

// wsConnFor returns the open WebSocket connection from remote on a
// listener of transport, or nil.
func (s *Server) wsConnFor(transport string, remote netip.AddrPort) *wsConn {
	for _, l := range s.listeners {
		if l.ws != nil && l.transport == transport {
			if c := l.ws.conn(remote); c != nil {
				return c
			}
		}
	}
	return nil
}

// maxDetachedWait bounds how long a sipgo server transaction is held open
// for a handler that answers after returning (RFC 3261 Timer F: 64*T1).
const maxDetachedWait = 32 * time.Second

// viaSipgo adapts a stateless handler to sipgo's transaction layer, which
// is how REGISTER and OPTIONS arrive over WebSocket. The handler may answer
// after it returns, as on the stateless path (see Handler): the transaction
// is held until it has a final response, the client gives up, or
// maxDetachedWait passes.
func (s *Server) viaSipgo(h Handler) sipgo.RequestHandler {
	return func(req *sip.Request, tx sip.ServerTransaction) {
		if reason := validate(req); reason != "" {
			s.stats.Malformed.Add(1)
			s.respond(tx, sip.NewResponseFromRequest(req, 400, "Bad Request - "+reason, nil))
			return
		}
		if s.blocked(sourceAddr(req)) {
			s.stats.Blocked.Add(1)
			s.respond(tx, sip.NewResponseFromRequest(req, 403, "Forbidden", nil))
			return
		}
		dt := &heldTx{ServerTransaction: tx, s: s, final: make(chan struct{})}
		s.dispatch(h, req, dt)
		t := time.NewTimer(maxDetachedWait)
		defer t.Stop()
		select {
		case <-dt.final:
		case <-tx.Done():
		case <-t.C:
			s.log.Warn("handler did not answer in time", "method", string(req.Method), "source", req.Source())
		}
	}
}

func (s *Server) respond(tx sip.ServerTransaction, res *sip.Response) {
	if err := tx.Respond(res); err != nil {
		s.log.Debug("response failed", "code", res.StatusCode, "error", err)
	}
}

func sourceAddr(req *sip.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(req.Source())
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// heldTx is a sipgo server transaction a handler may answer after
// returning; final closes with the first final response.
type heldTx struct {
	sip.ServerTransaction
	s     *Server
	final chan struct{}
	once  sync.Once
}

func (t *heldTx) Respond(res *sip.Response) error {
	if res.GetHeader("Server") == nil {
		res.AppendHeader(sip.NewHeader("Server", t.s.settings.UserAgent))
	}
	err := t.ServerTransaction.Respond(res)
	if res.StatusCode >= 200 {
		t.once.Do(func() { close(t.final) })
	}
	return err
}

// Detached reports that Respond may come after the handler returned.
func (t *heldTx) Detached() bool { return true }
