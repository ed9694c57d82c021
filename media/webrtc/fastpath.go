package webrtc

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/pion/dtls/v3"
	"github.com/pion/dtls/v3/pkg/crypto/prf"
	"github.com/pion/dtls/v3/pkg/protocol/extension"
	"github.com/pion/dtls/v3/pkg/protocol/handshake"
	"github.com/pion/rtp"
	"github.com/pion/srtp/v3"
	"golang.org/x/sys/unix"

	"github.com/edgewise-sip/edgewise/media/mmsg"
)

// The media fast path. pion hands a browser's packet through five
// goroutines between the socket and the bridge (the UDP mux reader, the
// ICE candidate's loop, the DTLS/SRTP demux, the SRTP session, the track
// reader) and back through ICE and the mux on the way out; those hand-offs,
// not the cipher, were most of the bridge's CPU. Once DTLS is up and pion
// has checked the browser's certificate against its a=fingerprint, the
// bridge derives the same SRTP keys pion did (RFC 5764 §4.2, from what
// pion's DTLS hooks expose: the ServerHello and the key log) and carries
// RTP itself: the shared socket's reader decrypts a browser's SRTP and
// sends it to the plain side at once, and readPlain encrypts toward the
// browser and writes to the shared socket. pion keeps everything else:
// STUN (ICE consent), DTLS, RTCP both ways, and any packet the fast path
// does not claim.
//
// Only when edgewise is the DTLS server: pion's hooks show the server
// random only for a ServerHello we send. The bridge answers
// a=setup:passive (browsers then take the client role, as they do with
// rtpengine) and offers actpass, which browsers answer with active. A
// browser that makes edgewise the client gets pion's path, as before.
//
// Derived keys are trusted only after they authenticated a packet from
// the browser: until then a packet that fails goes to pion as before, and
// after maxUnverified failures without one success the fast path is given
// up for the call (logged once). Encryption toward the browser switches to
// the bridge's own context only then, so both directions change over
// together and pion never encrypts an RTP packet after the bridge started.

// maxUnverified is how many browser packets may fail the derived keys
// before the fast path is given up for a call.
const maxUnverified = 64

// handoverWindow is how many fast-path packets the handover check covers:
// by then the replay window (64) has moved past every packet pion
// delivered before the handover.
const handoverWindow = 128

// feedEvery: one browser packet in feedEvery is also handed to pion,
// about one a second at 50 pps.
const feedEvery = 50

// dtlsSecrets collects what pion's DTLS handshake shows through the
// SettingEngine hooks of one bridge: the ServerHello edgewise sent (server
// random, cipher suite, SRTP profile) and the key log line (client random,
// master secret).
type dtlsSecrets struct {
	mu           sync.Mutex
	server       bool
	serverRandom [32]byte
	suite        dtls.CipherSuiteID
	profile      srtp.ProtectionProfile
	clientRandom [32]byte
	master       []byte
}

// serverHello is the SettingEngine's ServerHello hook: it records the
// hello and sends it unchanged.
func (s *dtlsSecrets) serverHello(m handshake.MessageServerHello) handshake.Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.server = false
	s.profile = 0
	if m.CipherSuiteID == nil {
		return &m
	}
	for _, e := range m.Extensions {
		u, ok := e.(*extension.UseSRTP)
		if !ok || len(u.ProtectionProfiles) != 1 || len(u.MasterKeyIdentifier) != 0 {
			continue
		}
		switch p := srtp.ProtectionProfile(u.ProtectionProfiles[0]); p {
		case srtp.ProtectionProfileAes128CmHmacSha1_80, srtp.ProtectionProfileAes128CmHmacSha1_32,
			srtp.ProtectionProfileAeadAes128Gcm, srtp.ProtectionProfileAeadAes256Gcm:
			s.profile = p
		}
	}
	s.server = true
	s.serverRandom = m.Random.MarshalFixed()
	s.suite = dtls.CipherSuiteID(*m.CipherSuiteID)
	return &m
}

// Write takes pion's DTLS key log: "CLIENT_RANDOM <hex> <hex>\n" per
// handshake (NSS key log format).
func (s *dtlsSecrets) Write(p []byte) (int, error) {
	sc := bufio.NewScanner(bytes.NewReader(p))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 3 || f[0] != "CLIENT_RANDOM" {
			continue
		}
		cr, err1 := hex.DecodeString(f[1])
		ms, err2 := hex.DecodeString(f[2])
		if err1 != nil || err2 != nil || len(cr) != 32 || len(ms) == 0 {
			continue
		}
		s.mu.Lock()
		copy(s.clientRandom[:], cr)
		s.master = ms
		s.mu.Unlock()
	}
	return len(p), nil
}

