// Command webrtcbench measures the WebRTC media leg: how many bridged
// browser ⇄ plain-RTP calls at 50 pps each way one bridge process carries
// with < 0.5 % loss, its CPU per call, and how fast it sets calls up (ICE +
// DTLS handshakes per second) — edgewise's bridge (media/webrtc) and, side
// by side in the same run, rtpengine doing the same job (-peers).
//
// Each bridge runs in a process of its own, so its CPU is the bridge's
// alone: edgewise's Hub in a child (this binary with -serve), rtpengine
// started here and driven over its ng protocol. This process plays the
// browsers (pion PeerConnections on 127.0.0.1, full ICE, offering) and the
// far ends (UDP sockets answering PCMU); on a small box they compete for
// the same cores as the bridge: the table shows both.
//
// At each step the bridges take turns, each from no calls: set n calls up,
// send for a window, count loss per direction, tear everything down. A
// bridge's series ends at its first step that is not clean; a bridge that
// does not start, or a step that cannot run, is a row and the run goes on.
package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	mrand "math/rand/v2"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/pion/dtls/v3"
	"github.com/pion/ice/v4"
	"github.com/pion/interceptor"
	"github.com/pion/logging"
	"github.com/pion/rtp"
	psdp "github.com/pion/sdp/v3"
	pion "github.com/pion/webrtc/v4"
	"golang.org/x/sync/errgroup"

	"github.com/edgewise-sip/edgewise/test/bench/relaytest"
)

func main() {
	var (
		serveMode = flag.Bool("serve", false, "run as the bridge process (internal)")
		stepsArg  = flag.String("steps", "50,100,200,400,600,800,1000", "concurrent calls per step (each bridge's series ends at its first step over -max-loss)")
		window    = flag.Duration("window", 10*time.Second, "measuring window per step")
		conc      = flag.Int("setup-concurrency", 8, "calls set up in parallel")
		maxLoss   = flag.Float64("max-loss", 0.5, "percent loss that ends a bridge's series")
		peers     = flag.String("peers", "rtpengine", "bridges measured beside edgewise (rtpengine, or empty for none)")
		rtpeBin   = flag.String("rtpengine", "/usr/bin/rtpengine", "rtpengine binary")
		iceLite   = flag.Bool("rtpengine-ice-lite", false, "rtpengine answers as ICE-lite, like edgewise (default: full ICE, what rtpengine does unless told)")
		quietWait = flag.Duration("quiet-wait", 10*time.Second, "before each step, wait this long at most for the box to be idle")
		profDir   = flag.String("profile", "", "write edgewise's bridge CPU profiles of each step's setup and window into this directory")
		procs     = flag.Int("bridge-procs", 0, "GOMAXPROCS of edgewise's bridge process (0: the Go default, one per CPU)")
		srtp      = flag.String("srtp", "", "SRTP profiles the browsers offer, comma-separated (empty: pion's default, AEAD_AES_256_GCM first)")
	)
	flag.BoolVar(&trace, "trace", false, "log the browsers' pion messages and the first rtpengine call's descriptions and state")
	flag.Parse()
	log.SetFlags(0)
	if *serveMode {
		if err := serve(os.Stdin, os.Stdout); err != nil {
			log.Fatal(err)
		}
		return
	}
	var steps []int
	for _, s := range strings.Split(*stepsArg, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n <= 0 {
			log.Fatalf("bad step %q", s)
		}
		steps = append(steps, n)
	}
	profiles, err := parseSRTP(*srtp)
	if err != nil {
		log.Fatal(err)
	}
	targets := []target{&edgewiseTarget{procs: *procs}}
	for _, p := range strings.Split(*peers, ",") {
		switch strings.TrimSpace(p) {
		case "":
		case "rtpengine":
			targets = append(targets, &rtpengineTarget{bin: *rtpeBin, iceLite: *iceLite})
		default:
			log.Fatalf("unknown peer %q", p)
		}
	}
	// Bounds the whole run: every step is bounded on its own, this is the
	// backstop that keeps make bench going.
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Minute)
	defer cancel()
	b := bench{steps: steps, window: *window, conc: *conc, maxLoss: *maxLoss, quietWait: *quietWait,
		profDir: *profDir, srtp: profiles}
	res := b.run(ctx, targets)
	fmt.Print(table(res, b))
}

