package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/edgewise-sip/edgewise/test/kit"
)

// The twilio provisioning tests run `edgewise twilio check|sync` (the real
// binary, twilio-go inside) against edgesim's REST API: edgewise resolves
// api.<edge>.us1.twilio.com through edgesim's DNS (twilio.dns_server),
// trusts edgesim's test CA (twilio.rest.ca_file) and dials edgesim's REST
// port instead of 443 (EDGEWISE_TWILIO_REST_PORT, the one test hook).

const (
	provisionAccount = "AC0123456789abcdef0123456789abcdef"
	provisionKeySID  = "SK0123456789abcdef0123456789abcdef"
	provisionSecret  = "s3cretS3cretS3cretS3cretS3cret00"
)

// provisionSim is a running edgesim with its REST API on.
type provisionSim struct {
	*proc
	control string // http://ip:port
	dns     string
	caFile  string
	port    int // the REST port every edge shares
}

func provisionStartSim(t *testing.T) *provisionSim {
	t.Helper()
	return provisionStartSimDomain(t, `{voice_url: "https://example.com/twiml"}`)
}

// provisionStartSimDomain is provisionStartSim with the seeded domain's
// settings (edgesim's rest.domain, as YAML flow mapping) given.
func provisionStartSimDomain(t *testing.T, domain string) *provisionSim {
	t.Helper()
	dir := t.TempDir()
	ctl := nextIP(t)
	s := &provisionSim{control: "http://" + ctl + ":9070", dns: ctl + ":5353", caFile: filepath.Join(dir, "rest-ca.pem")}
	cfg := fmt.Sprintf(`domain: itest
edges:
  - {name: ashburn, ips: [%s], port: 5060}
  - {name: umatilla, ips: [%s], port: 5060}
transports: [udp]
dns: {listen: "%s"}
control: {listen: "%s:9070"}
credentials:
  - {user: alice, password: AliceTwilio123}
  - {user: bob, password: BobTwilio1234}
  - {user: carol, password: CarolTwilio123}
rest:
  port: 0
  ca_file: %s
  account_sid: %s
  api_keys: [{sid: %s, secret: %s}]
  domain: %s
`, nextIP(t), nextIP(t), s.dns, ctl, s.caFile, provisionAccount, provisionKeySID, provisionSecret, domain)
	path := filepath.Join(dir, "edgesim.yaml")
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
	s.port = s.rest(t).Port
	if s.port == 0 {
		t.Fatal("edgesim reports no REST port")
	}
	return s
}

// provisionREST is the part of GET /v1/rest the tests read.
type provisionREST struct {
	Port  int `json:"port"`
	Edges []struct {
		Name     string `json:"name"`
		Requests uint64 `json:"requests"`
	} `json:"edges"`
	CredentialLists []struct {
		FriendlyName string   `json:"friendly_name"`
		Usernames    []string `json:"usernames"`
	} `json:"credential_lists"`
}

func (s *provisionSim) rest(t *testing.T) provisionREST {
	t.Helper()
	var st provisionREST
	s.do(t, http.MethodGet, "/v1/rest", "", &st)
	return st
}

func (s *provisionSim) requests(t *testing.T) map[string]uint64 {
	t.Helper()
	out := map[string]uint64{}
	for _, e := range s.rest(t).Edges {
		out[e.Name] = e.Requests
	}
	return out
}

// do calls edgesim's control API and fails the test unless it answers 200.
func (s *provisionSim) do(t *testing.T, method, path, body string, into any) {
	t.Helper()
	req, err := http.NewRequest(method, s.control+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%s %s: %s", method, path, resp.Status)
	}
	if into != nil {
		if err := json.NewDecoder(resp.Body).Decode(into); err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
	}
}

// verify asks edgesim whether the registrar would accept user's password.
func (s *provisionSim) verify(t *testing.T, user, password string) bool {
	t.Helper()
	var out struct{ Match bool }
	s.do(t, http.MethodPost, "/v1/rest/verify", fmt.Sprintf(`{"user":%q,"password":%q}`, user, password), &out)
	return out.Match
}

