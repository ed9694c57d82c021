// Command webrtcbench measures the WebRTC media leg: how many bridged
// browser ⇄ plain-RTP calls at 50 pps each way one bridge process carries
// with < 0.5 % loss, its CPU per call, and how fast it sets calls up (ICE +
// DTLS handshakes per second).
//
// The bridges run in a child process (this binary with -serve), so its
// CPU is the bridge's alone; the parent plays the browsers (pion
// PeerConnections on 127.0.0.1) and the far ends (UDP sockets). On a small
// box both compete for the same cores: the table shows both.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/interceptor"
	"github.com/pion/logging"
	"github.com/pion/rtp"
	pion "github.com/pion/webrtc/v4"
	"golang.org/x/sync/errgroup"
)

func main() {
	var (
		serveMode = flag.Bool("serve", false, "run as the bridge process (internal)")
		stepsArg  = flag.String("steps", "50,100,200,400,600,800", "concurrent calls per step (the run ends at the first step over -max-loss)")
		window    = flag.Duration("window", 10*time.Second, "measuring window per step")
		conc      = flag.Int("setup-concurrency", 8, "calls set up in parallel")
		maxLoss   = flag.Float64("max-loss", 0.5, "percent loss that ends the run")
	)
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
	rows, err := run(steps, *window, *conc, *maxLoss)
	fmt.Print(table(rows, *window, *conc))
	if err != nil {
		log.Fatal(err)
	}
}

type row struct {
	calls      int
	setupRate  float64 // calls connected per second (ICE + DTLS + SDP round trip)
	sent, lost [2]uint64
	bridgeCPU  float64 // cores
	driverCPU  float64
	rssMB      float64
	failed     int
	bridgePPS  float64
	clean      bool
	short      bool          // the driver could not offer 95 % of the rate
	setupCPU   time.Duration // bridge CPU per call set up
}

