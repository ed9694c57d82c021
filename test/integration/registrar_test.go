package integration

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edgewise-sip/edgewise/test/kit"
)

func defaultConfig(ip, dir string) string { return daemonConfig(ip, dir, "") }

// TestSIPpRegistrar runs each registrar scenario from test/sipp with SIPp as
// the phone, over UDP and TCP.
func TestSIPpRegistrar(t *testing.T) {
	d := startDaemon(t, defaultConfig)
	target := d.ip + ":5060"
	for _, transport := range []string{"u1", "t1"} {
		t.Run(transport, func(t *testing.T) {
			client := nextIP(t)
			cases := []struct {
				name     string
				scenario string
				row      []string
				check    func(t *testing.T)
			}{
				{"register with digest", "register.xml", authRow("alice", "alice-secret", 600), func(t *testing.T) {
					uris := d.contacts(t, "alice")
					if !containsHost(uris, client) {
						t.Fatalf("alice's contacts %v lack one from %s", uris, client)
					}
				}},
				{"re-register", "reregister.xml", authRow("bob", "bob-secret", 600), func(t *testing.T) {
					if n := countHost(d.contacts(t, "bob"), client); n != 1 {
						t.Fatalf("bob has %d bindings from %s after a refresh, want 1", n, client)
					}
				}},
				{"unregister one contact", "unregister.xml", authRow("carol", "carol-secret", 600), func(t *testing.T) {
					if n := countHost(d.contacts(t, "carol"), client); n != 0 {
						t.Fatalf("carol still has %d bindings from %s", n, client)
					}
				}},
				{"unregister all with star", "unregister_star.xml", authRow("alice", "alice-secret", 600), func(t *testing.T) {
					if uris := d.contacts(t, "alice"); len(uris) != 0 {
						t.Fatalf("alice still has bindings after Contact: *: %v", uris)
					}
				}},
				{"interval too brief", "interval_too_brief.xml", authRow("bob", "bob-secret", 5), nil},
				{"wrong password", "wrong_password.xml", authRow("carol", "not-carols", 600), nil},
				{"unknown user", "wrong_password.xml", authRow("mallory", "whatever", 600), nil},
			}
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					code, out := sippRun(t, tc.scenario, client, target, [][]string{tc.row}, 1, "-t", transport)
					if code != 0 {
						t.Fatalf("sipp %s exited %d:\n%s", tc.scenario, code, out)
					}
					if tc.check != nil {
						tc.check(t)
					}
				})
			}
		})
	}
}

// TestMalformedRequest: a REGISTER with a broken CSeq gets 400, and the
// registrar keeps serving.
func TestMalformedRequest(t *testing.T) {
	d := startDaemon(t, defaultConfig)
	client := nextIP(t)
	for _, transport := range []string{"u1", "t1"} {
		code, out := sippRun(t, "malformed.xml", client, d.ip+":5060", [][]string{{"alice"}}, 1, "-t", transport)
		if code != 0 {
			t.Fatalf("malformed over %s: sipp exited %d:\n%s", transport, code, out)
		}
	}
	code, out := sippRun(t, "register.xml", client, d.ip+":5060", [][]string{authRow("alice", "alice-secret", 600)}, 1)
	if code != 0 {
		t.Fatalf("register after malformed: sipp exited %d:\n%s", code, out)
	}
}

// TestLockout: ten failed authentications from one source within the window
// lock that source out (no answer at all on UDP), logged once; other sources
// keep working.
func TestLockout(t *testing.T) {
	d := startDaemon(t, func(ip, dir string) string {
		return daemonConfig(ip, dir, "  lockout: {failures: 10, window: 1m, duration: 5m}\n")
	})
	attacker, neighbour := nextIP(t), nextIP(t)
	rows := make([][]string, 10)
	for i := range rows {
		rows[i] = authRow("alice", fmt.Sprintf("guess-%d", i), 600)
	}
	if code, out := sippRun(t, "wrong_password.xml", attacker, d.ip+":5060", rows, 10); code != 0 {
		t.Fatalf("ten wrong passwords: sipp exited %d:\n%s", code, out)
	}
	// Now even the right password from the attacker's address gets silence.
	if code, out := sippRun(t, "expect_silence.xml", attacker, d.ip+":5060",
		[][]string{authRow("alice", "alice-secret", 600)}, 1); code != 0 {
		t.Fatalf("locked-out source was answered: sipp exited %d:\n%s", code, out)
	}
	if code, out := sippRun(t, "register.xml", neighbour, d.ip+":5060",
		[][]string{authRow("alice", "alice-secret", 600)}, 1); code != 0 {
		t.Fatalf("another source was refused: sipp exited %d:\n%s", code, out)
	}
	logs := d.out.String()
	if n := strings.Count(logs, "locked out"); n != 1 {
		t.Fatalf("want exactly one lockout log line, got %d:\n%s", n, logs)
	}
}