var errNoSecrets = errors.New("webrtc: DTLS secrets not known (edgewise not the DTLS server)")

// ExportKeyingMaterial is RFC 5705's exporter over the recorded handshake,
// as pion's dtls.State computes it, for srtp.Config.ExtractSessionKeysFromDTLS.
func (s *dtlsSecrets) ExportKeyingMaterial(label string, context []byte, length int) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.server || len(s.master) == 0 || len(context) != 0 {
		return nil, errNoSecrets
	}
	h := prf.HashFunc(sha256.New)
	if strings.HasSuffix(dtls.CipherSuiteName(s.suite), "SHA384") {
		h = sha512.New384
	}
	seed := make([]byte, 0, len(label)+64)
	seed = append(append(append(seed, label...), s.clientRandom[:]...), s.serverRandom[:]...)
	return prf.PHash(s.master, seed, length, h)
}

// contexts derives the SRTP contexts: rx for the browser's packets (with
// the replay window pion uses), tx for ours.
func (s *dtlsSecrets) contexts() (rx, tx *srtp.Context, err error) {
	s.mu.Lock()
	profile := s.profile
	s.mu.Unlock()
	if profile == 0 {
		return nil, nil, errNoSecrets
	}
	cfg := srtp.Config{Profile: profile}
	err = cfg.ExtractSessionKeysFromDTLS(s, false)
	s.mu.Lock()
	clear(s.master) // the SRTP keys are all the bridge needs from it
	s.master = nil
	s.mu.Unlock()
	if err != nil {
		return nil, nil, err
	}
	rx, err = srtp.CreateContext(cfg.Keys.RemoteMasterKey, cfg.Keys.RemoteMasterSalt, profile, srtp.SRTPReplayProtection(64))
	if err != nil {
		return nil, nil, err
	}
	tx, err = srtp.CreateContext(cfg.Keys.LocalMasterKey, cfg.Keys.LocalMasterSalt, profile)
	if err != nil {
		return nil, nil, err
	}
	return rx, tx, nil
}

// fastPath is one bridge's own SRTP state. rx and its fields are used only
// by the shared socket's reader goroutine, tx only by the plain worker.
type fastPath struct {
	rx, tx   *srtp.Context
	rxHdr    rtp.Header
	verified atomic.Bool // a browser packet authenticated with the derived keys
	failures int
	handed   int // fast-path packets since the handover (up to handoverWindow)
	count    uint32
	given    bool
}

// fastConn is the shared socket as pion's UDP mux reads it: datagrams a
// bridge's fast path claims never reach the mux. It reads with recvmmsg,
// a batch per system call.
type fastConn struct {
	*net.UDPConn
	h     *Hub
	rc    syscall.RawConn
	batch *mmsg.Batch
	next  int
	n     int
	dec   []byte // decryption scratch of the one reader
}

func newFastConn(conn *net.UDPConn, h *Hub) (*fastConn, error) {
	rc, err := conn.SyscallConn()
	if err != nil {
		return nil, err
	}
	return &fastConn{UDPConn: conn, h: h, rc: rc, batch: mmsg.NewBatch(workerBatch, sharedMTU, 0),
		dec: make([]byte, 0, sharedMTU)}, nil
}

// sharedMTU is the largest datagram read from the shared socket (pion's
// own receive MTU).
const sharedMTU = 8192

var _ interface {
	ReadFromAddrPort([]byte) (int, netip.AddrPort, error)
	WriteToAddrPort([]byte, netip.AddrPort) (int, error)
} = (*fastConn)(nil)

// ReadFromAddrPort is what pion's mux reads through (its allocation-free
// interface); ReadFrom the same for any other caller. Only the mux's one
// reader goroutine calls it.
func (c *fastConn) ReadFromAddrPort(p []byte) (int, netip.AddrPort, error) {
	for {
		for c.next < c.n {
			i := c.next
			c.next++
			if c.batch.Flags[i]&unix.MSG_TRUNC != 0 {
				continue
			}
			pkt := c.batch.Bufs[i][:c.batch.Lens[i]]
			src := mmsg.Decode(&c.batch.Names[i])
			if len(pkt) >= 12 && pkt[0]>>6 == 2 && !isRTCP(pkt[1]) {
				if v, ok := c.h.fast.Load(src); ok && v.(*Bridge).fastIn(pkt, c.dec) {
					continue
				}
			}
			return copy(p, pkt), src, nil
		}
		var rerr error
		err := c.rc.Read(func(fd uintptr) bool {
			c.n, rerr = c.batch.Recv(int(fd))
			return !errors.Is(rerr, unix.EAGAIN) // EAGAIN: park until readable
		})
		c.next = 0
		if err != nil {
			c.n = 0
			return 0, netip.AddrPort{}, err
		}
		if rerr != nil {
			c.n = 0
			if errors.Is(rerr, unix.EINTR) {
				continue
			}
			return 0, netip.AddrPort{}, rerr
		}
	}
}

