package integration

import (
	"context"
	"encoding/csv"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgewise-sip/edgewise/cmd/edgewise/admin"
	"github.com/edgewise-sip/edgewise/media"
	"github.com/edgewise-sip/edgewise/test/kit"
)

// opsStatus is /v1/status, with the questions the ops tests ask of it.
type opsStatus struct{ admin.Status }

// opsGetStatus reads /v1/status for the ops questions.
func opsGetStatus(d *daemon) (opsStatus, error) {
	st, err := d.getStatus()
	return opsStatus{st}, err
}

func opsMustStatus(t *testing.T, d *daemon) opsStatus {
	t.Helper()
	return opsStatus{d.status(t)}
}

// upstreamEdges maps each user with an upstream registration to its edge
// ("" while not registered anywhere).
func (st opsStatus) upstreamEdges() map[string]string {
	m := map[string]string{}
	for _, u := range st.Users {
		if u.Upstream != nil {
			e := u.Upstream.Edge
			if u.Upstream.State != "registered" {
				e = ""
			}
			m[u.User] = e
		}
	}
	return m
}

// opsAllOn reports whether each user is registered upstream on edge,
// both in edgewise's status and at edgesim (and nowhere else at edgesim).
func opsAllOn(t *testing.T, d *daemon, s *sim, edge string, users ...string) bool {
	t.Helper()
	st, err := opsGetStatus(d)
	if err != nil {
		return false
	}
	ups := st.upstreamEdges()
	for _, u := range users {
		if ups[u] != edge || !onlyOn(s.edgesOf(t, u), edge) {
			return false
		}
	}
	return true
}

// edgeState returns the state of one edge in status ("" if absent).
func (st opsStatus) edgeState(name string) string {
	for _, e := range st.Edges {
		if e.Name == name {
			return string(e.State)
		}
	}
	return ""
}

// opsLoad is one SIPp UAC run placing calls with RTP at a steady rate.
type opsLoad struct {
	dir  string
	done chan struct{}
	code int
	out  *syncBuffer
}

// opsLoadSpec bounds a load run: calls in all, calls per second, at most
// limit at once, each talking for hold.
type opsLoadSpec struct {
	calls int
	rate  float64
	limit int
	hold  time.Duration
}

// startOpsLoad runs ops_call_rtp.xml from its own loopback address against
// the daemon. SIPp's -timeout and a context bound the run; the test ends it
// at cleanup if it is still going.
func startOpsLoad(t *testing.T, d *daemon, spec opsLoadSpec, users ...string) *opsLoad {
	t.Helper()
	requireTool(t, "sipp")
	l := &opsLoad{dir: t.TempDir(), done: make(chan struct{}), out: &syncBuffer{}}
	var rows strings.Builder
	rows.WriteString("SEQUENTIAL\n")
	// One number for every call: SIPp signs one digest uri per run (see
	// sippAuthURI).
	const number = "15550600000"
	for _, u := range users {
		fmt.Fprintf(&rows, "%s;[authentication username=%s password=%s-secret];%s\n", u, u, u, number)
	}
	inf := filepath.Join(l.dir, "users.csv")
	writeFile(t, inf, rows.String())
	// Arrivals take calls/rate; each call holds for hold plus setup. Twice
	// that plus a margin is the most a healthy run can take on a busy box.
	budget := 2*(time.Duration(float64(spec.calls)/spec.rate*float64(time.Second))+spec.hold) + 20*time.Second
	ctx, cancel := context.WithTimeout(context.Background(), budget+10*time.Second)
	cmd := exec.CommandContext(ctx, "sipp",
		"-sf", filepath.Join(repoDir, "test", "sipp", "ops_call_rtp.xml"),
		"-inf", inf,
		"-i", nextIP(t),
		"-m", strconv.Itoa(spec.calls),
		"-r", strconv.FormatFloat(spec.rate, 'f', -1, 64), "-rp", "1000",
		"-l", strconv.Itoa(spec.limit),
		"-d", strconv.Itoa(int(spec.hold/time.Millisecond)),
		"-timeout", fmt.Sprintf("%ds", int(budget/time.Second)), "-timeout_error",
		"-buff_size", "4194304",
		"-nostdin", "-trace_err", "-error_file", filepath.Join(l.dir, "errors.log"),
		"-trace_stat", "-stf", filepath.Join(l.dir, "stats.csv"), "-fd", "1",
		"-auth_uri", number+"@"+d.ip+":5060",
		d.ip+":5060")
	cmd.Dir = l.dir
	cmd.Stdout, cmd.Stderr = l.out, l.out
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("start sipp load: %v", err)
	}
	go func() {
		defer cancel()
		_ = cmd.Wait()
		l.code = cmd.ProcessState.ExitCode()
		close(l.done)
	}()
	t.Cleanup(func() {
		cancel()
		<-l.done
	})
	return l
}

