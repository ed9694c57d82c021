package location

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/edgewise-sip/edgewise/test/kit"
)

// clock is a settable time source for tests.
type clock struct{ ns atomic.Int64 }

func newClock() *clock {
	c := &clock{}
	c.ns.Store(time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC).UnixNano())
	return c
}
func (c *clock) Now() time.Time      { return time.Unix(0, c.ns.Load()) }
func (c *clock) Add(d time.Duration) { c.ns.Add(int64(d)) }

func binding(contact string, expires time.Time) Binding {
	return Binding{
		Contact:   contact,
		Params:    []Param{{Name: "+sip.instance", Value: `"<urn:uuid:00000000-0000-1000-8000-000A95A0E128>"`}, {Name: "reg-id", Value: "1"}},
		Source:    netip.MustParseAddrPort("192.0.2.10:5062"),
		Transport: "udp",
		CallID:    "a84b4c76e66710",
		CSeq:      314159,
		Branch:    "z9hG4bKnashds7",
		Expires:   expires,
		Updated:   expires.Add(-time.Hour),
		UserAgent: "Yealink SIP-T46S 66.86.0.15",
	}
}

func add(t testing.TB, tb *Table, user string, bs ...Binding) {
	t.Helper()
	if _, err := tb.Update(user, func(cur []Binding) ([]Binding, error) { return append(cur, bs...), nil }); err != nil {
		t.Fatal(err)
	}
}

func TestUpdateLookupRoutable(t *testing.T) {
	clk := newClock()
	tb := NewMemory(kit.Logger(t), Settings{Now: clk.Now})
	defer tb.Close()
	now := clk.Now()

	a := binding("sip:alice@192.0.2.10:5062", now.Add(time.Hour))
	b := binding("sip:alice@192.0.2.11:5060", now.Add(time.Minute))
	b.Params = []Param{{Name: "q", Value: "0.5"}}
	add(t, tb, "alice", b, a)

	got := tb.Lookup("alice")
	if len(got) != 2 || got[0].User != "alice" {
		t.Fatalf("Lookup = %+v", got)
	}
	got[0].Params[0].Value = "changed"
	if tb.Lookup("alice")[0].Params[0].Value == "changed" {
		t.Fatal("Lookup returned shared memory")
	}
	if r := tb.Routable("alice"); r[0].Contact != a.Contact {
		t.Fatalf("Routable order = %v, %v; want q=1 first", r[0].Contact, r[1].Contact)
	}
	if !tb.SetReachable("alice", a.Contact, Unreachable) {
		t.Fatal("SetReachable did not find the binding")
	}
	if r := tb.Routable("alice"); len(r) != 1 || r[0].Contact != b.Contact {
		t.Fatalf("Routable after unreachable = %+v", r)
	}
	if n := len(tb.Lookup("alice")); n != 2 {
		t.Fatalf("unreachable binding dropped from Lookup: %d", n)
	}

	clk.Add(2 * time.Minute) // b expires
	if got := tb.Lookup("alice"); len(got) != 1 || got[0].Contact != a.Contact {
		t.Fatalf("Lookup after expiry = %+v", got)
	}
	if users := tb.Users(); len(users) != 1 || users[0] != "alice" {
		t.Fatalf("Users = %v", users)
	}

	boom := errors.New("refused")
	if _, err := tb.Update("alice", func([]Binding) ([]Binding, error) { return nil, boom }); !errors.Is(err, boom) {
		t.Fatalf("Update error = %v", err)
	}
	if n := len(tb.Lookup("alice")); n != 1 {
		t.Fatalf("failed Update changed the table: %d bindings", n)
	}
	if _, err := tb.Update("alice", func([]Binding) ([]Binding, error) { return nil, nil }); err != nil {
		t.Fatal(err)
	}
	if tb.Lookup("alice") != nil || len(tb.Users()) != 0 || tb.Len() != 0 {
		t.Fatalf("user not removed: %v %d", tb.Users(), tb.Len())
	}
}

