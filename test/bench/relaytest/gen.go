package relaytest

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"

	"github.com/edgewise-sip/edgewise/media/mmsg"
	"github.com/edgewise-sip/edgewise/media/sdp"
)

// Load is one run of the generator: Calls two-way calls (2 streams each,
// or 1 with OneWay) at PPS packets per second per stream, set up over ng,
// measured for Duration after Warmup. Every loop is bounded by the run's
// end time and by ctx.
type Load struct {
	NG       string // ng control address of the relay under test; empty with Direct
	Direct   bool   // no relay: generator to generator, the loopback baseline
	Calls    int
	PPS      int // per stream; default 50 (G.711, 20 ms)
	Size     int // bytes per packet with the 12-byte RTP header; default 172
	OneWay   bool
	Warmup   time.Duration // default 1 s; not counted
	Duration time.Duration // default 10 s
	// Sockets per side of the generator (default 4): every call's A end
	// uses one of them and its B end another, as many phones behind few
	// addresses would.
	Sockets int
	// SendBatch is packets per sendmmsg (default 32). 1 stamps every packet
	// just before it leaves, for latency runs.
	SendBatch int
	Addr      netip.Addr // generator address; default 127.0.0.1
	Tag       string     // call-id prefix
	PIDs      []int      // processes whose CPU use is reported (the relay)
	// LateAfter is the one-way delay past which a packet counts as lost,
	// as a receiver's jitter buffer would discard it (default 100 ms).
	// Without it a relay that falls behind would show deep socket queues
	// as latency, not loss.
	LateAfter time.Duration
}

// Result is what a Load measured over its window.
type Result struct {
	Calls, Streams int
	Offered        float64 // packets/s the schedule asked for
	SentPPS        float64 // packets/s sent in the window
	Sent, Received uint64  // in the window; Received counts only packets in time
	Late           uint64  // arrived after LateAfter (counted as lost)
	Loss           float64 // 1 - Received/Sent
	P50, P99, Max  time.Duration
	RelayCPU       float64   // cores used by PIDs in the window
	GenCPU         float64   // cores used by this process in the window
	GenCores       int       // CPUs this process may run on
	BoxCPU         float64   // cores busy machine-wide (user, system, softirq) in the window
	CoreBusy       []float64 // per CPU, cores busy in the window (index: CPU number)
	// GenDrops are datagrams the kernel dropped at the generator's own
	// receive queues (full: the generator did not read fast enough), from
	// the window's start until the drain ended; UDPDrops is the same for
	// every UDP socket of the machine (the relay's included).
	GenDrops, UDPDrops uint64
	Background         float64 // cores busy just before the step (set by Suite)
	Setup              time.Duration
	// RelayPin and GenPin are set by a pinned Suite: every thread of the
	// relay and of the generator, checked right after the step.
	RelayPin, GenPin *PinCheck
	// Failed are earlier tries of the same step that were not clean
	// (Suite.Retries), oldest first.
	Failed []Result
}

// MaxCleanP99 is the one-way p99 above which a step is not clean, however
// little it lost: a relay that delivers 99.8 % of the packets 120 ms late
// is a queue, not a relay (a call would hear it). Through loopback with no
// relay the p99 is well under a millisecond, so this bounds what the relay
// adds.
const MaxCleanP99 = 20 * time.Millisecond

// Clean is the pass criterion: under 0.5 % loss and a p99 under
// MaxCleanP99, while the generator kept up.
func (r Result) Clean() bool {
	return r.Sent > 0 && r.Loss < 0.005 && r.P99 < MaxCleanP99 && r.SentPPS >= 0.98*r.Offered
}

// CPUPerPacket is the relay's CPU time per relayed packet, in µs.
func (r Result) CPUPerPacket() float64 {
	if pps := r.RelayedPPS(); pps > 0 {
		return r.RelayCPU / pps * 1e6
	}
	return 0
}