// wait waits for SIPp to finish and returns its final counters.
func (l *opsLoad) wait(t *testing.T, timeout time.Duration) opsSippStats {
	t.Helper()
	select {
	case <-l.done:
	case <-time.After(timeout):
		t.Fatalf("sipp load still running after %v", timeout)
	}
	st, err := l.stats()
	if err != nil {
		t.Fatalf("sipp stats: %v\n%s", err, l.report())
	}
	return st
}

// running reports whether SIPp is still placing or holding calls.
func (l *opsLoad) running() bool {
	select {
	case <-l.done:
		return false
	default:
		return true
	}
}

func (l *opsLoad) report() string {
	errs, _ := os.ReadFile(filepath.Join(l.dir, "errors.log"))
	return fmt.Sprintf("sipp exit %d\n%s\nerrors.log:\n%s", l.code, l.out.String(), errs)
}

// opsSippStats are the cumulative counters of SIPp's last statistics line.
type opsSippStats struct {
	Created, Successful, Failed, Retransmissions, Unexpected int
}

func (l *opsLoad) stats() (opsSippStats, error) {
	var st opsSippStats
	f, err := os.Open(filepath.Join(l.dir, "stats.csv"))
	if err != nil {
		return st, err
	}
	defer f.Close()
	r := csv.NewReader(f)
	r.Comma = ';'
	r.FieldsPerRecord = -1
	recs, err := r.ReadAll()
	if err != nil {
		return st, fmt.Errorf("parse stats.csv: %w", err)
	}
	if len(recs) < 2 {
		return st, fmt.Errorf("stats.csv has %d lines", len(recs))
	}
	head, last := recs[0], recs[len(recs)-1]
	col := func(name string) int {
		for i, h := range head {
			if h == name && i < len(last) {
				n, _ := strconv.Atoi(last[i])
				return n
			}
		}
		err = fmt.Errorf("stats.csv has no column %s", name)
		return 0
	}
	st.Created = col("TotalCallCreated")
	st.Successful = col("SuccessfulCall(C)")
	st.Failed = col("FailedCall(C)")
	st.Retransmissions = col("Retransmissions(C)")
	st.Unexpected = col("FailedUnexpectedMessage(C)")
	return st, err
}

// opsCallWatch polls edgewise's status while a load runs and keeps, per
// call, the highest RTP counters seen (a call leaves the status when it
// ends), plus the longest silence on a leg of a call that should be
// talking.
type opsCallWatch struct {
	mu       sync.Mutex
	calls    map[string]*opsCallSeen
	maxCalls int
	polls    int
	stop     chan struct{}
	done     chan struct{}
}

type opsCallSeen struct {
	edge    string
	packets map[media.Side]uint64 // side → rx packets
	lost    map[media.Side]int64  // side → rx lost
	idleMs  int64                 // longest idle_ms while the call should be talking
	idleAt  string                // which leg, how old the call was
}

// watchOpsCalls polls every 200 ms until stopped. talkFrom..talkTo is the window after
// a call's media session was created during which RTP must flow (from the
// pcap's first packet to the phone's BYE).
func watchOpsCalls(t *testing.T, d *daemon, talkFrom, talkTo time.Duration) *opsCallWatch {
	t.Helper()
	w := &opsCallWatch{calls: map[string]*opsCallSeen{}, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			if st, err := opsGetStatus(d); err == nil {
				w.record(st, talkFrom, talkTo)
			}
			select {
			case <-w.stop:
				return
			case <-tick.C:
			}
		}
	}()
	t.Cleanup(w.close)
	return w
}