// TestRestartKeepsBindings: bindings made, the daemon killed with SIGKILL and
// restarted: every unexpired binding is back in /v1/status.
func TestRestartKeepsBindings(t *testing.T) {
	d := startDaemon(t, defaultConfig)
	users := map[string]string{"alice": "alice-secret", "bob": "bob-secret", "carol": "carol-secret"}
	clients := map[string]string{}
	for user, pw := range users {
		clients[user] = nextIP(t)
		if code, out := sippRun(t, "register.xml", clients[user], d.ip+":5060",
			[][]string{authRow(user, pw, 3600)}, 1); code != 0 {
			t.Fatalf("register %s: sipp exited %d:\n%s", user, code, out)
		}
	}
	before := d.status(t)
	d.signal(syscall.SIGKILL)
	d.wait(10 * time.Second)
	d.start(t)
	after := d.status(t)
	for user, ip := range clients {
		if !containsHost(d.contacts(t, user), ip) {
			t.Errorf("after restart %s has no binding from %s; before: %+v after: %+v", user, ip, before.Users, after.Users)
		}
	}
}

// TestBaresipRegisters: baresip, a real softphone, registers with digest and
// shows up in /v1/status with its contact.
func TestBaresipRegisters(t *testing.T) {
	requireTool(t, "baresip")
	d := startDaemon(t, defaultConfig)
	client := startBaresip(t, d, "bob", "bob-secret")
	kit.WaitFor(t, 20*time.Second, "baresip's binding in /v1/status", func() bool {
		for _, u := range d.status(t).Users {
			if u.User != "bob" {
				continue
			}
			for _, c := range u.Contacts {
				if strings.Contains(c.Source, client) && strings.Contains(strings.ToLower(c.UserAgent), "baresip") {
					return true
				}
			}
		}
		return false
	})
}

// startBaresip runs baresip registered to d as user and returns the address
// it listens on. Audio comes from a sine generator and goes nowhere, so no
// sound device is needed.
func startBaresip(t *testing.T, d *daemon, user, password string) string {
	t.Helper()
	client, port := baresipListen(t)
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "config"), fmt.Sprintf(`poll_method epoll
sip_listen %s:%d
audio_player aufile,/dev/null
audio_source ausine,440
module_path /usr/lib/baresip/modules
module g711.so
module ausine.so
module aufile.so
module_tmp uuid.so
module_tmp account.so
`, client, port))
	writeFile(t, filepath.Join(dir, "accounts"),
		fmt.Sprintf("<sip:%s@%s:5060;transport=udp>;auth_pass=%s;regint=600\n", user, d.ip, password))
	startProc(t, requireTool(t, "baresip"), "-f", dir)
	return client
}

// baresipListen picks baresip's SIP address: 127.0.0.1 and a free port.
// baresip 1.0 sends RTP from an unbound socket, to which the kernel gives
// 127.0.0.1 as the source toward any loopback address; its SIP must come from
// the same address, because edgewise takes a phone's media only from the
// address its SIP came from (strict source). Other tests' daemons and
// clients use addresses from nextIP, never 127.0.0.1. baresip listens on UDP
// and TCP at the port and TLS at the port above; the ports are picked below
// the kernel's ephemeral range, so no outgoing connection takes them between
// the check and baresip's bind.
func baresipListen(t *testing.T) (string, int) {
	t.Helper()
	free := func(network, addr string) bool {
		if network == "udp" {
			c, err := net.ListenPacket("udp", addr)
			if err == nil {
				c.Close()
			}
			return err == nil
		}
		l, err := net.Listen("tcp", addr)
		if err == nil {
			l.Close()
		}
		return err == nil
	}
	base := 15000 + 2*(os.Getpid()%1000)
	for i := range 500 {
		port := 15000 + (base-15000+2*i)%4000
		if free("udp", fmt.Sprintf("127.0.0.1:%d", port)) && free("tcp", fmt.Sprintf("127.0.0.1:%d", port)) &&
			free("tcp", fmt.Sprintf("127.0.0.1:%d", port+1)) {
			return "127.0.0.1", port
		}
	}
	t.Fatal("no free port pair on 127.0.0.1 for baresip")
	return "", 0
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func containsHost(uris []string, host string) bool { return countHost(uris, host) > 0 }

func countHost(uris []string, host string) int {
	n := 0
	for _, u := range uris {
		if strings.Contains(u, "@"+host+":") || strings.Contains(u, "@"+host+";") || strings.Contains(u, "@"+host+">") {
			n++
		}
	}
	return n
}
