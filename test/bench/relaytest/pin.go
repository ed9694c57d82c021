package relaytest

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Pinning gives the relay under test one CPU and the generator the others,
// so a step measures what one core of relay can do rather than where a
// machine shared by relay and generator runs out.
//
// A child is pinned before it runs anything: the thread that forks it
// takes the relay's mask for the fork, so every thread the child ever
// creates (Go's runtime threads, rtpengine's pollers and timers) inherits
// it, and a Go child sizes GOMAXPROCS from it. Setting the mask on the
// child's PID after the start would miss the threads already running.

// cpuList renders a set as the kernel's list format ("1", "0,2-3").
func cpuList(set unix.CPUSet) string {
	var parts []string
	for cpu := 0; cpu < len(set)*64; cpu++ {
		if !set.IsSet(cpu) {
			continue
		}
		end := cpu
		for end+1 < len(set)*64 && set.IsSet(end+1) {
			end++
		}
		if end == cpu {
			parts = append(parts, strconv.Itoa(cpu))
		} else {
			parts = append(parts, fmt.Sprintf("%d-%d", cpu, end))
		}
		cpu = end
	}
	return strings.Join(parts, ",")
}

// splitCPUs returns the one-CPU set for the relay and the rest of this
// process's allowed CPUs for the generator.
func splitCPUs(relayCPU int) (relay, gen unix.CPUSet, err error) {
	if err := unix.SchedGetaffinity(0, &gen); err != nil {
		return relay, gen, fmt.Errorf("sched_getaffinity: %w", err)
	}
	if relayCPU < 0 || relayCPU >= len(gen)*64 || !gen.IsSet(relayCPU) {
		return relay, gen, fmt.Errorf("relay CPU %d is not one this process may use (%s)", relayCPU, cpuList(gen))
	}
	gen.Clear(relayCPU)
	if gen.Count() == 0 {
		return relay, gen, fmt.Errorf("relay CPU %d is the only CPU: nothing left for the generator", relayCPU)
	}
	relay.Set(relayCPU)
	return relay, gen, nil
}

// pinSelf moves every thread of this process onto set and sizes
// GOMAXPROCS to it; it returns how to undo both. Threads the runtime
// starts meanwhile inherit the mask of the thread that starts them, so a
// few passes over /proc/self/task settle it.
func pinSelf(set unix.CPUSet) (restore func(), err error) {
	var old unix.CPUSet
	if err := unix.SchedGetaffinity(0, &old); err != nil {
		return nil, err
	}
	procs := runtime.GOMAXPROCS(set.Count())
	restore = func() {
		setAllThreads(old)
		runtime.GOMAXPROCS(procs)
	}
	for range 10 {
		changed, err := setAllThreads(set)
		if err != nil {
			restore()
			return nil, err
		}
		if changed == 0 {
			return restore, nil
		}
	}
	restore()
	return nil, fmt.Errorf("pinning the generator: threads kept appearing with another mask")
}

// setAllThreads applies set to every thread of this process and returns
// how many had another mask.
func setAllThreads(set unix.CPUSet) (int, error) {
	tids, err := threads(os.Getpid())
	if err != nil {
		return 0, err
	}
	changed := 0
	for _, tid := range tids {
		var cur unix.CPUSet
		if unix.SchedGetaffinity(tid, &cur) == nil && cur == set {
			continue
		}
		if err := unix.SchedSetaffinity(tid, &set); err != nil && err != unix.ESRCH {
			return changed, fmt.Errorf("sched_setaffinity(%d): %w", tid, err)
		}
		changed++
	}
	return changed, nil
}

// startPinned starts cmd with set as the CPU mask of the child from its
// first instruction (see the comment at the top of this file).
func startPinned(cmd *exec.Cmd, set *unix.CPUSet) error {
	if set == nil {
		return cmd.Start()
	}
	// The fork happens on this goroutine's thread; keep the goroutine on
	// it while the thread carries the relay's mask.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var old unix.CPUSet
	if err := unix.SchedGetaffinity(0, &old); err != nil {
		return err
	}
	if err := unix.SchedSetaffinity(0, set); err != nil {
		return fmt.Errorf("sched_setaffinity %s: %w", cpuList(*set), err)
	}
	err := cmd.Start()
	if rerr := unix.SchedSetaffinity(0, &old); rerr != nil && err == nil {
		err = rerr
	}
	return err
}

func threads(pid int) ([]int, error) {
	ents, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/task")
	if err != nil {
		return nil, err
	}
	var tids []int
	for _, e := range ents {
		if tid, err := strconv.Atoi(e.Name()); err == nil {
			tids = append(tids, tid)
		}
	}
	return tids, nil
}

