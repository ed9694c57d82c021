// Package integration drives the real edgewise and edgesim binaries with real
// SIP clients nobody on the team wrote (SIPp, baresip). Every address is on
// loopback; every client run is bounded in count and time.
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
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/edgewise-sip/edgewise/cmd/edgewise/admin"
	"github.com/edgewise-sip/edgewise/test/kit"
)

var (
	binDir  string // where TestMain built edgewise and edgesim
	repoDir string // module root, for scenario files
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		fmt.Fprintln(os.Stderr, "go env GOMOD:", err)
		return 1
	}
	repoDir = filepath.Dir(strings.TrimSpace(string(out)))
	binDir, err = os.MkdirTemp("", "edgewise-it-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(binDir)
	build := exec.Command("go", "build", "-race", "-o", binDir+"/", "./cmd/edgewise", "./cmd/edgesim")
	build.Dir = repoDir
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building binaries:", err)
		return 1
	}
	return m.Run()
}

// requireTool fails (never skips) when a client the tests rely on is missing:
// `make test` installs them, so a missing one is a broken setup, not a reason
// to pass quietly.
func requireTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s not installed: run `make test`, which installs it", name)
	}
	return p
}

// nextIP hands each caller its own loopback address (the first host of a
// /24 reserved for the test by kit.NewNet), so daemons and clients of
// different tests, and of two runs of the suite on one machine, never share
// a port. An address whose SIP port is taken (something bound to *:5060) is
// skipped.
func nextIP(t *testing.T) string {
	t.Helper()
	var err error
	for range 20 {
		ip := kit.NewNet(t).Addr(1)
		if err = portsFree(ip); err == nil {
			return ip
		}
	}
	t.Fatalf("no free loopback address for SIP port 5060 after 20 tries (is something bound to *:5060?): %v", err)
	return ""
}

func portsFree(ip string) error {
	u, err := net.ListenPacket("udp", ip+":5060")
	if err != nil {
		return err
	}
	u.Close()
	l, err := net.Listen("tcp", ip+":5060")
	if err != nil {
		return err
	}
	return l.Close()
}

// syncBuffer collects a child's output while the test reads it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// proc is a running binary under test.
type proc struct {
	t    *testing.T
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{}
}

// startProc starts name (a binary TestMain built, or an absolute path) and
// kills it when the test ends.
func startProc(t *testing.T, name string, args ...string) *proc {
	t.Helper()
	p := &proc{t: t, out: &syncBuffer{}, done: make(chan struct{})}
	if !filepath.IsAbs(name) {
		name = filepath.Join(binDir, name)
	}
	p.cmd = exec.Command(name, args...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		_ = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.signal(syscall.SIGKILL)
		<-p.done
		if t.Failed() {
			t.Logf("%s output:\n%s", name, p.out.String())
		}
	})
	return p
}

func (p *proc) signal(sig os.Signal) {
	select {
	case <-p.done:
	default:
		_ = p.cmd.Process.Signal(sig)
	}
}

// wait waits for the process to exit and returns its exit code.
func (p *proc) wait(timeout time.Duration) int {
	p.t.Helper()
	select {
	case <-p.done:
		return p.cmd.ProcessState.ExitCode()
	case <-time.After(timeout):
		p.t.Fatalf("process did not exit within %v; output:\n%s", timeout, p.out.String())
		return -1
	}
}

// daemon is a running `edgewise serve`.
type daemon struct {
	*proc
	ip       string // SIP listens on ip:5060 (UDP and TCP)
	adminURL string
	cfgPath  string
	dir      string
}

// daemonConfig renders a config for a daemon on ip. Extra YAML is appended
// verbatim under the given top-level keys by the caller via overrides.
func daemonConfig(ip, dir string, sipExtra string) string {
	return fmt.Sprintf(`log:
  level: debug
sip:
  listen: ["udp:%[1]s:5060", "tcp:%[1]s:5060"]
  realm: edgewise.test
%[3]stwilio:
  domain: itest
  edges: [ashburn, umatilla]
  dns_server: 127.0.0.1:1
phones:
  - user: alice
    password: alice-secret
    twilio_password: AliceTwilio123
  - user: bob
    password: bob-secret
    twilio_password: BobTwilio1234
  - user: carol
    password: carol-secret
    twilio_password: CarolTwilio123
store:
  path: %[2]s/edgewise.db
admin:
  listen: %[1]s:9060
media:
  rtp_ports: 30000-30999
`, ip, dir, sipExtra)
}