// trace turns on the interop details (-trace).
var trace bool

// bench is one run's parameters.
type bench struct {
	steps     []int
	window    time.Duration
	conc      int
	maxLoss   float64
	quietWait time.Duration
	profDir   string
	srtp      []dtls.SRTPProtectionProfile
}

// series is one bridge's rows, in step order.
type series struct {
	name     string
	startErr string
	rows     []row
}

type row struct {
	calls      int
	err        string  // the step could not run (setup failed, …): the rest is empty
	setupRate  float64 // calls connected per second (ICE + DTLS + SDP round trip)
	sent, lost [2]uint64
	bridgeCPU  float64 // cores
	driverCPU  float64
	restCPU    float64 // the rest of the box during the window, kernel included
	idleBefore float64 // box busy just before the step (other work on the machine)
	rssMB      float64
	failed     int
	bridgePPS  float64
	clean      bool
	short      bool          // the driver could not offer 95 % of the rate
	setupCPU   time.Duration // bridge CPU per call set up
	cipher     string        // SRTP profile the first call negotiated
	rcvbufErrs uint64        // UDP datagrams the kernel dropped (box-wide) in the window
}

func (r row) loss() float64 {
	return 100 * float64(r.lost[0]+r.lost[1]) / float64(max(1, r.sent[0]+r.sent[1]))
}

// run measures every target at each step in turn (same steps, same
// packet rate, same loss rule), so background load that comes and goes
// hits them alike. Each step starts from no calls: the other bridge's
// idle calls would otherwise load the box while one is measured. A bridge
// that fails to start, or a step that cannot run, is a row, and the run
// goes on with the others.
func (b bench) run(ctx context.Context, targets []target) []series {
	out := make([]series, len(targets))
	done := make([]bool, len(targets))
	for i, t := range targets {
		out[i].name = t.name()
		if err := t.start(ctx); err != nil {
			out[i].startErr = err.Error()
			done[i] = true
			log.Printf("%s: not started: %v", t.name(), err)
			continue
		}
		defer t.stop()
	}
	for _, n := range b.steps {
		for i, t := range targets {
			if done[i] || ctx.Err() != nil {
				continue
			}
			r := b.step(ctx, t, n)
			out[i].rows = append(out[i].rows, r)
			if r.err != "" {
				log.Printf("%-9s %d calls: %s", t.name(), n, r.err)
			} else {
				log.Printf("%-9s %d calls: loss %.3f%% (kernel drops %d), bridge %.2f cores, driver %.2f, rest %.2f (before %.2f), setup %.1f/s, failed %d, %s",
					t.name(), n, r.loss(), r.rcvbufErrs, r.bridgeCPU, r.driverCPU, r.restCPU, r.idleBefore, r.setupRate, r.failed, r.cipher)
			}
			done[i] = !r.clean
		}
	}
	return out
}

// step sets n calls up on t, measures them and tears them down.
func (b bench) step(ctx context.Context, t target, n int) row {
	r := row{calls: n}
	r.idleBefore = relaytest.WaitQuiet(ctx, b.quietWait, 0.3)
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	d := &driver{t: t, srtp: b.srtp}
	defer func() {
		// The bridge first: its ending is not a failure, a browser
		// hanging up on a live bridge is one. Its own deadline, so that
		// a step that ran out of time still leaves no calls behind.
		tctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if err := t.closeAll(tctx); err != nil && r.err == "" {
			r.err = "teardown: " + err.Error()
		}
		d.close()
	}()
	pid := t.pid()
	ew, _ := t.(*edgewiseTarget)
	profiling := b.profDir != "" && ew != nil
	if profiling {
		if err := ew.profile(filepath.Join(b.profDir, fmt.Sprintf("edgewise-setup-%d.pprof", n))); err != nil {
			r.err = "profile: " + err.Error()
			return r
		}
	}
	start, cpu0 := time.Now(), procCPU(pid)
	err := d.grow(ctx, n, b.conc)
	if profiling {
		_ = ew.profile("")
	}
	if err != nil {
		r.err = fmt.Sprintf("setup failed after %d calls: %v", len(d.calls), err)
		return r
	}
	r.setupRate = float64(n) / time.Since(start).Seconds()
	r.setupCPU = (procCPU(pid) - cpu0) / time.Duration(n)
	r.cipher = d.cipher
	var prof string
	if profiling {
		prof = filepath.Join(b.profDir, fmt.Sprintf("edgewise-%d.pprof", n))
	}
	if err := d.measure(ctx, &r, b.window, pid, prof); err != nil {
		r.err = "measuring: " + err.Error()
		return r
	}
	r.short = r.bridgePPS < 0.95*float64(100*n)
	r.clean = r.loss() < b.maxLoss && r.failed == 0 && !r.short
	return r
}

