package provision

import (
	"context"
	"errors"
	"fmt"
	"io"
	"unicode"
)

// SyncOptions change what Sync does; the zero value creates what is
// missing and changes nothing else.
type SyncOptions struct {
	// UpdatePasswords sets the password of every phone's existing
	// credential from the config.
	UpdatePasswords bool
	// Prune deletes credentials of the mapped lists that no phone uses.
	Prune bool
	// DryRun prints what would change without changing anything.
	DryRun bool
	// ListName names the list sync creates; "" means "edgewise <label>".
	ListName string
}

// SyncResult counts what Sync did (or, in a dry run, would do).
type SyncResult struct {
	Changes   int // creations, mappings, passwords set, deletions
	Unchanged int // phones' credentials already in place and left alone
	Kept      int // credentials no phone uses, left because Prune is off
}

// ConfigError is a problem of the config found before anything was sent:
// a Twilio user or password that Twilio would refuse, or one Twilio user
// given two passwords. Problems name the phones.
type ConfigError struct{ Problems []string }

func (e *ConfigError) Error() string {
	return fmt.Sprintf("%d phone(s) cannot be provisioned: %s", len(e.Problems), e.Problems[0])
}

// ErrDomainMissing is returned by Sync when the domain does not exist:
// creating one means choosing its Voice URL and settings, which is the
// operator's call.
var ErrDomainMissing = errors.New("SIP Domain does not exist")

// Sync makes the domain's registration credential lists hold every phone's
// Twilio user, and maps them for calls when no list is, printing each
// change to w as it is made (doc.go says how).
func Sync(ctx context.Context, api API, want Want, opt SyncOptions, w io.Writer) (SyncResult, error) {
	var res SyncResult
	users, err := checkPhones(want.Phones)
	if err != nil {
		return res, err
	}
	if opt.ListName == "" {
		opt.ListName = "edgewise " + want.Domain
	}
	verb := func(done, would string) string {
		if opt.DryRun {
			return would
		}
		return done
	}
	say := func(format string, args ...any) { fmt.Fprintf(w, format+"\n", args...) }

	d, ok, err := findDomain(ctx, api, want)
	if err != nil {
		return res, err
	}
	if !ok {
		return res, fmt.Errorf("%w: %s (create it in the Twilio Console, Voice › SIP Domains, with SIP Registration on, or correct twilio.domain)", ErrDomainMissing, want.DomainName())
	}
	if !d.SIPRegistration {
		say("note: SIP registration is off on %s, so no phone can register until it is on (`edgewise twilio check` lists what else is missing)", d.Name)
	}
	lists, err := api.RegistrationLists(ctx, d.SID)
	if err != nil {
		return res, err
	}
	callLists, err := api.CallsLists(ctx, d.SID)
	if err != nil {
		return res, err
	}

	// Every list read: registration lists first, then calls-only ones.
	all := append([]CredentialList(nil), lists...)
	for _, l := range callLists {
		if !containsList(all, l.SID) {
			all = append(all, l)
		}
	}
	creds := map[string][]Credential{} // list SID → its credentials
	for _, l := range all {
		cs, err := api.Credentials(ctx, l.SID)
		if err != nil {
			return res, err
		}
		creds[l.SID] = cs
	}

	// The list missing users go to: the mapped one named ListName, else the
	// first mapped one, else ListName itself (found unmapped or created).
	target := syncTarget(lists, opt.ListName)
	if target == nil {
		everyList, err := api.CredentialLists(ctx)
		if err != nil {
			return res, err
		}
		for i := range everyList {
			if everyList[i].Name == opt.ListName {
				target = &everyList[i]
				break
			}
		}
		switch {
		case target != nil:
			// Left unmapped by an earlier run that stopped half way.
			say("%s credential list %q (%s), which exists unmapped", verb("using", "would use"), target.Name, target.SID)
			if _, read := creds[target.SID]; !read {
				cs, err := api.Credentials(ctx, target.SID)
				if err != nil {
					return res, err
				}
				creds[target.SID] = cs
			}
		case opt.DryRun:
			target = &CredentialList{Name: opt.ListName}
			say("would create credential list %q", opt.ListName)
			res.Changes++
		default:
			l, err := api.CreateCredentialList(ctx, opt.ListName)
			if err != nil {
				return res, fmt.Errorf("create credential list %q: %w", opt.ListName, err)
			}
			target = &l
			say("created credential list %q (%s)", l.Name, l.SID)
			res.Changes++
		}
		if !opt.DryRun {
			if err := api.MapRegistrationList(ctx, d.SID, target.SID); err != nil {
				return res, fmt.Errorf("map credential list %q to %s: %w", target.Name, d.Name, err)
			}
		}
		say("%s credential list %q to %s for registration", verb("mapped", "would map"), target.Name, d.Name)
		res.Changes++
		lists = append(lists, *target)
		if !containsList(all, target.SID) {
			all = append(all, *target)
		}
	}

	// Where each user is now, over every list read.
	type placed struct {
		list CredentialList
		cred Credential
	}
	where := map[string][]placed{}
	for _, l := range all {
		for _, c := range creds[l.SID] {
			where[c.Username] = append(where[c.Username], placed{l, c})
		}
	}
	registered := func(user string) bool {
		for _, f := range where[user] {
			if containsList(lists, f.list.SID) {
				return true
			}
		}
		return false
	}

	// With no list mapped for calls Twilio refuses every call from the
	// phones: map the lists that hold (or will hold) their users. A domain
	// that has lists mapped for calls keeps them as they are: who may call
	// is the operator's choice.
	if len(callLists) == 0 {
		for _, l := range lists {
			holds := l.SID == target.SID
			for _, u := range users {
				for _, f := range where[u.TwilioUser] {
					holds = holds || f.list.SID == l.SID
				}
			}
			if !holds {
				continue
			}
			if !opt.DryRun {
				if err := api.MapCallsList(ctx, d.SID, l.SID); err != nil {
					return res, fmt.Errorf("map credential list %q to %s for calls: %w", l.Name, d.Name, err)
				}
			}
			say("%s credential list %q to %s for calls", verb("mapped", "would map"), l.Name, d.Name)
			res.Changes++
			callLists = append(callLists, l)
		}
	}

	for _, u := range users {
		if !registered(u.TwilioUser) {
			if !opt.DryRun {
				if err := api.CreateCredential(ctx, target.SID, u.TwilioUser, u.Password); err != nil {
					return res, fmt.Errorf("create credential %s in %q: %w", u.TwilioUser, target.Name, err)
				}
			}
			say("%s credential %s in %q", verb("created", "would create"), u.TwilioUser, target.Name)
			res.Changes++
			// Placed, for the calls note below; with UpdatePasswords a copy
			// of the user in a calls-only list still gets the password.
			where[u.TwilioUser] = append(where[u.TwilioUser], placed{list: *target})
			if !opt.UpdatePasswords {
				continue
			}
		} else if !opt.UpdatePasswords {
			res.Unchanged++
			continue
		}
		for _, f := range where[u.TwilioUser] {
			if f.cred.SID == "" {
				continue // just created with the config's password
			}
			if !opt.DryRun {
				if err := api.SetPassword(ctx, f.list.SID, f.cred.SID, u.Password); err != nil {
					return res, fmt.Errorf("set the password of %s in %q: %w", u.TwilioUser, f.list.Name, err)
				}
			}
			say("%s for %s in %q", verb("password set", "would set the password"), u.TwilioUser, f.list.Name)
			res.Changes++
		}
	}
	for _, u := range users {
		inCalls := false
		for _, f := range where[u.TwilioUser] {
			inCalls = inCalls || containsList(callLists, f.list.SID)
		}
		if !inCalls {
			say("note: Twilio user %s (phone %s) is in none of the credential lists mapped to %s for calls (%s), so Twilio refuses its calls: add it to one of them, or map a list that holds it for calls (sync maps a list for calls only when none is)",
				u.TwilioUser, u.User, d.Name, listNames(callLists))
		}
	}

	wanted := map[string]bool{}
	for _, u := range users {
		wanted[u.TwilioUser] = true
	}
	for _, l := range all {
		for _, c := range creds[l.SID] {
			if wanted[c.Username] {
				continue
			}
			if !opt.Prune {
				say("kept credential %s in %q: no phone uses it (--prune deletes it)", c.Username, l.Name)
				res.Kept++
				continue
			}
			if !opt.DryRun {
				if err := api.DeleteCredential(ctx, l.SID, c.SID); err != nil {
					return res, fmt.Errorf("delete credential %s from %q: %w", c.Username, l.Name, err)
				}
			}
			say("%s credential %s from %q", verb("deleted", "would delete"), c.Username, l.Name)
			res.Changes++
		}
	}

	switch {
	case opt.DryRun:
		say("dry run: %d change(s) not made, %d credential(s) already in place", res.Changes, res.Unchanged)
	case res.Changes == 0:
		say("nothing to change: %d credential(s) already in place (their passwords are not compared: Twilio never returns them; --update-passwords sets them)", res.Unchanged)
	default:
		say("%d change(s) made, %d credential(s) already in place", res.Changes, res.Unchanged)
	}
	return res, nil
}

