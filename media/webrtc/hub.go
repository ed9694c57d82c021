package webrtc

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/interceptor"
	pion "github.com/pion/webrtc/v4"
)

// ErrClosed is returned by a Hub or Bridge that has been closed.
var ErrClosed = errors.New("webrtc: closed")

// certLifetime is how long one DTLS certificate is used for new bridges.
// pion's certificates are valid for a month; a fresh one each day keeps
// every call well inside that, and one certificate for many calls saves a
// key generation per call (fingerprints are per description, so sharing
// is invisible to browsers).
const certLifetime = 24 * time.Hour

// Hub owns what all bridges share: the ICE/DTLS UDP socket (one port,
// demultiplexed by ICE username), the DTLS certificate, and the list of
// live bridges. Its methods are safe for concurrent use.
type Hub struct {
	set  Settings
	log  *slog.Logger
	conn *net.UDPConn
	mux  *ice.UDPMuxDefault
	// worker serves every bridge's plain socket (worker.go).
	worker *plainWorker
	// fast maps a browser's address (netip.AddrPort) to the *Bridge whose
	// fast path reads its RTP off conn.
	fast sync.Map
	logs pionLogs

	mu       sync.Mutex
	cert     *pion.Certificate
	certFrom time.Time
	bridges  map[*Bridge]struct{}
	closed   bool
	seq      uint64
}

// NewHub binds Settings.Listen and prepares the shared state.
func NewHub(set Settings, log *slog.Logger) (*Hub, error) {
	set, err := set.withDefaults()
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	conn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(set.Listen))
	if err != nil {
		return nil, fmt.Errorf("webrtc: listening on %s: %w", set.Listen, err)
	}
	// Every browser's packets arrive on this one socket; its reader is one
	// goroutine, so a GC pause or a busy core must not overflow it.
	if err := conn.SetReadBuffer(set.SocketBuffer); err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("webrtc: socket buffer: %w", err)
	}
	_ = conn.SetWriteBuffer(set.SocketBuffer)
	h := &Hub{set: set, log: log, conn: conn, logs: pionLogs{log: log}, bridges: make(map[*Bridge]struct{})}
	fc, err := newFastConn(conn, h)
	if err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("webrtc: shared socket: %w", err)
	}
	if h.worker, err = newPlainWorker(conn, log); err != nil {
		_ = conn.Close()
		return nil, err
	}
	h.mux = ice.NewUDPMuxDefault(ice.UDPMuxParams{Logger: h.logs.NewLogger("udpmux"), UDPConn: fc})
	return h, nil
}

// Addr is the bound ICE/DTLS address.
func (h *Hub) Addr() netip.AddrPort { return h.conn.LocalAddr().(*net.UDPAddr).AddrPort() }

// Close closes every bridge and the shared socket. It is safe to call more
// than once.
func (h *Hub) Close() error {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil
	}
	h.closed = true
	bridges := make([]*Bridge, 0, len(h.bridges))
	for b := range h.bridges {
		bridges = append(bridges, b)
	}
	h.mu.Unlock()
	for _, b := range bridges {
		_ = b.Close()
	}
	h.worker.close()
	return h.mux.Close()
}

// Bridges returns the live bridges.
func (h *Hub) Bridges() []*Bridge {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]*Bridge, 0, len(h.bridges))
	for b := range h.bridges {
		out = append(out, b)
	}
	return out
}

// New returns a bridge with no negotiation yet: hand it the first
// description with FromBrowser (the browser offers) or ToBrowser (the
// plain side offers). The bridge closes when ctx ends or Close is called.
func (h *Hub) New(ctx context.Context) (*Bridge, error) {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil, ErrClosed
	}
	h.seq++
	seq := h.seq
	h.mu.Unlock()
	b, err := newBridge(h, seq)
	if err != nil {
		return nil, err
	}
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		_ = b.Close()
		return nil, ErrClosed
	}
	h.bridges[b] = struct{}{}
	h.mu.Unlock()
	stop := context.AfterFunc(ctx, func() { _ = b.Close() })
	b.mu.Lock()
	b.stopCtx = stop
	b.mu.Unlock()
	return b, nil
}

