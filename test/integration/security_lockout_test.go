package integration

import (
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/edgewise-sip/edgewise/test/kit"
)

// secWrongRegisters sends n REGISTERs for alice with a wrong password from
// ip over UDP and returns the codes of their final responses (0: none).
func secWrongRegisters(t *testing.T, ip string, d *daemon, n int) []int {
	t.Helper()
	phone := dialRawSIP(t, "udp", ip, d.ip+":5060")
	uri := "sip:" + d.ip
	var codes []int
	for i := range n {
		req := sipRequest{
			Method: "REGISTER", URI: uri, Transport: "UDP",
			ViaHost: ip, ViaPort: phone.port(), Branch: randHex(8),
			From: "sip:alice@edgewise.test", FromTag: randHex(4), To: "sip:alice@edgewise.test",
			CallID: randHex(10), CSeq: 1, Contact: fmt.Sprintf("sip:alice@%s:%d", ip, phone.port()),
		}
		phone.send(req.String())
		chal := phone.final(req, 2*time.Second)
		if chal == nil || chal.StatusCode != 401 {
			codes = append(codes, 0)
			continue
		}
		req.CSeq, req.Branch = 2, randHex(8)
		req.Auth = answerChallenge(t, chal, "REGISTER", uri, "alice", fmt.Sprintf("guess-%d", i), 1)
		phone.send(req.String())
		code := 0
		if res := phone.final(req, 2*time.Second); res != nil {
			code = res.StatusCode
		}
		codes = append(codes, code)
	}
	return codes
}

// TestSecurityTwilioNeverLockedOut plays an attacker who forges wrong
// REGISTERs from every one of Twilio's addresses (over UDP a source address
// is free to forge) to get Twilio locked out: its calls refused and the
// answers to edgewise's keepalives dropped, so healthy edges look dead.
// Twilio's addresses are never locked out: every forged REGISTER is answered
// 403, edgewise's edges stay up, and Twilio's next call rings the phone.
func TestSecurityTwilioNeverLockedOut(t *testing.T) {
	s := startSim(t)
	d := startDaemon(t, strangerConfig(s, ""))
	uas := registerUAS(t, d, "uas_answer.xml")
	kit.WaitFor(t, 10*time.Second, "alice registered upstream", func() bool { return len(s.edgesOf(t, "alice")) > 0 })

	for edge, ips := range s.ips {
		for _, ip := range ips {
			for i, code := range secWrongRegisters(t, ip, d, 12) {
				if code != 403 {
					t.Fatalf("forged REGISTER %d from %s's %s: got %d, want 403 every time (never locked out)", i+1, edge, ip, code)
				}
			}
		}
	}
	placed := s.placeCall(t, "alice")
	kit.WaitFor(t, 10*time.Second, "Twilio's call answered by the phone", func() bool { return s.call(t, placed.ID).State == "answered" })
	s.hangUp(t, placed.ID)
	waitSipp(t, uas, "answering phone")
	for _, e := range d.status(t).Edges {
		if e.State == "down" || e.Active && e.State != "up" {
			t.Errorf("edge %s is %s (%s) after the forged REGISTERs", e.Name, e.State, e.Reason)
		}
	}
	m := scrapeMetrics(t, d)
	if got := m.value("edgewise_registrar_locked_sources"); got != 0 {
		t.Errorf("locked sources = %v, want 0", got)
	}
	if got := m.value("edgewise_registrar_lockout_exempt_failures_total"); got != 6*12 {
		t.Errorf("exempt failures = %v, want %d", got, 6*12)
	}
	if strings.Contains(d.out.String(), "source locked out") {
		t.Error("edgewise logged a lockout")
	}
}

// secTokenConfig adds a token provider on ip:9061 to upstreamConfig's
// daemon, with phones' passwords as the browser login.
func secTokenConfig(s *sim) func(ip, dir string) string {
	return func(ip, dir string) string {
		return strangerConfig(s, "")(ip, dir) + fmt.Sprintf(`token:
  listen: %s:9061
  account_sid: AC00000000000000000000000000000001
  api_keys:
    - sid: SK00000000000000000000000000000002
      secret: itest-api-key-secret
  twiml_app_sid: AP00000000000000000000000000000003
`, ip)
	}
}

