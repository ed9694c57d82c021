package provision

import (
	"context"
	"fmt"
	"strings"
)

// Problem is one thing wrong with the domain and how to fix it.
type Problem struct {
	What string
	Fix  string
}

// String gives "what (fix: how)", one line.
func (p Problem) String() string { return p.What + " (fix: " + p.Fix + ")" }

// Report is what Check found.
type Report struct {
	Domain   string // <label>.sip.twilio.com
	Problems []Problem
	// OK summarises a domain without problems.
	OK string
}

// Check reads the domain and reports every way it does not fit want. It
// returns an error only when the REST API could not be asked.
func Check(ctx context.Context, api API, want Want) (Report, error) {
	name := want.DomainName()
	r := Report{Domain: name}
	add := func(fix, format string, args ...any) {
		r.Problems = append(r.Problems, Problem{What: fmt.Sprintf(format, args...), Fix: fix})
	}
	d, ok, err := findDomain(ctx, api, want)
	if err != nil {
		return r, err
	}
	if !ok {
		add("create it in the Twilio Console (Voice › SIP Domains) with SIP Registration on, or correct twilio.domain; then run `edgewise twilio sync`",
			"SIP Domain %s does not exist in this account", name)
		return r, nil
	}
	if !d.SIPRegistration {
		add("turn on SIP Registration on the domain (REST: SipRegistration=true)",
			"SIP registration is off on %s: Twilio refuses the phones' REGISTERs", name)
	}
	lists, err := api.RegistrationLists(ctx, d.SID)
	if err != nil {
		return r, err
	}
	present := map[string]bool{}
	for _, l := range lists {
		creds, err := api.Credentials(ctx, l.SID)
		if err != nil {
			return r, err
		}
		for _, c := range creds {
			present[c.Username] = true
		}
	}
	inLists := 0
	switch {
	case len(lists) == 0:
		add("run `edgewise twilio sync`, which creates a list with every phone's Twilio user and maps it",
			"no credential list is mapped to %s for registration: none of the %d phones can register", name, len(want.Phones))
	default:
		names := make([]string, len(lists))
		for i, l := range lists {
			names[i] = fmt.Sprintf("%q", l.Name)
		}
		for _, p := range want.Phones {
			if present[p.TwilioUser] {
				inLists++
				continue
			}
			add("run `edgewise twilio sync`, which adds it with the phone's twilio_password",
				"phone %s: Twilio user %s is not in the domain's registration credential lists (%s)", p.User, p.TwilioUser, strings.Join(names, ", "))
		}
	}
	if d.VoiceURL == "" {
		add("set the domain's Voice URL (Voice Configuration › A call comes in) to TwiML that dials the number called",
			"%s has no Voice URL: calls from the phones have no TwiML to run and fail", name)
	}
	wantSecure := want.MediaEncryption == "srtp"
	switch {
	case d.Secure && !wantSecure:
		add("turn Secure Media off on the domain, or set twilio.media_encryption: srtp",
			"Secure Media is on for %s but twilio.media_encryption is %s: Twilio refuses edgewise's plain RTP calls with 488", name, want.MediaEncryption)
	case !d.Secure && wantSecure:
		add("turn Secure Media on for the domain, or set twilio.media_encryption: none",
			"Secure Media is off for %s but twilio.media_encryption is srtp: Twilio will not negotiate SRTP", name)
	}
	if len(r.Problems) == 0 {
		secure := "off"
		if d.Secure {
			secure = "on"
		}
		r.OK = fmt.Sprintf("%s: ok: SIP registration on, %d of %d phones in the registration credential lists, Voice URL set, Secure Media %s as twilio.media_encryption: %s",
			name, inLists, len(want.Phones), secure, want.MediaEncryption)
	}
	return r, nil
}
