package webrtc

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/interceptor"
	"github.com/pion/rtp"
	pion "github.com/pion/webrtc/v4"

	"github.com/edgewise-sip/edgewise/media/sdp"
	"github.com/edgewise-sip/edgewise/test/kit"
)

var loopback = netip.MustParseAddr("127.0.0.1")

func testLogger() *slog.Logger {
	if os.Getenv(kit.LogEnv) != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// newTestHub binds a hub on loopback; tweak adjusts its settings.
func newTestHub(t testing.TB, tweak func(*Settings)) *Hub {
	t.Helper()
	set := Settings{Listen: netip.AddrPortFrom(loopback, 0)}
	if tweak != nil {
		tweak(&set)
	}
	h, err := NewHub(set, testLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Close() })
	return h
}

// browser plays the browser: a pion PeerConnection on loopback, full ICE,
// audio codecs numbered as Chrome numbers them.
type browser struct {
	t     testing.TB
	pc    *pion.PeerConnection
	track plainTrack // lets the test send any payload type
	byPT  [128]atomic.Uint64
	ssrc  atomic.Uint32
	rtcp  atomic.Uint64 // RTCP about the bridge's stream
	wg    sync.WaitGroup
}

var chromeCodecs = []sdp.Codec{
	{PT: 111, Name: "opus", Rate: 48000, Channels: 2, Fmtp: "minptime=10;useinbandfec=1"},
	{PT: 0, Name: "PCMU", Rate: 8000},
	{PT: 8, Name: "PCMA", Rate: 8000},
	{PT: 126, Name: "telephone-event", Rate: 8000, Fmtp: "0-16"},
}

