package frontend

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"
)

// certDebounce lets a renewal tool finish writing the certificate and the
// key (two files, often by rename) before the pair is read.
const certDebounce = 250 * time.Millisecond

// CertEvent is one attempt to replace the tls and wss listeners'
// certificate, for the operator's event list.
type CertEvent struct {
	Applied bool // false: refused, the previous certificate stays
	// Text says what happened: the new certificate's subject and expiry,
	// or why the new pair was refused.
	Text string
}

// certHolder is the certificate the tls and wss listeners present, read
// through tls.Config.GetCertificate at every handshake. It replaces it when
// the files change (watch) or on a config reload (Server.PrepareTLS): new
// handshakes get the new certificate, connections already up keep theirs,
// and a pair that does not load leaves the current one in service.
type certHolder struct {
	log *slog.Logger
	cur atomic.Pointer[tls.Certificate]

	applied atomic.Uint64
	refused atomic.Uint64

	mu       sync.Mutex // serialises loads; guards the fields below
	certFile string
	keyFile  string
	lastErr  string // last refusal, logged once
	onEvent  func(CertEvent)
	// moved is signalled when the files' directories may have changed, so
	// the watcher watches the new ones.
	moved chan struct{}
}

func newCertHolder(certFile, keyFile string, logger *slog.Logger) (*certHolder, error) {
	cert, err := loadPair(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	h := &certHolder{log: logger, certFile: certFile, keyFile: keyFile, moved: make(chan struct{}, 1)}
	h.cur.Store(cert)
	return h, nil
}

// loadPair reads and checks a certificate chain and its key; the leaf is
// parsed so expiry can be reported.
func loadPair(certFile, keyFile string) (*tls.Certificate, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	if cert.Leaf == nil {
		leaf, err := x509.ParseCertificate(cert.Certificate[0])
		if err != nil {
			return nil, err
		}
		cert.Leaf = leaf
	}
	return &cert, nil
}

func (h *certHolder) getCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return h.cur.Load(), nil
}

func (h *certHolder) notAfter() time.Time { return h.cur.Load().Leaf.NotAfter }

func (h *certHolder) files() (string, string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.certFile, h.keyFile
}

// reload reads the current files (why says what asked) and puts the pair in
// service if it loads and differs from the one serving.
func (h *certHolder) reload(why string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	cert, err := loadPair(h.certFile, h.keyFile)
	if err != nil {
		h.refuseLocked(why, err)
		return
	}
	h.installLocked(why, cert)
}

// prepare loads a pair from (possibly new) paths; commit puts it and its
// paths in service. The config reload's half: a pair that does not load
// refuses the reload.
func (h *certHolder) prepare(certFile, keyFile string) (commit func(), err error) {
	cert, err := loadPair(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	return func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		if h.certFile != certFile || h.keyFile != keyFile {
			h.certFile, h.keyFile = certFile, keyFile
			select {
			case h.moved <- struct{}{}:
			default:
			}
		}
		h.installLocked("config reload", cert)
	}, nil
}

func (h *certHolder) installLocked(why string, cert *tls.Certificate) {
	h.lastErr = ""
	if sameChain(h.cur.Load(), cert) {
		return // a write that changed nothing, or a reload of the same files
	}
	h.cur.Store(cert)
	h.applied.Add(1)
	text := fmt.Sprintf("tls certificate replaced (%s): %s, valid until %s", why, certSubject(cert.Leaf), cert.Leaf.NotAfter.UTC().Format(time.RFC3339))
	h.log.Info(text, "cert_file", h.certFile, "not_after", cert.Leaf.NotAfter, "serial", cert.Leaf.SerialNumber.String())
	h.emitLocked(CertEvent{Applied: true, Text: text})
}

func (h *certHolder) refuseLocked(why string, err error) {
	h.refused.Add(1)
	text := fmt.Sprintf("tls certificate not replaced (%s): %s and %s do not load: %v; still serving %s, valid until %s",
		why, h.certFile, h.keyFile, err, certSubject(h.cur.Load().Leaf), h.notAfter().UTC().Format(time.RFC3339))
	if text == h.lastErr {
		return // the same broken pair again: said already
	}
	h.lastErr = text
	h.log.Warn(text, "cert_file", h.certFile, "key_file", h.keyFile, "error", err)
	h.emitLocked(CertEvent{Text: text})
}

func (h *certHolder) emitLocked(ev CertEvent) {
	if h.onEvent != nil {
		h.onEvent(ev)
	}
}

func sameChain(a, b *tls.Certificate) bool {
	if a == nil || b == nil || len(a.Certificate) != len(b.Certificate) {
		return false
	}
	for i := range a.Certificate {
		if !bytes.Equal(a.Certificate[i], b.Certificate[i]) {
			return false
		}
	}
	return true
}

// certSubject names a certificate by its DNS names, else its common name.
func certSubject(c *x509.Certificate) string {
	switch {
	case len(c.DNSNames) > 0:
		return strings.Join(c.DNSNames, ", ")
	case len(c.IPAddresses) > 0:
		return c.IPAddresses[0].String()
	default:
		return c.Subject.CommonName
	}
}

// watch reloads the pair when a file in the directories of the certificate
// or the key changes, until ctx is done. It watches directories, not files:
// renewal tools replace files by rename (and Kubernetes swaps a "..data"
// symlink), which would end a watch on the old inode. Any change in the
// directory triggers a read; an unchanged pair is ignored.
func (h *certHolder) watch(ctx context.Context) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watch tls certificate: %w", err)
	}
	defer w.Close()
	watched := map[string]bool{}
	follow := func() {
		cert, key := h.files()
		want := map[string]bool{filepath.Dir(cert): true, filepath.Dir(key): true}
		for dir := range watched {
			if !want[dir] {
				_ = w.Remove(dir)
				delete(watched, dir)
			}
		}
		for dir := range want {
			if watched[dir] {
				continue
			}
			if err := w.Add(dir); err != nil {
				h.log.Warn("tls certificate changes will not be noticed in this directory (a config reload still re-reads it)", "dir", dir, "error", err)
				continue
			}
			watched[dir] = true
		}
	}
	follow()

	timer := time.NewTimer(certDebounce)
	timer.Stop()
	defer timer.Stop()
	var fire <-chan time.Time // nil until an event arms the debounce
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-h.moved:
			follow()
		case ev, ok := <-w.Events:
			if !ok {
				return errors.New("watch tls certificate: watcher closed")
			}
			if ev.Op == fsnotify.Chmod {
				continue
			}
			timer.Reset(certDebounce)
			fire = timer.C
		case err, ok := <-w.Errors:
			if !ok {
				return errors.New("watch tls certificate: watcher closed")
			}
			// An overflow may have hidden a change: read anyway.
			h.log.Warn("tls certificate watch error", "error", err)
			timer.Reset(certDebounce)
			fire = timer.C
		case <-fire:
			fire = nil
			h.reload("files changed")
		}
	}
}