func containsList(ls []CredentialList, sid string) bool {
	for _, l := range ls {
		if l.SID == sid {
			return true
		}
	}
	return false
}

// checkPhones applies Twilio's credential rules to the config, before any
// request, and returns each Twilio user once (first phone's order).
func checkPhones(phones []Phone) ([]Phone, error) {
	var problems []string
	var out []Phone
	first := map[string]Phone{}
	for _, p := range phones {
		if prev, dup := first[p.TwilioUser]; dup {
			if prev.Password != p.Password {
				problems = append(problems, fmt.Sprintf("%s: differs from that of %s, which has the same Twilio user %s: Twilio holds one password per user",
					p.where("twilio_password"), prev.User, p.TwilioUser))
			}
			continue
		}
		first[p.TwilioUser] = p
		if len(p.TwilioUser) > 32 {
			problems = append(problems, fmt.Sprintf("%s: %s is longer than Twilio's 32 characters", p.where("twilio_user"), p.TwilioUser))
		}
		if why := passwordRules(p.Password); why != "" {
			problems = append(problems, fmt.Sprintf("%s: does not meet Twilio's rules: it needs %s", p.where("twilio_password"), why))
		}
		out = append(out, p)
	}
	if len(problems) > 0 {
		return nil, &ConfigError{Problems: problems}
	}
	return out, nil
}

// passwordRules says what a credential password lacks under Twilio's
// rules (at least 12 characters, upper and lower case, a digit), or "".
func passwordRules(pw string) string {
	var upper, lower, digit bool
	for _, r := range pw {
		upper = upper || unicode.IsUpper(r)
		lower = lower || unicode.IsLower(r)
		digit = digit || unicode.IsDigit(r)
	}
	var missing []string
	if len([]rune(pw)) < 12 {
		missing = append(missing, "at least 12 characters")
	}
	if !upper || !lower {
		missing = append(missing, "upper and lower case")
	}
	if !digit {
		missing = append(missing, "a digit")
	}
	switch len(missing) {
	case 0:
		return ""
	case 1:
		return missing[0]
	case 2:
		return missing[0] + " and " + missing[1]
	}
	return missing[0] + ", " + missing[1] + " and " + missing[2]
}