func newBrowser(t testing.TB, codecs []sdp.Codec, tweaks ...func(*pion.SettingEngine)) *browser {
	t.Helper()
	me := &pion.MediaEngine{}
	for _, c := range codecs {
		if err := me.RegisterCodec(pionParams(c), pion.RTPCodecTypeAudio); err != nil {
			t.Fatal(err)
		}
	}
	var se pion.SettingEngine
	se.SetIncludeLoopbackCandidate(true)
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	se.SetNetworkTypes([]pion.NetworkType{pion.NetworkTypeUDP4})
	se.SetInterfaceFilter(func(name string) bool { return name == "lo" })
	se.LoggerFactory = pionLogs{log: testLogger().With("side", "browser")}
	for _, tw := range tweaks {
		tw(&se)
	}
	api := pion.NewAPI(pion.WithMediaEngine(me), pion.WithSettingEngine(se),
		pion.WithInterceptorRegistry(&interceptor.Registry{}))
	pc, err := api.NewPeerConnection(pion.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	br := &browser{t: t, pc: pc}
	pc.OnTrack(func(tr *pion.TrackRemote, recv *pion.RTPReceiver) {
		br.wg.Add(2)
		go func() {
			defer br.wg.Done()
			buf := make([]byte, maxPacket)
			for {
				if _, _, err := recv.Read(buf); err != nil {
					return
				}
				br.rtcp.Add(1)
			}
		}()
		go func() {
			defer br.wg.Done()
			buf := make([]byte, maxPacket)
			var p rtp.Packet
			for {
				n, _, err := tr.Read(buf)
				if err != nil {
					return
				}
				if p.Unmarshal(buf[:n]) == nil {
					br.byPT[p.PayloadType].Add(1)
					br.ssrc.Store(p.SSRC)
				}
			}
		}()
	})
	t.Cleanup(br.close)
	return br
}

func (br *browser) close() {
	_ = br.pc.Close()
	br.wg.Wait()
}

// setLocal applies d and returns the full description once candidates are in.
func (br *browser) setLocal(d pion.SessionDescription) []byte {
	br.t.Helper()
	done := pion.GatheringCompletePromise(br.pc)
	if err := br.pc.SetLocalDescription(d); err != nil {
		br.t.Fatal(err)
	}
	<-done
	return []byte(br.pc.LocalDescription().SDP)
}

// offer makes the browser's (re-)offer; its direction as sent is dir.
func (br *browser) offer(dir sdp.Direction) []byte {
	br.t.Helper()
	if len(br.pc.GetTransceivers()) == 0 {
		if _, err := br.pc.AddTrack(&br.track); err != nil {
			br.t.Fatal(err)
		}
	}
	o, err := br.pc.CreateOffer(nil)
	if err != nil {
		br.t.Fatal(err)
	}
	return mustDirection(br.t, br.setLocal(o), dir)
}

// applyAnswer gives the browser the bridge's answer (pion's own view stays
// sendrecv, as the bridge's does).
func (br *browser) applyAnswer(body []byte) {
	br.t.Helper()
	if err := br.pc.SetRemoteDescription(pion.SessionDescription{
		Type: pion.SDPTypeAnswer, SDP: string(mustDirection(br.t, body, sdp.SendRecv))}); err != nil {
		br.t.Fatal(err)
	}
}

// answer answers the bridge's offer with direction dir.
func (br *browser) answer(offer []byte, dir sdp.Direction) []byte {
	br.t.Helper()
	if err := br.pc.SetRemoteDescription(pion.SessionDescription{
		Type: pion.SDPTypeOffer, SDP: string(mustDirection(br.t, offer, sdp.SendRecv))}); err != nil {
		br.t.Fatal(err)
	}
	if !br.hasSender() {
		if _, err := br.pc.AddTrack(&br.track); err != nil {
			br.t.Fatal(err)
		}
	}
	a, err := br.pc.CreateAnswer(nil)
	if err != nil {
		br.t.Fatal(err)
	}
	return mustDirection(br.t, br.setLocal(a), dir)
}

func (br *browser) hasSender() bool {
	for _, tr := range br.pc.GetTransceivers() {
		if tr.Sender() != nil && tr.Sender().Track() != nil {
			return true
		}
	}
	return false
}

func (br *browser) connected() bool {
	return br.pc.ConnectionState() == pion.PeerConnectionStateConnected
}

// send writes one RTP packet with payload type pt to the bridge.
func (br *browser) send(pt uint8, seq uint16) bool {
	bd := br.track.bound.Load()
	if bd == nil {
		return false
	}
	hdr := rtp.Header{Version: 2, PayloadType: pt, SequenceNumber: seq, Timestamp: uint32(seq) * 160, SSRC: bd.ssrc}
	n, err := bd.w.WriteRTP(&hdr, make([]byte, 160))
	return err == nil && n > 0
}

func (br *browser) got(pt uint8) uint64 { return br.byPT[pt].Load() }

func mustDirection(t testing.TB, body []byte, dir sdp.Direction) []byte {
	t.Helper()
	out, err := withDirection(string(body), dir)
	if err != nil {
		t.Fatal(err)
	}
	return []byte(out)
}

// far plays the plain side: the relay's leg A (or a phone) on one socket.
type far struct {
	t    testing.TB
	conn *net.UDPConn
	byPT [128]atomic.Uint64
	rtcp atomic.Uint64
	ssrc atomic.Uint32
	to   atomic.Pointer[netip.AddrPort]
	wg   sync.WaitGroup
}

func newFar(t testing.TB) *far {
	t.Helper()
	conn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(loopback, 0)))
	if err != nil {
		t.Fatal(err)
	}
	f := &far{t: t, conn: conn}
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		buf := make([]byte, maxPacket)
		var h rtp.Header
		for {
			n, _, err := conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				continue
			}
			if n >= 2 && isRTCP(buf[1]) {
				f.rtcp.Add(1)
				continue
			}
			if _, err := h.Unmarshal(buf[:n]); err == nil {
				f.byPT[h.PayloadType].Add(1)
				f.ssrc.Store(h.SSRC)
			}
		}
	}()
	t.Cleanup(f.close)
	return f
}

func (f *far) close() { _ = f.conn.Close(); f.wg.Wait() }

func (f *far) addr() netip.AddrPort { return f.conn.LocalAddr().(*net.UDPAddr).AddrPort() }

// sdp writes the far end's description (offer or answer).
func (f *far) sdp(version int, codecs []sdp.Codec, dir sdp.Direction) []byte {
	return plainSDP(4242, uint64(version), f.addr(), codecs, dir, "20")
}

// learn takes where the bridge wants media from its plain description.
func (f *far) learn(body []byte) {
	f.t.Helper()
	a, err := parsePlain(body)
	if err != nil {
		f.t.Fatal(err)
	}
	f.to.Store(&a.rtp)
}

