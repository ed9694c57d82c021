package relaytest

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Target is a relay under test, run as its own process so it does not share
// a Go runtime with the generator.
type Target interface {
	Name() string
	// Start launches the relay and returns once its ng port answers.
	Start(ctx context.Context) error
	// NG is the control address.
	NG() string
	PIDs() []int
	Stop() error
}

// Rtpengine runs Debian's rtpengine (rtpengine-daemon) in userspace only
// (--table=-1), listening on 127.0.0.1.
type Rtpengine struct {
	Bin              string // default /usr/bin/rtpengine
	Addr             string // default 127.0.0.1
	NGPort           int    // default 19222
	PortMin, PortMax int    // default 30000-49999
	// Threads is --num-threads. 0: one per CPU it is pinned to (Pin),
	// else rtpengine's default (one per CPU of the machine).
	Threads int
	Log     io.Writer

	// Args are more command-line options, after the defaults.
	Args []string
	proc
}

func (r *Rtpengine) Name() string { return "rtpengine" }

func (r *Rtpengine) NG() string { return r.Addr + ":" + strconv.Itoa(r.NGPort) }

func (r *Rtpengine) Start(ctx context.Context) error {
	if r.Bin == "" {
		r.Bin = "/usr/bin/rtpengine"
	}
	if r.Addr == "" {
		r.Addr = "127.0.0.1"
	}
	if r.NGPort == 0 {
		r.NGPort = 19222
	}
	if r.PortMin == 0 {
		r.PortMin, r.PortMax = 30000, 49999
	}
	args := []string{
		"--config-file=none", "--table=-1", "--foreground", "--log-stderr",
		"--interface=" + r.Addr, "--listen-ng=" + r.NG(),
		"--port-min=" + strconv.Itoa(r.PortMin), "--port-max=" + strconv.Itoa(r.PortMax),
		"--delete-delay=0", "--log-level=4", "--timeout=120",
	}
	threads := r.Threads
	if threads == 0 && r.cpus != nil {
		threads = r.cpus.Count()
	}
	if threads > 0 {
		args = append(args, "--num-threads="+strconv.Itoa(threads))
	}
	args = append(args, r.Args...)
	return r.start(ctx, r.Bin, args, r.NG(), r.Log)
}

// Relayd runs edgewise's relay (media/relaytest/relayd, built by
// BuildRelayd) behind the same ng protocol.
type Relayd struct {
	Bin     string
	Label   string // the name in reports; default "edgewise"
	Addr    string // default 127.0.0.1
	NGPort  int    // default 19223
	Ports   string // default 10000-29999 (10,000 pairs: 5,000 calls)
	Workers int    // 0: GOMAXPROCS
	// Coalesce is passed to media.Settings (0: off).
	Coalesce time.Duration
	Log      io.Writer
	proc
}

func (r *Relayd) Name() string {
	if r.Label != "" {
		return r.Label
	}
	return "edgewise"
}

func (r *Relayd) NG() string { return r.Addr + ":" + strconv.Itoa(r.NGPort) }

func (r *Relayd) Start(ctx context.Context) error {
	if r.Addr == "" {
		r.Addr = "127.0.0.1"
	}
	if r.NGPort == 0 {
		r.NGPort = 19223
	}
	if r.Ports == "" {
		r.Ports = "10000-29999"
	}
	args := []string{"-ng", r.NG(), "-ip", r.Addr, "-ports", r.Ports, "-workers", strconv.Itoa(r.Workers), "-coalesce", r.Coalesce.String()}
	return r.start(ctx, r.Bin, args, r.NG(), r.Log)
}

// BuildRelayd compiles the relayd command into dir and returns its path.
func BuildRelayd(ctx context.Context, dir string) (string, error) {
	out := dir + "/edgewise-relayd"
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "github.com/edgewise-sip/edgewise/test/bench/relaytest/relayd")
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("building relayd: %w", err)
	}
	return out, nil
}

// proc is a child process with an ng port.
type proc struct {
	cmd  *exec.Cmd
	done chan error
	cpus *unix.CPUSet // nil: not pinned
}

// Pin makes the next Start run the process, every thread of it, on set
// only.
func (p *proc) Pin(set unix.CPUSet) { p.cpus = &set }

func (p *proc) start(ctx context.Context, bin string, args []string, ng string, log io.Writer) error {
	if log == nil {
		log = io.Discard
	}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stdout, p.cmd.Stderr = log, log
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := startPinned(p.cmd, p.cpus); err != nil {
		return err
	}
	p.done = make(chan error, 1)
	go func() { p.done <- p.cmd.Wait() }()
	c, err := DialNG(ng)
	if err != nil {
		p.Stop()
		return err
	}
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		pctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		err := c.Ping(pctx)
		cancel()
		if err == nil {
			return nil
		}
		select {
		case err := <-p.done:
			p.done <- err
			return fmt.Errorf("%s exited: %v", bin, err)
		default:
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			p.Stop()
			return fmt.Errorf("%s: ng %s not answering: %w", bin, ng, err)
		}
	}
}

func (p *proc) PIDs() []int {
	if p.cmd == nil || p.cmd.Process == nil {
		return nil
	}
	return []int{p.cmd.Process.Pid}
}

// Stop sends SIGTERM, then SIGKILL after 5 s.
func (p *proc) Stop() error {
	if p.cmd == nil || p.cmd.Process == nil {
		return nil
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
	}
	p.cmd = nil
	return nil
}
