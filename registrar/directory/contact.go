package directory

import (
	"strings"

	"github.com/emiago/sipgo/sip"
)

// contactSep separates the local user from the edge in a Contact's user
// part. Local users are [A-Za-z0-9._-] and edge names DNS labels, so "~"
// (unreserved in RFC 3261, never escaped) appears in neither.
const contactSep = "~"

// ContactUser is the user part of the Contact edgewise registers for user
// through edge: "alice~ashburn". Each edge gets its own Contact because
// Twilio shares bindings across edges: registering the new edge's Contact
// can never overwrite (and a later Expires: 0 for the old one can never
// delete) the binding a move just made.
func ContactUser(user, edge string) string { return user + contactSep + edge }

// ParseContact reads the local user and the edge back from a URI Twilio
// sends an INVITE to (the Request-URI of an inbound call is the Contact we
// registered). uri may be a whole URI ("sip:alice~ashburn@203.0.113.5:5060;
// transport=udp", with or without angle brackets) or just its user part.
// ok is false when uri is not one of ours.
func ParseContact(uri string) (user, edge string, ok bool) {
	u := strings.TrimSpace(uri)
	u = strings.TrimPrefix(u, "<")
	if i := strings.IndexByte(u, '>'); i >= 0 {
		u = u[:i]
	}
	if i := strings.IndexByte(u, ':'); i >= 0 && isScheme(u[:i]) {
		u = u[i+1:]
		at := strings.LastIndexByte(u, '@')
		if at < 0 {
			return "", "", false
		}
		u = u[:at]
	} else if strings.ContainsAny(u, "@;") {
		// Only a bare user part may come without a scheme.
		return "", "", false
	}
	if i := strings.IndexByte(u, ':'); i >= 0 {
		u = u[:i] // user:password
	}
	i := strings.LastIndex(u, contactSep)
	if i <= 0 || i == len(u)-len(contactSep) {
		return "", "", false
	}
	user, edge = u[:i], u[i+len(contactSep):]
	if !validUser(user) || !validEdge(edge) {
		return "", "", false
	}
	return user, edge, true
}

// ParseContactURI is ParseContact for a parsed URI.
func ParseContactURI(u sip.Uri) (user, edge string, ok bool) {
	if u.User == "" {
		return "", "", false
	}
	return ParseContact(u.User)
}

func isScheme(s string) bool {
	return strings.EqualFold(s, "sip") || strings.EqualFold(s, "sips")
}

func validUser(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '_', r == '-':
		default:
			return false
		}
	}
	return true
}

func validEdge(s string) bool {
	if s == "" || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '-':
		default:
			return false
		}
	}
	return true
}