func (f *far) send(pt uint8, seq uint16) bool {
	to := f.to.Load()
	if to == nil {
		return false
	}
	p := rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: pt, SequenceNumber: seq,
		Timestamp: uint32(seq) * 160, SSRC: 0xfa5e}, Payload: make([]byte, 160)}
	raw, _ := p.Marshal()
	_, err := f.conn.WriteToUDPAddrPort(raw, *to)
	return err == nil
}

func (f *far) got(pt uint8) uint64 { return f.byPT[pt].Load() }

// flow sends from send until got reaches want more packets than it had,
// one packet per few milliseconds, within a deadline.
func flow(t testing.TB, what string, send func(seq uint16) bool, got func() uint64, want uint64) {
	t.Helper()
	start := got()
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(3 * time.Millisecond)
	defer tick.Stop()
	for seq := uint16(1); got()-start < want; seq++ {
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d of %d packets arrived", what, got()-start, want)
		}
		send(seq)
		<-tick.C
	}
}

// connect runs the outbound exchange (browser offers) and waits for DTLS.
func connectOutbound(t testing.TB, h *Hub, br *browser, f *far, answerCodecs []sdp.Codec) (*Bridge, []byte, []byte) {
	t.Helper()
	b, plainOffer, err := h.NewFromOffer(context.Background(), br.offer(sdp.SendRecv))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	f.learn(plainOffer)
	web, err := b.ToBrowser(f.sdp(1, answerCodecs, sdp.SendRecv))
	if err != nil {
		t.Fatal(err)
	}
	br.applyAnswer(web)
	kit.WaitFor(t, 10*time.Second, "dtls connected", func() bool { return b.Stats().DTLS == "connected" && br.connected() })
	return b, plainOffer, web
}

func contains(t testing.TB, body []byte, lines ...string) {
	t.Helper()
	for _, l := range lines {
		if !strings.Contains(string(body), l) {
			t.Errorf("description lacks %q:\n%s", l, body)
		}
	}
}

func lacks(t testing.TB, body []byte, lines ...string) {
	t.Helper()
	for _, l := range lines {
		if strings.Contains(string(body), l) {
			t.Errorf("description has %q:\n%s", l, body)
		}
	}
}

// proxy forwards UDP between one client and target, as a network path
// would. A test can cut it (a browser whose machine went away), and it
// keeps the client's last SRTP packet, which inject sends on again from
// the proxy's address (an attacker on the path replaying or forging).
type proxy struct {
	conn   *net.UDPConn
	target netip.AddrPort
	cut    atomic.Bool
	mu     sync.Mutex
	last   []byte
	wg     sync.WaitGroup
}

func newProxy(t *testing.T, target netip.AddrPort) *proxy {
	conn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(loopback, 0)))
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{conn: conn, target: target}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		buf := make([]byte, maxPacket)
		var client netip.AddrPort
		for {
			n, from, err := conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				continue
			}
			if p.cut.Load() {
				continue
			}
			to := target
			if from == target {
				to = client
			} else {
				client = from
				if n > 12 && buf[0]>>6 == 2 && !isRTCP(buf[1]) {
					p.mu.Lock()
					p.last = append(p.last[:0], buf[:n]...)
					p.mu.Unlock()
				}
			}
			if to.IsValid() {
				_, _ = conn.WriteToUDPAddrPort(buf[:n], to)
			}
		}
	}()
	t.Cleanup(func() { _ = conn.Close(); p.wg.Wait() })
	return p
}

func (p *proxy) addr() netip.AddrPort { return p.conn.LocalAddr().(*net.UDPAddr).AddrPort() }

// route rewrites the target's host candidate in an answer to the proxy's,
// so the browser reaches the target only through p.
func (p *proxy) route(answer []byte) []byte {
	return []byte(strings.ReplaceAll(string(answer), " "+itoa(uint32(p.target.Port()))+" typ host",
		" "+itoa(uint32(p.addr().Port()))+" typ host"))
}

// lastSRTP is a copy of the client's last SRTP packet, or nil.
func (p *proxy) lastSRTP() []byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.last == nil {
		return nil
	}
	return append([]byte(nil), p.last...)
}

func (p *proxy) inject(b []byte) { _, _ = p.conn.WriteToUDPAddrPort(b, p.target) }