// provisionConfig writes an edgewise config pointing at s; phones replaces
// the default three (alice, bob, carol with edgesim's passwords) when set.
func provisionConfig(t *testing.T, s *provisionSim, path, secret, phones string) {
	t.Helper()
	if phones == "" {
		phones = `  - {user: alice, password: a, twilio_password: AliceTwilio123}
  - {user: bob, password: b, twilio_password: BobTwilio1234}
  - {user: carol, password: c, twilio_password: CarolTwilio123}
`
	}
	writeFile(t, path, fmt.Sprintf(`twilio:
  domain: itest
  edges: [ashburn, umatilla]
  dns_server: %s
  rest:
    account_sid: %s
    api_key_sid: %s
    api_key_secret: %s
    ca_file: %s
phones:
%sstore:
  path: %s
`, s.dns, provisionAccount, provisionKeySID, secret, s.caFile, phones, filepath.Join(filepath.Dir(path), "edgewise.db")))
}

// provisionRun runs `edgewise twilio ARGS` and returns its exit code,
// stdout and stderr, bounded in time.
func provisionRun(t *testing.T, s *provisionSim, args ...string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "edgewise"), append([]string{"twilio"}, args...)...)
	cmd.Env = append(os.Environ(), fmt.Sprintf("EDGEWISE_TWILIO_REST_PORT=%d", s.port),
		"HTTPS_PROXY=", "https_proxy=", "TWILIO_EDGE=", "TWILIO_REGION=")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("edgewise twilio %v did not finish: %v", args, err)
	}
	return cmd.ProcessState.ExitCode(), stdout.String(), stderr.String()
}

