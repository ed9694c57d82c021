package integration

import (
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edgewise-sip/edgewise/test/kit"
)

// TestCheckCommand: `edgewise check` exits 0 on a good file and prints every
// problem of a bad one as FILE:LINE: field: problem, exiting non-zero.
func TestCheckCommand(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	writeFile(t, good, daemonConfig("127.0.0.1", dir, ""))
	if out, err := exec.Command(filepath.Join(binDir, "edgewise"), "check", "-c", good).CombinedOutput(); err != nil {
		t.Fatalf("check on a good file: %v\n%s", err, out)
	}

	bad := filepath.Join(dir, "bad.yaml")
	// Line numbers matter: the expected output below names them.
	writeFile(t, bad, `sip:
  listen: ["udp:127.0.0.1:5060"]
  realm: edgewise.test
  max_expirse: 3600s
twilio:
  domain: itest
  edges: [ashburn, ashbrun]
phones:
  - user: alice
    password: ${EDGEWISE_IT_UNSET_VAR}
    twilio_password: AliceTwilio123
store:
  path: `+dir+`/db
admin:
  listen: 127.0.0.1:9060
`)
	cmd := exec.Command(filepath.Join(binDir, "edgewise"), "check", "-c", bad)
	cmd.Env = append(os.Environ(), "EDGEWISE_IT_UNSET_VAR=")
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("check on a bad file exited 0:\n%s", out)
	}
	for _, want := range []string{
		bad + `:4: sip.max_expirse: unknown key`,
		bad + `:7: twilio.edges[1]: unknown edge "ashbrun"`,
		`did you mean "ashburn"`,
		bad + `:10: phones[0].password:`,
		`EDGEWISE_IT_UNSET_VAR`,
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("check output lacks %q:\n%s", want, out)
		}
	}
}

// TestBrokenConfigAtStart: serve refuses to start on a broken file and lists
// the problems.
func TestBrokenConfigAtStart(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "edgewise.yaml")
	writeFile(t, path, strings.Replace(daemonConfig(nextIP(t), dir, ""), "edges: [ashburn, umatilla]", "edges: [roaming]", 1))
	p := startProc(t, "edgewise", "serve", "-c", path)
	if code := p.wait(10 * time.Second); code == 0 {
		t.Fatalf("serve started on a broken file:\n%s", p.out.String())
	}
	if !strings.Contains(p.out.String(), path+":") || !strings.Contains(p.out.String(), "twilio.edges[0]") {
		t.Fatalf("serve's refusal does not name FILE:LINE and the field:\n%s", p.out.String())
	}
}

// TestReload covers the three reload triggers, and a broken file that is
// refused while the old config keeps running.
func TestReload(t *testing.T) {
	d := startDaemon(t, defaultConfig)
	v0 := d.status(t).Config.Version
	if v0 == "" {
		t.Fatal("status has no config version")
	}
	cfg, err := os.ReadFile(d.cfgPath)
	if err != nil {
		t.Fatal(err)
	}

	// A broken file through the API: 422 with FILE:LINE problems; nothing changes.
	broken := strings.Replace(string(cfg), "edges: [ashburn, umatilla]", "edges: [ashburn, umatila]", 1)
	writeFileAtomic(t, d.cfgPath, broken)
	resp, err := http.Post(d.adminURL+"/v1/reload", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	var res struct {
		OK       bool     `json:"ok"`
		Problems []string `json:"problems"`
		Changed  []string `json:"changed"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&res); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnprocessableEntity || res.OK {
		t.Fatalf("broken reload answered %d ok=%v", resp.StatusCode, res.OK)
	}
	if len(res.Problems) == 0 || !strings.Contains(res.Problems[0], d.cfgPath+":") || !strings.Contains(res.Problems[0], "twilio.edges[1]") {
		t.Fatalf("broken reload problems lack FILE:LINE and field: %v", res.Problems)
	}
	if v := d.status(t).Config.Version; v != v0 {
		t.Fatalf("version changed to %s after a refused reload", v)
	}
	// The registrar still serves on the old config.
	if code, out := sippRun(t, "register.xml", nextIP(t), d.ip+":5060", [][]string{authRow("alice", "alice-secret", 600)}, 1); code != 0 {
		t.Fatalf("register after refused reload: sipp exited %d:\n%s", code, out)
	}

	// A good change picked up by the file watcher alone.
	flipped := strings.Replace(string(cfg), "edges: [ashburn, umatilla]", "edges: [umatilla, ashburn]", 1)
	writeFileAtomic(t, d.cfgPath, flipped)
	var v1 string
	kit.WaitFor(t, 10*time.Second, "the file watcher to reload", func() bool {
		s := d.status(t)
		v1 = s.Config.Version
		return v1 != v0 && s.Config.LastReload.OK && s.Config.LastReload.Trigger == "file"
	})

	// SIGHUP after another change.
	writeFileAtomic(t, d.cfgPath, strings.Replace(flipped, "realm: edgewise.test", "realm: edgewise.other", 1))
	// The watcher may win the race for this change; SIGHUP must then report "unchanged" or apply it.
	d.signal(syscall.SIGHUP)
	kit.WaitFor(t, 10*time.Second, "the reload after SIGHUP", func() bool {
		s := d.status(t)
		return s.Config.Version != v1 && s.Config.LastReload.OK
	})
}

// writeFileAtomic replaces a file the way editors and config managers do.
func writeFileAtomic(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	writeFile(t, tmp, content)
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}
