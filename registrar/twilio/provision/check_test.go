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
		{"phone's twilio_user not in the lists", nil, want(want().Phones[0], carol, want().Phones[1]), []string{
			`phone carol: Twilio user carol-desk is not in the domain's registration credential lists ("edgesim") (fix: run ` + "`edgewise twilio sync`" + `, which adds it with the phone's twilio_password)`,
		}},
		{"no list mapped", func(t *testing.T) {
			must(t, sim.DeleteRESTDomain("demo"))
			sim.PutRESTDomain("demo", edgesim.RESTDomainUpdate{VoiceURL: ptr("https://example.com/twiml")})
		}, want(), []string{
			"no credential list is mapped to " + dom + " for registration: none of the 2 phones can register (fix: run `edgewise twilio sync`, which creates a list with every phone's Twilio user and maps it)",
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
			`phone carol: Twilio user carol-desk is not in the domain's registration credential lists ("edgesim") (fix: run ` + "`edgewise twilio sync`" + `, which adds it with the phone's twilio_password)`,
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
		})
	}
	must(t, sim.ResetREST())
	r, err := Check(context.Background(), api, want())
	if err != nil || r.OK != dom+": ok: SIP registration on, 2 of 2 phones in the registration credential lists, Voice URL set, Secure Media off as twilio.media_encryption: none" {
		t.Errorf("ok report %q, %v", r.OK, err)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
