package upstream

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/edgewise-sip/edgewise/registrar/directory"
	"github.com/edgewise-sip/edgewise/test/edgesim"
	"github.com/edgewise-sip/edgewise/test/kit"
)

// A user with a live local binding is registered upstream with the Twilio
// AOR, a per-edge Contact, digest auth and the requested expiry; when the
// last local binding goes (removed or expired) it is unregistered.
func TestRegisterAndUnregister(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{users: 3})
	kit.WaitFor(t, 5*time.Second, "every user registered at ashburn", func() bool { return e.allOn("ashburn") })

	for _, u := range e.users {
		bs := e.upstream(u)
		if len(bs) != 1 {
			t.Fatalf("%s: %d upstream bindings, want 1: %+v", u, len(bs), bs)
		}
		b := bs[0]
		if b.User != twilioUser(u) || b.Contact != "sip:"+u+"~ashburn@"+publicAddr || b.Edge != "ashburn" {
			t.Errorf("%s: binding %+v", u, b)
		}
		if b.ExpiresIn < 55 || b.ExpiresIn > 60 {
			t.Errorf("%s: expires in %ds, want about 60", u, b.ExpiresIn)
		}
		st, _ := e.mgr.Status(u)
		if st.AOR != twilioUser(u) || st.IP == "" || st.ExpiresAt.IsZero() || st.LastError != "" || !st.FailingSince.IsZero() {
			t.Errorf("%s: status %+v", u, st)
		}
		if user, edgeName, ok := directory.ParseContact(b.Contact); !ok || user != u || edgeName != "ashburn" {
			t.Errorf("directory.ParseContact(%q) = %q, %q, %v", b.Contact, user, edgeName, ok)
		}
	}

	if all := e.mgr.Statuses(); len(all) != 3 || all[0].User != "u000" || all[2].User != "u002" {
		t.Errorf("Statuses() = %+v", all)
	}

	// The last binding removed: unregistered upstream, then forgotten.
	e.unbind(e.users[0])
	kit.WaitFor(t, 5*time.Second, "u000 unregistered upstream", func() bool { return len(e.upstream(e.users[0])) == 0 })
	kit.WaitFor(t, 5*time.Second, "u000 forgotten", func() bool { _, ok := e.mgr.Status(e.users[0]); return !ok })

	// The last binding expired: the same.
	e.unbind(e.users[1])
	e.bind(e.users[1], 300*time.Millisecond)
	kit.WaitFor(t, 5*time.Second, "u001 unregistered after its binding expired", func() bool {
		_, ok := e.mgr.Status(e.users[1])
		return len(e.upstream(e.users[1])) == 0 && !ok
	})
	if !e.onEdge(e.users[2], "ashburn") {
		t.Error("u002 lost its registration")
	}

	// Registering again after an unregister works (a fresh Call-ID).
	e.bind(e.users[0], time.Hour)
	kit.WaitFor(t, 5*time.Second, "u000 registered again", func() bool { return e.onEdge(e.users[0], "ashburn") })
}

// A 423 is answered with the Min-Expires given.
func TestIntervalTooBrief(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{users: 1, expires: 2 * time.Second, minExpires: 30})
	kit.WaitFor(t, 5*time.Second, "registered with Min-Expires", func() bool { return e.allOn("ashburn") })
	if b := e.upstream(e.users[0])[0]; b.ExpiresIn < 25 || b.ExpiresIn > 30 {
		t.Errorf("expires in %ds, want the Min-Expires 30", b.ExpiresIn)
	}
}

// Wrong Twilio password for one user (scenario 7): that user shows the 403
// in status, the others are unaffected, and no edge is marked down.
func TestWrongPassword(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{users: 4, passwords: map[string]string{"u001": "WrongPassword1"}})
	others := []string{"u000", "u002", "u003"}
	kit.WaitFor(t, 5*time.Second, "u001 failing with 403", func() bool {
		st, _ := e.mgr.Status("u001")
		return st.State == StateFailing && strings.Contains(st.LastError, "403") && !st.FailingSince.IsZero()
	})
	kit.WaitFor(t, 5*time.Second, "the others registered at ashburn", func() bool {
		for _, u := range others {
			if !e.onEdge(u, "ashburn") {
				return false
			}
		}
		return true
	})
	if n := len(e.upstream("u001")); n != 0 {
		t.Errorf("u001 has %d upstream bindings", n)
	}
	for _, s := range e.mon.Status() {
		if s.State == "down" {
			t.Errorf("edge %s marked down: %s", s.Name, s.Reason)
		}
	}
	if active, ok := e.mon.Active(); !ok || active != "ashburn" {
		t.Errorf("active edge %s (ok %v), want ashburn", active, ok)
	}
	// No edge hop: nothing was ever sent to umatilla.
	st, _ := e.sim.Edge("umatilla")
	for _, ip := range st.IPs {
		if n := ip.Requests["REGISTER"]; n != 0 {
			t.Errorf("umatilla %s got %d REGISTERs", ip.IP, n)
		}
	}
	if s, _ := e.mgr.Status("u001"); s.Edge != "" || !s.ExpiresAt.IsZero() {
		t.Errorf("u001 status %+v", s)
	}
}

// TestTooManyRegistrations: Twilio keeps at most 10 registrations per AOR
// (here edgesim keeps 1). Moves are make-before-break, so a user whose AOR
// is full cannot take its Contact to another edge: the refusal (403,
// Warning 32007) is shown in the user's status as what it is, with the fix,
// and counted apart from other rejections.
func TestTooManyRegistrations(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{users: 1, maxRegs: 1})
	kit.WaitFor(t, 5*time.Second, "the user registered at ashburn", func() bool { return e.allOn("ashburn") })
	e.setEdge("ashburn", edgesim.ModeDrop)
	var st Status
	kit.WaitFor(t, 10*time.Second, "the move refused for too many registrations", func() bool {
		st, _ = e.mgr.Status("u000")
		return strings.Contains(st.LastError, "error 32007")
	})
	want := "403 Maximum Registrations Reached: Twilio already holds its maximum of 10 registrations for " + twilioUser("u000") +
		" (error 32007): other devices register as this Twilio user; remove some, or give this phone a Twilio user of its own"
	if st.LastError != want {
		t.Errorf("last error %q\nwant        %q", st.LastError, want)
	}
	if n := testutil.ToFloat64(e.mgr.metrics.requests.WithLabelValues(kindMove, resTooMany)); n == 0 {
		t.Error("too_many_registrations not counted")
	}
}