// GeneratorLimited tells a step whose figures are the generator's limit,
// not the relay's: it sent under 98 % of the schedule, at least half of
// what was lost was dropped at its own receive queues, or it used 95 % of
// the CPUs it may run on.
func (r Result) GeneratorLimited() bool {
	var lost uint64
	if r.Sent > r.Received {
		lost = r.Sent - r.Received
	}
	return r.SentPPS < 0.98*r.Offered || (lost > 0 && 2*r.GenDrops >= lost) ||
		(r.GenCores > 0 && r.GenCPU >= 0.95*float64(r.GenCores))
}

// OtherCPU is the cores the rest of the machine used in the window: busy
// time machine-wide less the relay's and the generator's.
func (r Result) OtherCPU() float64 { return max(0, r.BoxCPU-r.RelayCPU-r.GenCPU) }

// Disturbed tells a step during which other processes used more than a
// quarter of a core: on a shared machine its failure may not be the
// relay's.
func (r Result) Disturbed() bool { return r.OtherCPU() > 0.25 }

// RelayedPPS is the rate that came out of the relay.
func (r Result) RelayedPPS() float64 {
	if r.Sent == 0 {
		return 0
	}
	return r.SentPPS * float64(r.Received) / float64(r.Sent)
}

func (l *Load) defaults() error {
	if l.PPS == 0 {
		l.PPS = 50
	}
	if l.Size == 0 {
		l.Size = 172
	}
	if l.Size < pktMin {
		return fmt.Errorf("relaytest: packet size %d below %d", l.Size, pktMin)
	}
	if l.Warmup == 0 {
		l.Warmup = time.Second
	}
	if l.Duration == 0 {
		l.Duration = 10 * time.Second
	}
	if l.Sockets == 0 {
		l.Sockets = 4
	}
	if l.SendBatch == 0 {
		l.SendBatch = 32
	}
	if !l.Addr.IsValid() {
		l.Addr = netip.MustParseAddr("127.0.0.1")
	}
	if l.LateAfter == 0 {
		l.LateAfter = 100 * time.Millisecond
	}
	if l.Tag == "" {
		l.Tag = strconv.FormatInt(time.Now().UnixNano(), 36)
	}
	if l.Calls <= 0 || l.PPS <= 0 {
		return errors.New("relaytest: calls and pps must be positive")
	}
	if !l.Direct && l.NG == "" {
		return errors.New("relaytest: NG address required unless Direct")
	}
	return nil
}

// Packet layout after the RTP header: send time (unix ns), stream id, and
// whether the packet's scheduled time lies in the measured window.
const (
	offStamp  = 12
	offStream = 20
	offWindow = 24
	pktMin    = 25
	histMax   = 20000 // µs of 1 µs buckets; beyond is counted in overflow
)

type stream struct {
	id     uint32
	sock   int // index into gen.socks of the sender
	dst    mmsg.Name
	dstLen int
	seq    uint16
	ts     uint32
	offset int64 // ns into the period
}

type genSock struct {
	fd   int
	addr netip.AddrPort
}

type receiver struct {
	hist     [histMax]uint32
	over     uint64
	max      int64
	received uint64
	late     uint64
	lateNs   int64
}

