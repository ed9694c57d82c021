package registrar

import "net/netip"

// ConnClosed removes the bindings registered over a WebSocket connection
// that closed (transport ws or wss, the browser's address). A browser
// cannot be reached any other way (RFC 7118 §5), and a binding left behind
// would keep its user registered upstream and ring nowhere until it
// expired. Wire it to frontend.Server.OnConnClosed.
func (r *Registrar) ConnClosed(transport string, remote netip.AddrPort) {
	n, err := r.table.RemoveSource(transport, remote)
	if err != nil {
		r.log.Error("removing bindings of a closed websocket failed", "transport", transport, "source", remote.String(), "error", err)
	}
	if n > 0 {
		r.log.Info("websocket closed, bindings removed", "transport", transport, "source", remote.String(), "bindings", n)
	}
}
