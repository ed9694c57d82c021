package provision

import (
	"context"
	"reflect"
	"strings"
	"testing"

	"github.com/edgewise-sip/edgewise/test/edgesim"
	"github.com/edgewise-sip/edgewise/test/kit"
)

// TestCheck runs Check against edgesim's REST API with each
// misconfiguration, from a fresh seed each time.
func TestCheck(t *testing.T) {
	sim := startSim(t, simConfig(kit.NewNet(t)))
	api := newREST(t, settings(sim))
	const dom = "demo.sip.twilio.com"
	carol := Phone{User: "carol", TwilioUser: "carol-desk", Password: "CarolTwilio123"}
	const (
		noCalls     = "no credential list or IP access control list is mapped to " + dom + " for calls: Twilio refuses every call from the phones (fix: run `edgewise twilio sync`, which maps its registration credential list for calls too)"
		carolNoReg  = `phone carol: Twilio user carol-desk is not in the domain's registration credential lists ("edgesim") (fix: run ` + "`edgewise twilio sync`" + `, which adds it with the phone's twilio_password)`
		carolNoCall = `phone carol: Twilio user carol-desk is not in the domain's calls credential lists ("edgesim"): Twilio refuses its calls (fix: run ` + "`edgewise twilio sync`" + `, which adds it with the phone's twilio_password)`
		manualFix   = "add it to one of those lists, or map a list that holds it for calls (the domain's Voice Authentication › Credential Lists); sync maps a list for calls only when none is"
	)
	// callers maps a new list "callers" holding alice for calls, in place
	// of the seeded list: calls are then the operator's own choice.
	callers := func(t *testing.T) {
		ctx := context.Background()
		st := sim.REST()
		sd, seed := st.Domains[0].SID, st.CredentialLists[0].SID
		l, err := api.CreateCredentialList(ctx, "callers")
		must(t, err)
		must(t, api.CreateCredential(ctx, l.SID, "alice", "AliceTwilio123"))
		must(t, api.MapCallsList(ctx, sd, l.SID))
		unmapCalls(t, api, sd, seed)
	}
	cases := []struct {
		name  string
		setup func(t *testing.T)
		want  Want
		lines []string // Problem strings, in order; nil = ok
	}{
		{"all well", nil, want(), nil},
		{"domain missing", func(t *testing.T) { must(t, sim.DeleteRESTDomain("demo")) }, want(), []string{
			"SIP Domain demo.sip.twilio.com does not exist in this account (fix: create it in the Twilio Console (Voice › SIP Domains) with SIP Registration on, or correct twilio.domain; then run `edgewise twilio sync`)",
		}},
		{"another domain does not count", func(t *testing.T) {
			must(t, sim.DeleteRESTDomain("demo"))
			sim.PutRESTDomain("demo2", edgesim.RESTDomainUpdate{})
		}, want(), []string{
			"SIP Domain demo.sip.twilio.com does not exist in this account (fix: create it in the Twilio Console (Voice › SIP Domains) with SIP Registration on, or correct twilio.domain; then run `edgewise twilio sync`)",
		}},
		{"registration off", func(t *testing.T) {
			sim.PutRESTDomain("demo", edgesim.RESTDomainUpdate{SIPRegistration: ptr(false)})
		}, want(), []string{
			"SIP registration is off on " + dom + ": Twilio refuses the phones' REGISTERs (fix: turn on SIP Registration on the domain (REST: SipRegistration=true))",
		}},
		{"phone's twilio_user not in the lists", nil, want(want().Phones[0], carol, want().Phones[1]), []string{carolNoReg, carolNoCall}},
		{"no list mapped", func(t *testing.T) {
			must(t, sim.DeleteRESTDomain("demo"))
			sim.PutRESTDomain("demo", edgesim.RESTDomainUpdate{VoiceURL: ptr("https://example.com/twiml")})
		}, want(), []string{
			"no credential list is mapped to " + dom + " for registration: none of the 2 phones can register (fix: run `edgewise twilio sync`, which creates a list with every phone's Twilio user and maps it)",
			noCalls,
		}},
		{"no list mapped for calls", func(t *testing.T) {
			st := sim.REST()
			unmapCalls(t, api, st.Domains[0].SID, st.CredentialLists[0].SID)
		}, want(), []string{noCalls}},
		{"a registered phone's user not in the calls lists", callers, want(), []string{
			`phone bob: Twilio user bob is not in the domain's calls credential lists ("callers"): Twilio refuses its calls (fix: ` + manualFix + `)`,
		}},
		{"a new phone while the registration list is not mapped for calls", callers, want(want().Phones[0], carol), []string{
			carolNoReg,
			`phone carol: Twilio user carol-desk is not in the domain's calls credential lists ("callers"): Twilio refuses its calls (fix: ` + manualFix + `)`,
		}},
		{"no voice URL", func(t *testing.T) {
			sim.PutRESTDomain("demo", edgesim.RESTDomainUpdate{VoiceURL: ptr("")})
		}, want(), []string{
			dom + " has no Voice URL: calls from the phones have no TwiML to run and fail (fix: set the domain's Voice URL (Voice Configuration › A call comes in) to TwiML that dials the number called)",
		}},
		{"secure media on, plain RTP configured", func(t *testing.T) {
			sim.PutRESTDomain("demo", edgesim.RESTDomainUpdate{Secure: ptr(true)})
		}, want(), []string{
			"Secure Media is on for " + dom + " but twilio.media_encryption is none: Twilio refuses edgewise's plain RTP calls with 488 (fix: turn Secure Media off on the domain, or set twilio.media_encryption: srtp)",
		}},
		{"secure media off, srtp configured", nil, Want{Domain: "demo", Phones: want().Phones, MediaEncryption: "srtp"}, []string{
			"Secure Media is off for " + dom + " but twilio.media_encryption is srtp: Twilio will not negotiate SRTP (fix: turn Secure Media on for the domain, or set twilio.media_encryption: none)",
		}},
		{"everything at once", func(t *testing.T) {
			sim.PutRESTDomain("demo", edgesim.RESTDomainUpdate{SIPRegistration: ptr(false), VoiceURL: ptr(""), Secure: ptr(true)})
		}, want(carol), []string{
			"SIP registration is off on " + dom + ": Twilio refuses the phones' REGISTERs (fix: turn on SIP Registration on the domain (REST: SipRegistration=true))",
			carolNoReg,
			carolNoCall,
			dom + " has no Voice URL: calls from the phones have no TwiML to run and fail (fix: set the domain's Voice URL (Voice Configuration › A call comes in) to TwiML that dials the number called)",
			"Secure Media is on for " + dom + " but twilio.media_encryption is none: Twilio refuses edgewise's plain RTP calls with 488 (fix: turn Secure Media off on the domain, or set twilio.media_encryption: srtp)",
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			must(t, sim.ResetREST())
			if tc.setup != nil {
				tc.setup(t)
			}
			r, err := Check(context.Background(), api, tc.want)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, p := range r.Problems {
				got = append(got, p.String())
			}
			if !reflect.DeepEqual(got, tc.lines) {
				t.Errorf("problems:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.lines, "\n"))
			}
			if (r.OK == "") != (len(tc.lines) > 0) {
				t.Errorf("OK line %q with %d problems", r.OK, len(got))
			}
			if len(r.Notices) != 0 {
				t.Errorf("notices %q without an IP access control list", r.Notices)
			}
		})
	}
	must(t, sim.ResetREST())
	r, err := Check(context.Background(), api, want())
	if err != nil || r.OK != dom+": ok: SIP registration on, 2 of 2 phones in the registration credential lists, calls authenticated with 2 of 2 phones in the calls credential lists, Voice URL set, Secure Media off as twilio.media_encryption: none" {
		t.Errorf("ok report %q, %v", r.OK, err)
	}
}

// TestCheckCallsIPACL: a domain whose calls are also authenticated by IP
// access control lists gets a notice (edgewise's public address must be in
// one), with or without problems; IP access control lists alone, without a
// credential list for calls, are a problem.
func TestCheckCallsIPACL(t *testing.T) {
	cfg := simConfig(kit.NewNet(t))
	cfg.REST.Domain.CallsIPACLs = []string{"office", "datacenter"}
	sim := startSim(t, cfg)
	api := newREST(t, settings(sim))
	const dom = "demo.sip.twilio.com"
	const notice = `calls to ` + dom + ` must come from an address in its IP access control list(s) "office", "datacenter": put edgewise's public address there (sip.public_address, as Twilio sees it); check cannot see that address`

	r, err := Check(context.Background(), api, want())
	if err != nil || len(r.Problems) != 0 || !reflect.DeepEqual(r.Notices, []string{notice}) ||
		r.OK != dom+": ok: SIP registration on, 2 of 2 phones in the registration credential lists, calls authenticated with 2 of 2 phones in the calls credential lists and 2 IP access control list(s), Voice URL set, Secure Media off as twilio.media_encryption: none" {
		t.Fatalf("credential list and IP ACLs: %+v, %v", r, err)
	}

	st := sim.REST()
	unmapCalls(t, api, st.Domains[0].SID, st.CredentialLists[0].SID)
	r, err = Check(context.Background(), api, want())
	var got []string
	for _, p := range r.Problems {
		got = append(got, p.String())
	}
	if wantLines := []string{
		`no credential list is mapped to ` + dom + ` for calls, only IP access control lists ("office", "datacenter"): Twilio does not check the phones' Twilio users, so any device at an address in those lists can call as anyone (fix: run ` + "`edgewise twilio sync`" + `, which maps its registration credential list for calls too (Twilio then requires both))`,
	}; err != nil || !reflect.DeepEqual(got, wantLines) || !reflect.DeepEqual(r.Notices, []string{notice}) || r.OK != "" {
		t.Fatalf("IP ACLs alone: problems\n%s\nnotices %q, ok %q, err %v", strings.Join(got, "\n"), r.Notices, r.OK, err)
	}

	// sync maps the registration list for calls; check is then ok, the
	// notice stays.
	lines, _ := syncLines(t, api, want(), SyncOptions{})
	sameLines(t, "sync", lines, []string{
		`mapped credential list "edgesim" to ` + dom + ` for calls`,
		`1 change(s) made, 2 credential(s) already in place`,
	})
	if r, err := Check(context.Background(), api, want()); err != nil || r.OK == "" || !reflect.DeepEqual(r.Notices, []string{notice}) {
		t.Errorf("after sync: %+v, %v", r, err)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
