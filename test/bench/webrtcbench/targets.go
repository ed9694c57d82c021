package main

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/edgewise-sip/edgewise/media/sdp"
	"github.com/edgewise-sip/edgewise/test/bench/relaytest"
)

// target is a bridge under test: a process that terminates the browsers'
// ICE + DTLS-SRTP and hands each call's media to a far end as plain RTP.
type target interface {
	name() string
	start(ctx context.Context) error
	pid() int
	// bridge sets one call up: offer is the browser's WebRTC offer, far the
	// far end's RTP address; it returns the WebRTC answer for the browser
	// and the plain address the far end sends to.
	bridge(ctx context.Context, offer string, far netip.AddrPort) (answer string, plain netip.AddrPort, err error)
	// failed counts the calls the bridge itself saw fail since the last
	// closeAll (edgewise's OnFailure; 0 where the bridge cannot say).
	failed(ctx context.Context) (int, error)
	// closeAll ends every call, so that the next step starts from none.
	closeAll(ctx context.Context) error
	stop()
}

// edgewiseTarget is media/webrtc's Hub in a child process (this binary
// with -serve), so that its CPU is the bridge's alone.
type edgewiseTarget struct {
	procs int // GOMAXPROCS; 0: Go's default
	cmd   *exec.Cmd
	c     *client
	in    interface{ Close() error }
}

func (e *edgewiseTarget) name() string { return "edgewise" }

func (e *edgewiseTarget) start(context.Context) error {
	bin, err := os.Executable()
	if err != nil {
		return err
	}
	e.cmd = exec.Command(bin, "-serve")
	e.cmd.Stderr = os.Stderr
	if e.procs > 0 {
		e.cmd.Env = append(os.Environ(), "GOMAXPROCS="+strconv.Itoa(e.procs))
	}
	e.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdin, err := e.cmd.StdinPipe()
	if err != nil {
		return err
	}
	stdout, err := e.cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := e.cmd.Start(); err != nil {
		return err
	}
	e.in = stdin
	e.c = &client{w: stdin, waiting: make(map[int]chan reply)}
	go e.c.read(stdout)
	return nil
}

func (e *edgewiseTarget) pid() int { return e.cmd.Process.Pid }

func (e *edgewiseTarget) bridge(_ context.Context, offer string, far netip.AddrPort) (string, netip.AddrPort, error) {
	rep, err := e.c.call(request{Op: "new", Offer: offer, Far: far.String()})
	if err != nil {
		return "", netip.AddrPort{}, err
	}
	plain, err := netip.ParseAddrPort(rep.Plain)
	return rep.Answer, plain, err
}

func (e *edgewiseTarget) failed(context.Context) (int, error) {
	st, err := e.c.call(request{Op: "stats"})
	return st.Failed, err
}

func (e *edgewiseTarget) closeAll(context.Context) error {
	_, err := e.c.call(request{Op: "closeall"})
	return err
}

// profile starts the bridge process's CPU profile into file, or stops it
// when file is empty.
func (e *edgewiseTarget) profile(file string) error {
	_, err := e.c.call(request{Op: "profile", File: file})
	return err
}

// stop closes the child's stdin, which ends it; a child that does not end
// within 10 s is killed.
func (e *edgewiseTarget) stop() {
	if e.cmd == nil || e.cmd.Process == nil {
		return
	}
	_ = e.in.Close()
	done := make(chan struct{})
	go func() { _ = e.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = e.cmd.Process.Kill()
		<-done
	}
}

// rtpengineTarget is Debian's rtpengine (userspace only) driven over its ng
// protocol as a SIP proxy would drive it for a WebRTC caller: the browser's
// offer goes out as plain RTP/AVP (ICE removed, no DTLS, no SDES, RTCP
// demuxed), the far end's plain answer comes back as the browser's WebRTC
// answer (ICE forced, DTLS passive, UDP/TLS/RTP/SAVPF, rtcp-mux).
//
// rtpengine answers a=setup:passive, so the browser (pion, the offerer with
// a=setup:actpass) is the DTLS client; rtpengine is a full ICE agent in
// the controlled role toward the offering browser unless iceLite.
type rtpengineTarget struct {
	bin     string
	iceLite bool
	re      *relaytest.Rtpengine
	ng      *relaytest.NGClient
	log     *tailWriter

	seq   atomic.Uint64
	mu    sync.Mutex
	calls []string // live call-ids
}

func (r *rtpengineTarget) name() string { return "rtpengine" }