func (c *fastConn) WriteToAddrPort(p []byte, a netip.AddrPort) (int, error) {
	return c.UDPConn.WriteToUDPAddrPort(p, a)
}

func (c *fastConn) ReadFrom(p []byte) (int, net.Addr, error) {
	n, src, err := c.ReadFromAddrPort(p)
	if err != nil {
		return n, nil, err
	}
	return n, net.UDPAddrFromAddrPort(src), nil
}

func unmapped(a netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(a.Addr().Unmap(), a.Port())
}

// startFast turns the fast path on once DTLS is connected (pion has
// checked the fingerprint) and the browser's address is known. Called by
// the monitor only.
func (b *Bridge) startFast(peer netip.AddrPort) {
	if b.fastOff.Load() || !peer.IsValid() {
		return
	}
	peer = unmapped(peer)
	if b.fast.Load() == nil {
		rx, tx, err := b.secrets.contexts()
		if err != nil {
			b.log.Debug("webrtc: pion carries the media", "reason", err.Error())
			b.fastOff.Store(true)
			return
		}
		b.fast.Store(&fastPath{rx: rx, tx: tx})
	}
	if old := b.peer.Swap(&peer); old != nil && *old != peer {
		b.h.fast.CompareAndDelete(*old, b)
	}
	b.h.fast.Store(peer, b)
}

// stopFast removes the bridge from the shared reader's table.
func (b *Bridge) stopFast() {
	if p := b.peer.Load(); p != nil {
		b.h.fast.CompareAndDelete(*p, b)
	}
}

// fastIn carries one RTP packet from the browser to the plain side; false
// hands it to pion. dec is the reader's scratch buffer.
func (b *Bridge) fastIn(pkt, dec []byte) bool {
	f := b.fast.Load()
	if f == nil || f.given || !b.trackUp.Load() {
		// Until pion has announced the browser's track, its RTP goes
		// through pion: that starts the track's RTCP reader, and an
		// SSRC the description did not declare is only learnt there.
		return false
	}
	out, err := f.rx.DecryptRTP(dec[:0], pkt, &f.rxHdr)
	if err != nil {
		if f.verified.Load() {
			b.c.drop(dropAuth)
			return true
		}
		if f.failures++; f.failures >= maxUnverified {
			f.given = true
			b.stopFast()
			b.log.Warn("webrtc: derived SRTP keys never matched the browser's packets; pion carries the media")
		}
		return false
	}
	if !f.verified.Load() {
		f.verified.Store(true)
	}
	n := len(pkt)
	if f.handed < handoverWindow {
		f.handed++
		// Packets pion delivered before the handover are not in rx's
		// replay window: refuse them here.
		if last := b.pionSeq.Load(); last >= 0 && int16(f.rxHdr.SequenceNumber-uint16(last)) <= 0 {
			b.c.drop(dropAuth)
			return true
		}
	}
	b.c.srtp.rx(n)
	r := b.remote.Load()
	m := b.toPlain.Load()
	if r == nil || m == nil {
		b.c.drop(dropNotReady)
		return true
	}
	pt := m[out[1]&0x7f]
	if pt < 0 {
		b.c.drop(dropCodec)
		return true
	}
	out[1] = out[1]&0x80 | uint8(pt)
	if err := b.plain.writeTo(out, r.rtp); err != nil {
		b.c.drop(dropSendError)
		return true
	}
	b.c.plain.tx(len(out))
	// One packet in feedEvery also goes to pion (which decrypts it and
	// readBrowser drops it): its ICE agent then sees media on the pair
	// as before, not only consent checks.
	f.count++
	return f.count%feedEvery != 0
}

// setSSRC writes ssrc into an RTP packet's header.
func setSSRC(pkt []byte, ssrc uint32) { binary.BigEndian.PutUint32(pkt[8:12], ssrc) }
