package provision

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/edgewise-sip/edgewise/test/edgesim"
	"github.com/edgewise-sip/edgewise/test/kit"
)

func syncLines(t *testing.T, api API, w Want, opt SyncOptions) ([]string, SyncResult) {
	t.Helper()
	var out bytes.Buffer
	res, err := Sync(context.Background(), api, w, opt, &out)
	if err != nil {
		t.Fatalf("sync: %v\noutput:\n%s", err, out.String())
	}
	return strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n"), res
}

func sameLines(t *testing.T, step string, got, want []string) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%s printed:\n%s\nwant:\n%s", step, strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestSyncCreateRerunUpdatePrune walks a domain with no credential list
// through sync: created and mapped for registration and calls, a second
// run changes nothing and says so, --update-passwords sets them, --prune
// deletes what no phone uses.
func TestSyncCreateRerunUpdatePrune(t *testing.T) {
	sim := startSim(t, simConfig(kit.NewNet(t)))
	api := newREST(t, settings(sim))
	must(t, sim.DeleteRESTDomain("demo"))
	sim.PutRESTDomain("demo", edgesim.RESTDomainUpdate{VoiceURL: ptr("https://example.com/twiml")})
	w := want(
		Phone{User: "alice", TwilioUser: "alice", Password: "AliceTwilio123"},
		Phone{User: "bob", TwilioUser: "bob-desk", Password: "BobTwilio1234"},
		Phone{User: "bob2", TwilioUser: "bob-desk", Password: "BobTwilio1234"}, // same Twilio user, same password: one credential
	)

	// Dry run first: nothing changes.
	got, res := syncLines(t, api, w, SyncOptions{DryRun: true})
	sameLines(t, "dry run", got, []string{
		`would create credential list "edgewise demo"`,
		`would map credential list "edgewise demo" to demo.sip.twilio.com for registration`,
		`would map credential list "edgewise demo" to demo.sip.twilio.com for calls`,
		`would create credential alice in "edgewise demo"`,
		`would create credential bob-desk in "edgewise demo"`,
		`dry run: 5 change(s) not made, 0 credential(s) already in place`,
	})
	if d := sim.REST().Domains[0]; res.Changes != 5 || len(d.RegistrationLists)+len(d.CallsLists) != 0 || len(sim.REST().CredentialLists) != 1 {
		t.Fatalf("dry run changed something: %+v %+v", res, sim.REST())
	}

	got, res = syncLines(t, api, w, SyncOptions{})
	listSID := ""
	for _, l := range sim.REST().CredentialLists {
		if l.FriendlyName == "edgewise demo" {
			listSID = l.SID
		}
	}
	sameLines(t, "first run", got, []string{
		`created credential list "edgewise demo" (` + listSID + `)`,
		`mapped credential list "edgewise demo" to demo.sip.twilio.com for registration`,
		`mapped credential list "edgewise demo" to demo.sip.twilio.com for calls`,
		`created credential alice in "edgewise demo"`,
		`created credential bob-desk in "edgewise demo"`,
		`5 change(s) made, 0 credential(s) already in place`,
	})
	if pw, ok := sim.RESTPassword("edgewise demo", "bob-desk"); !ok || pw != "BobTwilio1234" || res.Changes != 5 {
		t.Fatalf("bob-desk's password %q %v, result %+v", pw, ok, res)
	}
	if d := sim.REST().Domains[0]; !reflect.DeepEqual(d.RegistrationLists, []string{listSID}) || !reflect.DeepEqual(d.CallsLists, []string{listSID}) {
		t.Fatalf("mappings after sync: registration %v, calls %v, want %s for both", d.RegistrationLists, d.CallsLists, listSID)
	}
	if r, err := Check(context.Background(), api, w); err != nil || len(r.Problems) != 0 {
		t.Fatalf("check after sync: %+v %v", r.Problems, err)
	}

	// Second run: nothing to do, and it says so.
	before := requests(sim)
	got, res = syncLines(t, api, w, SyncOptions{})
	sameLines(t, "second run", got, []string{
		`nothing to change: 2 credential(s) already in place (their passwords are not compared: Twilio never returns them; --update-passwords sets them)`,
	})
	if res != (SyncResult{Unchanged: 2}) {
		t.Errorf("second run result %+v", res)
	}
	// Reads only: the domains, the domain's registration and calls
	// mappings, the one list's credentials.
	if n := requests(sim)["ashburn"] - before["ashburn"]; n != 4 {
		t.Errorf("second run made %d requests, want 4 reads", n)
	}

	// New passwords in the config: --update-passwords sets them.
	w.Phones[0].Password = "AliceChanged123"
	got, _ = syncLines(t, api, w, SyncOptions{UpdatePasswords: true})
	sameLines(t, "update passwords", got, []string{
		`password set for alice in "edgewise demo"`,
		`password set for bob-desk in "edgewise demo"`,
		`2 change(s) made, 0 credential(s) already in place`,
	})
	if pw, _ := sim.RESTPassword("edgewise demo", "alice"); pw != "AliceChanged123" {
		t.Errorf("alice's password after update = %q", pw)
	}

	// A phone leaves: kept without --prune, deleted with it.
	w.Phones = w.Phones[:1]
	got, res = syncLines(t, api, w, SyncOptions{})
	sameLines(t, "without prune", got, []string{
		`kept credential bob-desk in "edgewise demo": no phone uses it (--prune deletes it)`,
		`nothing to change: 1 credential(s) already in place (their passwords are not compared: Twilio never returns them; --update-passwords sets them)`,
	})
	if res.Kept != 1 {
		t.Errorf("kept = %d", res.Kept)
	}
	got, _ = syncLines(t, api, w, SyncOptions{Prune: true, DryRun: true})
	sameLines(t, "prune dry run", got, []string{
		`would delete credential bob-desk from "edgewise demo"`,
		`dry run: 1 change(s) not made, 1 credential(s) already in place`,
	})
	got, _ = syncLines(t, api, w, SyncOptions{Prune: true})
	sameLines(t, "prune", got, []string{
		`deleted credential bob-desk from "edgewise demo"`,
		`1 change(s) made, 1 credential(s) already in place`,
	})
	if _, ok := sim.RESTPassword("edgewise demo", "bob-desk"); ok {
		t.Error("bob-desk still there after --prune")
	}
	got, _ = syncLines(t, api, w, SyncOptions{Prune: true})
	sameLines(t, "prune again", got, []string{
		`nothing to change: 1 credential(s) already in place (their passwords are not compared: Twilio never returns them; --update-passwords sets them)`,
	})
}