// client talks to the bridge process.
type client struct {
	mu      sync.Mutex
	w       io.Writer
	seq     int
	waiting map[int]chan reply
}

func (c *client) read(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var rep reply
		if json.Unmarshal(sc.Bytes(), &rep) != nil {
			continue
		}
		c.mu.Lock()
		ch := c.waiting[rep.ID]
		delete(c.waiting, rep.ID)
		c.mu.Unlock()
		if ch != nil {
			ch <- rep
		}
	}
}

func (c *client) call(req request) (reply, error) {
	ch := make(chan reply, 1)
	c.mu.Lock()
	c.seq++
	req.ID = c.seq
	c.waiting[req.ID] = ch
	raw, _ := json.Marshal(req)
	_, err := c.w.Write(append(raw, '\n'))
	c.mu.Unlock()
	if err != nil {
		return reply{}, err
	}
	t := time.NewTimer(30 * time.Second)
	defer t.Stop()
	select {
	case rep := <-ch:
		if rep.Err != "" {
			return rep, errors.New(rep.Err)
		}
		return rep, nil
	case <-t.C:
		c.mu.Lock()
		delete(c.waiting, req.ID)
		c.mu.Unlock()
		return reply{}, errors.New("bridge process did not answer")
	}
}

// call is one browser and its far end.
type call struct {
	pc       *pion.PeerConnection
	track    *rawTrack
	far      *net.UDPConn
	plain    netip.AddrPort
	browserN atomic.Uint64 // received by the browser
	farN     atomic.Uint64 // received by the far end
	seq      uint16
	ssrc     uint32 // the far end's
	wg       sync.WaitGroup
}

// driver plays one step's browsers and far ends against one target.
type driver struct {
	t     target
	srtp  []dtls.SRTPProtectionProfile
	calls []*call
	// dropped counts browsers whose connection went disconnected or
	// failed after it was up: the same failure rule for every bridge.
	dropped atomic.Int64
	cipher  string
}

func (d *driver) close() {
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for _, cl := range d.calls {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			_ = cl.pc.Close()
			_ = cl.far.Close()
			cl.wg.Wait()
		}()
	}
	wg.Wait()
	d.calls = nil
}

// grow sets calls up until there are n.
func (d *driver) grow(ctx context.Context, n, conc int) error {
	var mu sync.Mutex
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(conc)
	for range n - len(d.calls) {
		g.Go(func() error {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			cl, err := d.newCall(ctx)
			if err != nil {
				return err
			}
			mu.Lock()
			d.calls = append(d.calls, cl)
			first := len(d.calls) == 1
			mu.Unlock()
			if first {
				d.cipher = negotiated(cl.pc)
			}
			return nil
		})
	}
	return g.Wait()
}

// negotiated names the SRTP profile and DTLS cipher suite of pc.
func negotiated(pc *pion.PeerConnection) string {
	for _, s := range pc.GetStats() {
		if ts, ok := s.(pion.TransportStats); ok && ts.SRTPCipher != "" {
			return ts.SRTPCipher + ", " + ts.DTLSCipher
		}
	}
	return "?"
}

var quiet = logging.NewDefaultLeveledLoggerForScope("", logging.LogLevelDisabled, io.Discard)

type quietFactory struct{}

func (quietFactory) NewLogger(string) logging.LeveledLogger { return quiet }