// secTokenPost asks d's token endpoint for a token from ip.
func secTokenPost(t *testing.T, d *daemon, ip, user, password string) *http.Response {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}).DialContext,
	}}
	req, _ := http.NewRequest(http.MethodPost, "http://"+d.ip+":9061/v1/token", nil)
	req.SetBasicAuth(user, password)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("POST /v1/token from %s: %v", ip, err)
	}
	resp.Body.Close()
	return resp
}

// TestSecurityLockoutSharedByTokenEndpoint: password guesses at the token
// endpoint lock the source out of SIP too, and guesses over SIP lock it out
// of the token endpoint; other sources are unaffected.
func TestSecurityLockoutSharedByTokenEndpoint(t *testing.T) {
	s := startSim(t)
	d := startDaemon(t, secTokenConfig(s))

	// bob's password is guessed at the token endpoint, alice's over SIP,
	// so neither user reaches the per-user guard here.
	web := nextIP(t)
	for i := range 10 {
		if code := secTokenPost(t, d, web, "bob", fmt.Sprintf("guess-%d", i)).StatusCode; code != 401 {
			t.Fatalf("token guess %d: %d, want 401", i+1, code)
		}
	}
	if resp := secTokenPost(t, d, web, "bob", "bob-secret"); resp.StatusCode != 429 || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("token request with the right password from the locked-out address: %d", resp.StatusCode)
	}
	if code, out := sippRun(t, "register.xml", web, d.ip+":5060", [][]string{authRow("bob", "bob-secret", 600)}, 1,
		"-timeout", "3s"); code == 0 {
		t.Fatalf("SIP REGISTER from the address locked out at the token endpoint succeeded:\n%s", out)
	}

	sipGuesser := nextIP(t)
	for i, code := range secWrongRegisters(t, sipGuesser, d, 10) {
		if code != 403 {
			t.Fatalf("SIP guess %d: %d, want 403", i+1, code)
		}
	}
	if code := secTokenPost(t, d, sipGuesser, "alice", "alice-secret").StatusCode; code != 429 {
		t.Fatalf("token request from the address locked out over SIP: %d, want 429", code)
	}

	// Everybody else: unaffected.
	other := nextIP(t)
	if code := secTokenPost(t, d, other, "alice", "alice-secret").StatusCode; code != 200 {
		t.Fatalf("token from another address: %d", code)
	}
	if code, out := sippRun(t, "register.xml", other, d.ip+":5060", [][]string{authRow("alice", "alice-secret", 600)}, 1); code != 0 {
		t.Fatalf("REGISTER from another address: sipp exited %d:\n%s", code, out)
	}
}

// TestSecurityUserGuard: a password-spraying botnet guesses alice's password
// from many addresses, each staying under the per-source limit. After
// sip.lockout.user_failures failures alice is guarded: new addresses are
// refused even with her right password, while her desk phone, which logged
// in before, keeps registering.
func TestSecurityUserGuard(t *testing.T) {
	d := startDaemon(t, func(ip, dir string) string {
		return strings.Replace(defaultConfig(ip, dir), "  realm: edgewise.test\n",
			"  realm: edgewise.test\n  lockout: {failures: 10, user_failures: 8, window: 1m, duration: 5m}\n", 1)
	})
	desk := nextIP(t)
	if code, out := sippRun(t, "register.xml", desk, d.ip+":5060", [][]string{authRow("alice", "alice-secret", 600)}, 1); code != 0 {
		t.Fatalf("desk phone: sipp exited %d:\n%s", code, out)
	}
	for range 4 {
		for _, code := range secWrongRegisters(t, nextIP(t), d, 2) {
			if code != 403 {
				t.Fatalf("guess: %d, want 403", code)
			}
		}
	}
	if code, _ := sippRun(t, "register.xml", nextIP(t), d.ip+":5060", [][]string{authRow("alice", "alice-secret", 600)}, 1, "-timeout", "3s"); code == 0 {
		t.Fatal("a new address registered as alice while she is under guard")
	}
	if code, out := sippRun(t, "register.xml", desk, d.ip+":5060", [][]string{authRow("alice", "alice-secret", 600)}, 1); code != 0 {
		t.Fatalf("alice's desk phone refused while she is under guard: sipp exited %d:\n%s", code, out)
	}
	if code, out := sippRun(t, "register.xml", nextIP(t), d.ip+":5060", [][]string{authRow("bob", "bob-secret", 600)}, 1); code != 0 {
		t.Fatalf("bob refused while alice is under guard: sipp exited %d:\n%s", code, out)
	}
	if !strings.Contains(d.out.String(), "user under guard") {
		t.Error("edgewise did not log the guard")
	}
}