func startDaemon(t *testing.T, cfg func(ip, dir string) string) *daemon {
	t.Helper()
	ip := nextIP(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "edgewise.yaml")
	if err := os.WriteFile(path, []byte(cfg(ip, dir)), 0o600); err != nil {
		t.Fatal(err)
	}
	d := &daemon{ip: ip, adminURL: "http://" + ip + ":9060", cfgPath: path, dir: dir}
	d.start(t)
	return d
}

// start (re)starts the daemon on its config and waits until it is healthy.
func (d *daemon) start(t *testing.T) {
	t.Helper()
	d.proc = startProc(t, "edgewise", "serve", "-c", d.cfgPath)
	kit.WaitFor(t, 15*time.Second, "edgewise /healthz", func() bool {
		select {
		case <-d.done:
			t.Fatalf("edgewise exited early:\n%s", d.out.String())
		default:
		}
		resp, err := http.Get(d.adminURL + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}

// getStatus reads /v1/status; it returns errors instead of failing so
// that pollers (eventually, background watchers) can use it.
func (d *daemon) getStatus() (admin.Status, error) {
	var st admin.Status
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(d.adminURL + "/v1/status")
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("GET /v1/status: %s", resp.Status)
	}
	return st, json.NewDecoder(resp.Body).Decode(&st)
}

// status reads /v1/status.
func (d *daemon) status(t *testing.T) admin.Status {
	t.Helper()
	st, err := d.getStatus()
	if err != nil {
		t.Fatalf("/v1/status: %v", err)
	}
	return st
}

// contacts returns the contact URIs of user in /v1/status.
func (d *daemon) contacts(t *testing.T, user string) []string {
	t.Helper()
	var uris []string
	for _, u := range d.status(t).Users {
		if u.User == user {
			for _, c := range u.Contacts {
				uris = append(uris, c.URI)
			}
		}
	}
	return uris
}

// sippRun runs one SIPp scenario as a UAC against target with the given
// injection rows and returns SIPp's exit code (0: every call succeeded) and
// its output. Bounded by -m (calls) and a hard timeout.
func sippRun(t *testing.T, scenario, localIP, target string, rows [][]string, calls int, extra ...string) (int, string) {
	t.Helper()
	requireTool(t, "sipp")
	dir := t.TempDir()
	inf := filepath.Join(dir, "users.csv")
	var b strings.Builder
	b.WriteString("SEQUENTIAL\n")
	for _, r := range rows {
		b.WriteString(strings.Join(r, ";") + "\n")
	}
	if err := os.WriteFile(inf, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	args := append([]string{
		"-sf", filepath.Join(repoDir, "test", "sipp", scenario),
		"-inf", inf,
		"-i", localIP,
		"-m", fmt.Sprint(calls), "-l", "1",
		"-timeout", "20s", "-timeout_error",
		"-nostdin", "-trace_err", "-error_file", filepath.Join(dir, "errors.log"),
	}, extra...)
	args = append(args, sippAuthURI(t, scenario, rows, target)...)
	args = append(args, target)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "sipp", args...)
	cmd.Dir = dir
	out, _ := cmd.CombinedOutput()
	errs, _ := os.ReadFile(filepath.Join(dir, "errors.log"))
	return cmd.ProcessState.ExitCode(), string(out) + "\n" + string(errs)
}

// authRow is one SIPp injection row: user, credentials keyword, expires.
func authRow(user, password string, expires int) []string {
	return []string{user, fmt.Sprintf("[authentication username=%s password=%s]", user, password), fmt.Sprint(expires)}
}

// sippAuthURI returns SIPp's -auth_uri for a scenario whose INVITEs
// authenticate (call*.xml, load_call*.xml, ops_call*.xml; column 2 is the
// number dialled): SIPp signs its digest for sip:remote_ip:remote_port unless
// told otherwise, while edgewise requires the digest uri to be the
// Request-URI (RFC 3261 §22.4), as real phones send it. The option is one
// value per run, so every row of such a run must dial the same number.
func sippAuthURI(t *testing.T, scenario string, rows [][]string, target string) []string {
	t.Helper()
	if !sippSignsInvites(scenario) || len(rows) == 0 {
		return nil
	}
	number := ""
	for _, r := range rows {
		if len(r) < 3 {
			t.Fatalf("%s: row %v has no number to dial in column 2", scenario, r)
		}
		if number != "" && r[2] != number {
			t.Fatalf("%s: rows dial %s and %s; SIPp signs one Request-URI per run (-auth_uri)", scenario, number, r[2])
		}
		number = r[2]
	}
	return []string{"-auth_uri", number + "@" + target}
}

func sippSignsInvites(scenario string) bool {
	base := filepath.Base(scenario)
	return base != "call_twilio_binding.xml" &&
		(strings.HasPrefix(base, "call") || strings.HasPrefix(base, "load_call") || strings.HasPrefix(base, "ops_call"))
}
