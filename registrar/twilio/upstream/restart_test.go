package upstream

import (
	"encoding/json"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/edgewise-sip/edgewise/registrar/directory"
	"github.com/edgewise-sip/edgewise/registrar/location"
	"github.com/edgewise-sip/edgewise/test/edgesim"
	"github.com/edgewise-sip/edgewise/test/kit"
)

// persisted reads user's record straight from the file, as a restart would.
func persisted(t *testing.T, db *bolt.DB, user string) (record, bool) {
	t.Helper()
	var r record
	found := false
	err := db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketName)
		if b == nil {
			return nil
		}
		v := b.Get([]byte(user))
		if v == nil {
			return nil
		}
		found = true
		return json.Unmarshal(v, &r)
	})
	if err != nil {
		t.Fatal(err)
	}
	return r, found
}

// The upstream state is written through to the bbolt file the bindings
// share; a restart resumes it: same Call-ID, higher CSeq, same edge and
// expiry, no new REGISTERs for registrations still valid, and a user whose
// local bindings went while edgewise was down is unregistered upstream.
// A restart with another public address replaces every Contact and removes
// the old ones.
func TestRestartResumes(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	base := envConfig{net: kit.NewNet(t), users: 4}.withDefaults()
	log, _ := testLogger(t)
	sim := startSim(t, base, log, "carol", "dave")

	open := func() (*bolt.DB, *location.Table) {
		db := openDB(t, dir)
		table, err := location.OpenDB(db, log, location.Settings{SweepInterval: 50 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		return db, table
	}

	// Run 1: register everyone.
	db, table := open()
	cfg := base
	cfg.sim, cfg.db, cfg.table = sim, db, table
	e := newEnv(t, cfg)
	kit.WaitFor(t, 5*time.Second, "every user registered at ashburn", func() bool { return e.allOn("ashburn") })
	before := map[string]edgesim.Binding{}
	expires := map[string]time.Time{}
	for _, u := range e.users {
		before[u] = e.upstream(u)[0]
		st, _ := e.mgr.Status(u)
		expires[u] = st.ExpiresAt
	}
	// Written through while running, not only at shutdown (kill -9).
	kit.WaitFor(t, 2*time.Second, "records on disk", func() bool {
		for _, u := range e.users {
			r, ok := persisted(t, db, u)
			if !ok || r.Edge != "ashburn" || r.CallID != before[u].CallID || r.CSeq < before[u].CSeq ||
				!r.ExpiresAt.Equal(expires[u]) || r.Contact != before[u].Contact {
				return false
			}
		}
		return true
	})
	e.stop()
	if err := table.Close(); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	// While edgewise is down, u003's phone goes away.
	db, table = open()
	if _, err := table.Update("u003", func([]location.Binding) ([]location.Binding, error) { return nil, nil }); err != nil {
		t.Fatal(err)
	}

	// Run 2: resume.
	cfg.db, cfg.table, cfg.noBind = db, table, true
	e = newEnv(t, cfg)
	kept := e.users[:3]
	for _, u := range kept {
		st, ok := e.mgr.Status(u)
		if !ok || st.Edge != "ashburn" || !st.ExpiresAt.Equal(expires[u]) || st.State != StateRegistered {
			t.Errorf("%s resumed as %+v, want registered at ashburn until %s", u, st, expires[u])
		}
	}
	kit.WaitFor(t, 5*time.Second, "u003 unregistered upstream and forgotten", func() bool {
		_, tracked := e.mgr.Status("u003")
		_, onDisk := persisted(t, db, "u003")
		return len(e.upstream("u003")) == 0 && !tracked && !onDisk
	})
	never(t, time.Second, "a valid registration was sent again after the restart", func() bool {
		for _, u := range kept {
			bs := e.upstream(u)
			if len(bs) != 1 || bs[0].CSeq != before[u].CSeq || !bs[0].RegisteredAt.Equal(before[u].RegisteredAt) {
				return true
			}
		}
		return false
	})

	// The next REGISTER continues the Call-ID above every CSeq sent.
	if err := e.mon.Apply(e.edgeSettings("umatilla", "ashburn")); err != nil {
		t.Fatal(err)
	}
	e.users = kept
	kit.WaitFor(t, 5*time.Second, "moved to umatilla", func() bool { return e.onlyOn("umatilla") })
	for _, u := range kept {
		b := e.upstream(u)[0]
		if b.CallID != before[u].CallID || b.CSeq <= before[u].CSeq {
			t.Errorf("%s: Call-ID %s CSeq %d after restart, want %s and above %d", u, b.CallID, b.CSeq, before[u].CallID, before[u].CSeq)
		}
	}
	e.stop()
	if err := table.Close(); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	// Run 3: a new public address. Every Contact is replaced, and the old
	// ones, from the previous run, are removed.
	db, table = open()
	defer db.Close()
	defer table.Close()
	cfg.db, cfg.table, cfg.public = db, table, "127.0.0.1:5098"
	cfg.edges = []string{"umatilla", "ashburn"}
	e = newEnv(t, cfg)
	e.users = kept
	kit.WaitFor(t, 5*time.Second, "new contacts only", func() bool { return e.onlyOn("umatilla") })
}

// A reload that changes a user's Twilio credentials re-registers it (a new
// AOR: the old AOR's binding is removed); a phone removed from the config
// is unregistered upstream while its local binding stays.
func TestApplyCredentials(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{users: 3})
	e.dir["carol"] = directory.TwilioUser{User: "tw_carol", Password: twilioPassword("carol")}
	if err := e.mgr.Apply(e.settings(), e.dir); err != nil {
		t.Fatal(err)
	}
	e.bind("carol", time.Hour)
	kit.WaitFor(t, 5*time.Second, "everyone at ashburn", func() bool {
		return e.allOn("ashburn") && len(e.sim.Bindings("tw_carol")) == 1
	})

	// carol's Twilio user becomes tw_dave; u001 is removed; u000's password
	// changes to one Twilio refuses, then back.
	dir := directory.TwilioMap{}
	for k, v := range e.dir {
		dir[k] = v
	}
	dir["carol"] = directory.TwilioUser{User: "tw_dave", Password: twilioPassword("dave")}
	delete(dir, "u001")
	dir["u000"] = directory.TwilioUser{User: twilioUser("u000"), Password: "NotThePassword1"}
	if err := e.mgr.Apply(e.settings(), dir); err != nil {
		t.Fatal(err)
	}
	kit.WaitFor(t, 5*time.Second, "carol registered as tw_dave only", func() bool {
		d := e.sim.Bindings("tw_dave")
		return len(e.sim.Bindings("tw_carol")) == 0 && len(d) == 1 && d[0].Contact == "sip:carol~ashburn@"+publicAddr
	})
	kit.WaitFor(t, 5*time.Second, "u001 unregistered upstream", func() bool {
		st, _ := e.mgr.Status("u001")
		return len(e.upstream("u001")) == 0 && st.State == StateNotConfigured
	})
	if len(e.table.Lookup("u001")) != 1 {
		t.Error("the local binding of u001 was touched")
	}
	kit.WaitFor(t, 5*time.Second, "u000 re-registered with the new password and refused", func() bool {
		st, _ := e.mgr.Status("u000")
		return st.State == StateFailing && st.LastError == "403 Forbidden"
	})
	dir["u000"] = e.dir["u000"]
	if err := e.mgr.Apply(e.settings(), dir); err != nil {
		t.Fatal(err)
	}
	kit.WaitFor(t, 5*time.Second, "u000 registered again with the right password", func() bool {
		st, _ := e.mgr.Status("u000")
		return st.State == StateRegistered && st.LastError == ""
	})
	if !e.onEdge("u002", "ashburn") {
		t.Error("u002 lost its registration")
	}
}