func (r *rtpengineTarget) start(ctx context.Context) error {
	port, err := freeUDPPort()
	if err != nil {
		return err
	}
	r.log = &tailWriter{max: 16 << 10}
	r.re = &relaytest.Rtpengine{Bin: r.bin, NGPort: port, PortMin: 40000, PortMax: 59999, Log: r.log}
	// ECDSA P-256 like edgewise's certificate (rtpengine defaults to RSA),
	// so that both sides of the comparison sign the same handshake.
	r.re.Args = []string{"--dtls-cert-cipher=prime256v1"}
	if err := r.re.Start(ctx); err != nil {
		return fmt.Errorf("%w\n%s", err, r.log.tail())
	}
	if r.ng, err = relaytest.DialNG(r.re.NG()); err != nil {
		_ = r.re.Stop()
		return err
	}
	return nil
}

func (r *rtpengineTarget) pid() int { return r.re.PIDs()[0] }

func (r *rtpengineTarget) bridge(ctx context.Context, offer string, far netip.AddrPort) (string, netip.AddrPort, error) {
	id := "wrtc-" + strconv.FormatUint(r.seq.Add(1), 10)
	cmd := map[string]any{
		"command": "offer", "call-id": id, "from-tag": "browser", "sdp": offer,
		"transport-protocol": "RTP/AVP",
		"ICE":                "remove",
		"DTLS":               "off",
		"SDES":               []string{"off"},
		"rtcp-mux":           []string{"demux"},
		"replace":            []string{"origin", "session-connection"},
	}
	if r.iceLite {
		// Given with the offer: "backward" is toward its sender.
		cmd["ICE-lite"] = "backward"
	}
	m, err := r.ng.Do(ctx, cmd)
	if err != nil {
		return "", netip.AddrPort{}, err
	}
	r.mu.Lock()
	r.calls = append(r.calls, id)
	r.mu.Unlock()
	plainSDP, _ := m["sdp"].(string)
	info, err := sdp.Parse([]byte(plainSDP))
	if err != nil {
		return "", netip.AddrPort{}, fmt.Errorf("rtpengine's plain offer: %w", err)
	}
	audio, ok := info.Audio()
	if !ok || !audio.RTP.IsValid() {
		return "", netip.AddrPort{}, fmt.Errorf("rtpengine's plain offer has no audio address:\n%s", plainSDP)
	}
	cmd = map[string]any{
		"command": "answer", "call-id": id, "from-tag": "browser", "to-tag": "far", "sdp": farAnswer(far.String()),
		"transport-protocol": "UDP/TLS/RTP/SAVPF",
		"ICE":                "force",
		"DTLS":               "passive",
		"rtcp-mux":           []string{"require"},
		"replace":            []string{"origin", "session-connection"},
	}
	m, err = r.ng.Do(ctx, cmd)
	if err != nil {
		return "", netip.AddrPort{}, err
	}
	answer, _ := m["sdp"].(string)
	if trace && id == "wrtc-1" {
		fmt.Fprintf(os.Stderr, "OFFER\n%s\nPLAIN\n%s\nANSWER\n%s\n", offer, plainSDP, answer)
	}
	return answer, audio.RTP, nil
}

func (r *rtpengineTarget) failed(context.Context) (int, error) { return 0, nil }

func (r *rtpengineTarget) closeAll(ctx context.Context) error {
	r.mu.Lock()
	ids := r.calls
	r.calls = nil
	r.mu.Unlock()
	if trace && len(ids) > 0 {
		m, err := r.ng.Do(ctx, map[string]any{"command": "query", "call-id": ids[0]})
		fmt.Fprintf(os.Stderr, "QUERY %v %v\n", m, err)
	}
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(16)
	for _, id := range ids {
		g.Go(func() error {
			if err := r.ng.Delete(ctx, id, "browser"); err != nil {
				return fmt.Errorf("deleting %s: %w", id, err)
			}
			return nil
		})
	}
	return g.Wait()
}

func (r *rtpengineTarget) stop() {
	if r.ng != nil {
		_ = r.ng.Close()
	}
	if r.re != nil {
		_ = r.re.Stop()
	}
}

// freeUDPPort is a loopback UDP port nothing listens on right now.
func freeUDPPort() (int, error) {
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return 0, err
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port, nil
}

// tailWriter keeps the last max bytes written, for the error message of a
// peer that failed to start.
type tailWriter struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (t *tailWriter) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > t.max {
		t.b = append(t.b[:0], t.b[len(t.b)-t.max:]...)
	}
	return len(p), nil
}

func (t *tailWriter) tail() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.b)
}