// Run sets up the calls, streams for Warmup+Duration, waits for the
// stragglers, tears the calls down and returns the figures.
func Run(ctx context.Context, l Load) (Result, error) {
	if err := l.defaults(); err != nil {
		return Result{}, err
	}
	// Raw sockets, outside Go's netpoller: a socket the runtime watches
	// makes every arriving packet wake the runtime's poller, a cost the
	// relay's send would pay. Receivers poll instead (see recvLoop).
	socks := make([]*genSock, 2*l.Sockets)
	for i := range socks {
		fd, err := mmsg.Bind(netip.AddrPortFrom(l.Addr, 0), mmsg.SocketOptions{Buffer: 4 << 20})
		if err != nil {
			return Result{}, err
		}
		defer mmsg.Close(fd)
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1); err != nil {
			return Result{}, fmt.Errorf("so_timestampns: %w", err)
		}
		port, err := mmsg.LocalPort(fd)
		if err != nil {
			return Result{}, err
		}
		socks[i] = &genSock{fd: fd, addr: netip.AddrPortFrom(l.Addr, port)}
	}
	sockA := func(call int) int { return call % l.Sockets }
	sockB := func(call int) int { return l.Sockets + call%l.Sockets }

	res := Result{Calls: l.Calls}
	// Where each call's A end and B end must send.
	toRelayA := make([]netip.AddrPort, l.Calls)
	toRelayB := make([]netip.AddrPort, l.Calls)
	var ng *NGClient
	setupStart := time.Now()
	if l.Direct {
		for i := range l.Calls {
			toRelayA[i] = socks[sockB(i)].addr
			toRelayB[i] = socks[sockA(i)].addr
		}
	} else {
		var err error
		if ng, err = DialNG(l.NG); err != nil {
			return res, err
		}
		defer ng.Close()
		if err := setupCalls(ctx, ng, l, socks, sockA, sockB, toRelayA, toRelayB); err != nil {
			teardown(ng, l)
			return res, err
		}
		defer teardown(ng, l)
	}
	res.Setup = time.Since(setupStart)

	// Streams, spread evenly over one period so the load is smooth.
	var streams []*stream
	for i := range l.Calls {
		streams = append(streams, &stream{id: uint32(len(streams)), sock: sockA(i)})
		enc(streams[len(streams)-1], toRelayA[i])
		if !l.OneWay {
			streams = append(streams, &stream{id: uint32(len(streams)), sock: sockB(i)})
			enc(streams[len(streams)-1], toRelayB[i])
		}
	}
	res.Streams = len(streams)
	res.Offered = float64(len(streams) * l.PPS)
	period := int64(time.Second) / int64(l.PPS)
	perSock := make([][]*stream, len(socks))
	for k, s := range streams {
		s.offset = int64(k) * period / int64(len(streams))
		perSock[s.sock] = append(perSock[s.sock], s)
	}

	recvs := make([]*receiver, len(socks))
	for i := range recvs {
		recvs[i] = &receiver{lateNs: int64(l.LateAfter)}
	}
	t0 := time.Now().Add(50 * time.Millisecond)
	winStart := int64(l.Warmup)
	winEnd := winStart + int64(l.Duration)
	var lastRx atomic.Int64
	var sent atomic.Uint64

	rctx, stopRecv := context.WithCancel(ctx)
	defer stopRecv()
	var rg errgroup.Group
	for i, gs := range socks {
		rg.Go(func() error { return recvLoop(rctx, gs, recvs[i], uint32(len(streams)), t0, &lastRx) })
	}
	var sg errgroup.Group
	for i, gs := range socks {
		if len(perSock[i]) == 0 {
			continue
		}
		sg.Go(func() error {
			n, err := sendLoop(ctx, gs, perSock[i], l, period, t0, winStart, winEnd)
			sent.Add(n)
			return err
		})
	}

	// CPU over the window only.
	var cpu0, gen0 time.Duration
	cpuTimer := time.NewTimer(time.Until(t0.Add(time.Duration(winStart))))
	select {
	case <-cpuTimer.C:
	case <-ctx.Done():
	}
	cpu0, gen0 = procCPU(l.PIDs), selfCPU()
	box0, core0 := boxCPU(), cpuBusy()
	drops0, udp0 := genDrops(socks), udpRcvbufErrors()
	cpuTimer.Reset(time.Duration(winEnd - winStart))
	select {
	case <-cpuTimer.C:
	case <-ctx.Done():
	}
	res.RelayCPU = (procCPU(l.PIDs) - cpu0).Seconds() / l.Duration.Seconds()
	res.GenCPU = (selfCPU() - gen0).Seconds() / l.Duration.Seconds()
	res.BoxCPU = (boxCPU() - box0).Seconds() / l.Duration.Seconds()
	if core1 := cpuBusy(); len(core1) == len(core0) {
		res.CoreBusy = make([]float64, len(core0))
		for i := range core0 {
			res.CoreBusy[i] = float64(core1[i]-core0[i]) / 100 / l.Duration.Seconds() // USER_HZ
		}
	}
	var mask unix.CPUSet
	if unix.SchedGetaffinity(0, &mask) == nil {
		res.GenCores = mask.Count()
	}

	serr := sg.Wait()
	// Drain: until 200 ms pass without a packet, at most 2 s.
	drainEnd := time.Now().Add(2 * time.Second)
	for time.Now().Before(drainEnd) && ctx.Err() == nil {
		if time.Since(t0)-time.Duration(lastRx.Load()) > 200*time.Millisecond {
			break
		}
		time.Sleep(20 * time.Millisecond) // polling interval
	}
	stopRecv()
	rerr := rg.Wait()
	res.GenDrops, res.UDPDrops = genDrops(socks)-drops0, udpRcvbufErrors()-udp0
	if err := errors.Join(serr, rerr); err != nil {
		return res, err
	}

	res.Sent = sent.Load()
	var all receiver
	for _, r := range recvs {
		all.received += r.received
		all.late += r.late
		all.over += r.over
		all.max = max(all.max, r.max)
		for i, c := range r.hist {
			all.hist[i] += c
		}
	}
	res.Received, res.Late = all.received, all.late
	res.SentPPS = float64(res.Sent) / l.Duration.Seconds()
	if res.Sent > 0 {
		res.Loss = max(0, 1-float64(res.Received)/float64(res.Sent))
	}
	res.P50 = all.quantile(0.50)
	res.P99 = all.quantile(0.99)
	res.Max = time.Duration(all.max)
	return res, ctx.Err()
}

