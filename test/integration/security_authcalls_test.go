package integration

import (
	"net/http"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// authCallsDomain is the part of edgesim's GET /v1/rest these tests read.
type authCallsDomain struct {
	Domains []struct {
		RegistrationLists []string `json:"registration_lists"`
		CallsLists        []string `json:"calls_lists"`
		CallsIPACLs       []string `json:"calls_ip_access_control_lists"`
	} `json:"domains"`
	CredentialLists []struct {
		SID string `json:"sid"`
	} `json:"credential_lists"`
}

func authCallsState(t *testing.T, sim *provisionSim) authCallsDomain {
	t.Helper()
	var st authCallsDomain
	sim.do(t, http.MethodGet, "/v1/rest", "", &st)
	if len(st.Domains) != 1 || len(st.CredentialLists) == 0 {
		t.Fatalf("edgesim REST state %+v", st)
	}
	return st
}

// TestSecurityAuthCallsIPACLOnly: a SIP Domain whose Voice Authentication
// has only an IP access control list lets any device at a listed address
// call as any user: Twilio checks no phone's credentials. `edgewise twilio
// check` used to call that domain ok; now it is a problem (exit 1) with its
// fix, plus a note that edgewise's public address must be in the list.
// sync maps its registration list for calls (a dry run first changes
// nothing; a second run has nothing to change); the phones' registration
// credentials are untouched throughout, and check is then ok, the note kept.
func TestSecurityAuthCallsIPACLOnly(t *testing.T) {
	sim := provisionStartSimDomain(t, `{voice_url: "https://example.com/twiml", calls_credential_list: false, calls_ip_access_control_lists: [office]}`)
	cfg := filepath.Join(t.TempDir(), "edgewise.yaml")
	provisionConfig(t, sim, cfg, provisionSecret, "")
	const dom = "itest.sip.twilio.com"
	const note = `note: calls to ` + dom + ` must come from an address in its IP access control list(s) "office": put edgewise's public address there (sip.public_address, as Twilio sees it); check cannot see that address`
	run := func(name string, wantCode int, want []string, args ...string) {
		t.Helper()
		code, stdout, stderr := provisionRun(t, sim, append(args, "-c", cfg)...)
		if code != wantCode || stderr != "" || !reflect.DeepEqual(provisionLines(stdout), want) {
			t.Fatalf("%s: exit %d, stdout:\n%s\nstderr:\n%s\nwant exit %d and:\n%s", name, code, stdout, stderr, wantCode, strings.Join(want, "\n"))
		}
	}
	registered := func(step string) {
		t.Helper()
		if !sim.verify(t, "alice", "AliceTwilio123") || !sim.verify(t, "carol", "CarolTwilio123") {
			t.Fatalf("%s: the phones' registration credentials changed", step)
		}
	}
	registered("before")

	run("check, IP ACL alone", 1, []string{
		`no credential list is mapped to ` + dom + ` for calls, only IP access control lists ("office"): Twilio does not check the phones' Twilio users, so any device at an address in those lists can call as anyone (fix: run ` + "`edgewise twilio sync`" + `, which maps its registration credential list for calls too (Twilio then requires both))`,
		note,
		"1 problem(s) with " + dom,
	}, "check")

	run("dry run", 0, []string{
		`would map credential list "edgesim" to ` + dom + ` for calls`,
		`dry run: 1 change(s) not made, 3 credential(s) already in place`,
	}, "sync", "--dry-run")
	if st := authCallsState(t, sim); len(st.Domains[0].CallsLists) != 0 {
		t.Fatalf("the dry run mapped %v for calls", st.Domains[0].CallsLists)
	}
	run("sync", 0, []string{
		`mapped credential list "edgesim" to ` + dom + ` for calls`,
		`1 change(s) made, 3 credential(s) already in place`,
	}, "sync")
	st := authCallsState(t, sim)
	if seed := st.CredentialLists[0].SID; !reflect.DeepEqual(st.Domains[0].CallsLists, []string{seed}) ||
		!reflect.DeepEqual(st.Domains[0].RegistrationLists, []string{seed}) || len(st.Domains[0].CallsIPACLs) != 1 {
		t.Fatalf("after sync: %+v, want the seed list mapped for registration and calls, the IP ACL kept", st.Domains[0])
	}
	registered("after sync")
	run("second sync", 0, []string{
		`nothing to change: 3 credential(s) already in place (their passwords are not compared: Twilio never returns them; --update-passwords sets them)`,
	}, "sync")
	run("check after", 0, []string{
		dom + ": ok: SIP registration on, 3 of 3 phones in the registration credential lists, calls authenticated with 3 of 3 phones in the calls credential lists and 1 IP access control list(s), Voice URL set, Secure Media off as twilio.media_encryption: none",
		note,
	}, "check")
}