func (d *driver) newCall(ctx context.Context) (*call, error) {
	me := &pion.MediaEngine{}
	for _, p := range []pion.RTPCodecParameters{
		{RTPCodecCapability: pion.RTPCodecCapability{MimeType: pion.MimeTypeOpus, ClockRate: 48000, Channels: 2}, PayloadType: 111},
		{RTPCodecCapability: pion.RTPCodecCapability{MimeType: pion.MimeTypePCMU, ClockRate: 8000}, PayloadType: 0},
		{RTPCodecCapability: pion.RTPCodecCapability{MimeType: "audio/telephone-event", ClockRate: 8000, SDPFmtpLine: "0-16"}, PayloadType: 126},
	} {
		if err := me.RegisterCodec(p, pion.RTPCodecTypeAudio); err != nil {
			return nil, err
		}
	}
	var se pion.SettingEngine
	se.LoggerFactory = quietFactory{}
	if trace {
		lf := logging.NewDefaultLoggerFactory()
		lf.DefaultLogLevel = logging.LogLevelDebug
		se.LoggerFactory = lf
	}
	se.SetIncludeLoopbackCandidate(true)
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	se.SetNetworkTypes([]pion.NetworkType{pion.NetworkTypeUDP4})
	se.SetInterfaceFilter(func(name string) bool { return name == "lo" })
	// Chrome plays an audio stream whose SSRC the answer did not declare
	// (a SIP far end seldom declares one, and rtpengine passes its
	// description on); pion as the offerer only does when told.
	se.SetHandleUndeclaredSSRCWithoutAnswer(true)
	if len(d.srtp) > 0 {
		se.SetSRTPProtectionProfiles(d.srtp...)
	}
	api := pion.NewAPI(pion.WithMediaEngine(me), pion.WithSettingEngine(se), pion.WithInterceptorRegistry(&interceptor.Registry{}))
	pc, err := api.NewPeerConnection(pion.Configuration{})
	if err != nil {
		return nil, err
	}
	far, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		_ = pc.Close()
		return nil, err
	}
	cl := &call{pc: pc, track: &rawTrack{}, far: far, ssrc: mrand.Uint32() | 1}
	connected := make(chan struct{})
	var once, lost sync.Once
	pc.OnConnectionStateChange(func(s pion.PeerConnectionState) {
		switch s {
		case pion.PeerConnectionStateConnected:
			once.Do(func() { close(connected) })
		case pion.PeerConnectionStateDisconnected, pion.PeerConnectionStateFailed:
			lost.Do(func() { d.dropped.Add(1) })
		}
	})
	pc.OnTrack(func(tr *pion.TrackRemote, _ *pion.RTPReceiver) {
		cl.wg.Add(1)
		go func() {
			defer cl.wg.Done()
			buf := make([]byte, 1500)
			for {
				if _, _, err := tr.Read(buf); err != nil {
					return
				}
				cl.browserN.Add(1)
			}
		}()
	})
	cl.wg.Add(1)
	go func() {
		defer cl.wg.Done()
		buf := make([]byte, 1500)
		for {
			n, _, err := far.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			// Media only: a bridge's own RTCP is not a relayed packet.
			if n >= 2 && (buf[1] < 192 || buf[1] > 223) {
				cl.farN.Add(1)
			}
		}
	}()
	fail := func(err error) (*call, error) {
		_ = pc.Close()
		_ = far.Close()
		cl.wg.Wait()
		return nil, err
	}
	if _, err := pc.AddTrack(cl.track); err != nil {
		return fail(err)
	}
	offer, err := pc.CreateOffer(nil)
	if err != nil {
		return fail(err)
	}
	gathered := pion.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(offer); err != nil {
		return fail(err)
	}
	select {
	case <-gathered:
	case <-ctx.Done():
		return fail(ctx.Err())
	}
	offerSDP, err := defaultCandidate(pc.LocalDescription().SDP)
	if err != nil {
		return fail(err)
	}
	answer, plain, err := d.t.bridge(ctx, offerSDP, far.LocalAddr().(*net.UDPAddr).AddrPort())
	if err != nil {
		return fail(err)
	}
	cl.plain = plain
	if err := pc.SetRemoteDescription(pion.SessionDescription{Type: pion.SDPTypeAnswer, SDP: answer}); err != nil {
		return fail(fmt.Errorf("browser: the bridge's answer: %w", err))
	}
	t := time.NewTimer(20 * time.Second)
	defer t.Stop()
	select {
	case <-connected:
	case <-t.C:
		return fail(errors.New("browser did not connect within 20s"))
	case <-ctx.Done():
		return fail(ctx.Err())
	}
	return cl, nil
}