func genDrops(socks []*genSock) uint64 {
	var n uint64
	for _, gs := range socks {
		n += sockDrops(gs.fd)
	}
	return n
}

func enc(s *stream, ap netip.AddrPort) {
	s.dstLen = mmsg.Encode(&s.dst, ap, false)
	s.seq = uint16(s.id * 7919)
	s.ts = s.id * 104729
}

func (r *receiver) quantile(q float64) time.Duration {
	total := r.over
	for _, c := range r.hist {
		total += uint64(c)
	}
	if total == 0 {
		return 0
	}
	want := uint64(q * float64(total))
	var acc uint64
	for i, c := range r.hist {
		acc += uint64(c)
		if acc > want {
			return time.Duration(i) * time.Microsecond
		}
	}
	return time.Duration(r.max)
}

func sdpFor(ap netip.AddrPort, id int) string {
	return fmt.Sprintf("v=0\r\no=- %d 1 IN IP4 %s\r\ns=relaytest\r\nc=IN IP4 %s\r\nt=0 0\r\n"+
		"m=audio %d RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n"+
		"a=fmtp:101 0-16\r\na=sendrecv\r\n", id, ap.Addr(), ap.Addr(), ap.Port())
}

func audioAddr(body string) (netip.AddrPort, error) {
	info, err := sdp.Parse([]byte(body))
	if err != nil {
		return netip.AddrPort{}, err
	}
	m, ok := info.Audio()
	if !ok || !m.RTP.IsValid() {
		return netip.AddrPort{}, fmt.Errorf("no audio address in %q", body)
	}
	return m.RTP, nil
}

func callID(l Load, i int) string { return l.Tag + "-" + strconv.Itoa(i) }

