package media

import (
	"crypto/rand"
	"errors"
	"fmt"

	"github.com/pion/srtp/v3"

	"github.com/edgewise-sip/edgewise/media/sdp"
)

// SRTPPolicy says what a leg's peer must speak.
type SRTPPolicy uint8

const (
	// SRTPFollow (the default) speaks what the peer offers: SRTP keyed by
	// SDES when its offer is RTP/SAVP with a=crypto, plain RTP otherwise.
	// The relay's own offers to such a leg are plain unless the leg already
	// speaks SRTP (a re-offer keeps it).
	SRTPFollow SRTPPolicy = iota
	// SRTPRequired offers only RTP/SAVP and refuses a plain offer or
	// answer from the peer (Twilio's Secure Media).
	SRTPRequired
)

// Suites edgewise offers and accepts in a=crypto, most preferred first, and
// the pion profile of each (RFC 4568, RFC 6188, RFC 7714). The first is the
// one the relay offers: every SDES implementation has it, Twilio included.
var suites = []struct {
	name    string
	profile srtp.ProtectionProfile
}{
	{"AES_CM_128_HMAC_SHA1_80", srtp.ProtectionProfileAes128CmHmacSha1_80},
	{"AES_CM_128_HMAC_SHA1_32", srtp.ProtectionProfileAes128CmHmacSha1_32},
	{"AEAD_AES_128_GCM", srtp.ProtectionProfileAeadAes128Gcm},
	{"AEAD_AES_256_GCM", srtp.ProtectionProfileAeadAes256Gcm},
	{"AES_256_CM_HMAC_SHA1_80", srtp.ProtectionProfileAes256CmHmacSha1_80},
	{"AES_256_CM_HMAC_SHA1_32", srtp.ProtectionProfileAes256CmHmacSha1_32},
}

// replayWindow is the SRTP replay window (RFC 3711 §3.3.2 asks for at
// least 64); a relay that forwards replayed packets is an amplifier.
const replayWindow = 128

// profileOf returns the pion profile of suite and its key and salt lengths.
func profileOf(suite string) (p srtp.ProtectionProfile, keyLen, saltLen int, ok bool) {
	for _, s := range suites {
		if s.name != suite {
			continue
		}
		k, err1 := s.profile.KeyLen()
		salt, err2 := s.profile.SaltLen()
		if err1 != nil || err2 != nil {
			return 0, 0, 0, false
		}
		return s.profile, k, salt, true
	}
	return 0, 0, 0, false
}

// checkCrypto reports why c cannot key SRTP, or nil.
func checkCrypto(c sdp.Crypto) error {
	_, k, salt, ok := profileOf(c.Suite)
	if !ok {
		return fmt.Errorf("suite %s is not supported", c.Suite)
	}
	if len(c.Key) != k+salt {
		return fmt.Errorf("%s: key and salt are %d bytes, want %d", c.Suite, len(c.Key), k+salt)
	}
	return nil
}

// newCrypto makes a fresh key for suite under tag.
func newCrypto(tag int, suite string) (*sdp.Crypto, error) {
	_, k, salt, ok := profileOf(suite)
	if !ok {
		return nil, fmt.Errorf("suite %s is not supported", suite)
	}
	key := make([]byte, k+salt)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("srtp key: %w", err)
	}
	return &sdp.Crypto{Tag: tag, Suite: suite, Key: key}, nil
}

// srtpContext builds the pion context for c, with replay protection: it
// decrypts what the peer sends (c is the peer's key) or encrypts what the
// relay sends (c is the relay's).
func srtpContext(c *sdp.Crypto) (*srtp.Context, error) {
	p, k, _, ok := profileOf(c.Suite)
	if !ok {
		return nil, fmt.Errorf("suite %s is not supported", c.Suite)
	}
	return srtp.CreateContext(c.Key[:k], c.Key[k:], p,
		srtp.SRTPReplayProtection(replayWindow), srtp.SRTCPReplayProtection(replayWindow))
}

// pickOffered chooses the first line of an offer the relay can honour
// (RFC 4568 §7.1.1: the answerer picks one); the error lists why each was
// refused.
func pickOffered(m sdp.Media) (sdp.Crypto, error) {
	why := append([]string(nil), m.CryptoProblems...)
	for _, c := range m.Crypto {
		if err := checkCrypto(c); err != nil {
			why = append(why, err.Error())
			continue
		}
		return c, nil
	}
	if len(why) == 0 {
		return sdp.Crypto{}, fmt.Errorf("%w: %s offered without a=crypto", sdp.ErrInvalid, m.Proto)
	}
	return sdp.Crypto{}, fmt.Errorf("%w: no usable a=crypto (%s)", sdp.ErrInvalid, joinWhy(why))
}

