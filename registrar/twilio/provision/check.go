package provision

import (
	"context"
	"fmt"
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
	// Notices are what Check cannot verify but the operator must, each one
	// line; they are not problems and come with or without them.
	Notices []string
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
	// Each list's users, read once though a list is usually mapped both
	// for registration and for calls.
	users := map[string]map[string]bool{}
	usersOf := func(ls []CredentialList) (map[string]bool, error) {
		all := map[string]bool{}
		for _, l := range ls {
			if users[l.SID] == nil {
				creds, err := api.Credentials(ctx, l.SID)
				if err != nil {
					return nil, err
				}
				users[l.SID] = map[string]bool{}
				for _, c := range creds {
					users[l.SID][c.Username] = true
				}
			}
			for u := range users[l.SID] {
				all[u] = true
			}
		}
		return all, nil
	}
	present, err := usersOf(lists)
	if err != nil {
		return r, err
	}
	inLists := 0
	switch {
	case len(lists) == 0:
		add("run `edgewise twilio sync`, which creates a list with every phone's Twilio user and maps it",
			"no credential list is mapped to %s for registration: none of the %d phones can register", name, len(want.Phones))
	default:
		for _, p := range want.Phones {
			if present[p.TwilioUser] {
				inLists++
				continue
			}
			add("run `edgewise twilio sync`, which adds it with the phone's twilio_password",
				"phone %s: Twilio user %s is not in the domain's registration credential lists (%s)", p.User, p.TwilioUser, listNames(lists))
		}
	}

	// Calls: edgewise answers each INVITE's 407 with the calling phone's
	// Twilio credentials, so its user must be in a list mapped for calls.
	callLists, err := api.CallsLists(ctx, d.SID)
	if err != nil {
		return r, err
	}
	acls, err := api.CallsIPACLs(ctx, d.SID)
	if err != nil {
		return r, err
	}
	callers, err := usersOf(callLists)
	if err != nil {
		return r, err
	}
	const mapFix = "run `edgewise twilio sync`, which maps its registration credential list for calls too"
	inCalls := 0
	switch {
	case len(callLists) == 0 && len(acls) == 0:
		add(mapFix, "no credential list or IP access control list is mapped to %s for calls: Twilio refuses every call from the phones", name)
	case len(callLists) == 0:
		add(mapFix+" (Twilio then requires both)",
			"no credential list is mapped to %s for calls, only IP access control lists (%s): Twilio does not check the phones' Twilio users, so any device at an address in those lists can call as anyone",
			name, aclNames(acls))
	default:
		// Sync creates a missing user in its registration list; that fixes
		// calls too when the list is also mapped for calls.
		target := syncTarget(lists, "edgewise "+want.Domain)
		targetCalls := target != nil && containsList(callLists, target.SID)
		for _, p := range want.Phones {
			if callers[p.TwilioUser] {
				inCalls++
				continue
			}
			fix := "add it to one of those lists, or map a list that holds it for calls (the domain's Voice Authentication › Credential Lists); sync maps a list for calls only when none is"
			if !present[p.TwilioUser] && targetCalls {
				fix = "run `edgewise twilio sync`, which adds it with the phone's twilio_password"
			}
			add(fix, "phone %s: Twilio user %s is not in the domain's calls credential lists (%s): Twilio refuses its calls",
				p.User, p.TwilioUser, listNames(callLists))
		}
	}
	if len(acls) > 0 {
		r.Notices = append(r.Notices, fmt.Sprintf("calls to %s must come from an address in its IP access control list(s) %s: put edgewise's public address there (sip.public_address, as Twilio sees it); check cannot see that address",
			name, aclNames(acls)))
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
		byACL := ""
		if len(acls) > 0 {
			byACL = fmt.Sprintf(" and %d IP access control list(s)", len(acls))
		}
		r.OK = fmt.Sprintf("%s: ok: SIP registration on, %d of %d phones in the registration credential lists, calls authenticated with %d of %d phones in the calls credential lists%s, Voice URL set, Secure Media %s as twilio.media_encryption: %s",
			name, inLists, len(want.Phones), inCalls, len(want.Phones), byACL, secure, want.MediaEncryption)
	}
	return r, nil
}