// setupCalls runs offer/answer for every call, 16 at a time.
func setupCalls(ctx context.Context, ng *NGClient, l Load, socks []*genSock, sockA, sockB func(int) int, toA, toB []netip.AddrPort) error {
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(16)
	for i := range l.Calls {
		g.Go(func() error {
			id := callID(l, i)
			forB, err := ng.Offer(ctx, id, "a"+strconv.Itoa(i), sdpFor(socks[sockA(i)].addr, i))
			if err != nil {
				return fmt.Errorf("offer %d: %w", i, err)
			}
			if toB[i], err = audioAddr(forB); err != nil {
				return err
			}
			forA, err := ng.Answer(ctx, id, "a"+strconv.Itoa(i), "b"+strconv.Itoa(i), sdpFor(socks[sockB(i)].addr, i))
			if err != nil {
				return fmt.Errorf("answer %d: %w", i, err)
			}
			toA[i], err = audioAddr(forA)
			return err
		})
	}
	return g.Wait()
}

// teardown deletes every call, bounded by 30 s in all.
func teardown(ng *NGClient, l Load) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var g errgroup.Group
	g.SetLimit(16)
	for i := range l.Calls {
		g.Go(func() error {
			ng.Delete(ctx, callID(l, i), "a"+strconv.Itoa(i))
			return nil
		})
	}
	g.Wait()
}

// sendLoop sends its streams on schedule until winEnd, catching up in bursts
// when it wakes late, and returns how many packets of the window it sent.
func sendLoop(ctx context.Context, gs *genSock, streams []*stream, l Load, period int64, t0 time.Time, winStart, winEnd int64) (uint64, error) {
	n := len(streams)
	// Streams in offset order: the schedule is round*period + offset.
	batch := mmsg.NewBatch(l.SendBatch, 0, 0)
	bufs := make([][]byte, l.SendBatch)
	for i := range bufs {
		bufs[i] = make([]byte, l.Size)
		for j := pktMin; j < l.Size; j++ {
			bufs[i][j] = 0xff
		}
	}
	names := make([]*stream, l.SendBatch)
	pkts := make([][]byte, 0, l.SendBatch)
	inWin := make([]bool, l.SendBatch)
	var sent uint64
	var sendErr error
	flush := func() {
		if len(pkts) == 0 {
			return
		}
		stamp := time.Now().UnixNano()
		for i := range pkts {
			binary.BigEndian.PutUint64(pkts[i][offStamp:], uint64(stamp))
		}
		off := 0
		for off < len(pkts) && ctx.Err() == nil {
			for i := off; i < len(pkts); i++ {
				batch.Names[i-off] = names[i].dst
			}
			k, err := batch.Send(gs.fd, pkts[off:], nil, names[0].dstLen)
			off += k
			if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.ENOBUFS) {
				time.Sleep(50 * time.Microsecond) // send buffer full: let it drain
				continue
			}
			if err != nil {
				sendErr = err
				break
			}
		}
		for i := 0; i < off; i++ {
			if inWin[i] {
				sent++
			}
		}
		pkts = pkts[:0]
	}
	next, round := 0, int64(0)
	due := func() int64 { return round*period + streams[next].offset }
	for ctx.Err() == nil && sendErr == nil {
		now := int64(time.Since(t0))
		for d := due(); d <= now && d < winEnd; d = due() {
			s := streams[next]
			b := bufs[len(pkts)]
			b[0], b[1] = 0x80, 0
			binary.BigEndian.PutUint16(b[2:], s.seq)
			binary.BigEndian.PutUint32(b[4:], s.ts)
			binary.BigEndian.PutUint32(b[8:], 0x5EED0000^s.id)
			binary.BigEndian.PutUint32(b[offStream:], s.id)
			w := d >= winStart && d < winEnd
			b[offWindow] = 0
			if w {
				b[offWindow] = 1
			}
			s.seq++
			s.ts += 160
			names[len(pkts)] = s
			inWin[len(pkts)] = w
			pkts = append(pkts, b)
			if len(pkts) == l.SendBatch {
				flush()
			}
			if next++; next == n {
				next, round = 0, round+1
			}
		}
		flush()
		d := due()
		if d >= winEnd {
			return sent, sendErr
		}
		if wait := time.Duration(d - int64(time.Since(t0))); wait > 0 {
			time.Sleep(wait)
		}
	}
	return sent, sendErr
}

