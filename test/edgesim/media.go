package edgesim

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"
)

// mediaBindAttempts bounds the search for a free even port whose odd
// neighbour is free too (RTP on even, RTCP on the next, RFC 3550 §11).
const mediaBindAttempts = 64

// mediaStream is the media end of one call on an edge IP: an RTP socket and
// the RTCP socket next to it. Like a far-end phone that echoes, it sends
// every valid RTP and RTCP packet back to the address it came from, so the
// gateway's relay, latching included, is exercised in both directions.
// Packets are echoed byte for byte (same SSRC, sequence and timestamps), so
// the sender can count exactly what came back.
type mediaStream struct {
	rtp, rtcp *net.UDPConn
	local     netip.AddrPort // the RTP address put in edgesim's SDP

	// echo is false while edgesim's direction forbids sending (the gateway
	// holds the call with sendonly or inactive); packets are still counted.
	echo atomic.Bool
	// sec is set when the call speaks SRTP: packets are decrypted before
	// they count and echoed under edgesim's own key.
	sec atomic.Pointer[mediaSecurity]

	rtpIn, rtpInBytes, rtpOut, rtpOutBytes atomic.Uint64
	invalid, rtcpIn, rtcpOut               atomic.Uint64
	srtpFailed, srtpEarly                  atomic.Uint64
	byPT                                   [128]atomic.Uint64 // RTP received per payload type
	source                                 atomic.Pointer[netip.AddrPort]

	wg        sync.WaitGroup
	closeOnce sync.Once
}

// openMedia binds an RTP/RTCP port pair on ip and starts echoing.
func openMedia(ip netip.Addr) (*mediaStream, error) {
	var lastErr error
	for range mediaBindAttempts {
		rtpConn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, 0)))
		if err != nil {
			return nil, fmt.Errorf("media: listen on %s: %w", ip, err)
		}
		port := rtpConn.LocalAddr().(*net.UDPAddr).Port
		if port%2 != 0 || port == 65534 {
			_ = rtpConn.Close()
			continue
		}
		rtcpConn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, uint16(port+1))))
		if err != nil {
			_ = rtpConn.Close()
			lastErr = err
			continue
		}
		m := &mediaStream{rtp: rtpConn, rtcp: rtcpConn, local: netip.AddrPortFrom(ip, uint16(port))}
		m.echo.Store(true)
		m.wg.Go(m.serveRTP)
		m.wg.Go(m.serveRTCP)
		return m, nil
	}
	return nil, fmt.Errorf("media: no free RTP/RTCP port pair on %s after %d attempts: %v", ip, mediaBindAttempts, lastErr)
}

// serveRTP echoes RTP. Datagrams that do not parse as RTP version 2 are
// counted as invalid and not echoed: an echo of garbage would only test the
// gateway's filter against edgesim's own output.
func (m *mediaStream) serveRTP() {
	buf := make([]byte, 2048)
	var h rtp.Header
	for {
		n, from, err := m.rtp.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		if _, err := h.Unmarshal(buf[:n]); err != nil || h.Version != 2 || isRTCPType(h.PayloadType) {
			m.invalid.Add(1)
			continue
		}
		pkt, ok := m.unprotect(buf[:n], false)
		if !ok {
			continue
		}
		m.rtpIn.Add(1)
		m.rtpInBytes.Add(uint64(n))
		m.byPT[h.PayloadType&0x7f].Add(1)
		from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
		m.source.Store(&from)
		if !m.echo.Load() {
			continue
		}
		if pkt, ok = m.protect(pkt, false); !ok {
			continue
		}
		if _, err := m.rtp.WriteToUDPAddrPort(pkt, from); err == nil {
			m.rtpOut.Add(1)
			m.rtpOutBytes.Add(uint64(len(pkt)))
		}
	}
}

// isRTCPType catches RTCP sent to the RTP port: its packet types 200–204
// read as RTP payload types 72–76 with the marker bit (RFC 5761 §4).
func isRTCPType(pt uint8) bool { return pt >= 72 && pt <= 76 }

func (m *mediaStream) serveRTCP() {
	buf := make([]byte, 2048)
	var h rtcp.Header
	for {
		n, from, err := m.rtcp.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		if err := h.Unmarshal(buf[:n]); err != nil {
			m.invalid.Add(1)
			continue
		}
		pkt, ok := m.unprotect(buf[:n], true)
		if !ok {
			continue
		}
		m.rtcpIn.Add(1)
		if !m.echo.Load() {
			continue
		}
		if pkt, ok = m.protect(pkt, true); !ok {
			continue
		}
		if _, err := m.rtcp.WriteToUDPAddrPort(pkt, from); err == nil {
			m.rtcpOut.Add(1)
		}
	}
}

// unprotect decrypts an SRTP or SRTCP packet when the stream speaks SRTP;
// one that fails (a wrong key, a replay, plain RTP) is counted in
// srtpFailed and not echoed. One that arrives before the gateway's key (its
// answer is still on the way: media may overtake the 200) counts as early.
func (m *mediaStream) unprotect(b []byte, rtcp bool) ([]byte, bool) {
	sec := m.sec.Load()
	if sec == nil {
		return b, true
	}
	rx, _ := sec.contexts(rtcp)
	if rx == nil {
		m.srtpEarly.Add(1)
		return nil, false
	}
	var out []byte
	var err error
	if rtcp {
		out, err = rx.DecryptRTCP(nil, b, nil)
	} else {
		out, err = rx.DecryptRTP(nil, b, nil)
	}
	if err != nil {
		m.srtpFailed.Add(1)
		return nil, false
	}
	return out, true
}

// protect encrypts an echo under edgesim's key when the stream speaks SRTP.
func (m *mediaStream) protect(b []byte, rtcp bool) ([]byte, bool) {
	sec := m.sec.Load()
	if sec == nil {
		return b, true
	}
	_, tx := sec.contexts(rtcp)
	if tx == nil {
		return nil, false
	}
	var out []byte
	var err error
	if rtcp {
		out, err = tx.EncryptRTCP(nil, b, nil)
	} else {
		out, err = tx.EncryptRTP(nil, b, nil)
	}
	return out, err == nil
}

// close stops echoing and releases both ports.
func (m *mediaStream) close() {
	m.closeOnce.Do(func() {
		_ = m.rtp.Close()
		_ = m.rtcp.Close()
	})
	m.wg.Wait()
}

// fill copies the counters into st.
func (m *mediaStream) fill(st *MediaStatus) {
	st.Local = m.local.String()
	if src := m.source.Load(); src != nil {
		st.Source = src.String()
	}
	st.PacketsReceived = m.rtpIn.Load()
	st.BytesReceived = m.rtpInBytes.Load()
	st.PacketsEchoed = m.rtpOut.Load()
	st.BytesEchoed = m.rtpOutBytes.Load()
	st.Invalid = m.invalid.Load()
	st.RTCPReceived = m.rtcpIn.Load()
	st.RTCPEchoed = m.rtcpOut.Load()
	st.SRTP = m.sec.Load() != nil
	st.SRTPFailed = m.srtpFailed.Load()
	st.SRTPEarly = m.srtpEarly.Load()
	for pt := range m.byPT {
		if n := m.byPT[pt].Load(); n > 0 {
			if st.PayloadTypes == nil {
				st.PayloadTypes = make(map[string]uint64)
			}
			st.PayloadTypes[strconv.Itoa(pt)] = n
		}
	}
}