func TestPersistenceAcrossCloseOpen(t *testing.T) {
	clk := newClock()
	path := filepath.Join(t.TempDir(), "edgewise.db")
	tb, err := Open(path, kit.Logger(t), Settings{Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	now := clk.Now()
	add(t, tb, "alice", binding("sip:alice@192.0.2.10:5062", now.Add(time.Hour)), binding("sip:alice@192.0.2.11", now.Add(time.Minute)))
	add(t, tb, "bob", binding("sip:bob@192.0.2.12", now.Add(30*time.Second)))
	add(t, tb, "carol", binding("sip:carol@192.0.2.13", now.Add(time.Hour)))
	add(t, tb, "carol") // no-op update keeps carol
	if _, err := tb.Update("dave", func([]Binding) ([]Binding, error) {
		return []Binding{binding("sip:dave@192.0.2.14", now.Add(time.Hour))}, nil
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := tb.Update("dave", func([]Binding) ([]Binding, error) { return nil, nil }); err != nil {
		t.Fatal(err)
	}
	if err := tb.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := tb.Update("alice", func(c []Binding) ([]Binding, error) { return c, nil }); !errors.Is(err, ErrClosed) {
		t.Fatalf("Update after Close: %v", err)
	}

	clk.Add(2 * time.Minute) // bob's and one of alice's bindings expire
	tb, err = Open(path, kit.Logger(t), Settings{Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int{"alice": 1, "carol": 1}
	for _, user := range []string{"alice", "bob", "carol", "dave"} {
		got := tb.Lookup(user)
		if len(got) != want[user] {
			t.Errorf("%s: %d bindings after reopen, want %d", user, len(got), want[user])
		}
	}
	got := tb.Lookup("alice")[0]
	wantB := binding("sip:alice@192.0.2.10:5062", now.Add(time.Hour))
	wantB.User = "alice"
	if fmt.Sprint(got) != fmt.Sprint(wantB) || !got.Expires.Equal(wantB.Expires) {
		t.Errorf("round trip:\n got  %+v\n want %+v", got, wantB)
	}
	if tb.Len() != 2 {
		t.Errorf("Len = %d, want 2", tb.Len())
	}
	tb.Close()

	// The expired records were deleted from the file, not only skipped.
	if n := journalRecords(t, path); n != 2 {
		t.Errorf("file holds %d records, want 2", n)
	}
}

func TestCorruptRecordDropped(t *testing.T) {
	path := filepath.Join(t.TempDir(), "edgewise.db")
	clk := newClock()
	tb, err := Open(path, kit.Logger(t), Settings{Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	add(t, tb, "alice", binding("sip:alice@192.0.2.10", clk.Now().Add(time.Hour)))
	tb.Close()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	db.Update(func(tx *bolt.Tx) error {
		bk, err := tx.CreateBucketIfNotExists(journalName(1 << 40))
		if err != nil {
			return err
		}
		return bk.Put([]byte{0xff, 0, 0, 0, 0, 0, 0, 0}, []byte{recordVersion, 7, 'm', 'a', 'l', 'l', 'o', 'r', 'y', 0xff, 0xff})
	})
	db.Close()
	tb, err = Open(path, kit.Logger(t), Settings{Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer tb.Close()
	if len(tb.Lookup("alice")) != 1 || tb.Lookup("mallory") != nil {
		t.Fatalf("users after corrupt record: %v", tb.Users())
	}
}

func TestSweepNotifies(t *testing.T) {
	clk := newClock()
	tb, err := Open(filepath.Join(t.TempDir(), "db"), kit.Logger(t), Settings{Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer tb.Close()
	var mu sync.Mutex
	seen := map[string]int{}
	tb.Subscribe(func(user string, live int) {
		// Subscribers may call the table.
		_ = tb.Lookup(user)
		mu.Lock()
		seen[user] = live
		mu.Unlock()
	})
	waitFor := func(user string, want int) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			mu.Lock()
			got, ok := seen[user]
			mu.Unlock()
			if ok && got == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: live=%d (seen %v), want %d", user, got, ok, want)
			}
			time.Sleep(time.Millisecond)
		}
	}
	now := clk.Now()
	add(t, tb, "alice", binding("sip:a1@192.0.2.1", now.Add(time.Minute)), binding("sip:a2@192.0.2.2", now.Add(time.Hour)))
	waitFor("alice", 2)
	clk.Add(2 * time.Minute)
	if err := tb.Sweep(); err != nil {
		t.Fatal(err)
	}
	waitFor("alice", 1)
	if tb.Len() != 1 {
		t.Fatalf("Len after sweep = %d", tb.Len())
	}
	clk.Add(2 * time.Hour)
	if err := tb.Sweep(); err != nil {
		t.Fatal(err)
	}
	waitFor("alice", 0)
	if tb.Len() != 0 || len(tb.Snapshot()) != 0 {
		t.Fatalf("table not empty after sweep: %d", tb.Len())
	}
}

func TestConcurrentUpdates(t *testing.T) {
	clk := newClock()
	tb, err := Open(filepath.Join(t.TempDir(), "db"), kit.Logger(t), Settings{Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer tb.Close()
	const workers, perWorker = 8, 200
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range perWorker {
				user := "u" + strconv.Itoa(i%50)
				contact := fmt.Sprintf("sip:%s@192.0.2.%d", user, w)
				_, err := tb.Update(user, func(cur []Binding) ([]Binding, error) {
					for j := range cur {
						if cur[j].Contact == contact {
							cur[j].CSeq++
							return cur, nil
						}
					}
					return append(cur, binding(contact, clk.Now().Add(time.Hour))), nil
				})
				if err != nil {
					t.Error(err)
					return
				}
				_ = tb.Lookup(user)
				tb.SetReachable(user, contact, Reachable)
			}
		})
	}
	wg.Wait()
	if n := tb.Len(); n != 50*workers {
		t.Fatalf("Len = %d, want %d", n, 50*workers)
	}
	if st := tb.Stats(); st.Commits == 0 || st.Commits > st.Records {
		t.Fatalf("stats = %+v", st)
	}
	t.Logf("store: %+v", tb.Stats())
}

// TestSurvivesKill9 registers bindings in a child process, kills it with
// SIGKILL right after it acknowledged them, and checks the file has them all.
func TestSurvivesKill9(t *testing.T) {
	if os.Getenv("LOCATION_KILL9_CHILD") != "" {
		t.Skip("child side runs in TestKill9Child")
	}
	path := filepath.Join(t.TempDir(), "db")
	cmd := exec.Command(os.Args[0], "-test.run=^TestKill9Child$", "-test.v")
	cmd.Env = append(os.Environ(), "LOCATION_KILL9_CHILD="+path)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	acked := 0
	buf := make([]byte, 4096)
	var text strings.Builder
	deadline := time.Now().Add(20 * time.Second)
	for acked < 500 && time.Now().Before(deadline) {
		n, err := out.Read(buf)
		text.Write(buf[:n])
		acked = strings.Count(text.String(), "acked ")
		if err != nil {
			break
		}
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	if acked == 0 {
		t.Fatalf("child acknowledged nothing: %s", text.String())
	}
	tb, err := Open(path, kit.Logger(t), Settings{})
	if err != nil {
		t.Fatal(err)
	}
	defer tb.Close()
	for i := range acked {
		if len(tb.Lookup("u"+strconv.Itoa(i))) != 1 {
			t.Fatalf("acknowledged binding u%d lost after kill -9 (%d acknowledged)", i, acked)
		}
	}
	t.Logf("%d acknowledged bindings survived kill -9", acked)
}

func TestKill9Child(t *testing.T) {
	path := os.Getenv("LOCATION_KILL9_CHILD")
	if path == "" {
		t.Skip("only runs as TestSurvivesKill9's child")
	}
	tb, err := Open(path, slog.New(slog.DiscardHandler), Settings{})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; ; i++ {
		user := "u" + strconv.Itoa(i)
		add(t, tb, user, binding("sip:"+user+"@192.0.2.1", time.Now().Add(time.Hour)))
		// Only printed after Update returned, i.e. after the commit.
		fmt.Printf("acked %d\n", i)
	}
}

// TestMemoryPerBinding measures the heap the table holds per binding at
// 100,000 bindings with realistic field sizes. The target is 2 KB.
func TestMemoryPerBinding(t *testing.T) {
	if testing.Short() {
		t.Skip("allocates 100k bindings")
	}
	const n = 100_000
	clk := newClock()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	tb := NewMemory(nil, Settings{Now: clk.Now})
	for i := range n {
		user := "user" + strconv.Itoa(i)
		b := binding(fmt.Sprintf("sip:%s@10.%d.%d.%d:5060;transport=udp;ob", user, i>>16&255, i>>8&255, i&255), clk.Now().Add(time.Hour))
		// Distinct strings per binding, as parsed from distinct packets.
		b.CallID = fmt.Sprintf("%08x-7dd5-4b2e-9a3c-%012x", i, i)
		b.Branch = fmt.Sprintf("z9hG4bK-%016x", i)
		b.UserAgent = strings.Clone("Yealink SIP-T46S 66.86.0.15")
		b.Params = []Param{{Name: "+sip.instance", Value: fmt.Sprintf(`"<urn:uuid:%08x-0000-1000-8000-000A95A0E128>"`, i)}, {Name: "reg-id", Value: "1"}}
		add(t, tb, user, b)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	per := float64(after.HeapAlloc-before.HeapAlloc) / n
	t.Logf("heap per binding at %d bindings: %.0f bytes", n, per)
	if per > 2048 {
		t.Errorf("heap per binding %.0f bytes exceeds 2 KB", per)
	}
	runtime.KeepAlive(tb)
}

func BenchmarkUpdatePersisted(b *testing.B) {
	tb, err := Open(filepath.Join(b.TempDir(), "db"), slog.New(slog.DiscardHandler), Settings{})
	if err != nil {
		b.Fatal(err)
	}
	defer tb.Close()
	var seq atomic.Int64
	b.ReportAllocs()
	b.SetParallelism(32) // many REGISTERs wait on commits at once, as in the server
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := seq.Add(1)
			user := "user" + strconv.FormatInt(i%100_000, 10)
			_, err := tb.Update(user, func(cur []Binding) ([]Binding, error) {
				return []Binding{binding("sip:"+user+"@192.0.2.1", time.Now().Add(time.Hour))}, nil
			})
			if err != nil {
				b.Fatal(err)
			}
		}
	})
	st := tb.Stats()
	b.ReportMetric(float64(st.Records)/float64(max(st.Commits, 1)), "records/commit")
}

func journalRecords(t testing.TB, path string) int {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	n := 0
	db.View(func(tx *bolt.Tx) error {
		return tx.ForEach(func(name []byte, b *bolt.Bucket) error {
			n += b.Stats().KeyN
			return nil
		})
	})
	return n
}

func TestJournalCompaction(t *testing.T) {
	clk := newClock()
	path := filepath.Join(t.TempDir(), "db")
	tb, err := Open(path, kit.Logger(t), Settings{Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	tb.store.compactMin = 10 // compact early and often
	const users = 40
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := range 300 {
				user := "u" + strconv.Itoa((i*7+w)%users)
				_, err := tb.Update(user, func(cur []Binding) ([]Binding, error) {
					b := binding("sip:"+user+"@192.0.2.1", clk.Now().Add(time.Hour))
					b.CSeq = uint32(i)
					if i%50 == 49 {
						return nil, nil // occasionally unregister everything
					}
					return []Binding{b}, nil
				})
				if err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	want := map[string]string{}
	for _, b := range tb.Snapshot() {
		want[b.User] = fmt.Sprint(b.CSeq)
	}
	st := tb.Stats()
	if st.Compactions == 0 {
		t.Fatalf("no compaction ran: %+v", st)
	}
	t.Logf("store: %+v", st)
	tb.Close()

	tb, err = Open(path, kit.Logger(t), Settings{Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, b := range tb.Snapshot() {
		got[b.User] = fmt.Sprint(b.CSeq)
	}
	tb.Close()
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("after reopen:\n got  %v\n want %v", got, want)
	}
	if n := journalRecords(t, path); n != len(want) {
		t.Fatalf("journal holds %d records after reopen, want %d", n, len(want))
	}
}

// TestLoadReplaysGenerationsInOrder covers a crash in the middle of a
// compaction: both generations are on disk and the newer one wins.
func TestLoadReplaysGenerationsInOrder(t *testing.T) {
	clk := newClock()
	path := filepath.Join(t.TempDir(), "db")
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	exp := clk.Now().Add(time.Hour)
	put := func(gen, seq uint64, user string, bs ...Binding) {
		db.Update(func(tx *bolt.Tx) error {
			bk, _ := tx.CreateBucketIfNotExists(journalName(gen))
			var k [8]byte
			k[7] = byte(seq)
			return bk.Put(k[:], appendRecord(nil, user, bs))
		})
	}
	put(3, 1, "alice", binding("sip:old@192.0.2.1", exp))
	put(3, 2, "bob", binding("sip:bob@192.0.2.2", exp))
	put(3, 3, "carol", binding("sip:carol@192.0.2.3", exp))
	put(4, 4, "alice", binding("sip:new@192.0.2.1", exp)) // compaction copy
	put(4, 5, "bob")                                      // bob unregistered later
	db.Close()

	tb, err := Open(path, kit.Logger(t), Settings{Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer tb.Close()
	if a := tb.Lookup("alice"); len(a) != 1 || a[0].Contact != "sip:new@192.0.2.1" {
		t.Errorf("alice = %+v", a)
	}
	if tb.Lookup("bob") != nil || tb.Lookup("carol") == nil {
		t.Errorf("users = %v", tb.Users())
	}
}

func TestUpdateAsync(t *testing.T) {
	clk := newClock()
	for _, persisted := range []bool{true, false} {
		t.Run(fmt.Sprint("persisted=", persisted), func(t *testing.T) {
			var tb *Table
			if persisted {
				var err error
				tb, err = Open(filepath.Join(t.TempDir(), "db"), kit.Logger(t), Settings{Now: clk.Now})
				if err != nil {
					t.Fatal(err)
				}
			} else {
				tb = NewMemory(kit.Logger(t), Settings{Now: clk.Now})
			}
			defer tb.Close()
			const n = 200
			done := make(chan error, n+1)
			for i := range n {
				user := "u" + strconv.Itoa(i%7)
				tb.UpdateAsync(user, func(cur []Binding) ([]Binding, error) {
					return append(cur, binding(fmt.Sprintf("sip:%s@192.0.2.1:%d", user, i), clk.Now().Add(time.Hour))), nil
				}, func(bs []Binding, err error) {
					if err == nil && (len(bs) == 0 || bs[0].User != user) {
						err = fmt.Errorf("callback got %+v", bs)
					}
					done <- err
				})
			}
			boom := errors.New("refused")
			tb.UpdateAsync("x", func([]Binding) ([]Binding, error) { return nil, boom }, func(_ []Binding, err error) { done <- err })
			refused := 0
			for i := range n + 1 {
				select {
				case err := <-done:
					if errors.Is(err, boom) {
						refused++
					} else if err != nil {
						t.Fatal(err)
					}
				case <-time.After(10 * time.Second):
					t.Fatalf("%d of %d callbacks ran", i, n+1)
				}
			}
			if tb.Len() != n || refused != 1 {
				t.Fatalf("Len = %d, refused = %d", tb.Len(), refused)
			}
		})
	}
}