// defaultCandidate writes the first host candidate into the m= port and
// c= address, as a browser does once it has gathered: pion leaves "9" and
// 0.0.0.0 there, which rtpengine reads as RFC 2543 hold (it offers the far
// end sendonly at 0.0.0.0). edgewise's bridge reads the candidates either
// way.
func defaultCandidate(offer string) (string, error) {
	var d psdp.SessionDescription
	if err := d.UnmarshalString(offer); err != nil {
		return "", err
	}
	for _, m := range d.MediaDescriptions {
		for _, a := range m.Attributes {
			f := strings.Fields(a.Value)
			if a.Key != "candidate" || len(f) < 8 || f[6] != "typ" || f[7] != "host" {
				continue
			}
			port, err := strconv.Atoi(f[5])
			if err != nil {
				return "", fmt.Errorf("candidate %q: %w", a.Value, err)
			}
			m.MediaName.Port = psdp.RangedPort{Value: port}
			m.ConnectionInformation = &psdp.ConnectionInformation{NetworkType: "IN", AddressType: "IP4", Address: &psdp.Address{Address: f[4]}}
			break
		}
	}
	out, err := d.Marshal()
	return string(out), err
}

// measure runs every call at 50 pps each way for window: each call sends
// once per 20 ms, the calls spread over the 20 ms, from one sender
// goroutine per core so the driver is not the bottleneck. With prof set
// (edgewise only), the bridge process writes its CPU profile of the
// window there.
func (d *driver) measure(ctx context.Context, r *row, window time.Duration, pid int, prof string) error {
	snapshot := func() (b, f uint64) {
		for _, cl := range d.calls {
			b += cl.browserN.Load()
			f += cl.farN.Load()
		}
		return
	}
	var sent [2]atomic.Uint64
	pace := func(dur time.Duration) {
		senders := runtime.GOMAXPROCS(0)
		var wg sync.WaitGroup
		for g := range senders {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var mine []*call
				for i := g; i < len(d.calls); i += senders {
					mine = append(mine, d.calls[i])
				}
				pkt := make([]byte, 172)
				pkt[0] = 0x80
				// Slots follow the clock, not the ticker, which drops
				// ticks when the box is busy: 50 packets a second each.
				tick := time.NewTicker(time.Millisecond)
				defer tick.Stop()
				t0, slot := time.Now(), 0
				for time.Since(t0) < dur && ctx.Err() == nil {
					<-tick.C
					for due := int(time.Since(t0) / time.Millisecond); slot < due; slot++ {
						for k := slot % 20; k < len(mine); k += 20 {
							cl := mine[k]
							cl.seq++
							if cl.track.send(cl.seq) {
								sent[0].Add(1)
							}
							pkt[2], pkt[3] = byte(cl.seq>>8), byte(cl.seq)
							binary.BigEndian.PutUint32(pkt[4:], uint32(cl.seq)*160)
							binary.BigEndian.PutUint32(pkt[8:], cl.ssrc)
							if _, err := cl.far.WriteToUDPAddrPort(pkt, cl.plain); err == nil {
								sent[1].Add(1)
							}
						}
					}
				}
			}()
		}
		wg.Wait()
	}
	pace(time.Second) // warm-up
	// Let the warm-up packets land: wait until the counts stop moving
	// (bounded), not a fixed time.
	settle(snapshot, 200*time.Millisecond)
	b0, f0 := snapshot()
	sent[0].Store(0)
	sent[1].Store(0)
	d.dropped.Store(0)
	if prof != "" {
		if err := d.t.(*edgewiseTarget).profile(prof); err != nil {
			return err
		}
	}
	mine := []int{pid, os.Getpid()}
	cpu0, wall0, self0, others0, drops0 := procCPU(pid), time.Now(), selfCPU(), othersCPU(mine), udpRcvbufErrors()
	pace(window)
	cpu1, wall1, self1, others1 := procCPU(pid), time.Now(), selfCPU(), othersCPU(mine)
	if prof != "" {
		if err := d.t.(*edgewiseTarget).profile(""); err != nil {
			return err
		}
	}
	settle(snapshot, 300*time.Millisecond) // in flight at the end still counts
	b1, f1 := snapshot()
	r.rcvbufErrs = udpRcvbufErrors() - drops0
	r.sent = [2]uint64{sent[0].Load(), sent[1].Load()}
	recv := [2]uint64{f1 - f0, b1 - b0} // browser→far arrives at far
	for i := range 2 {
		if recv[i] < r.sent[i] {
			r.lost[i] = r.sent[i] - recv[i]
		}
	}
	secs := wall1.Sub(wall0).Seconds()
	r.bridgeCPU = (cpu1 - cpu0).Seconds() / secs
	r.driverCPU = (self1 - self0).Seconds() / secs
	var rest time.Duration
	for p, t := range others1 {
		rest += t - others0[p] // a process started in the window counts from 0
	}
	r.restCPU = rest.Seconds() / secs
	r.bridgePPS = float64(r.sent[0]+r.sent[1]) / secs
	r.rssMB = procRSS(pid)
	failed, err := d.t.failed(ctx)
	if err != nil {
		return err
	}
	r.failed = failed + int(d.dropped.Load())
	return nil
}

