package lockout

import (
	"fmt"
	"net/netip"
	"testing"
	"time"
)

var t0 = time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)

type clock struct{ now time.Time }

func (c *clock) get() time.Time      { return c.now }
func (c *clock) add(d time.Duration) { c.now = c.now.Add(d) }
func ip(s string) netip.Addr         { return netip.MustParseAddr(s) }
func prefixes(s ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range s {
		out = append(out, netip.MustParsePrefix(p))
	}
	return out
}

func newTable(t *testing.T, s Settings) (*Table, *clock, *[]Event) {
	t.Helper()
	c := &clock{now: t0}
	var events []Event
	tab, err := New(s, Options{Now: c.get, OnLockout: func(e Event) { events = append(events, e) }})
	if err != nil {
		t.Fatal(err)
	}
	return tab, c, &events
}

var base = Settings{Failures: 3, UserFailures: 5, Window: time.Minute, Duration: 5 * time.Minute}

func TestSourceLockout(t *testing.T) {
	tab, c, events := newTable(t, base)
	a := ip("198.51.100.7")
	for i := 1; i <= 2; i++ {
		if tab.Failed(a, "") {
			t.Fatalf("locked after %d failures", i)
		}
	}
	if !tab.Failed(a, "") {
		t.Fatal("not locked after 3 failures")
	}
	if !tab.Blocked(a) || tab.LockedSources() != 1 {
		t.Fatal("locked source not blocked")
	}
	if r, left := tab.Check(a, "alice"); r != SourceLocked || left != 5*time.Minute {
		t.Fatalf("Check = %v %v", r, left)
	}
	if tab.Blocked(ip("198.51.100.8")) {
		t.Fatal("a neighbour is blocked")
	}
	if len(*events) != 1 || (*events)[0].Source != netip.MustParsePrefix("198.51.100.7/32") {
		t.Fatalf("events = %+v", *events)
	}
	c.add(5*time.Minute + time.Second)
	tab.Sweep()
	if tab.Blocked(a) || tab.LockedSources() != 0 || tab.TrackedSources() != 0 {
		t.Fatalf("lockout did not end: locked %d tracked %d", tab.LockedSources(), tab.TrackedSources())
	}
}

func TestFailuresOutsideTheWindowDoNotAddUp(t *testing.T) {
	tab, c, _ := newTable(t, base)
	a := ip("198.51.100.7")
	for range 10 {
		tab.Failed(a, "")
		tab.Failed(a, "")
		c.add(61 * time.Second)
	}
	if tab.Blocked(a) {
		t.Fatal("two failures a minute locked the source")
	}
}

// TestIPv6GroupedBy64: rotating through a /64 does not dodge the count;
// another /64 is another source.
func TestIPv6GroupedBy64(t *testing.T) {
	tab, _, _ := newTable(t, base)
	for i := 1; i <= 3; i++ {
		tab.Failed(ip(fmt.Sprintf("2001:db8:1:2::%x", i)), "")
	}
	if !tab.Blocked(ip("2001:db8:1:2:ffff::1")) {
		t.Fatal("an address in the same /64 is not blocked")
	}
	if tab.Blocked(ip("2001:db8:1:3::1")) {
		t.Fatal("another /64 is blocked")
	}
	// IPv4-mapped IPv6 is the IPv4 source.
	for range 3 {
		tab.Failed(ip("::ffff:192.0.2.1"), "")
	}
	if !tab.Blocked(ip("192.0.2.1")) {
		t.Fatal("IPv4-mapped failures did not lock the IPv4 source")
	}
}

// TestExemptNeverLocked: forged failures from Twilio's ranges or a trusted
// proxy never lock them out.
func TestExemptNeverLocked(t *testing.T) {
	s := base
	s.Exempt = prefixes("54.172.60.0/30", "10.0.0.0/8")
	tab, _, events := newTable(t, s)
	for _, a := range []string{"54.172.60.1", "10.1.2.3"} {
		for range 50 {
			if tab.Failed(ip(a), "alice") {
				t.Fatalf("%s locked out", a)
			}
		}
		if tab.Blocked(ip(a)) {
			t.Fatalf("%s blocked", a)
		}
	}
	if n := tab.Counters().Exempted.Load(); n != 100 {
		t.Fatalf("exempted = %d, want 100", n)
	}
	if len(*events) != 0 {
		t.Fatalf("events from exempt sources: %+v", *events)
	}
}

