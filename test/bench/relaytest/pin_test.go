package relaytest

import (
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestCPUList(t *testing.T) {
	var s unix.CPUSet
	for _, c := range []int{0, 2, 3, 4, 7} {
		s.Set(c)
	}
	if got := cpuList(s); got != "0,2-4,7" {
		t.Errorf("cpuList = %q", got)
	}
}

// twoCPUs returns the last CPU this process may use as the relay's and
// skips on a one-CPU machine.
func twoCPUs(t *testing.T) int {
	var all unix.CPUSet
	if err := unix.SchedGetaffinity(0, &all); err != nil {
		t.Fatal(err)
	}
	if all.Count() < 2 {
		t.Skip("needs two CPUs")
	}
	last := -1
	for c := 0; c < len(all)*64; c++ {
		if all.IsSet(c) {
			last = c
		}
	}
	return last
}

// TestStartPinned: the child has the relay's mask from its start, every
// thread of it, and the parent's thread gets its own mask back.
func TestStartPinned(t *testing.T) {
	relay, _, err := splitCPUs(twoCPUs(t))
	if err != nil {
		t.Fatal(err)
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var before unix.CPUSet
	unix.SchedGetaffinity(0, &before)

	cmd := exec.Command("sleep", "10")
	if err := startPinned(cmd, &relay); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	var after unix.CPUSet
	unix.SchedGetaffinity(0, &after)
	if after != before {
		t.Errorf("parent thread mask %s, was %s", cpuList(after), cpuList(before))
	}
	c := pinWatch{}.check([]int{cmd.Process.Pid}, relay)
	if !c.OK() {
		t.Errorf("child: %+v", c)
	}
	var all unix.CPUSet
	all.Fill()
	if c := (pinWatch{}).check([]int{cmd.Process.Pid}, all); c.OK() {
		t.Errorf("a child pinned to %s passed a check for every CPU", cpuList(relay))
	}
}

// TestPinSelf: every thread of this process, including ones the runtime
// starts afterwards, stays on the generator's CPUs; restore undoes it.
func TestPinSelf(t *testing.T) {
	_, gen, err := splitCPUs(twoCPUs(t))
	if err != nil {
		t.Fatal(err)
	}
	procs := runtime.GOMAXPROCS(0)
	restore, err := pinSelf(gen)
	if err != nil {
		t.Fatal(err)
	}
	if runtime.GOMAXPROCS(0) != gen.Count() {
		t.Errorf("GOMAXPROCS %d for %d CPUs", runtime.GOMAXPROCS(0), gen.Count())
	}
	// Four goroutines each holding a locked thread at the same time make
	// the runtime start threads after the pinning.
	locked, release, done := make(chan struct{}), make(chan struct{}), make(chan struct{})
	for range 4 {
		go func() {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			locked <- struct{}{}
			<-release
			done <- struct{}{}
		}()
	}
	for range 4 {
		<-locked
	}
	close(release)
	for range 4 {
		<-done
	}
	w := pinWatch{}
	w.check([]int{os.Getpid()}, gen)
	if c := w.check([]int{os.Getpid()}, gen); !c.OK() {
		t.Errorf("generator threads: %+v", c)
	}
	restore()
	if runtime.GOMAXPROCS(0) != procs {
		t.Errorf("GOMAXPROCS %d after restore, was %d", runtime.GOMAXPROCS(0), procs)
	}
	var now unix.CPUSet
	unix.SchedGetaffinity(0, &now)
	if now.Count() != gen.Count()+1 {
		t.Errorf("mask %s after restore", cpuList(now))
	}
}

func TestSplitCPUsRefuses(t *testing.T) {
	if _, _, err := splitCPUs(4095); err == nil {
		t.Error("a CPU this process may not use was accepted")
	}
}

func TestSockDrops(t *testing.T) {
	// A socket nobody reads, with the smallest receive queue, drops.
	rx, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(rx)
	unix.SetsockoptInt(rx, unix.SOL_SOCKET, unix.SO_RCVBUF, 1)
	if err := unix.Bind(rx, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	sa, _ := unix.Getsockname(rx)
	tx, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(tx)
	before := udpRcvbufErrors()
	for range 200 {
		unix.Sendto(tx, make([]byte, 1000), 0, sa)
	}
	if d := sockDrops(rx); d == 0 {
		t.Error("no drops counted at a full socket")
	}
	if udpRcvbufErrors() == before {
		t.Error("RcvbufErrors did not move")
	}
}

// TestGeneratorLimit: a step the generator could not drive is marked as
// its limit, and the best line says the relay's knee lies higher.
func TestGeneratorLimit(t *testing.T) {
	clean := Result{Calls: 100, Sent: 100000, Received: 100000, SentPPS: 10000, Offered: 10000, P99: time.Millisecond, GenCores: 1, GenCPU: 0.3}
	behind := Result{Calls: 200, Sent: 150000, Received: 150000, SentPPS: 15000, Offered: 20000, P99: time.Millisecond, GenCores: 1}
	queues := Result{Calls: 200, Sent: 200000, Received: 190000, Loss: 0.05, GenDrops: 9000, SentPPS: 20000, Offered: 20000, P99: time.Millisecond, GenCores: 1}
	relayLoss := Result{Calls: 200, Sent: 200000, Received: 190000, Loss: 0.05, GenDrops: 10, SentPPS: 20000, Offered: 20000, P99: time.Millisecond, GenCores: 1, GenCPU: 0.5}
	for _, r := range []Result{behind, queues} {
		if r.Clean() || !r.GeneratorLimited() {
			t.Errorf("%+v: clean %v, generator limit %v", r, r.Clean(), r.GeneratorLimited())
		}
	}
	if relayLoss.GeneratorLimited() || clean.GeneratorLimited() {
		t.Error("the relay's loss put on the generator")
	}
	rep := Report{Targets: []TargetReport{{Name: "edgewise", Streams: []Result{clean, queues}}, {Name: "rtpengine", Streams: []Result{clean, relayLoss}}}}
	out := rep.Table()
	for _, want := range []string{"edgewise **≥ 10000 pps** (the next step was the generator's limit)", "rtpengine **10000 pps**", "= ≥ **1.00×**", "(generator limit)"} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in\n%s", want, out)
		}
	}
}
