package calls

import (
	"cmp"
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/edgewise-sip/edgewise/registrar/location"
)

// stage is one step of an inbound call's search: either every registered
// phone of the user at once (a fork), or one fixed target.
type stage struct {
	bindings []location.Binding
	target   *Target
}

func (s stage) String() string {
	if s.target != nil {
		return s.target.URI
	}
	return fmt.Sprintf("%d registered phones", len(s.bindings))
}

// stages plans an inbound call: the registered phones ring first, in
// parallel (any of them is the user); then the fixed targets one at a time
// in orderTargets' order, each only when the one before did not answer.
func stages(bindings []location.Binding, targets []Target, rnd func(int) int) []stage {
	var out []stage
	if len(bindings) > 0 {
		out = append(out, stage{bindings: bindings})
	}
	for _, t := range orderTargets(targets, rnd) {
		out = append(out, stage{target: &t})
	}
	return out
}

// orderTargets sorts targets by priority, lowest first, and within one
// priority draws them by weight as RFC 2782 does for SRV records: a target
// with twice the weight is twice as likely to come first. Weight 0 comes
// after every weighted target of its priority. rnd(n) returns [0, n).
func orderTargets(ts []Target, rnd func(int) int) []Target {
	sorted := slices.Clone(ts)
	slices.SortStableFunc(sorted, func(a, b Target) int { return cmp.Compare(a.Priority, b.Priority) })
	out := make([]Target, 0, len(sorted))
	for len(sorted) > 0 {
		n := 1
		for n < len(sorted) && sorted[n].Priority == sorted[0].Priority {
			n++
		}
		group := sorted[:n]
		sorted = sorted[n:]
		for len(group) > 0 {
			total := 0
			for _, t := range group {
				total += t.Weight
			}
			if total == 0 {
				out = append(out, group...)
				break
			}
			pick, sum := rnd(total), 0
			for i, t := range group {
				if sum += t.Weight; pick < sum {
					out = append(out, t)
					group = slices.Delete(slices.Clone(group), i, i+1)
					break
				}
			}
		}
	}
	return out
}

// randIntN is orderTargets' default source of randomness.
func randIntN(n int) int { return rand.IntN(n) }

// resolve turns a stage into the bindings to ring. A fixed target becomes
// a binding toward the address of its URI's host (A/AAAA records, first
// answer; no SRV/NAPTR), port 5060 unless given.
func (s stage) resolve(ctx context.Context, timeout time.Duration) ([]location.Binding, error) {
	if s.target == nil {
		return s.bindings, nil
	}
	var u sip.Uri
	if err := sip.ParseUri(s.target.URI, &u); err != nil {
		return nil, fmt.Errorf("target %s: %w", s.target.URI, err)
	}
	tp := "udp"
	if v, ok := u.UriParams.Get("transport"); ok {
		tp = strings.ToLower(v)
	}
	port := u.Port
	if port == 0 {
		port = 5060
	}
	addr, err := netip.ParseAddr(u.Host)
	if err != nil {
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		addrs, err := net.DefaultResolver.LookupNetIP(ctx, "ip", u.Host)
		if err != nil {
			return nil, fmt.Errorf("target %s: %w", s.target.URI, err)
		}
		if len(addrs) == 0 {
			return nil, fmt.Errorf("target %s: %s has no address", s.target.URI, u.Host)
		}
		addr = addrs[0]
	}
	return []location.Binding{{
		Contact:   s.target.URI,
		Source:    netip.AddrPortFrom(addr.Unmap(), uint16(port)),
		Transport: tp,
	}}, nil
}

// endsSearch reports whether a failure response from one stage is the
// user's answer for every stage: busy or a global failure (6xx). Anything
// else — no answer, unavailable, a server error, an unknown user at a PBX —
// lets the next target try.
func endsSearch(res *sip.Response) bool {
	return res != nil && (res.StatusCode == sip.StatusBusyHere || res.StatusCode >= 600)
}
