package configs

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"
)

// Twilio SIP edge names (README, "Twilio facts" 1). Treat these as read-only.
var (
	// PublicEdges are the public edge locations for SIP Domains.
	PublicEdges = []string{"ashburn", "umatilla", "dublin", "frankfurt", "singapore", "tokyo", "sao-paulo", "sydney"}
	// InterconnectEdges are the Interconnect (-ix) SIP edges.
	InterconnectEdges = []string{"ashburn-ix", "san-jose-ix", "london-ix", "frankfurt-ix", "singapore-ix", "tokyo-ix", "sydney-ix", "sao-paulo-ix"}
	// LegacyEdges are the legacy region-style aliases still accepted in SIP URIs.
	LegacyEdges = []string{"us1", "us2", "ie1", "de1", "sg1", "jp1", "br1", "au1"}
	// KnownEdges is every name twilio.edges accepts.
	KnownEdges = concat(PublicEdges, InterconnectEdges, LegacyEdges)
)

// SignallingRanges are Twilio's published SIP signalling ranges per public
// edge (README, "Twilio facts" 3; ports 5060 UDP/TCP, 5061 TLS). Twilio may send
// from any edge, so the default allow-list is all of them. Read-only.
var SignallingRanges = map[string][]netip.Prefix{
	"ashburn":   {netip.MustParsePrefix("54.172.60.0/30")},
	"umatilla":  {netip.MustParsePrefix("54.244.51.0/30")},
	"dublin":    {netip.MustParsePrefix("54.171.127.192/30")},
	"frankfurt": {netip.MustParsePrefix("35.156.191.128/30")},
	"tokyo":     {netip.MustParsePrefix("54.65.63.192/30")},
	"singapore": {netip.MustParsePrefix("54.169.127.128/30")},
	"sydney":    {netip.MustParsePrefix("54.252.254.64/30")},
	"sao-paulo": {netip.MustParsePrefix("177.71.206.192/30")},
}

// MediaRange is Twilio's media range, the same for every edge (UDP 10000–60000).
var MediaRange = netip.MustParsePrefix("168.86.128.0/18")

// AllSignallingRanges returns every edge's signalling ranges, sorted, as a new slice.
func AllSignallingRanges() []netip.Prefix {
	var out []netip.Prefix
	for _, ps := range SignallingRanges {
		out = append(out, ps...)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Addr().Less(out[j].Addr()) })
	return out
}

// IsKnownEdge reports whether name is a Twilio SIP edge.
func IsKnownEdge(name string) bool { return contains(KnownEdges, name) }

// checkEdge explains why name cannot be used in twilio.edges ("" if it can).
func checkEdge(name string) (msg, hint string) {
	if IsKnownEdge(name) {
		return "", ""
	}
	if strings.EqualFold(name, "roaming") {
		return `"roaming" is not available for SIP Domains`, "list edges explicitly in order of preference, e.g. [ashburn, umatilla]"
	}
	if near := nearest(strings.ToLower(name), KnownEdges); near != "" {
		return fmt.Sprintf("unknown edge %q", name), fmt.Sprintf("did you mean %q?", near)
	}
	return fmt.Sprintf("unknown edge %q", name), "known edges: " + strings.Join(PublicEdges, ", ") + ", the -ix edges and legacy us1, us2, ie1, de1, sg1, jp1, br1, au1"
}

// keyHint suggests the closest known key, or lists them all.
func keyHint(key string, known []string) string {
	if near := nearest(strings.ToLower(key), known); near != "" {
		return fmt.Sprintf("did you mean %q?", near)
	}
	return "known keys: " + strings.Join(known, ", ")
}

// nearest returns the candidate closest to s by edit distance when it is
// close enough to be a likely typo, else "".
func nearest(s string, candidates []string) string {
	best, bestD := "", 1<<30
	for _, c := range candidates {
		if d := levenshtein(s, c); d < bestD {
			best, bestD = c, d
		}
	}
	if bestD <= max(2, len(s)/3) && bestD < len(s) {
		return best
	}
	return ""
}

// levenshtein is the edit distance between a and b (bytes; names are ASCII).
func levenshtein(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

func concat(lists ...[]string) []string {
	var out []string
	for _, l := range lists {
		out = append(out, l...)
	}
	return out
}