// TestSyncIntoExistingListsAndPages: users missing from a domain that has
// a mapped list go into it; a list longer than one page (twilio-go reads
// 50 a page) is read whole, so a rerun finds every user.
func TestSyncIntoExistingListsAndPages(t *testing.T) {
	sim := startSim(t, simConfig(kit.NewNet(t)))
	api := newREST(t, settings(sim))
	w := want()
	for i := range 70 {
		w.Phones = append(w.Phones, Phone{User: fmt.Sprintf("u%02d", i), TwilioUser: fmt.Sprintf("user%02d", i), Password: "UserTwilio1234"})
	}
	_, res := syncLines(t, api, w, SyncOptions{})
	if res.Changes != 70 || res.Unchanged != 2 {
		t.Fatalf("first run %+v, want 70 created in the seeded list and alice, bob in place", res)
	}
	if pw, ok := sim.RESTPassword("edgesim", "user69"); !ok || pw != "UserTwilio1234" {
		t.Fatalf("user69 not in the seeded list")
	}
	got, res := syncLines(t, api, w, SyncOptions{})
	if res != (SyncResult{Unchanged: 72}) {
		t.Fatalf("rerun %+v:\n%s", res, strings.Join(got, "\n"))
	}
}

// TestSyncReusesAnUnmappedList: a run that created its list but stopped
// before mapping it leaves "edgewise demo" unmapped; the next run maps that
// one instead of making a second.
func TestSyncReusesAnUnmappedList(t *testing.T) {
	sim := startSim(t, simConfig(kit.NewNet(t)))
	api := newREST(t, settings(sim))
	must(t, sim.DeleteRESTDomain("demo"))
	sim.PutRESTDomain("demo", edgesim.RESTDomainUpdate{SIPRegistration: ptr(false)})
	l, err := api.CreateCredentialList(context.Background(), "edgewise demo")
	must(t, err)
	must(t, api.CreateCredential(context.Background(), l.SID, "alice", "AliceTwilio123"))
	got, _ := syncLines(t, api, want(), SyncOptions{})
	sameLines(t, "resume", got, []string{
		`note: SIP registration is off on demo.sip.twilio.com, so no phone can register until it is on (` + "`edgewise twilio check`" + ` lists what else is missing)`,
		`using credential list "edgewise demo" (` + l.SID + `), which exists unmapped`,
		`mapped credential list "edgewise demo" to demo.sip.twilio.com for registration`,
		`mapped credential list "edgewise demo" to demo.sip.twilio.com for calls`,
		`created credential bob in "edgewise demo"`,
		`3 change(s) made, 1 credential(s) already in place`,
	})
	if n := len(sim.REST().CredentialLists); n != 2 {
		t.Errorf("%d credential lists, want the seed and one edgewise list", n)
	}
}