// TestBoundedEvictsOldest: a full table forgets its oldest unlocked entry
// instead of ignoring new sources, so flooding it with forged sources does
// not stop a real attacker from being counted.
func TestBoundedEvictsOldest(t *testing.T) {
	s := base
	s.MaxSources = numShards * 4
	tab, _, _ := newTable(t, s)
	attacker := ip("203.0.113.66")
	tab.Failed(attacker, "") // one failure before the flood
	tab.Failed(attacker, "")
	for i := range 10_000 {
		tab.Failed(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), "")
	}
	if n := tab.TrackedSources(); n > s.MaxSources {
		t.Fatalf("tracking %d sources, bound %d", n, s.MaxSources)
	}
	if tab.Counters().Evicted.Load() == 0 {
		t.Fatal("nothing evicted")
	}
	// The attacker's earlier failures were forgotten, but its new ones count.
	for range 3 {
		tab.Failed(attacker, "")
	}
	if !tab.Blocked(attacker) {
		t.Fatal("a new source was not counted once the table was full")
	}
}

func TestLockedEntriesOutliveUnlockedOnes(t *testing.T) {
	s := base
	s.MaxSources = numShards * 2
	tab, _, _ := newTable(t, s)
	attacker := ip("203.0.113.66")
	for range 3 {
		tab.Failed(attacker, "")
	}
	for i := range 5_000 {
		tab.Failed(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), "")
	}
	if !tab.Blocked(attacker) {
		t.Fatal("a flood of single failures unlocked the locked attacker")
	}
}

// TestUserGuard: failures for one user from many sources guard the user;
// sources that logged in as the user before keep working, others are
// refused before the password is looked at, and the guard ends.
func TestUserGuard(t *testing.T) {
	tab, c, events := newTable(t, base)
	desk := ip("192.0.2.10")
	tab.Succeeded(desk, "alice")
	for i := range 5 {
		tab.Failed(netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}), "alice")
	}
	if tab.GuardedUsers() != 1 || len(*events) != 1 || (*events)[0].User != "alice" {
		t.Fatalf("guarded %d, events %+v", tab.GuardedUsers(), *events)
	}
	if r, _ := tab.Check(desk, "alice"); r != Allowed {
		t.Fatalf("the desk phone is refused: %v", r)
	}
	if r, left := tab.Check(ip("198.51.100.200"), "alice"); r != UserGuarded || left != 5*time.Minute {
		t.Fatalf("a new source is not refused: %v %v", r, left)
	}
	if r, _ := tab.Check(ip("198.51.100.200"), "bob"); r != Allowed {
		t.Fatalf("another user is refused: %v", r)
	}
	c.add(5*time.Minute + time.Second)
	tab.Sweep()
	if r, _ := tab.Check(ip("198.51.100.200"), "alice"); r != Allowed || tab.GuardedUsers() != 0 {
		t.Fatalf("guard did not end: %v, guarded %d", r, tab.GuardedUsers())
	}
}

func TestKnownSourcesExpire(t *testing.T) {
	tab, c, _ := newTable(t, base)
	desk := ip("192.0.2.10")
	tab.Succeeded(desk, "alice")
	c.add(KnownFor + time.Hour)
	for i := range 5 {
		tab.Failed(netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}), "alice")
	}
	if r, _ := tab.Check(desk, "alice"); r != UserGuarded {
		t.Fatalf("a source not seen for %v is still known: %v", KnownFor, r)
	}
}

func TestSettingsValidate(t *testing.T) {
	for _, bad := range []Settings{
		{Failures: -1},
		{UserFailures: -1},
		{Failures: 1},
		{UserFailures: 1, Window: time.Minute},
		{MaxSources: -1},
	} {
		if err := bad.Validate(); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
	if err := (Settings{}).Validate(); err != nil {
		t.Errorf("zero settings: %v", err)
	}
}

func BenchmarkBlockedNothingLocked(b *testing.B) {
	tab, err := New(base, Options{})
	if err != nil {
		b.Fatal(err)
	}
	a := ip("192.0.2.10")
	for b.Loop() {
		tab.Blocked(a)
	}
}

func BenchmarkSucceeded(b *testing.B) {
	tab, err := New(base, Options{})
	if err != nil {
		b.Fatal(err)
	}
	a := ip("192.0.2.10")
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		tab.Succeeded(a, "alice")
	}
}