// NewFromOffer starts a call the browser placed: offer is its WebRTC
// offer; the result is the plain RTP/AVP offer to hand to
// media.Session.Translate(media.A, …) as if a phone had sent it. The plain
// answer comes back through Bridge.ToBrowser.
func (h *Hub) NewFromOffer(ctx context.Context, offer []byte) (*Bridge, []byte, error) {
	b, err := h.New(ctx)
	if err != nil {
		return nil, nil, err
	}
	plain, err := b.FromBrowser(offer)
	if err != nil {
		_ = b.Close()
		return nil, nil, err
	}
	return b, plain, nil
}

// NewOffer starts a call to a browser: plainOffer is the RTP/AVP offer the
// relay produced for leg A (Session.Translate(media.B, …)); the result is
// the WebRTC offer to send to the browser. Its answer comes back through
// Bridge.FromBrowser.
func (h *Hub) NewOffer(ctx context.Context, plainOffer []byte) (*Bridge, []byte, error) {
	b, err := h.New(ctx)
	if err != nil {
		return nil, nil, err
	}
	out, err := b.ToBrowser(plainOffer)
	if err != nil {
		_ = b.Close()
		return nil, nil, err
	}
	return b, out, nil
}

func (h *Hub) forget(b *Bridge) {
	h.mu.Lock()
	delete(h.bridges, b)
	h.mu.Unlock()
}

// certificate returns the current DTLS certificate, making a new one when
// the current one is older than certLifetime.
func (h *Hub) certificate() (pion.Certificate, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.cert == nil || time.Since(h.certFrom) > certLifetime {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return pion.Certificate{}, fmt.Errorf("webrtc: dtls key: %w", err)
		}
		cert, err := pion.GenerateCertificate(key)
		if err != nil {
			return pion.Certificate{}, fmt.Errorf("webrtc: dtls certificate: %w", err)
		}
		h.cert, h.certFrom = cert, time.Now()
	}
	return *h.cert, nil
}

// api builds the pion API of one bridge: its own media engine (the codecs
// of this call, numbered as negotiated), no interceptors (payload is
// passed through, not repaired or paced), ICE-lite on the shared mux.
func (h *Hub) api(me *pion.MediaEngine, secrets *dtlsSecrets) (*pion.API, error) {
	var se pion.SettingEngine
	// The DTLS server role and these two hooks let the bridge derive the
	// SRTP keys for its fast path (fastpath.go).
	if err := se.SetAnsweringDTLSRole(pion.DTLSRoleServer); err != nil {
		return nil, fmt.Errorf("webrtc: dtls role: %w", err)
	}
	se.SetDTLSServerHelloMessageHook(secrets.serverHello)
	se.SetDTLSKeyLogWriter(secrets)
	// The track of an SSRC the browser's description declares is
	// announced as soon as DTLS is up, not on its first packet: the fast
	// path claims that packet.
	se.SetFireOnTrackBeforeFirstRTP(true)
	se.LoggerFactory = h.logs
	se.SetLite(true)
	se.SetICEUDPMux(h.mux)
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	se.SetICETimeouts(h.set.DisconnectedTimeout, h.set.FailedTimeout, 2*time.Second)
	var nets []pion.NetworkType
	var adv []string
	v4, v6 := false, false
	for _, a := range h.set.Advertise {
		adv = append(adv, a.String())
		if a.Unmap().Is4() {
			v4 = true
		} else {
			v6 = true
		}
	}
	if v4 {
		nets = append(nets, pion.NetworkTypeUDP4)
	}
	if v6 {
		nets = append(nets, pion.NetworkTypeUDP6)
	}
	se.SetNetworkTypes(nets)
	listen := h.set.Listen.Addr()
	se.SetIncludeLoopbackCandidate(listen.IsLoopback())
	if listen.IsUnspecified() || len(adv) != 1 || adv[0] != listen.String() {
		// Every local address the mux listens on is published as the
		// advertised one(s) instead: edgewise behind 1:1 NAT.
		if err := se.SetICEAddressRewriteRules(pion.ICEAddressRewriteRule{
			External:        adv,
			AsCandidateType: pion.ICECandidateTypeHost,
			Mode:            pion.ICEAddressRewriteReplace,
		}); err != nil {
			return nil, fmt.Errorf("webrtc: advertise %v: %w", adv, err)
		}
	}
	return pion.NewAPI(
		pion.WithMediaEngine(me),
		pion.WithSettingEngine(se),
		pion.WithInterceptorRegistry(&interceptor.Registry{}),
	), nil
}
