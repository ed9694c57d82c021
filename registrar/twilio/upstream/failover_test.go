package upstream

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/edgewise-sip/edgewise/registrar/twilio/edge"
	"github.com/edgewise-sip/edgewise/test/edgesim"
	"github.com/edgewise-sip/edgewise/test/kit"
)

// refreshedSince reports whether every user's upstream binding through
// edgeName was written after t (a refresh happened).
func (e *env) refreshedSince(edgeName string, t time.Time) bool {
	for _, u := range e.users {
		ok := false
		for _, b := range e.upstream(u) {
			if b.Edge == edgeName && b.RegisteredAt.After(t) {
				ok = true
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

// Scenario 1: one IP of the primary edge drops; registrations stay on the
// primary through its other IPs, refresh after refresh.
func TestOneIPDropped(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{users: 5, expires: 3 * time.Second})
	kit.WaitFor(t, 5*time.Second, "every user registered at ashburn", func() bool { return e.allOn("ashburn") })

	// The first IP is the one every request tries first.
	first := e.cfg.net.Addr(1)
	if err := e.sim.SetIPMode(first, edgesim.ModeSetting{Mode: edgesim.ModeDrop}); err != nil {
		t.Fatal(err)
	}
	dropped := time.Now()
	// Two refresh rounds (each ~1.2–1.5 s) after the drop.
	kit.WaitFor(t, 6*time.Second, "a refresh round after the drop", func() bool { return e.refreshedSince("ashburn", dropped) })
	second := time.Now()
	kit.WaitFor(t, 6*time.Second, "a second refresh round", func() bool { return e.refreshedSince("ashburn", second) })

	if !e.onlyOn("ashburn") {
		t.Errorf("registrations left ashburn: %+v", e.sim.Bindings(""))
	}
	st := e.edgeStatus("ashburn")
	if st.State != edge.StateUp || !st.Active {
		t.Errorf("ashburn %s active=%v, want up and active", st.State, st.Active)
	}
	for _, is := range st.IPs {
		if is.IP == first && is.State != edge.StateDown {
			t.Errorf("dropped IP %s is %s", first, is.State)
		}
	}
	for _, b := range e.sim.Bindings("") {
		if b.IP == first {
			t.Errorf("binding written through the dropped IP after the drop: %+v", b)
		}
	}
	um, _ := e.sim.Edge("umatilla")
	for _, is := range um.IPs {
		if is.Requests["REGISTER"] != 0 {
			t.Errorf("umatilla %s got REGISTERs", is.IP)
		}
	}
}

// Scenarios 2 and 3: the whole primary edge drops (silence), rejects (503)
// or refuses (ports closed). Every user is registered on the secondary
// within timeout + keepalive interval + 2 s, status and the log say why,
// and no user is ever registered nowhere.
func TestEdgeDown(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		mode   edgesim.Mode
		reason string
	}{
		{edgesim.ModeDrop, "3/3 IPs timed out after 300ms"},
		{edgesim.ModeReject, "3/3 IPs answered 503"},
		// Closed UDP ports: ICMP port unreachable is not seen by an
		// unconnected socket, so this reads as silence.
		{edgesim.ModeRefuse, "3/3 IPs"},
	} {
		t.Run(string(tc.mode), func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, envConfig{users: 20})
			kit.WaitFor(t, 5*time.Second, "every user registered at ashburn", func() bool { return e.allOn("ashburn") })
			// Users spread over every IP of the edge (don't pin one IP).
			ips := map[string]int{}
			for _, b := range e.sim.Bindings("") {
				ips[b.IP]++
			}
			if len(ips) != 3 {
				t.Errorf("20 users registered through %d IPs of ashburn: %v", len(ips), ips)
			}
			w := e.watch()

			e.setEdge("ashburn", tc.mode)
			broke := time.Now()
			within := testTimeout + testKeepalive + 2*time.Second
			kit.WaitFor(t, within, "every user registered at umatilla", func() bool { return e.allOn("umatilla") })
			t.Logf("%s: every user on umatilla %s after the break (bound %s)", tc.mode, time.Since(broke).Round(time.Millisecond), within)

			// The old edge's contacts are removed through umatilla (the
			// registrar is shared), so each user is left with one binding.
			kit.WaitFor(t, 5*time.Second, "only umatilla bindings left", func() bool { return e.onlyOn("umatilla") })
			w.check(t)

			st := e.edgeStatus("ashburn")
			if st.State != edge.StateDown || !strings.Contains(st.Reason, tc.reason) {
				t.Errorf("ashburn status %s %q, want down with %q", st.State, st.Reason, tc.reason)
			}
			want := fmt.Sprintf("; moving %d registrations to umatilla", len(e.users))
			if !strings.Contains(e.logs.String(), "edge ashburn down: ") || !strings.Contains(e.logs.String(), want) {
				t.Errorf("no move line %q in the log", want)
			}
			for _, u := range e.users {
				st, _ := e.mgr.Status(u)
				if st.Edge != "umatilla" || st.State != StateRegistered || st.LastError != "" {
					t.Errorf("%s: status %+v", u, st)
				}
			}
		})
	}
}

