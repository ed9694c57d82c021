package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/edgewise-sip/edgewise/registrar/calls"
	"github.com/edgewise-sip/edgewise/test/kit"
)

// simCall is the part of an edgesim Call the tests read.
type simCall struct {
	ID         string `json:"id"`
	Direction  string `json:"direction"`
	State      string `json:"state"`
	Code       int    `json:"code"`
	To         string `json:"to"`
	Edge       string `json:"edge"`
	IP         string `json:"ip"`
	AnsweredBy string `json:"answered_by"`
	EndedBy    string `json:"ended_by"`
	Forks      []struct {
		Contact string `json:"contact"`
		State   string `json:"state"`
		Code    int    `json:"code"`
	} `json:"forks"`
	StartedAt time.Time `json:"started_at"`
	Media     *struct {
		PacketsReceived uint64            `json:"packets_received"`
		PacketsEchoed   uint64            `json:"packets_echoed"`
		RTCPReceived    uint64            `json:"rtcp_received"`
		Invalid         uint64            `json:"invalid"`
		Direction       string            `json:"direction"`
		PayloadTypes    map[string]uint64 `json:"payload_types"`
	} `json:"media"`
	Reinvites int `json:"reinvites"`
}

// calls lists edgesim's calls; nil (not a failure) while it cannot answer.
func (s *sim) calls(t *testing.T) []simCall {
	t.Helper()
	resp, err := http.Get(s.control + "/v1/calls")
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	var body struct {
		Calls []simCall `json:"calls"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return nil
	}
	return body.Calls
}

// mustCalls lists edgesim's calls and fails the test when it cannot.
func (s *sim) mustCalls(t *testing.T) []simCall {
	t.Helper()
	resp, err := http.Get(s.control + "/v1/calls")
	if err != nil {
		t.Fatalf("edgesim calls: %v", err)
	}
	defer resp.Body.Close()
	var body struct {
		Calls []simCall `json:"calls"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatalf("edgesim calls: %v", err)
	}
	return body.Calls
}