// TestSyncMapsForCalls: a domain whose registration lists are not mapped
// for calls (Twilio refuses every call from the phones) gets them mapped:
// the list sync manages and any other registration list holding a phone's
// user, not a list no phone is in. --dry-run says so and changes nothing;
// a second run has nothing to change.
func TestSyncMapsForCalls(t *testing.T) {
	sim := startSim(t, simConfig(kit.NewNet(t)))
	api := newREST(t, settings(sim))
	ctx := context.Background()
	st := sim.REST()
	sd, seed := st.Domains[0].SID, st.CredentialLists[0].SID
	unmapCalls(t, api, sd, seed)
	// carol registers through a second list; "lobby" holds no phone.
	office, err := api.CreateCredentialList(ctx, "office")
	must(t, err)
	must(t, api.CreateCredential(ctx, office.SID, "carol", "CarolTwilio123"))
	must(t, api.MapRegistrationList(ctx, sd, office.SID))
	lobby, err := api.CreateCredentialList(ctx, "lobby")
	must(t, err)
	must(t, api.CreateCredential(ctx, lobby.SID, "lobby", "LobbyTwilio123"))
	must(t, api.MapRegistrationList(ctx, sd, lobby.SID))
	w := want(want().Phones[0], want().Phones[1], Phone{User: "carol", TwilioUser: "carol", Password: "CarolTwilio123"})

	got, res := syncLines(t, api, w, SyncOptions{DryRun: true})
	sameLines(t, "dry run", got, []string{
		`would map credential list "edgesim" to demo.sip.twilio.com for calls`,
		`would map credential list "office" to demo.sip.twilio.com for calls`,
		`kept credential lobby in "lobby": no phone uses it (--prune deletes it)`,
		`dry run: 2 change(s) not made, 3 credential(s) already in place`,
	})
	if n := len(sim.REST().Domains[0].CallsLists); n != 0 || res.Changes != 2 {
		t.Fatalf("dry run: %d lists mapped for calls, result %+v", n, res)
	}
	got, _ = syncLines(t, api, w, SyncOptions{})
	sameLines(t, "sync", got, []string{
		`mapped credential list "edgesim" to demo.sip.twilio.com for calls`,
		`mapped credential list "office" to demo.sip.twilio.com for calls`,
		`kept credential lobby in "lobby": no phone uses it (--prune deletes it)`,
		`2 change(s) made, 3 credential(s) already in place`,
	})
	if d := sim.REST().Domains[0]; !reflect.DeepEqual(d.CallsLists, []string{seed, office.SID}) {
		t.Fatalf("calls lists %v, want edgesim and office", d.CallsLists)
	}
	if r, err := Check(ctx, api, w); err != nil || r.OK == "" {
		t.Fatalf("check after sync: %+v, %v", r.Problems, err)
	}
	before := requests(sim)
	got, res = syncLines(t, api, w, SyncOptions{})
	sameLines(t, "second run", got, []string{
		`kept credential lobby in "lobby": no phone uses it (--prune deletes it)`,
		`nothing to change: 3 credential(s) already in place (their passwords are not compared: Twilio never returns them; --update-passwords sets them)`,
	})
	if res != (SyncResult{Unchanged: 3, Kept: 1}) {
		t.Errorf("second run result %+v", res)
	}
	// The domains, both mappings, the three lists' credentials.
	if n := requests(sim)["ashburn"] - before["ashburn"]; n != 6 {
		t.Errorf("second run made %d requests, want 6 reads", n)
	}
}