// Scenario 4: the primary heals; users return after the failback hold, and
// at no moment is a user registered nowhere.
var failbackLine = regexp.MustCompile(`moving \d+ registrations to ashburn|not on the active edge ashburn; moving them`)

func TestFailback(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{users: 20})
	kit.WaitFor(t, 5*time.Second, "every user registered at ashburn", func() bool { return e.allOn("ashburn") })
	w := e.watch()

	e.setEdge("ashburn", edgesim.ModeDrop)
	kit.WaitFor(t, 5*time.Second, "every user on umatilla", func() bool { return e.onlyOn("umatilla") })

	e.setEdge("ashburn", edgesim.ModeUp)
	healed := time.Now()
	kit.WaitFor(t, 10*time.Second, "every user back on ashburn", func() bool { return e.onlyOn("ashburn") })
	w.check(t)

	// Nobody went back before ashburn had been up for the hold.
	for _, b := range e.sim.Bindings("") {
		if b.RegisteredAt.Before(healed.Add(testHold)) {
			t.Errorf("binding registered %s after healing, before the %s hold: %+v", b.RegisteredAt.Sub(healed), testHold, b)
		}
	}
	// The monitor's failback event moves them, unless the keepalive tick
	// saw the new active edge a moment before the event arrived and moved
	// some (or all) first: either way a move line names ashburn.
	if !failbackLine.MatchString(e.logs.String()) {
		t.Error("no failback move line in the log")
	}
}

// Scenario 5: a reload reverses the edge order; users move to the new first
// edge, make-before-break. (A reload naming an unknown edge is refused by
// configs before anything is applied; a Settings the Manager cannot use is
// refused by Apply and changes nothing.)
func TestReloadReversesOrder(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{users: 20})
	kit.WaitFor(t, 5*time.Second, "every user registered at ashburn", func() bool { return e.allOn("ashburn") })
	w := e.watch()

	if err := e.mon.Apply(e.edgeSettings("umatilla", "ashburn")); err != nil {
		t.Fatal(err)
	}
	kit.WaitFor(t, 5*time.Second, "every user on umatilla only", func() bool { return e.onlyOn("umatilla") })
	w.check(t)
	if !strings.Contains(e.logs.String(), "reload: edge order now umatilla, ashburn; moving 20 registrations to umatilla") {
		t.Error("no reload move line in the log")
	}

	bad := e.settings()
	bad.Domain = ""
	if err := e.mgr.Apply(bad, e.dir); err == nil {
		t.Error("Apply accepted an empty domain")
	}
	never(t, 300*time.Millisecond, "a refused Apply moved registrations", func() bool { return !e.onlyOn("umatilla") })
}

// Scenario 6: the DNS server stops answering; registrations keep
// refreshing on the cached IPs.
func TestDNSDown(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{users: 5, expires: 3 * time.Second, dnsTTL: 1})
	kit.WaitFor(t, 5*time.Second, "every user registered at ashburn", func() bool { return e.allOn("ashburn") })
	if err := e.sim.SetDNSMode("down"); err != nil {
		t.Fatal(err)
	}
	kit.WaitFor(t, 10*time.Second, "the monitor serving a stale answer", func() bool {
		return e.edgeStatus("ashburn").DNS.Stale
	})
	stale := time.Now()
	kit.WaitFor(t, 6*time.Second, "a refresh round on cached IPs", func() bool { return e.refreshedSince("ashburn", stale) })
	second := time.Now()
	kit.WaitFor(t, 6*time.Second, "another refresh round", func() bool { return e.refreshedSince("ashburn", second) })
	if !e.onlyOn("ashburn") || !e.edgeStatus("ashburn").DNS.Stale {
		t.Errorf("after DNS failed: bindings %+v, dns %+v", e.sim.Bindings(""), e.edgeStatus("ashburn").DNS)
	}
}