func (w *opsCallWatch) close() {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	<-w.done
}

func (w *opsCallWatch) record(st opsStatus, talkFrom, talkTo time.Duration) {
	now := time.Now()
	w.mu.Lock()
	defer w.mu.Unlock()
	w.polls++
	if len(st.Calls) > w.maxCalls {
		w.maxCalls = len(st.Calls)
	}
	for _, c := range st.Calls {
		seen := w.calls[c.ID]
		if seen == nil {
			seen = &opsCallSeen{packets: map[media.Side]uint64{}, lost: map[media.Side]int64{}}
			w.calls[c.ID] = seen
		}
		seen.edge = c.Edge
		if c.Media == nil {
			continue
		}
		age := now.Sub(c.Media.Created)
		for _, leg := range c.Media.Legs {
			seen.packets[leg.Side] = max(seen.packets[leg.Side], leg.RX.Packets)
			seen.lost[leg.Side] = max(seen.lost[leg.Side], leg.RX.Lost)
			if c.State == "answered" && age > talkFrom && age < talkTo && leg.IdleMs > seen.idleMs {
				seen.idleMs = leg.IdleMs
				seen.idleAt = fmt.Sprintf("leg %s at call age %v", leg.Side, age.Round(time.Millisecond))
			}
		}
	}
}

// opsRTPSummary totals what the watcher saw.
type opsRTPSummary struct {
	calls, maxConcurrent, polls int
	packets                     uint64
	lost                        int64
	worstLost                   int64
	worstLostCall               string
	worstIdleMs                 int64
	worstIdleCall               string
	byEdge                      map[string]int
}

func (w *opsCallWatch) summary() opsRTPSummary {
	w.mu.Lock()
	defer w.mu.Unlock()
	s := opsRTPSummary{calls: len(w.calls), maxConcurrent: w.maxCalls, polls: w.polls, byEdge: map[string]int{}}
	for id, c := range w.calls {
		s.byEdge[c.edge]++
		var lost int64
		for side, p := range c.packets {
			s.packets += p
			lost += c.lost[side]
		}
		s.lost += lost
		if lost > s.worstLost {
			s.worstLost, s.worstLostCall = lost, id
		}
		if c.idleMs > s.worstIdleMs {
			s.worstIdleMs, s.worstIdleCall = c.idleMs, id+" "+c.idleAt
		}
	}
	return s
}

// checkOpsSimCalls checks edgesim's view of every call a load placed: as
// many calls as SIPp made, each answered (code 200) and ended by the
// gateway's BYE, none failed, and RTP received and echoed on each. It
// returns the calls for further checks.
func checkOpsSimCalls(t *testing.T, s *sim, want int) []simCall {
	t.Helper()
	// edgewise answers the phone's BYE at once and sends its own to Twilio
	// right after: the last ones may still be on their way when SIPp ends.
	kit.WaitFor(t, 10*time.Second, "edgesim's calls to end", func() bool {
		for _, c := range s.mustCalls(t) {
			if c.State == "answered" || c.State == "ringing" {
				return false
			}
		}
		return true
	})
	calls := s.mustCalls(t)
	var received, echoed uint64
	bad := 0
	for _, c := range calls {
		if c.State != "ended" || c.Code != 200 || c.EndedBy != "gateway" ||
			c.Media == nil || c.Media.PacketsReceived == 0 || c.Media.PacketsEchoed == 0 {
			if bad < 5 {
				t.Errorf("edgesim call not answered, talked and ended by the gateway: %+v media %+v", c, c.Media)
			}
			bad++
			continue
		}
		received += c.Media.PacketsReceived
		echoed += c.Media.PacketsEchoed
	}
	if len(calls) != want || bad > 0 {
		t.Fatalf("edgesim saw %d calls (want %d), %d not answered-talked-ended cleanly", len(calls), want, bad)
	}
	t.Logf("edgesim: %d calls all answered and ended by the gateway; RTP received %d, echoed %d packets", len(calls), received, echoed)
	return calls
}
