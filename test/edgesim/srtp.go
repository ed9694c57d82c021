package edgesim

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"

	"github.com/pion/sdp/v3"
	"github.com/pion/srtp/v3"
)

// Secure Media: a SIP Domain with it on takes only SRTP keyed by SDES
// (RFC 4568 a=crypto) over TLS, and refuses a plain RTP/AVP offer with 488;
// with it off, RTP/SAVP is refused. edgesim parses a=crypto itself rather
// than with the gateway's code, so the two cannot share a mistake.

// sdesSuites are the suites edgesim accepts, first preferred.
var sdesSuites = map[string]srtp.ProtectionProfile{
	"AES_CM_128_HMAC_SHA1_80": srtp.ProtectionProfileAes128CmHmacSha1_80,
	"AES_CM_128_HMAC_SHA1_32": srtp.ProtectionProfileAes128CmHmacSha1_32,
}

const sdesOffered = "AES_CM_128_HMAC_SHA1_80"

var (
	errPlainRefused = errors.New("Secure Media is on: plain RTP/AVP refused")
	errSAVPRefused  = errors.New("Secure Media is off: RTP/SAVP refused")
	errNoCrypto     = errors.New("Secure Media is on: no a=crypto with AES_CM_128_HMAC_SHA1_80 or _32")
)

// sdesKey is one a=crypto line: tag, suite, 30 bytes of key and salt.
type sdesKey struct {
	tag   int
	suite string
	key   []byte
}

func newSDESKey(tag int, suite string) sdesKey {
	k := sdesKey{tag: tag, suite: suite, key: make([]byte, 30)}
	_, _ = rand.Read(k.key) // crypto/rand.Read never fails (Go ≥ 1.24)
	return k
}

func (k sdesKey) attr() string {
	return strconv.Itoa(k.tag) + " " + k.suite + " inline:" + base64.StdEncoding.EncodeToString(k.key)
}

// parseCryptoAttr reads "<tag> <suite> inline:<key>[|lifetime]" for the
// suites edgesim accepts; anything else is not usable.
func parseCryptoAttr(v string) (sdesKey, bool) {
	f := strings.Fields(v)
	if len(f) != 3 {
		return sdesKey{}, false
	}
	tag, err := strconv.Atoi(f[0])
	if err != nil {
		return sdesKey{}, false
	}
	if _, ok := sdesSuites[f[1]]; !ok {
		return sdesKey{}, false
	}
	inline, ok := strings.CutPrefix(f[2], "inline:")
	if !ok {
		return sdesKey{}, false
	}
	b64, _, _ := strings.Cut(inline, "|")
	key, err := base64.StdEncoding.DecodeString(b64)
	if err != nil || len(key) != 30 {
		return sdesKey{}, false
	}
	return sdesKey{tag: tag, suite: f[1], key: key}, true
}

func (k sdesKey) context() (*srtp.Context, error) {
	return srtp.CreateContext(k.key[:16], k.key[16:], sdesSuites[k.suite], srtp.SRTPReplayProtection(64), srtp.SRTCPReplayProtection(64))
}

// mediaPolicy refuses what the domain's Secure Media setting does not
// allow. A nil info (no SDP) is for edgesim to offer.
func (s *Sim) mediaPolicy(info *sdpInfo) error {
	if info == nil {
		return nil
	}
	savp := info.proto == "RTP/SAVP" || info.proto == "RTP/SAVPF"
	switch {
	case s.cfg.Calls.SecureMedia && !savp:
		return errPlainRefused
	case s.cfg.Calls.SecureMedia && len(info.crypto) == 0:
		return errNoCrypto
	case !s.cfg.Calls.SecureMedia && savp:
		return errSAVPRefused
	}
	return nil
}

// withCrypto makes edgesim's own SDP body RTP/SAVP with one a=crypto line.
func withCrypto(body []byte, k sdesKey) []byte {
	var d sdp.SessionDescription
	if err := d.Unmarshal(body); err != nil {
		return body // edgesim built it; cannot happen
	}
	for _, m := range d.MediaDescriptions {
		if m.MediaName.Media != "audio" || m.MediaName.Port.Value == 0 {
			continue
		}
		m.MediaName.Protos = []string{"RTP", "SAVP"}
		m.Attributes = append(m.Attributes, sdp.NewAttribute("crypto", k.attr()))
	}
	return mustMarshal(&d)
}

// mediaSecurity is the SRTP of one media stream. RTP and RTCP are served by
// two goroutines, so each has its own pion contexts (they are not safe for
// concurrent use).
type mediaSecurity struct {
	local sdesKey

	mu           sync.Mutex
	peer         *sdesKey
	rtpRx, rtpTx *srtp.Context
	rtcpRx       *srtp.Context
	rtcpTx       *srtp.Context
}

// secure keys the stream's echo with a fresh key of suite under tag.
func (m *mediaStream) secure(tag int, suite string) *mediaSecurity {
	sec := &mediaSecurity{local: newSDESKey(tag, suite)}
	m.sec.Store(sec)
	return sec
}

// setPeer keys decryption with the peer's line; an unchanged key keeps its
// contexts (and their replay windows).
func (sec *mediaSecurity) setPeer(k sdesKey) error {
	sec.mu.Lock()
	defer sec.mu.Unlock()
	if sec.peer != nil && string(sec.peer.key) == string(k.key) && sec.peer.suite == k.suite {
		return nil
	}
	var ctxs [4]*srtp.Context
	for i, key := range []sdesKey{k, k, sec.local, sec.local} {
		c, err := key.context()
		if err != nil {
			return fmt.Errorf("srtp: %w", err)
		}
		ctxs[i] = c
	}
	sec.peer = &k
	sec.rtpRx, sec.rtcpRx, sec.rtpTx, sec.rtcpTx = ctxs[0], ctxs[1], ctxs[2], ctxs[3]
	return nil
}

// contexts returns the decrypting and encrypting context for RTP or RTCP;
// nil until the peer's key is known.
func (sec *mediaSecurity) contexts(rtcp bool) (rx, tx *srtp.Context) {
	sec.mu.Lock()
	defer sec.mu.Unlock()
	if rtcp {
		return sec.rtcpRx, sec.rtcpTx
	}
	return sec.rtpRx, sec.rtpTx
}

// answerKey is the line of an offer edgesim accepts: the first it knows.
func answerKey(info *sdpInfo) (sdesKey, bool) {
	if info == nil || len(info.crypto) == 0 {
		return sdesKey{}, false
	}
	return info.crypto[0], true
}

// matchKey is the line of an answer that accepts edgesim's offered one.
func matchKey(info *sdpInfo, ours sdesKey) (sdesKey, bool) {
	for _, k := range info.crypto {
		if k.tag == ours.tag && k.suite == ours.suite {
			return k, true
		}
	}
	return sdesKey{}, false
}

// keyAnswer takes the gateway's key from its answer (in an ACK) to an
// offer edgesim made.
func (c *call) keyAnswer(info *sdpInfo) {
	c.mu.Lock()
	ms := c.media
	c.mu.Unlock()
	if ms == nil {
		return
	}
	if sec := ms.sec.Load(); sec != nil {
		if k, ok := matchKey(info, sec.local); ok {
			_ = sec.setPeer(k) // a bad key shows as srtp_failed
		}
	}
}