// keepalive.method none: failover happens only when a refresh finds the
// edge silent (every IP tried), which is how a phone behaves.
func TestKeepaliveNoneFailsOverOnRefresh(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{users: 5, expires: 3 * time.Second, keepalive: edge.KeepaliveNone})
	kit.WaitFor(t, 5*time.Second, "every user registered at ashburn", func() bool { return e.allOn("ashburn") })
	w := e.watch()
	e.setEdge("ashburn", edgesim.ModeDrop)
	// A refresh is due within ~1.5 s; it walks 3 IPs (3 × timeout), then
	// everyone moves.
	kit.WaitFor(t, 1500*time.Millisecond+3*testTimeout+2*time.Second, "every user on umatilla", func() bool { return e.allOn("umatilla") })
	w.check(t)
}

// keepalive.method register: with no natural refresh due, the Manager sends
// a REGISTER to each IP of the active edge every keepalive interval as the
// probe, so failover is as quick as with OPTIONS.
func TestKeepaliveRegisterProbes(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{users: 5, keepalive: edge.KeepaliveRegister})
	kit.WaitFor(t, 5*time.Second, "every user registered at ashburn", func() bool { return e.allOn("ashburn") })
	w := e.watch()
	e.setEdge("ashburn", edgesim.ModeDrop)
	kit.WaitFor(t, testKeepalive+testTimeout+2*time.Second, "every user on umatilla", func() bool { return e.allOn("umatilla") })
	w.check(t)
}

// Every edge down: registrations are kept (they have not expired), users
// show why and since when, nobody gives up, and when an edge answers again
// everyone moves there.
func TestEveryEdgeDown(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{users: 5})
	kit.WaitFor(t, 5*time.Second, "every user registered at ashburn", func() bool { return e.allOn("ashburn") })
	e.setEdge("umatilla", edgesim.ModeReject)
	e.setEdge("ashburn", edgesim.ModeDrop)
	kit.WaitFor(t, 5*time.Second, "every edge down", func() bool {
		_, ok := e.mon.Active()
		return !ok
	})
	kit.WaitFor(t, 5*time.Second, "users failing, still bound at ashburn", func() bool {
		for _, u := range e.users {
			st, _ := e.mgr.Status(u)
			if st.State != StateFailing || st.FailingSince.IsZero() || st.LastError == "" || st.Edge != "ashburn" {
				return false
			}
		}
		return true
	})
	if !strings.Contains(e.logs.String(), "registrations wait for an edge to answer") {
		t.Error("no log line for every edge down")
	}
	// The umatilla contacts were refused (503): nothing to clean up.
	e.mgr.mu.Lock()
	for _, u := range e.users {
		if r := e.mgr.users[u]; r != nil && len(r.rec.Leftovers) != 0 {
			t.Errorf("%s keeps leftovers after refused REGISTERs: %+v", u, r.rec.Leftovers)
		}
	}
	e.mgr.mu.Unlock()
	e.setEdge("umatilla", edgesim.ModeUp)
	kit.WaitFor(t, 10*time.Second, "every user on umatilla", func() bool { return e.allOn("umatilla") })
	for _, u := range e.users {
		if st, _ := e.mgr.Status(u); st.LastError != "" || !st.FailingSince.IsZero() {
			t.Errorf("%s: %+v after recovering", u, st)
		}
	}
}

// Twilio's per-AOR rate limit (503 with warning 32008) is the user's
// budget, not the edge's health: it is not reported, no IP or edge goes
// down, and the REGISTER is retried after Retry-After.
func TestRateLimitIsNotAnEdgeFailure(t *testing.T) {
	t.Parallel()
	// One REGISTER per second: the digest answer to the 401 is refused.
	e := newEnv(t, envConfig{users: 2, rate: 1, limited: true})
	kit.WaitFor(t, 10*time.Second, "registered despite the limit", func() bool { return e.allOn("ashburn") })
	if n := testutil.ToFloat64(e.mgr.metrics.requests.WithLabelValues(kindRegister, resLimited)); n == 0 {
		t.Error("the rate limit was never hit; the test proves nothing")
	}
	st := e.edgeStatus("ashburn")
	for _, is := range st.IPs {
		if is.State == edge.StateDown {
			t.Errorf("ashburn %s marked down by a rate limit: %s", is.IP, is.LastError)
		}
	}
	if active, _ := e.mon.Active(); active != "ashburn" {
		t.Errorf("active edge %s", active)
	}
}