// pickAnswered finds the line of an answer that accepts ours: same tag and
// suite (RFC 4568 §7.1.2).
func pickAnswered(m sdp.Media, ours *sdp.Crypto) (sdp.Crypto, error) {
	for _, c := range m.Crypto {
		if c.Tag != ours.Tag {
			continue
		}
		if c.Suite != ours.Suite {
			return sdp.Crypto{}, fmt.Errorf("%w: answer's a=crypto:%d is %s, the offer's is %s", sdp.ErrInvalid, c.Tag, c.Suite, ours.Suite)
		}
		if err := checkCrypto(c); err != nil {
			return sdp.Crypto{}, fmt.Errorf("%w: answer's a=crypto: %v", sdp.ErrInvalid, err)
		}
		return c, nil
	}
	why := ""
	if len(m.CryptoProblems) > 0 {
		why = " (" + joinWhy(m.CryptoProblems) + ")"
	}
	return sdp.Crypto{}, fmt.Errorf("%w: answer has no a=crypto with the offer's tag %d%s", sdp.ErrInvalid, ours.Tag, why)
}

func joinWhy(why []string) string {
	out := ""
	for i, w := range why {
		if i > 0 {
			out += "; "
		}
		out += w
	}
	return out
}

// legSRTP is a leg's SDES state. The keys live here and in the pion
// contexts only: nothing prints them (sdp.Crypto's String omits the key).
type legSRTP struct {
	policy SRTPPolicy
	// local is the relay's key toward the peer: offered, or answered.
	local *sdp.Crypto
	// offered: the relay's last SDP to this peer was an SRTP offer with local.
	offered bool
	// peerOffer is the line the relay chose from the peer's last SRTP offer;
	// the relay's answer to the peer accepts it.
	peerOffer *sdp.Crypto
	// remote is the peer's key in use; rx decrypts with it, tx encrypts
	// with local. Both nil: the leg is plain RTP.
	remote *sdp.Crypto
	rx, tx *srtp.Context
}

// suite names the suite in use, "" for plain RTP.
func (k *legSRTP) suite() string {
	if k.remote == nil {
		return ""
	}
	return k.remote.Suite
}

// active reports whether the leg speaks SRTP now.
func (k *legSRTP) active() bool { return k.rx != nil }

// install keys the leg: remote decrypts what the peer sends, local encrypts
// what the relay sends. Unchanged keys keep their contexts, so a re-INVITE
// that repeats them does not reset rollover counters or replay windows.
func (k *legSRTP) install(local, remote *sdp.Crypto) error {
	if k.rx == nil || k.remote == nil || !k.remote.Equal(*remote) {
		rx, err := srtpContext(remote)
		if err != nil {
			return err
		}
		k.rx, k.remote = rx, remote
	}
	if k.tx == nil || k.local == nil || k.local.Suite != local.Suite || string(k.local.Key) != string(local.Key) {
		tx, err := srtpContext(local)
		if err != nil {
			return err
		}
		k.tx = tx
	}
	k.local = local
	return nil
}

// expect keys decryption with the key of the peer's offer as soon as it
// arrives: the peer may send before the relay's answer reaches it.
func (k *legSRTP) expect(remote *sdp.Crypto) error {
	if k.rx != nil && k.remote != nil && k.remote.Equal(*remote) {
		return nil
	}
	rx, err := srtpContext(remote)
	if err != nil {
		return err
	}
	k.rx, k.remote = rx, remote
	return nil
}

// plain drops the keys: the peer speaks RTP.
func (k *legSRTP) plain() {
	k.rx, k.tx, k.remote = nil, nil, nil
}

// localFor returns the relay's key for suite under tag, reusing the current
// one when it fits, so a peer sees the same key across re-offers.
func (k *legSRTP) localFor(tag int, suite string) (*sdp.Crypto, error) {
	if k.local != nil && k.local.Suite == suite {
		if k.local.Tag == tag {
			return k.local, nil
		}
		c := *k.local
		c.Tag = tag
		return &c, nil
	}
	return newCrypto(tag, suite)
}

// errNoKey: the peer speaks SRTP but the relay's key is not agreed yet.
var errNoKey = errors.New("srtp: no key for the peer yet")

// errSRTPRequired is wrapped when a plain peer meets SRTPRequired.
var errSRTPRequired = errors.New("plain RTP where SRTP is required")
