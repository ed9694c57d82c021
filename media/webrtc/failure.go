package webrtc

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/pion/dtls/v3/pkg/crypto/fingerprint"
	psdp "github.com/pion/sdp/v3"
	pion "github.com/pion/webrtc/v4"
)

// Failures, as OnFailure reports them. Their texts are meant for a SIP
// Reason header (RFC 3326) as they are: "ice failed", "dtls failed:
// fingerprint mismatch", "consent lost".
var (
	// ErrICEFailed: the browser's connectivity checks never arrived or
	// never succeeded.
	ErrICEFailed = errors.New("ice failed")
	// ErrDTLSFailed: the DTLS handshake failed; with ": fingerprint
	// mismatch" when the browser's certificate is not the one its
	// description named (RFC 8122 §5).
	ErrDTLSFailed = errors.New("dtls failed")
	// ErrConsentLost: ICE had connected, then nothing (media or consent
	// STUN, RFC 7675) came from the browser for DisconnectedTimeout +
	// FailedTimeout.
	ErrConsentLost = errors.New("consent lost")
	// ErrPeerClosed: the browser closed DTLS (close_notify), as it does when
	// its page closes the connection.
	ErrPeerClosed = errors.New("dtls closed by browser")
)

type evKind uint8

const (
	evNegotiated evKind = iota
	evICE
	evDTLS
	evPair
)

type event struct {
	kind evKind
	ice  pion.ICEConnectionState
	dtls pion.DTLSTransportState
	pair string
	peer netip.AddrPort
}

// connState is the browser connection as Stats shows it.
type connState struct {
	ice       pion.ICEConnectionState
	dtls      pion.DTLSTransportState
	connected time.Time
	remote    string // the browser's address on the selected pair
}

// post hands a pion state change to the monitor. pion calls the DTLS
// handler with the transport's lock held, so this must not block; a call
// has a handful of changes, far below the buffer.
func (b *Bridge) post(e event) {
	select {
	case b.events <- e:
	default:
		b.log.Error("webrtc: state change lost", "kind", e.kind)
	}
}

// monitor turns pion's state changes into at most one failure, and bounds
// connection setup by ConnectTimeout from the end of the first
// offer/answer.
func (b *Bridge) monitor() {
	defer b.wg.Done()
	var (
		timer          *time.Timer
		deadline       <-chan time.Time
		iceUp, dtlsUp  bool
		peer           netip.AddrPort
		connectTimeout = b.h.set.ConnectTimeout
	)
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		select {
		case <-b.done:
			return
		case <-deadline:
			deadline = nil
			switch {
			case dtlsUp:
			case iceUp:
				b.fail(fmt.Errorf("%w: no handshake within %s", ErrDTLSFailed, connectTimeout))
			default:
				b.fail(fmt.Errorf("%w: no connectivity check within %s", ErrICEFailed, connectTimeout))
			}
		case e := <-b.events:
			st := *b.state.Load()
			switch e.kind {
			case evNegotiated:
				if timer == nil && !dtlsUp {
					timer = time.NewTimer(connectTimeout)
					deadline = timer.C
				}
			case evICE:
				st.ice = e.ice
				b.log.Debug("webrtc: ice", "state", e.ice.String())
				switch e.ice {
				case pion.ICEConnectionStateConnected, pion.ICEConnectionStateCompleted:
					iceUp = true
				case pion.ICEConnectionStateDisconnected:
					b.log.Info("webrtc: browser silent, waiting for consent", "state", e.ice.String())
				case pion.ICEConnectionStateFailed:
					if iceUp {
						b.fail(ErrConsentLost)
					} else {
						b.fail(ErrICEFailed)
					}
				}
			case evPair:
				st.remote = e.pair
				peer = e.peer
				if dtlsUp {
					b.startFast(peer)
				}
			case evDTLS:
				st.dtls = e.dtls
				b.log.Debug("webrtc: dtls", "state", e.dtls.String())
				switch e.dtls {
				case pion.DTLSTransportStateConnected:
					dtlsUp = true
					st.connected = time.Now()
					b.startFast(peer)
					if timer != nil {
						timer.Stop()
						deadline = nil
					}
				case pion.DTLSTransportStateFailed:
					b.fail(b.dtlsFailure())
				case pion.DTLSTransportStateClosed:
					if dtlsUp {
						b.fail(ErrPeerClosed) // ignored when Close did it
					}
				}
			}
			b.state.Store(&st)
		}
	}
}

// dtlsFailure tells a certificate that does not match the browser's
// a=fingerprint apart from other handshake failures: pion records the
// peer's certificate before checking it, and only logs the check's error.
func (b *Bridge) dtlsFailure() error {
	b.mu.Lock()
	pc := b.pc
	b.mu.Unlock()
	if pc == nil {
		return ErrDTLSFailed
	}
	raw := pc.SCTP().Transport().GetRemoteCertificate()
	rd := pc.RemoteDescription()
	if len(raw) == 0 || rd == nil {
		return ErrDTLSFailed
	}
	cert, err := x509.ParseCertificate(raw)
	if err != nil {
		return fmt.Errorf("%w: bad certificate", ErrDTLSFailed)
	}
	var d psdp.SessionDescription
	if err := d.UnmarshalString(rd.SDP); err != nil {
		return ErrDTLSFailed
	}
	prints := attrValues(d.Attributes, "fingerprint")
	for _, md := range d.MediaDescriptions {
		prints = append(prints, attrValues(md.Attributes, "fingerprint")...)
	}
	for _, p := range prints {
		algo, value, ok := strings.Cut(p, " ")
		if !ok {
			continue
		}
		hash, err := fingerprint.HashFromString(algo)
		if err != nil {
			continue
		}
		got, err := fingerprint.Fingerprint(cert, hash)
		if err == nil && strings.EqualFold(got, strings.TrimSpace(value)) {
			return ErrDTLSFailed // the certificate matched: something else broke
		}
	}
	return fmt.Errorf("%w: fingerprint mismatch", ErrDTLSFailed)
}

func attrValues(attrs []psdp.Attribute, key string) []string {
	var out []string
	for _, a := range attrs {
		if a.Key == key {
			out = append(out, a.Value)
		}
	}
	return out
}