// placeCall asks edgesim, as Twilio, to call a user registered through edgewise.
func (s *sim) placeCall(t *testing.T, to string) simCall {
	t.Helper()
	resp, err := http.Post(s.control+"/v1/calls", "application/json", bytes.NewBufferString(`{"to":"`+to+`","timeout":"15s"}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var c simCall
	if err := json.NewDecoder(resp.Body).Decode(&c); err != nil {
		t.Fatalf("POST /v1/calls %s: decode: %v", resp.Status, err)
	}
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("POST /v1/calls: %s", resp.Status)
	}
	return c
}

func (s *sim) call(t *testing.T, id string) simCall {
	t.Helper()
	for _, c := range s.calls(t) {
		if c.ID == id {
			return c
		}
	}
	return simCall{}
}

// hangUp ends one edgesim call from the Twilio side.
func (s *sim) hangUp(t *testing.T, id string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodDelete, s.control+"/v1/calls/"+id, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusAccepted {
		t.Fatalf("DELETE /v1/calls/%s: %s", id, resp.Status)
	}
}

// onlyCall waits for edgesim to hold exactly one call matching cond.
func (s *sim) onlyCall(t *testing.T, what string, cond func(simCall) bool) simCall {
	t.Helper()
	var got simCall
	kit.WaitFor(t, 10*time.Second, what, func() bool {
		cs := s.calls(t)
		if len(cs) != 1 || !cond(cs[0]) {
			return false
		}
		got = cs[0]
		return true
	})
	return got
}

// calls returns the calls in edgewise's /v1/status (none when it cannot be
// read: callers poll).
func (d *daemon) calls() []calls.CallStatus {
	st, err := d.getStatus()
	if err != nil {
		return nil
	}
	return st.Calls
}

func noCallsLeft(t *testing.T, d *daemon) {
	t.Helper()
	kit.WaitFor(t, 5*time.Second, "no call left in edgewise's status", func() bool {
		st, err := d.getStatus()
		return err == nil && len(st.Calls) == 0
	})
}

type sippResult struct {
	code int
	out  string
}

// sippAsync runs sippRun on its own goroutine so the test can poll while the
// call is up.
func sippAsync(t *testing.T, scenario, localIP, target string, rows [][]string, extra ...string) <-chan sippResult {
	t.Helper()
	requireTool(t, "sipp")
	ch := make(chan sippResult, 1)
	go func() {
		code, out := sippRun(t, scenario, localIP, target, rows, 1, extra...)
		ch <- sippResult{code, out}
	}()
	return ch
}

// sippUAS runs a SIPp UAS scenario on ip:5060 for one call, in the
// background; the result arrives on the channel (bounded by a hard timeout).
func sippUAS(t *testing.T, scenario, ip string) <-chan sippResult {
	t.Helper()
	requireTool(t, "sipp")
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	cmd := exec.CommandContext(ctx, "sipp",
		"-sf", filepath.Join(repoDir, "test", "sipp", scenario),
		"-i", ip, "-p", "5060", "-m", "1",
		"-timeout", "25s", "-timeout_error",
		"-nostdin", "-trace_err", "-error_file", filepath.Join(dir, "errors.log"))
	cmd.Dir = dir
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("start sipp uas: %v", err)
	}
	ch := make(chan sippResult, 1)
	done := make(chan struct{})
	go func() {
		defer cancel()
		defer close(done)
		_ = cmd.Wait()
		errs, _ := os.ReadFile(filepath.Join(dir, "errors.log"))
		ch <- sippResult{cmd.ProcessState.ExitCode(), out.String() + "\n" + string(errs)}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	// A call placed before SIPp has bound its socket would meet ICMP port
	// unreachable (or silence); once bound, the kernel queues datagrams
	// even if SIPp's loop has not started yet.
	kit.WaitFor(t, 10*time.Second, "sipp UAS bound to "+ip+":5060", func() bool {
		select {
		case r := <-ch:
			t.Fatalf("sipp UAS exited early (%d):\n%s", r.code, r.out)
		default:
		}
		c, err := net.ListenPacket("udp", ip+":5060")
		if err != nil {
			return true
		}
		c.Close()
		return false
	})
	return ch
}

func waitSipp(t *testing.T, ch <-chan sippResult, what string) {
	t.Helper()
	select {
	case r := <-ch:
		if r.code != 0 {
			t.Fatalf("%s: sipp exited %d:\n%s", what, r.code, r.out)
		}
	case <-time.After(35 * time.Second):
		t.Fatalf("%s: sipp did not finish", what)
	}
}

func dialRow(user, number string) [][]string {
	return [][]string{{user, fmt.Sprintf("[authentication username=%s password=%s-secret]", user, user), number}}
}

// checkRTPFlow polls edgewise while the call is up until both legs relayed
// packets each way, and returns once they did. A SIPp run given in callers
// that ends first fails the wait at once, with what SIPp said.
func checkRTPFlow(t *testing.T, d *daemon, callers ...<-chan sippResult) {
	t.Helper()
	kit.WaitFor(t, 10*time.Second, "edgewise relaying RTP both ways on both legs", func() bool {
		for _, ch := range callers {
			select {
			case r := <-ch:
				t.Fatalf("sipp ended (exit %d) before RTP flowed both ways:\n%s", r.code, r.out)
			default:
			}
		}
		cs := d.calls()
		if len(cs) != 1 || cs[0].Media == nil || len(cs[0].Media.Legs) != 2 {
			return false
		}
		for _, l := range cs[0].Media.Legs {
			if l.RX.Packets == 0 || l.TX.Packets == 0 {
				return false
			}
		}
		return true
	})
}

// TestCallRTPPhoneHangsUp: SIPp plays G.711 RTP from a pcap through edgewise
// to edgesim, which echoes it; both ends and both relay legs count packets;
// the phone's BYE ends both legs.
func TestCallRTPPhoneHangsUp(t *testing.T) {
	s := startSim(t)
	d := startDaemon(t, upstreamConfig(s, ""))
	res := sippAsync(t, "call_rtp.xml", nextIP(t), d.ip+":5060", dialRow("alice", "15550001111"))
	checkRTPFlow(t, d)
	waitSipp(t, res, "call with RTP")
	c := s.onlyCall(t, "edgesim to see the call ended by the gateway", func(c simCall) bool {
		return c.State == "ended" && c.EndedBy == "gateway"
	})
	if c.Media == nil || c.Media.PacketsReceived == 0 || c.Media.PacketsEchoed == 0 {
		t.Fatalf("edgesim media: %+v, want packets received and echoed", c.Media)
	}
	t.Logf("edgesim received %d, echoed %d packets", c.Media.PacketsReceived, c.Media.PacketsEchoed)
	noCallsLeft(t, d)
}

// TestCallRTPFarEndHangsUp: as above, but Twilio's side (edgesim) hangs up:
// the phone gets the BYE and both legs end.
func TestCallRTPFarEndHangsUp(t *testing.T) {
	s := startSim(t)
	d := startDaemon(t, upstreamConfig(s, ""))
	res := sippAsync(t, "call_rtp_farbye.xml", nextIP(t), d.ip+":5060", dialRow("alice", "15550002222"))
	checkRTPFlow(t, d)
	c := s.onlyCall(t, "edgesim to see the call answered", func(c simCall) bool { return c.State == "answered" })
	s.hangUp(t, c.ID)
	waitSipp(t, res, "call with RTP ended by the far end")
	c = s.onlyCall(t, "edgesim to see the call ended by itself", func(c simCall) bool {
		return c.State == "ended" && c.EndedBy == "edgesim"
	})
	if c.Media == nil || c.Media.PacketsReceived == 0 || c.Media.PacketsEchoed == 0 {
		t.Fatalf("edgesim media: %+v, want packets received and echoed", c.Media)
	}
	noCallsLeft(t, d)
}

// TestCallFails: calls that do not connect end the same on both sides —
// the far end busy (486 reaches the phone as 486), and the phone cancelling
// while Twilio rings (the phone gets 487, edgesim's call fails 487).
func TestCallFails(t *testing.T) {
	for _, tc := range []struct {
		name, scenario, number string
		code                   int
	}{
		{"far end busy", "call_busy.xml", "busy", 486},
		{"cancelled by the phone", "call_cancel.xml", "noanswer", 487},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := startSim(t)
			d := startDaemon(t, upstreamConfig(s, ""))
			if code, out := sippRun(t, tc.scenario, nextIP(t), d.ip+":5060", dialRow("alice", tc.number), 1); code != 0 {
				t.Fatalf("sipp exited %d:\n%s", code, out)
			}
			s.onlyCall(t, fmt.Sprintf("edgesim to see the call failed %d", tc.code), func(c simCall) bool {
				return c.State == "failed" && c.Code == tc.code
			})
			noCallsLeft(t, d)
		})
	}
}

// TestCallFailoverDuringSetup: two of the active edge's three IPs stop
// answering just before the call; it completes through the third within
// two per-IP timeouts (500 ms each here) plus slack.
func TestCallFailoverDuringSetup(t *testing.T) {
	s := startSim(t)
	d := startDaemon(t, upstreamConfig(s, ""))
	kit.WaitFor(t, 10*time.Second, "ashburn active", func() bool {
		for _, e := range d.status(t).Edges {
			if e.Name == "ashburn" && e.Active {
				return true
			}
		}
		return false
	})
	ips := s.ips["ashburn"]
	s.setMode(t, "ips/"+ips[0], "drop")
	s.setMode(t, "ips/"+ips[1], "drop")
	start := time.Now()
	if code, out := sippRun(t, "call.xml", nextIP(t), d.ip+":5060", dialRow("alice", "15550003333"), 1); code != 0 {
		t.Fatalf("call with two IPs dropped: sipp exited %d:\n%s", code, out)
	}
	// call.xml talks for 1 s; the rest is setup.
	took := time.Since(start)
	t.Logf("call with failover took %v", took.Round(time.Millisecond))
	if took > 1*time.Second+2*500*time.Millisecond+2*time.Second {
		t.Errorf("call took %v, want about 1 s talk + at most two 500 ms timeouts", took)
	}
	c := s.onlyCall(t, "edgesim to see the call ended", func(c simCall) bool { return c.State == "ended" })
	if c.IP != ips[2] {
		t.Fatalf("call reached %s %s, want the live IP %s", c.Edge, c.IP, ips[2])
	}
	noCallsLeft(t, d)
}

// TestCallHoldResume: the phone puts the call on hold (re-INVITE sendonly)
// and resumes it (sendrecv); both re-INVITEs reach edgesim, which is
// recvonly while held and sendrecv again afterwards.
func TestCallHoldResume(t *testing.T) {
	s := startSim(t)
	d := startDaemon(t, upstreamConfig(s, ""))
	res := sippAsync(t, "call_hold.xml", nextIP(t), d.ip+":5060", dialRow("alice", "15550004444"))
	kit.WaitFor(t, 5*time.Second, "edgesim held (recvonly)", func() bool {
		cs := s.calls(t)
		return len(cs) == 1 && cs[0].Media != nil && cs[0].Media.Direction == "recvonly"
	})
	waitSipp(t, res, "call with hold and resume")
	c := s.onlyCall(t, "edgesim to see the call ended by the gateway", func(c simCall) bool {
		return c.State == "ended" && c.EndedBy == "gateway"
	})
	if c.Reinvites != 2 || c.Media == nil || c.Media.Direction != "sendrecv" {
		t.Fatalf("edgesim saw %d re-INVITEs, media %+v; want 2 and sendrecv", c.Reinvites, c.Media)
	}
	noCallsLeft(t, d)
}
