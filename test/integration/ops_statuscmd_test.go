package integration

import (
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edgewise-sip/edgewise/test/kit"
)

// TestOpsStatusCommand: `edgewise status` against a running daemon after an
// edge flip through POST /v1/reload, with a call up: the table shows the
// edges in the new order with the users counted on the new first edge, the
// users' upstream edges, the call with its RTP counters, and the reload;
// --json prints the daemon's own status document.
func TestOpsStatusCommand(t *testing.T) {
	s := startSim(t)
	d := startDaemon(t, upstreamConfig(s, ""))
	users := []string{"alice", "carol"}
	registerPhones(t, d, users...)
	kit.WaitFor(t, 10*time.Second, "users registered upstream on ashburn", func() bool {
		return opsAllOn(t, d, s, "ashburn", users...)
	})
	cfg, err := os.ReadFile(d.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	// The file watcher applies the new file (one rename, one reload);
	// the operator's POST /v1/reload after it then finds nothing new. The
	// table must show that API reload as the last one and still name the
	// flip that is running.
	writeFileAtomic(t, d.cfgPath, strings.Replace(string(cfg), "edges: [ashburn, umatilla]", "edges: [umatilla, ashburn]", 1))
	kit.WaitFor(t, 10*time.Second, "the file watcher to apply the flip", func() bool {
		return slices.Equal(opsMustStatus(t, d).Config.Edges, []string{"umatilla", "ashburn"})
	})
	resp, err := http.Post(d.adminURL+"/v1/reload", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST /v1/reload: %s", resp.Status)
	}
	kit.WaitFor(t, 10*time.Second, "users registered upstream on umatilla", func() bool {
		return opsAllOn(t, d, s, "umatilla", users...)
	})

	// One call with RTP, long enough to be read while up.
	call := startOpsLoad(t, d, opsLoadSpec{calls: 1, rate: 1, limit: 1, hold: 6 * time.Second}, "alice")
	kit.WaitFor(t, 10*time.Second, "the call answered with RTP both ways", func() bool {
		st, err := opsGetStatus(d)
		if err != nil || len(st.Calls) != 1 || st.Calls[0].State != "answered" || st.Calls[0].Media == nil {
			return false
		}
		for _, l := range st.Calls[0].Media.Legs {
			if l.RX.Packets == 0 || l.TX.Packets == 0 {
				return false
			}
		}
		return true
	})

	out := opsStatusCmd(t, d)
	t.Logf("edgewise status:\n%s", out)
	lines := strings.Split(out, "\n")
	line := func(prefix ...string) []string {
		t.Helper()
		for _, l := range lines {
			f := strings.Fields(l)
			if len(f) >= len(prefix) && slices.Equal(f[:len(prefix)], prefix) {
				return f
			}
		}
		t.Errorf("no line starting with %q", prefix)
		return nil
	}
	line("EDGE", "STATE", "ACTIVE", "IPS", "UP", "USERS")
	line("umatilla", "up", "*", "3/3", "2")
	line("ashburn", "up", "3/3", "0")
	if strings.Index(out, "\numatilla ") > strings.Index(out, "\nashburn ") {
		t.Errorf("edges not in the configured (flipped) order")
	}
	line("alice", "1", "umatilla", "registered")
	line("carol", "1", "umatilla", "registered")
	line("bob", "0", "-", "-")
	line("Calls:", "1", "active")
	st := opsMustStatus(t, d)
	if f := line(st.Calls[0].ID, "outbound", "alice"); len(f) >= 5 && f[4] != "umatilla" {
		t.Errorf("call row %q: want the call on umatilla", f)
	}
	if !regexp.MustCompile(`(?m)^Last reload: \S+ by api: ok, unchanged$`).MatchString(out) ||
		!regexp.MustCompile(`(?m)^Last change: \S+ by file: ok; changed twilio\.edges$`).MatchString(out) {
		t.Errorf("the table does not show the API reload as the last and the file's flip of twilio.edges as the last change")
	}

	// --json: the daemon's document, field for field (counters and
	// timers move between the two reads, so compare the shape and the
	// stable parts).
	raw := opsStatusCmd(t, d, "--json")
	var fromCmd, fromAPI opsStatus
	if err := json.Unmarshal([]byte(raw), &fromCmd); err != nil {
		t.Fatalf("--json output is not JSON: %v\n%s", err, raw)
	}
	fromAPI = opsMustStatus(t, d)
	var keysCmd, keysAPI map[string]json.RawMessage
	_ = json.Unmarshal([]byte(raw), &keysCmd)
	apiRaw := opsRawStatus(t, d)
	_ = json.Unmarshal(apiRaw, &keysAPI)
	if !reflect.DeepEqual(opsKeys(keysCmd), opsKeys(keysAPI)) {
		t.Errorf("--json top-level keys %v, /v1/status %v", opsKeys(keysCmd), opsKeys(keysAPI))
	}
	stable := func(s opsStatus) any {
		type user struct{ User, Edge string }
		var us []user
		for _, u := range s.Users {
			e := ""
			if u.Upstream != nil {
				e = u.Upstream.Edge
			}
			us = append(us, user{u.User, e})
		}
		var calls []string
		for _, c := range s.Calls {
			calls = append(calls, c.ID+" "+c.Edge)
		}
		var edges []string
		for _, e := range s.Edges {
			edges = append(edges, e.Name+" "+string(e.State))
		}
		return []any{s.Config.Path, s.Config.Version, s.Config.Hash, s.Config.Edges, s.Config.LastReload, len(s.Config.Reloads), edges, us, calls}
	}
	if a, b := stable(fromCmd), stable(fromAPI); !reflect.DeepEqual(a, b) {
		t.Errorf("--json and /v1/status differ:\n%+v\n%+v", a, b)
	}

	call.wait(t, 30*time.Second)
	noCallsLeft(t, d)
	if out := opsStatusCmd(t, d); !strings.Contains(out, "Calls: 0 active") {
		t.Errorf("after the call ended:\n%s", out)
	}
}

// opsStatusCmd runs `edgewise status` against the daemon's admin API.
func opsStatusCmd(t *testing.T, d *daemon, args ...string) string {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, "edgewise"), append([]string{"status", "-admin", d.adminURL}, args...)...)
	cmd.Env = append(os.Environ(), "EDGEWISE_ADMIN_TOKEN=")
	out, err := cmd.Output()
	if err != nil {
		var stderr string
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("edgewise status %v: %v\n%s%s", args, err, out, stderr)
	}
	return string(out)
}

func opsRawStatus(t *testing.T, d *daemon) []byte {
	t.Helper()
	resp, err := http.Get(d.adminURL + "/v1/status")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var raw json.RawMessage
	if err := json.NewDecoder(resp.Body).Decode(&raw); err != nil {
		t.Fatal(err)
	}
	return raw
}

func opsKeys(m map[string]json.RawMessage) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}