func run(steps []int, window time.Duration, conc int, maxLoss float64) ([]row, error) {
	bin, err := os.Executable()
	if err != nil {
		return nil, err
	}
	child := exec.Command(bin, "-serve")
	child.Stderr = os.Stderr
	stdin, err := child.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := child.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := child.Start(); err != nil {
		return nil, err
	}
	c := &client{w: stdin, waiting: make(map[int]chan reply)}
	go c.read(stdout)
	defer func() {
		_ = stdin.Close()
		_ = child.Wait()
	}()

	d := &driver{c: c}
	defer d.close()
	var rows []row
	for _, n := range steps {
		r := row{calls: n}
		start, cpu0 := time.Now(), procCPU(child.Process.Pid)
		if err := d.grow(n, conc); err != nil {
			return rows, fmt.Errorf("setting up %d calls: %w", n, err)
		}
		r.setupRate = float64(n-d.before) / time.Since(start).Seconds()
		r.setupCPU = (procCPU(child.Process.Pid) - cpu0) / time.Duration(max(1, n-d.before))
		if err := d.measure(&r, window, child.Process.Pid); err != nil {
			return rows, err
		}
		loss := 100 * float64(r.lost[0]+r.lost[1]) / float64(max(1, r.sent[0]+r.sent[1]))
		r.short = r.bridgePPS < 0.95*float64(100*n)
		r.clean = loss < maxLoss && r.failed == 0 && !r.short
		rows = append(rows, r)
		log.Printf("%d calls: loss %.3f%%, bridge %.2f cores, setup %.1f/s", n, loss, r.bridgeCPU, r.setupRate)
		if !r.clean {
			break
		}
	}
	_, err = c.call(request{Op: "closeall"})
	return rows, err
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
	select {
	case rep := <-ch:
		if rep.Err != "" {
			return rep, errors.New(rep.Err)
		}
		return rep, nil
	case <-time.After(30 * time.Second):
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
	wg       sync.WaitGroup
}

type driver struct {
	c      *client
	calls  []*call
	before int
}

func (d *driver) close() {
	for _, cl := range d.calls {
		_ = cl.pc.Close()
		_ = cl.far.Close()
		cl.wg.Wait()
	}
}

// grow sets calls up until there are n.
func (d *driver) grow(n, conc int) error {
	d.before = len(d.calls)
	var mu sync.Mutex
	g, ctx := errgroup.WithContext(context.Background())
	g.SetLimit(conc)
	for range n - len(d.calls) {
		g.Go(func() error {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			cl, err := d.newCall()
			if err != nil {
				return err
			}
			mu.Lock()
			d.calls = append(d.calls, cl)
			mu.Unlock()
			return nil
		})
	}
	return g.Wait()
}

var quiet = logging.NewDefaultLeveledLoggerForScope("", logging.LogLevelDisabled, io.Discard)

type quietFactory struct{}

func (quietFactory) NewLogger(string) logging.LeveledLogger { return quiet }

func (d *driver) newCall() (*call, error) {
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
	se.SetIncludeLoopbackCandidate(true)
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	se.SetNetworkTypes([]pion.NetworkType{pion.NetworkTypeUDP4})
	se.SetInterfaceFilter(func(name string) bool { return name == "lo" })
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
	cl := &call{pc: pc, track: &rawTrack{}, far: far}
	connected := make(chan struct{})
	var once sync.Once
	pc.OnConnectionStateChange(func(s pion.PeerConnectionState) {
		if s == pion.PeerConnectionStateConnected {
			once.Do(func() { close(connected) })
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
			if _, _, err := far.ReadFromUDPAddrPort(buf); err != nil {
				return
			}
			cl.farN.Add(1)
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
	<-gathered
	rep, err := d.c.call(request{Op: "new", Offer: pc.LocalDescription().SDP, Far: far.LocalAddr().String()})
	if err != nil {
		return fail(err)
	}
	cl.plain = netip.MustParseAddrPort(rep.Plain)
	if err := pc.SetRemoteDescription(pion.SessionDescription{Type: pion.SDPTypeAnswer, SDP: rep.Answer}); err != nil {
		return fail(err)
	}
	select {
	case <-connected:
	case <-time.After(20 * time.Second):
		return fail(errors.New("browser did not connect within 20s"))
	}
	return cl, nil
}

// measure runs every call at 50 pps each way for window: each call sends
// once per 20 ms, the calls spread over the 20 ms, from one sender
// goroutine per core so the driver is not the bottleneck.
func (d *driver) measure(r *row, window time.Duration, pid int) error {
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
				for time.Since(t0) < dur {
					<-tick.C
					for due := int(time.Since(t0) / time.Millisecond); slot < due; slot++ {
						for k := slot % 20; k < len(mine); k += 20 {
							cl := mine[k]
							cl.seq++
							if cl.track.send(cl.seq) {
								sent[0].Add(1)
							}
							pkt[2], pkt[3] = byte(cl.seq>>8), byte(cl.seq)
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
	pace(time.Second)                  // warm-up
	time.Sleep(200 * time.Millisecond) // let the warm-up packets land
	b0, f0 := snapshot()
	sent[0].Store(0)
	sent[1].Store(0)
	cpu0, wall0, self0 := procCPU(pid), time.Now(), selfCPU()
	pace(window)
	cpu1, wall1, self1 := procCPU(pid), time.Now(), selfCPU()
	time.Sleep(300 * time.Millisecond) // in flight at the end still counts
	b1, f1 := snapshot()
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
	r.bridgePPS = float64(r.sent[0]+r.sent[1]) / secs
	r.rssMB = procRSS(pid)
	st, err := d.c.call(request{Op: "stats"})
	if err != nil {
		return err
	}
	r.failed = st.Failed
	return nil
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

func table(rows []row, window time.Duration, conc int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "\nWebRTC ⇄ RTP bridge: calls at 50 pps each way, %s windows, bridge in its own process\n\n", window)
	b.WriteString("| calls | pps through bridge (target) | loss browser→far | loss far→browser | bridge CPU (cores) | CPU per call (% core) | µs per packet | bridge RSS MB | driver CPU (cores) | setup rate (calls/s) | bridge CPU per setup | clean |\n")
	b.WriteString("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |\n")
	for _, r := range rows {
		pct := func(i int) string {
			return fmt.Sprintf("%.3f %%", 100*float64(r.lost[i])/float64(max(1, r.sent[i])))
		}
		clean := fmt.Sprint(r.clean)
		if r.short {
			clean = "driver short"
		}
		fmt.Fprintf(&b, "| %d | %.0f (%d) | %s | %s | %.2f | %.2f | %.1f | %.0f | %.2f | %.1f | %.1f ms | %s |\n",
			r.calls, r.bridgePPS, 100*r.calls, pct(0), pct(1), r.bridgeCPU, 100*r.bridgeCPU/float64(r.calls),
			1e6*r.bridgeCPU/max(1, r.bridgePPS), r.rssMB, r.driverCPU, r.setupRate,
			float64(r.setupCPU.Microseconds())/1000, clean)
	}
	fmt.Fprintf(&b, "\nsetup rate: new calls per second at %d in parallel, each an SDP round trip to the bridge process, ICE-lite checks and a DTLS handshake (ECDHE P-256, ECDSA), both ends pion on the same cores; bridge CPU per setup gives its handshake capacity (1 s / that = setups per core-second).\n", conc)
	return b.String()
}