// settle waits until the received counts have not moved for quiet, at
// most 2 s.
func settle(snapshot func() (uint64, uint64), quiet time.Duration) {
	deadline := time.Now().Add(2 * time.Second)
	lb, lf := snapshot()
	still := time.Now()
	for time.Now().Before(deadline) && time.Since(still) < quiet {
		time.Sleep(20 * time.Millisecond)
		b, f := snapshot()
		if b != lb || f != lf {
			lb, lf, still = b, f, time.Now()
		}
	}
}

func parseSRTP(s string) ([]dtls.SRTPProtectionProfile, error) {
	names := map[string]dtls.SRTPProtectionProfile{
		"AEAD_AES_256_GCM":       dtls.SRTP_AEAD_AES_256_GCM,
		"AEAD_AES_128_GCM":       dtls.SRTP_AEAD_AES_128_GCM,
		"AES128_CM_HMAC_SHA1_80": dtls.SRTP_AES128_CM_HMAC_SHA1_80,
		"AES128_CM_HMAC_SHA1_32": dtls.SRTP_AES128_CM_HMAC_SHA1_32,
	}
	var out []dtls.SRTPProtectionProfile
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		p, ok := names[strings.TrimPrefix(strings.ToUpper(f), "SRTP_")]
		if !ok {
			return nil, fmt.Errorf("unknown SRTP profile %q (AEAD_AES_256_GCM, AEAD_AES_128_GCM, AES128_CM_HMAC_SHA1_80, AES128_CM_HMAC_SHA1_32)", f)
		}
		out = append(out, p)
	}
	return out, nil
}

// rawTrack is the browser's microphone: PCMU with the negotiated SSRC.
type rawTrack struct{ w atomic.Pointer[binding] }

type binding struct {
	w    pion.TrackLocalWriter
	ssrc uint32
}

func (t *rawTrack) Bind(ctx pion.TrackLocalContext) (pion.RTPCodecParameters, error) {
	t.w.Store(&binding{w: ctx.WriteStream(), ssrc: uint32(ctx.SSRC())})
	return ctx.CodecParameters()[0], nil
}
func (t *rawTrack) Unbind(pion.TrackLocalContext) error { t.w.Store(nil); return nil }
func (t *rawTrack) ID() string                          { return "audio" }
func (t *rawTrack) RID() string                         { return "" }
func (t *rawTrack) StreamID() string                    { return "bench" }
func (t *rawTrack) Kind() pion.RTPCodecType             { return pion.RTPCodecTypeAudio }

var payload = make([]byte, 160)

func (t *rawTrack) send(seq uint16) bool {
	b := t.w.Load()
	if b == nil {
		return false
	}
	h := rtp.Header{Version: 2, PayloadType: 0, SequenceNumber: seq, Timestamp: uint32(seq) * 160, SSRC: b.ssrc}
	n, err := b.w.WriteRTP(&h, payload)
	return err == nil && n > 0
}

