package configs

import (
	"fmt"
	"slices"
	"strings"

	"github.com/emiago/sipgo/sip"
)

// maxDialDigits bounds an extension or emergency number: E.164 numbers
// have at most 15 digits, and these are shorter still.
const maxDialDigits = 15

// decodeCallRoutes reads where calls go when Twilio is not the way:
// calls.local, calls.fallback_targets and calls.emergency_numbers.
func (d *decoder) decodeCallRoutes(f *fields, c *Calls) {
	if f.str("local", &c.Local) && !contains([]string{LocalWhenTwilioDown, LocalAlways, LocalNever}, c.Local) {
		d.problem(f.sub("local"), "", "%q is not one of %s, %s, %s", c.Local, LocalWhenTwilioDown, LocalAlways, LocalNever)
	}
	c.FallbackTargets = d.decodeTargets(f, "fallback_targets")
	for i, t := range c.FallbackTargets {
		var u sip.Uri
		if sip.ParseUri(t.URI, &u) != nil || u.User == "" {
			continue // a bad URI is reported already
		}
		p := index(f.sub("fallback_targets"), i) + ".uri"
		d.problem(p, "write the target without a user, e.g. sip:"+hostPort(u),
			"%q names user %q: a fallback target gets the number dialled as the user part", t.URI, u.User)
	}
	items, _ := f.strList("emergency_numbers")
	seen := map[string]string{}
	for _, it := range items {
		if !isDialString(it.Value) {
			d.problem(it.Path, `digits only, e.g. ["911", "112"]`, "%q is not a number", it.Value)
			continue
		}
		if first, dup := seen[it.Value]; dup {
			d.problem(it.Path, "", "%s is listed twice (also %s)", it.Value, first)
			continue
		}
		seen[it.Value] = it.Path
		c.EmergencyNumbers = append(c.EmergencyNumbers, it.Value)
	}
}

// hostPort is the host[:port][;params] of a SIP URI, for hints.
func hostPort(u sip.Uri) string {
	u.User, u.Password = "", ""
	return strings.TrimPrefix(u.String(), "sip:")
}

// decodeExtension reads a phone's extension.
func (d *decoder) decodeExtension(f *fields, p *Phone) {
	if !f.str("extension", &p.Extension) {
		return
	}
	if !isDialString(p.Extension) {
		d.problem(f.sub("extension"), `digits, e.g. "201"`, "%q is not an extension", p.Extension)
		p.Extension = ""
	}
}

// isDialString accepts what a desk phone dials: 1 to 15 digits.
func isDialString(s string) bool {
	if s == "" || len(s) > maxDialDigits {
		return false
	}
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}

// validateExtensions refuses numbers that would reach two places: an
// extension that is another phone's extension, another user's name or an
// emergency number. A local call is routed by the Request-URI user alone,
// so each of these would ring the wrong party.
func (d *decoder) validateExtensions(phones []Phone, c Calls) {
	users := make(map[string]int, len(phones))
	for i, p := range phones {
		if _, dup := users[p.User]; !dup {
			users[p.User] = i
		}
		if slices.Contains(c.EmergencyNumbers, p.User) {
			d.problem(fmt.Sprintf("phones[%d].user", i), "rename the user",
				"user %s is an emergency number (calls.emergency_numbers): it must always reach the emergency services", p.User)
		}
	}
	exts := make(map[string]int, len(phones))
	for i, p := range phones {
		if p.Extension == "" {
			continue
		}
		path := fmt.Sprintf("phones[%d].extension", i)
		if j, dup := exts[p.Extension]; dup {
			d.problem(path, "give each phone its own extension",
				"extension %s is also %s's (line %d)", p.Extension, phones[j].User, d.lineOf(fmt.Sprintf("phones[%d].extension", j)))
			continue
		}
		exts[p.Extension] = i
		if j, ok := users[p.Extension]; ok && phones[j].User != p.User {
			d.problem(path, "pick an extension that is no user's name",
				"extension %s is the name of user %s (line %d): a call to %s could not tell them apart", p.Extension, phones[j].User, phones[j].Line, p.Extension)
			continue
		}
		if slices.Contains(c.EmergencyNumbers, p.Extension) {
			d.problem(path, "pick another extension",
				"extension %s is an emergency number (calls.emergency_numbers): it must always reach the emergency services", p.Extension)
		}
	}
}
