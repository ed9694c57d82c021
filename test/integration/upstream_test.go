package integration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgewise-sip/edgewise/test/kit"
)

// sim is a running edgesim binary with two edges of three IPs each.
type sim struct {
	*proc
	control string              // http://ip:port of the control API
	dns     string              // ip:port of its DNS server
	ips     map[string][]string // edge → IPs
}

func startSim(t *testing.T) *sim {
	t.Helper()
	s := &sim{ips: map[string][]string{}}
	ctl := nextIP(t)
	s.control = "http://" + ctl + ":9070"
	s.dns = ctl + ":5353"
	var edges strings.Builder
	for _, name := range []string{"ashburn", "umatilla"} {
		ips := []string{nextIP(t), nextIP(t), nextIP(t)}
		s.ips[name] = ips
		fmt.Fprintf(&edges, "  - {name: %s, ips: [%s], port: 5060}\n", name, strings.Join(ips, ", "))
	}
	cfg := fmt.Sprintf(`domain: itest
edges:
%stransports: [udp, tcp]
dns: {listen: "%s", ttl: 600}
control: {listen: "%s:9070"}
credentials:
  - {user: alice, password: AliceTwilio123}
  - {user: bob, password: BobTwilio1234}
  - {user: carol, password: CarolTwilio123}
`, edges.String(), s.dns, ctl)
	path := filepath.Join(t.TempDir(), "edgesim.yaml")
	writeFile(t, path, cfg)
	s.proc = startProc(t, "edgesim", "-c", path, "-log-level", "debug")
	kit.WaitFor(t, 10*time.Second, "edgesim /healthz", func() bool {
		resp, err := http.Get(s.control + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return s
}

// setMode sets an edge ("edges/ashburn") or an IP ("ips/127.…") to a mode.
func (s *sim) setMode(t *testing.T, what, mode string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPut, s.control+"/v1/"+what, bytes.NewBufferString(`{"mode":"`+mode+`"}`))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("PUT %s mode %s: %s", what, mode, resp.Status)
	}
}

// edgesOf returns the edges on which user has a live binding at Twilio.
func (s *sim) edgesOf(t *testing.T, user string) []string {
	t.Helper()
	resp, err := http.Get(s.control + "/v1/bindings?user=" + user)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Bindings []struct {
			Edge string `json:"edge"`
		} `json:"bindings"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	var edges []string
	for _, b := range body.Bindings {
		edges = append(edges, b.Edge)
	}
	return edges
}

func onlyOn(edges []string, want string) bool {
	return len(edges) > 0 && !strings.Contains(strings.Join(edges, ","), otherEdge(want))
}

func otherEdge(e string) string {
	if e == "ashburn" {
		return "umatilla"
	}
	return "ashburn"
}

// upstreamConfig points a daemon at sim with short timers so failover is
// seconds, not tens of seconds: 500 ms per IP, keepalive every second,
// failback after 2 s of health.
func upstreamConfig(s *sim, extraPhones string) func(ip, dir string) string {
	return func(ip, dir string) string {
		cfg := daemonConfig(ip, dir, "")
		cfg = strings.Replace(cfg, "  dns_server: 127.0.0.1:1\n", fmt.Sprintf(`  dns_server: %s
  timeout: 500ms
  keepalive: {method: options, interval: 1s}
  failback_hold: 2s
  signalling_cidrs: [127.0.0.0/8]
  media_cidrs: [127.0.0.0/8]
`, s.dns), 1)
		return strings.Replace(cfg, "phones:\n", "phones:\n"+extraPhones, 1)
	}
}

// TestUpstreamFailoverWithBaresip: baresip registers locally; its user is
// registered upstream on the primary edge. The primary stops answering: the
// user is on the secondary within timeout + keepalive + 2 s and status says
// why; the primary heals: the user returns after the failback hold, and at
// no poll was the user registered nowhere.
func TestUpstreamFailoverWithBaresip(t *testing.T) {
	requireTool(t, "baresip")
	s := startSim(t)
	d := startDaemon(t, upstreamConfig(s, ""))
	startBaresip(t, d, "bob", "bob-secret")

	kit.WaitFor(t, 10*time.Second, "bob registered upstream on ashburn", func() bool {
		return onlyOn(s.edgesOf(t, "bob"), "ashburn")
	})

	// Watch for a gap for the rest of the test.
	gaps := make(chan string, 1)
	stop := make(chan struct{})
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		for {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			if len(s.edgesOf(t, "bob")) == 0 {
				select {
				case gaps <- time.Now().Format(time.RFC3339Nano):
				default:
				}
			}
		}
	}()
	defer func() { close(stop); <-watched }()

	broken := time.Now()
	s.setMode(t, "edges/ashburn", "drop")
	kit.WaitFor(t, 500*time.Millisecond+time.Second+2*time.Second, "bob moved to umatilla", func() bool {
		return onlyOn(s.edgesOf(t, "bob"), "umatilla")
	})
	t.Logf("failover took %v", time.Since(broken).Round(time.Millisecond))
	st := d.status(t)
	for _, e := range st.Edges {
		if e.Name == "ashburn" && (e.State != "down" || !strings.Contains(e.Reason, "timed out")) {
			t.Errorf("status shows ashburn %s (%q), want down because IPs timed out", e.State, e.Reason)
		}
	}

	s.setMode(t, "edges/ashburn", "up")
	kit.WaitFor(t, 15*time.Second, "bob back on ashburn after the failback hold", func() bool {
		return onlyOn(s.edgesOf(t, "bob"), "ashburn")
	})
	select {
	case at := <-gaps:
		t.Fatalf("bob was registered nowhere at %s", at)
	default:
	}
}

// TestUpstreamOneIPDropped: one IP of the primary stops answering; users stay
// on the primary through its other IPs.
func TestUpstreamOneIPDropped(t *testing.T) {
	s := startSim(t)
	d := startDaemon(t, upstreamConfig(s, ""))
	registerPhones(t, d, "alice", "carol")
	for _, u := range []string{"alice", "carol"} {
		kit.WaitFor(t, 10*time.Second, u+" on ashburn", func() bool { return onlyOn(s.edgesOf(t, u), "ashburn") })
	}
	dead := s.ips["ashburn"][0]
	s.setMode(t, "ips/"+dead, "drop")
	kit.WaitFor(t, 5*time.Second, "the dropped IP marked down", func() bool {
		for _, e := range d.status(t).Edges {
			for _, ip := range e.IPs {
				if ip.IP == dead {
					return ip.State == "down"
				}
			}
		}
		return false
	})
	for _, e := range d.status(t).Edges {
		if e.Name == "ashburn" && (e.State != "up" || !e.Active) {
			t.Fatalf("ashburn is %s (active %v) with one IP of three dropped", e.State, e.Active)
		}
	}
	for _, u := range []string{"alice", "carol"} {
		if edges := s.edgesOf(t, u); !onlyOn(edges, "ashburn") {
			t.Fatalf("%s left the primary: %v", u, edges)
		}
	}
}

// TestUpstreamReloadFlipsOrder: a reload with the edge order reversed moves
// users to the new first edge; a reload naming an unknown edge is refused
// and nothing moves.
func TestUpstreamReloadFlipsOrder(t *testing.T) {
	s := startSim(t)
	d := startDaemon(t, upstreamConfig(s, ""))
	registerPhones(t, d, "alice", "carol")
	for _, u := range []string{"alice", "carol"} {
		kit.WaitFor(t, 10*time.Second, u+" on ashburn", func() bool { return onlyOn(s.edgesOf(t, u), "ashburn") })
	}
	cfg, err := os.ReadFile(d.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	writeFileAtomic(t, d.cfgPath, strings.Replace(string(cfg), "edges: [ashburn, umatilla]", "edges: [umatilla, ashburn]", 1))
	for _, u := range []string{"alice", "carol"} {
		kit.WaitFor(t, 10*time.Second, u+" on umatilla after the flip", func() bool { return onlyOn(s.edgesOf(t, u), "umatilla") })
	}

	writeFileAtomic(t, d.cfgPath, strings.Replace(string(cfg), "edges: [ashburn, umatilla]", "edges: [umatilla, frankfrut]", 1))
	resp, err := http.Post(d.adminURL+"/v1/reload", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnprocessableEntity {
		t.Fatalf("reload with an unknown edge answered %s", resp.Status)
	}
	for _, u := range []string{"alice", "carol"} {
		if edges := s.edgesOf(t, u); !onlyOn(edges, "umatilla") {
			t.Fatalf("%s moved after a refused reload: %v", u, edges)
		}
	}
}

// TestUpstreamWrongTwilioPassword: one user's Twilio password is wrong: that
// user shows the 403, the others register, and no edge is marked down.
func TestUpstreamWrongTwilioPassword(t *testing.T) {
	s := startSim(t)
	d := startDaemon(t, func(ip, dir string) string {
		return strings.Replace(upstreamConfig(s, "")(ip, dir), "twilio_password: CarolTwilio123", "twilio_password: NotCarols1234", 1)
	})
	registerPhones(t, d, "alice", "carol")
	kit.WaitFor(t, 10*time.Second, "alice on ashburn", func() bool { return onlyOn(s.edgesOf(t, "alice"), "ashburn") })
	kit.WaitFor(t, 10*time.Second, "carol's upstream error in status", func() bool {
		for _, u := range d.status(t).Users {
			if u.User == "carol" && u.Upstream != nil && strings.Contains(u.Upstream.LastError, "403") {
				return true
			}
		}
		return false
	})
	if edges := s.edgesOf(t, "carol"); len(edges) != 0 {
		t.Fatalf("carol registered upstream with a wrong password: %v", edges)
	}
	for _, e := range d.status(t).Edges {
		if e.State == "down" {
			t.Fatalf("edge %s marked down by one user's wrong password", e.Name)
		}
	}
}

// registerPhones registers each user once with SIPp from its own address.
func registerPhones(t *testing.T, d *daemon, users ...string) {
	t.Helper()
	for _, u := range users {
		if code, out := sippRun(t, "register.xml", nextIP(t), d.ip+":5060",
			[][]string{authRow(u, u+"-secret", 3600)}, 1); code != 0 {
			t.Fatalf("register %s: sipp exited %d:\n%s", u, code, out)
		}
	}
}