// procCPU is a process's user + system time from /proc (clock ticks of
// 10 ms on Linux).
func procCPU(pid int) time.Duration {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(raw)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	u, _ := strconv.ParseInt(f[11], 10, 64)
	k, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(u+k) * 10 * time.Millisecond
}

func procRSS(pid int) float64 {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(raw), "\n") {
		if strings.HasPrefix(l, "VmRSS:") {
			kb, _ := strconv.ParseFloat(strings.Fields(l)[1], 64)
			return kb / 1024
		}
	}
	return 0
}

func selfCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// udpRcvbufErrors is the kernel's count of UDP datagrams dropped because a
// socket's receive buffer was full (all sockets on the box): loss there
// means a reader fell behind, loss elsewhere is inside a process.
func udpRcvbufErrors() uint64 {
	raw, err := os.ReadFile("/proc/net/snmp")
	if err != nil {
		return 0
	}
	var names []string
	for _, l := range strings.Split(string(raw), "\n") {
		f := strings.Fields(l)
		if len(f) == 0 || f[0] != "Udp:" {
			continue
		}
		if names == nil {
			names = f
			continue
		}
		for i, n := range names {
			if n == "RcvbufErrors" && i < len(f) {
				v, _ := strconv.ParseUint(f[i], 10, 64)
				return v
			}
		}
	}
	return 0
}

// othersCPU is the CPU time of every process but those in mine, by pid,
// from /proc/PID/stat: each process's own precise figure, where the
// machine-wide /proc/stat samples ticks and misses much of short bursty
// work such as packet relaying. Processes that end within a window are
// missed.
func othersCPU(mine []int) map[int]time.Duration {
	out := map[int]time.Duration{}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return out
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || slices.Contains(mine, pid) {
			continue
		}
		out[pid] = procCPU(pid)
	}
	return out
}

func table(res []series, b bench) string {
	var o strings.Builder
	names := make([]string, len(res))
	for i, s := range res {
		names[i] = s.name
	}
	fmt.Fprintf(&o, "\nWebRTC ⇄ RTP bridge, %s: calls at 50 pps each way, %s windows, each bridge in its own process, bridges take turns at each step (%s)\n\n",
		strings.Join(names, " vs "), b.window, time.Now().UTC().Format("2006-01-02 15:04 UTC"))
	o.WriteString("| calls | bridge | pps through bridge (target) | loss browser→far | loss far→browser | bridge CPU (cores) | CPU per call (% core) | µs per packet | bridge RSS MB | driver CPU (cores) | rest of box (cores) | setup rate (calls/s) | bridge CPU per setup | kernel UDP drops | SRTP, DTLS | clean |\n")
	o.WriteString("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |\n")
	for _, s := range res {
		if s.startErr != "" {
			fmt.Fprintf(&o, "| — | %s | not started: %s ||||||||||||||\n", s.name, oneLine(s.startErr))
		}
	}
	for _, n := range b.steps {
		for _, s := range res {
			for _, r := range s.rows {
				if r.calls != n {
					continue
				}
				if r.err != "" {
					fmt.Fprintf(&o, "| %d | %s | %s |||||||||||||  false |\n", n, s.name, oneLine(r.err))
					continue
				}
				pct := func(i int) string {
					return fmt.Sprintf("%.3f %%", 100*float64(r.lost[i])/float64(max(1, r.sent[i])))
				}
				clean := fmt.Sprint(r.clean)
				switch {
				case r.short:
					clean = "driver short"
				case r.failed > 0:
					clean = fmt.Sprintf("false (%d failed)", r.failed)
				}
				fmt.Fprintf(&o, "| %d | %s | %.0f (%d) | %s | %s | %.2f | %.3f | %.1f | %.0f | %.2f | %.2f | %.1f | %.1f ms | %d | %s | %s |\n",
					r.calls, s.name, r.bridgePPS, 100*r.calls, pct(0), pct(1), r.bridgeCPU, 100*r.bridgeCPU/float64(r.calls),
					1e6*r.bridgeCPU/max(1, r.bridgePPS), r.rssMB, r.driverCPU, r.restCPU, r.setupRate,
					float64(r.setupCPU.Microseconds())/1000, r.rcvbufErrs, r.cipher, clean)
			}
		}
	}
	o.WriteString("\n")
	summary(&o, res)
	fmt.Fprintf(&o, "\nclean: loss < %.1f %% both ways, no browser connection lost, the driver offered ≥ 95 %% of the rate. "+
		"CPU per call: %% of one core per call at 50 pps each way (× 10,000 = µs of CPU per call-second). "+
		"kernel UDP drops: datagrams dropped box-wide because a socket's receive buffer was full (a reader fell behind; other loss is inside a process). "+
		"rest of box: CPU of every other process during the window (other work on a shared box; kernel threads included, softirq run in a process is that process's). "+
		"setup rate: new calls per second at %d in parallel, each an SDP round trip to the bridge, ICE checks and a DTLS handshake, both ends on the same cores; bridge CPU per setup gives its handshake capacity.\n",
		b.maxLoss, b.conc)
	return o.String()
}