// PinCheck is what a look at every thread of some processes found.
type PinCheck struct {
	Threads int
	// Outside lists the threads allowed on a CPU outside the wanted set,
	// or that ran since the previous look and last ran outside it
	// ("pid/tid comm: allowed 0-1, last on 0"). A thread that has not run
	// keeps the CPU it last ran on before it was pinned, so only a thread
	// that ran counts against its last CPU.
	Outside []string
}

// OK reports threads seen and none off their CPUs.
func (c PinCheck) OK() bool { return c.Threads > 0 && len(c.Outside) == 0 }

// pinWatch remembers each thread's CPU time between looks.
type pinWatch map[int]int64

// check reads every thread's allowed CPUs (sched_getaffinity), its CPU
// time and the CPU it last ran on (/proc/PID/task/TID/stat fields 14, 15
// and 39).
func (w pinWatch) check(pids []int, want unix.CPUSet) PinCheck {
	var c PinCheck
	for _, pid := range pids {
		tids, err := threads(pid)
		if err != nil {
			c.Outside = append(c.Outside, fmt.Sprintf("%d: %v", pid, err))
			continue
		}
		for _, tid := range tids {
			var cur unix.CPUSet
			if err := unix.SchedGetaffinity(tid, &cur); err != nil {
				continue // the thread ended
			}
			st, ok := threadStat(pid, tid)
			if !ok {
				continue
			}
			c.Threads++
			prev, seen := w[tid]
			ran := !seen || st.ticks > prev
			w[tid] = st.ticks
			if cur != want || (ran && !want.IsSet(st.last)) {
				c.Outside = append(c.Outside, fmt.Sprintf("%d/%d %s: allowed %s, last on %d", pid, tid, st.comm, cpuList(cur), st.last))
			}
		}
	}
	slices.Sort(c.Outside)
	return c
}

type tstat struct {
	comm  string
	ticks int64 // utime + stime
	last  int   // processor
}

func threadStat(pid, tid int) (tstat, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/stat", pid, tid))
	if err != nil {
		return tstat{}, false
	}
	s := string(b)
	open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || end < open || end+2 > len(s) {
		return tstat{}, false
	}
	// f[0] is field 3 (state): utime is field 14, stime 15, processor 39.
	f := strings.Fields(s[end+2:])
	if len(f) < 37 {
		return tstat{}, false
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	cpu, err3 := strconv.Atoi(f[36])
	if err1 != nil || err2 != nil || err3 != nil {
		return tstat{}, false
	}
	return tstat{comm: s[open+1 : end], ticks: ut + st, last: cpu}, true
}

// cpuBusy is each CPU's busy time from /proc/stat (everything but idle and
// iowait), indexed by CPU number.
func cpuBusy() []int64 {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return nil
	}
	var out []int64
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(line, "cpu") || strings.HasPrefix(line, "cpu ") {
			continue
		}
		f := strings.Fields(line)
		n, err := strconv.Atoi(strings.TrimPrefix(f[0], "cpu"))
		if err != nil {
			continue
		}
		var busy int64
		for i, v := range f[1:] {
			x, _ := strconv.ParseInt(v, 10, 64)
			if i != 3 && i != 4 && i < 8 {
				busy += x
			}
		}
		for len(out) <= n {
			out = append(out, 0)
		}
		out[n] = busy
	}
	return out
}

// skMeminfoDrops is SK_MEMINFO_DROPS in linux/sock_diag.h: datagrams the
// socket refused because its receive queue was full.
const (
	skMeminfoDrops = 8
	skMeminfoVars  = 9
)

// sockDrops is the number of datagrams the kernel dropped at fd's receive
// queue since the socket was made (SO_MEMINFO).
func sockDrops(fd int) uint64 {
	var mi [skMeminfoVars]uint32
	l := uint32(unsafe.Sizeof(mi))
	_, _, errno := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_MEMINFO,
		uintptr(unsafe.Pointer(&mi[0])), uintptr(unsafe.Pointer(&l)), 0)
	if errno != 0 || l < (skMeminfoDrops+1)*4 {
		return 0
	}
	return uint64(mi[skMeminfoDrops])
}

// udpRcvbufErrors is the machine's count of UDP datagrams dropped for a
// full receive queue (/proc/net/snmp Udp: RcvbufErrors), every socket.
func udpRcvbufErrors() uint64 {
	b, err := os.ReadFile("/proc/net/snmp")
	if err != nil {
		return 0
	}
	var names []string
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(line, "Udp: ") {
			continue
		}
		f := strings.Fields(line)[1:]
		if names == nil {
			names = f
			continue
		}
		if i := slices.Index(names, "RcvbufErrors"); i >= 0 && i < len(f) {
			n, _ := strconv.ParseUint(f[i], 10, 64)
			return n
		}
	}
	return 0
}