// TestSyncLeavesCallsListsAlone: a domain with its own list mapped for
// calls keeps it: sync adds no mapping, notes the phone whose user is in
// none of the calls lists, sets passwords in the calls list too
// (--update-passwords) and lists or prunes its unused credentials.
func TestSyncLeavesCallsListsAlone(t *testing.T) {
	sim := startSim(t, simConfig(kit.NewNet(t)))
	api := newREST(t, settings(sim))
	ctx := context.Background()
	st := sim.REST()
	sd, seed := st.Domains[0].SID, st.CredentialLists[0].SID
	callers, err := api.CreateCredentialList(ctx, "callers")
	must(t, err)
	must(t, api.CreateCredential(ctx, callers.SID, "alice", "AliceOld123456"))
	must(t, api.CreateCredential(ctx, callers.SID, "frontdesk", "FrontDesk12345"))
	must(t, api.MapCallsList(ctx, sd, callers.SID))
	unmapCalls(t, api, sd, seed)

	note := `note: Twilio user bob (phone bob) is in none of the credential lists mapped to demo.sip.twilio.com for calls ("callers"), so Twilio refuses its calls: add it to one of them, or map a list that holds it for calls (sync maps a list for calls only when none is)`
	got, _ := syncLines(t, api, want(), SyncOptions{})
	sameLines(t, "sync", got, []string{
		note,
		`kept credential frontdesk in "callers": no phone uses it (--prune deletes it)`,
		`nothing to change: 2 credential(s) already in place (their passwords are not compared: Twilio never returns them; --update-passwords sets them)`,
	})
	if d := sim.REST().Domains[0]; !reflect.DeepEqual(d.CallsLists, []string{callers.SID}) {
		t.Fatalf("calls lists %v changed", d.CallsLists)
	}
	got, _ = syncLines(t, api, want(), SyncOptions{UpdatePasswords: true, Prune: true})
	sameLines(t, "update and prune", got, []string{
		`password set for alice in "edgesim"`,
		`password set for alice in "callers"`,
		`password set for bob in "edgesim"`,
		note,
		`deleted credential frontdesk from "callers"`,
		`4 change(s) made, 0 credential(s) already in place`,
	})
	if pw, _ := sim.RESTPassword("callers", "alice"); pw != "AliceTwilio123" {
		t.Errorf("alice's password in the calls list = %q", pw)
	}
	if _, ok := sim.RESTPassword("callers", "frontdesk"); ok {
		t.Error("frontdesk still in the calls list after --prune")
	}
}

// TestSyncRefusesBadConfigBeforeAnyRequest: passwords Twilio would refuse,
// a user over 32 characters and one Twilio user with two passwords stop
// sync before it sends anything.
func TestSyncRefusesBadConfigBeforeAnyRequest(t *testing.T) {
	sim := startSim(t, simConfig(kit.NewNet(t)))
	api := newREST(t, settings(sim))
	w := want(
		Phone{User: "alice", TwilioUser: "alice", Password: "short"},
		Phone{User: "bob", TwilioUser: strings.Repeat("b", 33), Password: "BobTwilio1234"},
		Phone{User: "carol", TwilioUser: "desk", Password: "CarolTwilio123"},
		Phone{User: "dave", TwilioUser: "desk", Password: "DaveTwilio1234"},
		Phone{User: "erin", TwilioUser: "erin", Password: "alllowercase1234", At: "c.yaml:40: phones[4]"},
	)
	var out bytes.Buffer
	_, err := Sync(context.Background(), api, w, SyncOptions{}, &out)
	var ce *ConfigError
	if !errors.As(err, &ce) {
		t.Fatalf("err = %v, want a ConfigError", err)
	}
	sameLines(t, "problems", ce.Problems, []string{
		"phone alice: twilio_password: does not meet Twilio's rules: it needs at least 12 characters, upper and lower case and a digit",
		"phone bob: twilio_user: " + strings.Repeat("b", 33) + " is longer than Twilio's 32 characters",
		"phone dave: twilio_password: differs from that of carol, which has the same Twilio user desk: Twilio holds one password per user",
		"c.yaml:40: phones[4].twilio_password (erin): does not meet Twilio's rules: it needs upper and lower case",
	})
	for edge, n := range requests(sim) {
		if n != 0 {
			t.Errorf("%d requests to %s before the config was checked", n, edge)
		}
	}
	if out.Len() != 0 || strings.Contains(err.Error(), "short") {
		t.Errorf("output %q / error %q shows a password", out.String(), err)
	}
}

func TestSyncDomainMissing(t *testing.T) {
	sim := startSim(t, simConfig(kit.NewNet(t)))
	api := newREST(t, settings(sim))
	must(t, sim.DeleteRESTDomain("demo"))
	_, err := Sync(context.Background(), api, want(), SyncOptions{}, &bytes.Buffer{})
	if !errors.Is(err, ErrDomainMissing) || !strings.Contains(err.Error(), "demo.sip.twilio.com") {
		t.Fatalf("err = %v, want ErrDomainMissing naming the domain", err)
	}
}