// recvLoop reads packets until ctx is done, recording in-window packets and
// their one-way latency from the send stamp to the kernel's receive stamp.
// It polls, napping 200 µs when the socket is empty, instead of waiting in
// the netpoller: being woken for every packet would cost the relay (whose
// send pays for the wake-up) more than the generator saves, and the kernel
// stamp keeps the latency exact either way.
func recvLoop(ctx context.Context, gs *genSock, r *receiver, nStreams uint32, t0 time.Time, lastRx *atomic.Int64) error {
	batch := mmsg.NewBatch(64, 2048, 64)
	for {
		n, err := batch.Recv(gs.fd)
		if err != nil {
			if !errors.Is(err, unix.EAGAIN) && !errors.Is(err, unix.EINTR) {
				return err
			}
			if ctx.Err() != nil {
				return nil
			}
			time.Sleep(200 * time.Microsecond)
			continue
		}
		wall := time.Now().UnixNano()
		lastRx.Store(int64(time.Since(t0)))
		for i := 0; i < n; i++ {
			p := batch.Bufs[i][:batch.Lens[i]]
			if len(p) < pktMin || binary.BigEndian.Uint32(p[offStream:]) >= nStreams || p[offWindow] != 1 {
				continue
			}
			at := rxStamp(batch.OOB[i])
			if at == 0 {
				at = wall
			}
			lat := at - int64(binary.BigEndian.Uint64(p[offStamp:]))
			lat = max(lat, 0)
			r.max = max(r.max, lat)
			if lat > r.lateNs {
				r.late++
				continue
			}
			r.received++
			if us := lat / 1000; us < histMax {
				r.hist[us]++
			} else {
				r.over++
			}
		}
	}
}

// rxStamp returns the SCM_TIMESTAMPNS receive time in a control buffer.
func rxStamp(oob []byte) int64 {
	for len(oob) >= unix.SizeofCmsghdr {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
		if h.Len < unix.SizeofCmsghdr || int(h.Len) > len(oob) {
			return 0
		}
		if h.Level == unix.SOL_SOCKET && h.Type == unix.SO_TIMESTAMPNS && int(h.Len) >= unix.CmsgLen(int(unsafe.Sizeof(unix.Timespec{}))) {
			ts := (*unix.Timespec)(unsafe.Pointer(&oob[unix.CmsgLen(0)]))
			return ts.Nano()
		}
		oob = oob[unix.CmsgSpace(int(h.Len)-unix.CmsgLen(0)):]
	}
	return 0
}

// procCPU sums user+system time of pids from /proc.
func procCPU(pids []int) time.Duration {
	var total time.Duration
	for _, pid := range pids {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if err != nil {
			continue
		}
		// Fields after the parenthesised command: utime is field 14, stime 15.
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
		if len(f) < 13 {
			continue
		}
		ut, _ := strconv.ParseInt(f[11], 10, 64)
		st, _ := strconv.ParseInt(f[12], 10, 64)
		total += time.Duration(ut+st) * time.Second / 100 // USER_HZ
	}
	return total
}

// boxCPU is the machine's busy time from /proc/stat: everything but idle
// and iowait, summed over CPUs.
func boxCPU() time.Duration {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	var busy int64
	for i, v := range f[1:] {
		n, _ := strconv.ParseInt(v, 10, 64)
		if i != 3 && i != 4 && i < 8 { // idle, iowait; guest is inside user
			busy += n
		}
	}
	return time.Duration(busy) * time.Second / 100
}

func selfCPU() time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