// summary compares the first series (edgewise) with each peer: the most
// calls each carried cleanly, and CPU per call at the largest step both
// carried cleanly.
func summary(o *strings.Builder, res []series) {
	if len(res) < 2 {
		if n, ok := bestClean(res[0]); ok {
			fmt.Fprintf(o, "best clean: %s **%d calls**\n", res[0].name, n.calls)
		}
		return
	}
	ew := res[0]
	for _, peer := range res[1:] {
		a, okA := bestClean(ew)
		p, okP := bestClean(peer)
		fmt.Fprintf(o, "best clean: %s %s; %s %s", ew.name, callsCell(a, okA), peer.name, callsCell(p, okP))
		if okA && okP {
			fmt.Fprintf(o, "; ratio %s/%s = **%.2f×**", ew.name, peer.name, float64(a.calls)/float64(p.calls))
		}
		o.WriteString("\n")
		// CPU per call where both were clean, the largest such step.
		var ra, rp row
		found := false
		for _, x := range ew.rows {
			for _, y := range peer.rows {
				if x.clean && y.clean && x.calls == y.calls && x.calls >= ra.calls {
					ra, rp, found = x, y, true
				}
			}
		}
		if found {
			ca, cp := ra.bridgeCPU/float64(ra.calls), rp.bridgeCPU/float64(rp.calls)
			fmt.Fprintf(o, "CPU per call at %d calls (largest step both clean): %s %.0f µs/call-s, %s %.0f µs/call-s", ra.calls, ew.name, 1e6*ca, peer.name, 1e6*cp)
			if ca > 0 {
				fmt.Fprintf(o, "; %s/%s = **%.2f×** (> 1: edgewise cheaper)", peer.name, ew.name, cp/ca)
			}
			fmt.Fprintf(o, "; setup CPU %s %.1f ms, %s %.1f ms per call\n", ew.name, float64(ra.setupCPU.Microseconds())/1000, peer.name, float64(rp.setupCPU.Microseconds())/1000)
			// The largest step may have the box saturated (bridge +
			// driver ≈ all cores), which inflates CPU per packet: every
			// step both carried cleanly, for the whole curve.
			fmt.Fprintf(o, "CPU per call %s/%s at each step both clean:", peer.name, ew.name)
			for _, x := range ew.rows {
				for _, y := range peer.rows {
					if x.clean && y.clean && x.calls == y.calls && x.bridgeCPU > 0 {
						fmt.Fprintf(o, " %d: %.2f×;", x.calls, y.bridgeCPU/x.bridgeCPU)
					}
				}
			}
			o.WriteString("\n")
		}
	}
}

func bestClean(s series) (row, bool) {
	var b row
	ok := false
	for _, r := range s.rows {
		if r.clean && r.calls > b.calls {
			b, ok = r, true
		}
	}
	return b, ok
}

func callsCell(r row, ok bool) string {
	if !ok {
		return "none"
	}
	return fmt.Sprintf("**%d calls**", r.calls)
}

func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 300 {
		s = s[:300] + "…"
	}
	return strings.ReplaceAll(s, "|", "/")
}