func provisionLines(s string) []string {
	s = strings.TrimSuffix(s, "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

// TestTwilioProvisionCheck: `edgewise twilio check` against edgesim's REST
// state with each misconfiguration, its exact output and exit code.
func TestTwilioProvisionCheck(t *testing.T) {
	sim := provisionStartSim(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "edgewise.yaml")
	const dom = "itest.sip.twilio.com"
	const sync = "`edgewise twilio sync`"
	cases := []struct {
		name   string
		setup  []string // control API calls: "METHOD path body"
		phones string
		code   int
		out    []string
	}{
		{"all well", nil, "", 0, []string{
			dom + ": ok: SIP registration on, 3 of 3 phones in the registration credential lists, calls authenticated with 3 of 3 phones in the calls credential lists, Voice URL set, Secure Media off as twilio.media_encryption: none",
		}},
		{"domain missing", []string{"DELETE /v1/rest/domains/itest "}, "", 1, []string{
			"SIP Domain " + dom + " does not exist in this account (fix: create it in the Twilio Console (Voice › SIP Domains) with SIP Registration on, or correct twilio.domain; then run " + sync + ")",
			"1 problem(s) with " + dom,
		}},
		{"SIP registration off", []string{`PUT /v1/rest/domains/itest {"sip_registration":false}`}, "", 1, []string{
			"SIP registration is off on " + dom + ": Twilio refuses the phones' REGISTERs (fix: turn on SIP Registration on the domain (REST: SipRegistration=true))",
			"1 problem(s) with " + dom,
		}},
		{"twilio_user missing from the credential list", nil, `  - {user: alice, password: a, twilio_password: AliceTwilio123}
  - {user: dave, password: d, twilio_user: dave-desk, twilio_password: DaveTwilio1234}
`, 1, []string{
			`phone dave: Twilio user dave-desk is not in the domain's registration credential lists ("edgesim") (fix: run ` + sync + `, which adds it with the phone's twilio_password)`,
			`phone dave: Twilio user dave-desk is not in the domain's calls credential lists ("edgesim"): Twilio refuses its calls (fix: run ` + sync + `, which adds it with the phone's twilio_password)`,
			"2 problem(s) with " + dom,
		}},
		{"no credential list mapped", []string{"DELETE /v1/rest/domains/itest ", `PUT /v1/rest/domains/itest {"voice_url":"https://example.com/twiml"}`}, "", 1, []string{
			"no credential list is mapped to " + dom + " for registration: none of the 3 phones can register (fix: run " + sync + ", which creates a list with every phone's Twilio user and maps it)",
			"no credential list or IP access control list is mapped to " + dom + " for calls: Twilio refuses every call from the phones (fix: run " + sync + ", which maps its registration credential list for calls too)",
			"2 problem(s) with " + dom,
		}},
		{"no Voice URL", []string{`PUT /v1/rest/domains/itest {"voice_url":""}`}, "", 1, []string{
			dom + " has no Voice URL: calls from the phones have no TwiML to run and fail (fix: set the domain's Voice URL (Voice Configuration › A call comes in) to TwiML that dials the number called)",
			"1 problem(s) with " + dom,
		}},
		{"Secure Media on, media_encryption none", []string{`PUT /v1/rest/domains/itest {"secure":true}`}, "", 1, []string{
			"Secure Media is on for " + dom + " but twilio.media_encryption is none: Twilio refuses edgewise's plain RTP calls with 488 (fix: turn Secure Media off on the domain, or set twilio.media_encryption: srtp)",
			"1 problem(s) with " + dom,
		}},
		{"several at once", []string{`PUT /v1/rest/domains/itest {"sip_registration":false,"voice_url":"","secure":true}`}, "", 1, []string{
			"SIP registration is off on " + dom + ": Twilio refuses the phones' REGISTERs (fix: turn on SIP Registration on the domain (REST: SipRegistration=true))",
			dom + " has no Voice URL: calls from the phones have no TwiML to run and fail (fix: set the domain's Voice URL (Voice Configuration › A call comes in) to TwiML that dials the number called)",
			"Secure Media is on for " + dom + " but twilio.media_encryption is none: Twilio refuses edgewise's plain RTP calls with 488 (fix: turn Secure Media off on the domain, or set twilio.media_encryption: srtp)",
			"3 problem(s) with " + dom,
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			sim.do(t, http.MethodPost, "/v1/rest/reset", "", nil)
			for _, c := range tc.setup {
				method, rest, _ := strings.Cut(c, " ")
				path, body, _ := strings.Cut(rest, " ")
				sim.do(t, method, path, body, nil)
			}
			provisionConfig(t, sim, cfg, provisionSecret, tc.phones)
			code, stdout, stderr := provisionRun(t, sim, "check", "-c", cfg)
			if code != tc.code || !reflect.DeepEqual(provisionLines(stdout), tc.out) || stderr != "" {
				t.Errorf("exit %d, stdout:\n%s\nstderr:\n%s\nwant exit %d, stdout:\n%s", code, stdout, stderr, tc.code, strings.Join(tc.out, "\n"))
			}
		})
	}
}

// TestTwilioProvisionSync: sync creates the list, its mappings for
// registration and calls, and every credential; a second run changes nothing and says so; a changed
// twilio_password is set with --update-passwords (edgesim's registrar
// then takes the new one); a phone removed from the config is kept, then
// deleted with --prune.
func TestTwilioProvisionSync(t *testing.T) {
	sim := provisionStartSim(t)
	sim.do(t, http.MethodDelete, "/v1/rest/domains/itest", "", nil)
	sim.do(t, http.MethodPut, "/v1/rest/domains/itest", `{"voice_url":"https://example.com/twiml"}`, nil)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "edgewise.yaml")
	provisionConfig(t, sim, cfg, provisionSecret, "")

	step := func(name string, wantCode int, want []string, args ...string) {
		t.Helper()
		code, stdout, stderr := provisionRun(t, sim, append(args, "-c", cfg)...)
		got := provisionLines(stdout)
		if code != wantCode || stderr != "" || len(got) != len(want) {
			t.Fatalf("%s: exit %d, stdout:\n%s\nstderr:\n%s\nwant exit %d and:\n%s", name, code, stdout, stderr, wantCode, strings.Join(want, "\n"))
		}
		for i := range want {
			// "*" ends a line whose tail (a SID) differs per run.
			if w, prefix := strings.CutSuffix(want[i], "*"); got[i] != want[i] && !(prefix && strings.HasPrefix(got[i], w)) {
				t.Fatalf("%s: line %d is %q, want %q; stdout:\n%s", name, i+1, got[i], want[i], stdout)
			}
		}
	}
	step("check before", 1, []string{
		"no credential list is mapped to itest.sip.twilio.com for registration: none of the 3 phones can register (fix: run `edgewise twilio sync`, which creates a list with every phone's Twilio user and maps it)",
		"no credential list or IP access control list is mapped to itest.sip.twilio.com for calls: Twilio refuses every call from the phones (fix: run `edgewise twilio sync`, which maps its registration credential list for calls too)",
		"2 problem(s) with itest.sip.twilio.com",
	}, "check")
	step("dry run", 0, []string{
		`would create credential list "edgewise itest"`,
		`would map credential list "edgewise itest" to itest.sip.twilio.com for registration`,
		`would map credential list "edgewise itest" to itest.sip.twilio.com for calls`,
		`would create credential alice in "edgewise itest"`,
		`would create credential bob in "edgewise itest"`,
		`would create credential carol in "edgewise itest"`,
		`dry run: 6 change(s) not made, 0 credential(s) already in place`,
	}, "sync", "--dry-run")
	if sim.verify(t, "alice", "AliceTwilio123") {
		t.Fatal("the dry run changed the account")
	}
	step("create", 0, []string{
		`created credential list "edgewise itest" (CL*`,
		`mapped credential list "edgewise itest" to itest.sip.twilio.com for registration`,
		`mapped credential list "edgewise itest" to itest.sip.twilio.com for calls`,
		`created credential alice in "edgewise itest"`,
		`created credential bob in "edgewise itest"`,
		`created credential carol in "edgewise itest"`,
		`6 change(s) made, 0 credential(s) already in place`,
	}, "sync")
	if !sim.verify(t, "alice", "AliceTwilio123") || !sim.verify(t, "carol", "CarolTwilio123") {
		t.Fatal("after sync edgesim's registrar does not take the config's passwords")
	}
	step("check after", 0, []string{
		"itest.sip.twilio.com: ok: SIP registration on, 3 of 3 phones in the registration credential lists, calls authenticated with 3 of 3 phones in the calls credential lists, Voice URL set, Secure Media off as twilio.media_encryption: none",
	}, "check")
	nothing := `nothing to change: 3 credential(s) already in place (their passwords are not compared: Twilio never returns them; --update-passwords sets them)`
	step("second run", 0, []string{nothing}, "sync")

	// alice's Twilio password changes in the config.
	provisionConfig(t, sim, cfg, provisionSecret, `  - {user: alice, password: a, twilio_password: AliceRotated2024}
  - {user: bob, password: b, twilio_password: BobTwilio1234}
  - {user: carol, password: c, twilio_password: CarolTwilio123}
`)
	step("not compared without the flag", 0, []string{nothing}, "sync")
	step("update passwords", 0, []string{
		`password set for alice in "edgewise itest"`,
		`password set for bob in "edgewise itest"`,
		`password set for carol in "edgewise itest"`,
		`3 change(s) made, 0 credential(s) already in place`,
	}, "sync", "--update-passwords")
	if !sim.verify(t, "alice", "AliceRotated2024") || sim.verify(t, "alice", "AliceTwilio123") {
		t.Fatal("alice's new password is not the one edgesim's registrar takes")
	}

	// carol leaves.
	provisionConfig(t, sim, cfg, provisionSecret, `  - {user: alice, password: a, twilio_password: AliceRotated2024}
  - {user: bob, password: b, twilio_password: BobTwilio1234}
`)
	step("kept without --prune", 0, []string{
		`kept credential carol in "edgewise itest": no phone uses it (--prune deletes it)`,
		`nothing to change: 2 credential(s) already in place (their passwords are not compared: Twilio never returns them; --update-passwords sets them)`,
	}, "sync")
	step("prune", 0, []string{
		`deleted credential carol from "edgewise itest"`,
		`1 change(s) made, 2 credential(s) already in place`,
	}, "sync", "--prune")
	if sim.verify(t, "carol", "CarolTwilio123") {
		t.Fatal("carol can still register after --prune")
	}
	step("prune again", 0, []string{
		`nothing to change: 2 credential(s) already in place (their passwords are not compared: Twilio never returns them; --update-passwords sets them)`,
	}, "sync", "--prune")

	// A password Twilio would refuse stops sync before anything is sent.
	provisionConfig(t, sim, cfg, provisionSecret, "  - {user: alice, password: a, twilio_password: weak}\n")
	before := sim.requests(t)
	code, stdout, stderr := provisionRun(t, sim, "sync", "--prune", "-c", cfg)
	if code != 1 || stdout != "" || !strings.Contains(stderr, cfg+":11: phones[0].twilio_password (alice): does not meet Twilio's rules: it needs at least 12 characters, upper and lower case and a digit\n") ||
		!strings.Contains(stderr, "nothing was sent to Twilio") || strings.Contains(stderr, "weak") {
		t.Fatalf("weak password: exit %d, stdout %q, stderr:\n%s", code, stdout, stderr)
	}
	if after := sim.requests(t); !reflect.DeepEqual(after, before) {
		t.Errorf("requests %v → %v: sync sent something with a bad config", before, after)
	}
}

// TestTwilioProvisionCallsNotMapped: a domain whose registration list is
// not mapped for calls refuses every call from the phones; check says so,
// sync maps the list for calls, and check is then ok.
func TestTwilioProvisionCallsNotMapped(t *testing.T) {
	sim := provisionStartSimDomain(t, `{voice_url: "https://example.com/twiml", calls_credential_list: false}`)
	cfg := filepath.Join(t.TempDir(), "edgewise.yaml")
	provisionConfig(t, sim, cfg, provisionSecret, "")
	const dom = "itest.sip.twilio.com"
	for _, step := range []struct {
		args []string
		code int
		out  []string
	}{
		{[]string{"check"}, 1, []string{
			"no credential list or IP access control list is mapped to " + dom + " for calls: Twilio refuses every call from the phones (fix: run `edgewise twilio sync`, which maps its registration credential list for calls too)",
			"1 problem(s) with " + dom,
		}},
		{[]string{"sync"}, 0, []string{
			`mapped credential list "edgesim" to ` + dom + ` for calls`,
			`1 change(s) made, 3 credential(s) already in place`,
		}},
		{[]string{"check"}, 0, []string{
			dom + ": ok: SIP registration on, 3 of 3 phones in the registration credential lists, calls authenticated with 3 of 3 phones in the calls credential lists, Voice URL set, Secure Media off as twilio.media_encryption: none",
		}},
	} {
		code, stdout, stderr := provisionRun(t, sim, append(step.args, "-c", cfg)...)
		if code != step.code || stderr != "" || !reflect.DeepEqual(provisionLines(stdout), step.out) {
			t.Fatalf("%v: exit %d, stdout:\n%s\nstderr:\n%s\nwant exit %d and:\n%s", step.args, code, stdout, stderr, step.code, strings.Join(step.out, "\n"))
		}
	}
}

// TestTwilioProvisionFallsBackToNextEdge: Ashburn's REST listener refuses
// connections; check goes to Umatilla, says so once, and succeeds.
func TestTwilioProvisionFallsBackToNextEdge(t *testing.T) {
	sim := provisionStartSim(t)
	sim.do(t, http.MethodPut, "/v1/rest/edges/ashburn", `{"mode":"refuse"}`, nil)
	cfg := filepath.Join(t.TempDir(), "edgewise.yaml")
	provisionConfig(t, sim, cfg, provisionSecret, "")
	code, stdout, stderr := provisionRun(t, sim, "check", "-c", cfg)
	if code != 0 || !strings.HasPrefix(stdout, "itest.sip.twilio.com: ok:") {
		t.Fatalf("exit %d, stdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	if want := "edgewise twilio check: api.ashburn.us1.twilio.com failed (connection refused); trying api.umatilla.us1.twilio.com\n"; stderr != want {
		t.Errorf("stderr %q, want %q", stderr, want)
	}
	if n := sim.requests(t); n["ashburn"] != 0 || n["umatilla"] == 0 {
		t.Errorf("requests %v: want all at umatilla", n)
	}
	// Both edges gone: exit 2, one line naming each.
	sim.do(t, http.MethodPut, "/v1/rest/edges/umatilla", `{"mode":"refuse"}`, nil)
	code, _, stderr = provisionRun(t, sim, "sync", "-c", cfg)
	lines := provisionLines(stderr)
	if code != 2 || len(lines) != 2 || lines[1] != "edgewise twilio: list SIP Domains: no Twilio REST edge answered: api.ashburn.us1.twilio.com: connection refused; api.umatilla.us1.twilio.com: connection refused" {
		t.Errorf("every edge refusing: exit %d, stderr:\n%s", code, stderr)
	}
}

// TestTwilioProvisionBadKey: a wrong API key secret is one clear line and
// one request, not a retry on every edge.
func TestTwilioProvisionBadKey(t *testing.T) {
	sim := provisionStartSim(t)
	cfg := filepath.Join(t.TempDir(), "edgewise.yaml")
	provisionConfig(t, sim, cfg, "wrongWrongWrongWrongWrongWrong00", "")
	for _, cmd := range []string{"check", "sync"} {
		sim.do(t, http.MethodPost, "/v1/rest/reset", "", nil)
		code, stdout, stderr := provisionRun(t, sim, cmd, "-c", cfg)
		want := "edgewise twilio: Twilio refused the API key " + provisionKeySID + " (401 at api.ashburn.us1.twilio.com): check twilio.rest.api_key_sid and api_key_secret, and that the key belongs to account " + provisionAccount + "\n"
		if code != 2 || stdout != "" || stderr != want {
			t.Errorf("%s: exit %d, stdout %q, stderr %q; want exit 2 and %q", cmd, code, stdout, stderr, want)
		}
		if n := sim.requests(t); n["ashburn"] != 1 || n["umatilla"] != 0 {
			t.Errorf("%s: requests %v, want exactly one", cmd, n)
		}
	}
}
