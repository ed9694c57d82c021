package edgesim

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"time"
)

// tlsHandshakeTimeout bounds a client's TLS handshake on an edge's TLS
// port, so a connection that never finishes one does not hold a reader.
const tlsHandshakeTimeout = 10 * time.Second

// TLSStats counts TLS handshakes on one edge IP's TLS port since the last
// reset.
type TLSStats struct {
	// Handshakes completed.
	Handshakes uint64 `json:"handshakes"`
	// Failed handshakes: mostly clients that refused the certificate (in
	// a certificate mode), which close with an alert.
	Failed uint64 `json:"failed"`
	// LastError is the last failed handshake's error as edgesim saw it
	// ("remote error: tls: bad certificate").
	LastError string `json:"last_error,omitempty"`
}

// edgeCerts are the certificates one edge's TLS ports can present.
type edgeCerts struct {
	good       tls.Certificate // the edge's names, valid, from the test CA
	expired    tls.Certificate // the edge's names, expired a day ago
	wrongName  tls.Certificate // WrongCertName, valid, from the test CA
	selfSigned tls.Certificate // the edge's names, its own issuer
}

func (s *Sim) tlsOn() bool { return slices.Contains(s.cfg.Transports, "tls") }

// newEdgeCerts issues an edge's certificates. The names are the edge's
// FQDNs only, never its IPs: a client must verify the name it asked for.
func newEdgeCerts(ca *testCA, names []string) (edgeCerts, error) {
	now := time.Now()
	var c edgeCerts
	var err error
	if c.good, err = ca.issue(names[0], names, nil, now.Add(-time.Hour), now.AddDate(1, 0, 0)); err != nil {
		return c, err
	}
	if c.expired, err = ca.issue(names[0], names, nil, now.Add(-48*time.Hour), now.Add(-24*time.Hour)); err != nil {
		return c, err
	}
	if c.wrongName, err = ca.issue(WrongCertName, []string{WrongCertName}, nil, now.Add(-time.Hour), now.AddDate(1, 0, 0)); err != nil {
		return c, err
	}
	if c.selfSigned, err = selfSigned(names); err != nil {
		return c, err
	}
	return c, nil
}

// isCertMode reports whether m changes what the TLS port presents.
func isCertMode(m Mode) bool {
	return m == ModeExpiredCert || m == ModeWrongNameCert || m == ModeSelfSignedCert
}

// certificate picks what the IP presents in this handshake, by its mode at
// that moment. A change of certificate also closes the TLS connections
// already open (see Sim.change), so the next request handshakes again.
func (ip *edgeIP) certificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	c := &ip.edge.certs
	switch ip.sim.effective(ip).Mode {
	case ModeExpiredCert:
		return &c.expired, nil
	case ModeWrongNameCert:
		return &c.wrongName, nil
	case ModeSelfSignedCert:
		return &c.selfSigned, nil
	default:
		return &c.good, nil
	}
}

// sipTLSListener hands sipgo the TLS server connections of one edge IP's
// TLS port; each handshakes before sipgo reads from it, so the IP can
// count handshakes that failed.
type sipTLSListener struct {
	net.Listener // the port's connTracker
	ip           *edgeIP
}

func (l *sipTLSListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	conf := &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: l.ip.certificate}
	return &sipTLSConn{Conn: tls.Server(c, conf), ip: l.ip}, nil
}

type sipTLSConn struct {
	*tls.Conn
	ip   *edgeIP
	once sync.Once
	err  error
}

// Read completes the handshake first (sipgo's reader is the first to use
// an accepted connection), bounded by tlsHandshakeTimeout.
func (c *sipTLSConn) Read(b []byte) (int, error) {
	c.once.Do(func() {
		_ = c.SetDeadline(time.Now().Add(tlsHandshakeTimeout))
		c.err = c.Handshake()
		_ = c.SetDeadline(time.Time{})
		c.ip.countHandshake(c.err)
		if c.err != nil {
			c.ip.sim.log.Debug("tls handshake failed", "edge", c.ip.edge.name, "ip", c.ip.addr.String(),
				"source", c.RemoteAddr().String(), "mode", c.ip.sim.effective(c.ip).Mode, "error", c.err)
			// Logged and counted here; to sipgo's reader it is a closed
			// connection, not a read error worth its own log line.
			c.err = fmt.Errorf("tls handshake: %w", io.EOF)
		}
	})
	if c.err != nil {
		return 0, c.err
	}
	return c.Conn.Read(b)
}

// carriesCredentials reports whether a raw SIP message has an
// Authorization or Proxy-Authorization header (before its blank line).
func carriesCredentials(data []byte) bool {
	head, _, _ := bytes.Cut(data, []byte("\r\n\r\n"))
	for line := range bytes.SplitSeq(head, []byte("\n")) {
		name, _, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			continue
		}
		name = bytes.TrimSpace(name)
		if bytes.EqualFold(name, []byte("Authorization")) || bytes.EqualFold(name, []byte("Proxy-Authorization")) {
			return true
		}
	}
	return false
}
