package digest

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	icholy "github.com/icholy/digest"
)

var (
	t0 = time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	// phoneIP is where the tests' requests come from; nonces are bound to it.
	phoneIP = netip.MustParseAddr("192.0.2.10")
)

// req is a REGISTER to sip:edgewise from phoneIP with fingerprint fp.
func req(fp uint64) Request {
	return Request{
		Method:      "REGISTER",
		URIMatches:  func(u string) bool { return u == "sip:edgewise" },
		Source:      phoneIP,
		Fingerprint: fp,
	}
}

func newTestAuth(t testing.TB, cfg Config) *Authenticator {
	t.Helper()
	if cfg.Realm == "" {
		cfg.Realm = "edgewise"
	}
	a, err := NewAuthenticator(cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func users(u map[string]Secret) func(string) (Secret, bool) {
	return func(name string) (Secret, bool) {
		s, ok := u[name]
		return s, ok
	}
}

// answer builds client credentials with an independent implementation
// (github.com/icholy/digest) so both sides are not wrong the same way.
func answer(t testing.TB, challenge, user, password string, count int) Authorization {
	t.Helper()
	chal, err := icholy.ParseChallenge(challenge)
	if err != nil {
		t.Fatalf("client cannot parse challenge %q: %v", challenge, err)
	}
	cred, err := icholy.Digest(chal, icholy.Options{Method: "REGISTER", URI: "sip:edgewise", Username: user, Password: password, Count: count})
	if err != nil {
		t.Fatal(err)
	}
	a, err := ParseAuthorization(cred.String())
	if err != nil {
		t.Fatalf("parse %q: %v", cred.String(), err)
	}
	return a
}

func TestChallenges(t *testing.T) {
	a := newTestAuth(t, Config{Realm: `my "realm"`})
	ch := a.Challenges(nil, phoneIP, false, t0)
	if len(ch) != 2 {
		t.Fatalf("got %d challenges, want 2", len(ch))
	}
	var nonces []string
	for i, want := range []string{"SHA-256", "MD5"} {
		c, err := icholy.ParseChallenge(ch[i])
		if err != nil {
			t.Fatalf("parse %q: %v", ch[i], err)
		}
		if c.Algorithm != want || c.Realm != `my "realm"` || !c.SupportsQOP("auth") || c.Stale {
			t.Errorf("challenge %d = %+v", i, c)
		}
		nonces = append(nonces, c.Nonce)
	}
	if nonces[0] != nonces[1] {
		t.Errorf("challenges of one response should share a nonce")
	}
	stale := a.Challenges(nil, phoneIP, true, t0)
	if !strings.HasSuffix(stale[0], ", stale=true") {
		t.Errorf("stale challenge %q lacks stale=true", stale[0])
	}
	if stale[0] == ch[0] {
		t.Errorf("nonce reused across challenges")
	}

	md5First := newTestAuth(t, Config{Algorithms: []Algorithm{MD5}})
	if got := md5First.Challenges(nil, phoneIP, false, t0); len(got) != 1 || !strings.Contains(got[0], "algorithm=MD5") {
		t.Errorf("MD5-only challenges = %q", got)
	}
}

func TestVerify(t *testing.T) {
	lookup := users(map[string]Secret{
		"alice": {Password: "wonderland"},
		"carol": {HA1: strings.ToUpper(HA1(MD5, "carol", "edgewise", "s3cret"))},
	})
	type step struct {
		now     time.Time
		fp      uint64
		mutate  func(*Authorization)
		req     func(*Request)
		want    Outcome
		retrans bool
	}
	tests := []struct {
		name     string
		alg      int // index into the challenges: 0 SHA-256, 1 MD5
		user, pw string
		count    int
		steps    []step
	}{
		{name: "sha-256 ok", alg: 0, user: "alice", pw: "wonderland", steps: []step{{want: OK}}},
		{name: "md5 ok", alg: 1, user: "alice", pw: "wonderland", steps: []step{{want: OK}}},
		{name: "md5 with stored HA1", alg: 1, user: "carol", pw: "s3cret", steps: []step{{want: OK}}},
		{name: "sha-256 with stored MD5 HA1 cannot work", alg: 0, user: "carol", pw: "s3cret", steps: []step{{want: Failed}}},
		{name: "wrong password", alg: 0, user: "alice", pw: "nope", steps: []step{{want: Failed}}},
		{name: "unknown user", alg: 1, user: "mallory", pw: "x", steps: []step{{want: Failed}}},
		{name: "expired nonce is stale", alg: 0, user: "alice", pw: "wonderland", steps: []step{{now: t0.Add(31 * time.Second), want: Stale}}},
		{name: "nonce from the future is stale", alg: 0, user: "alice", pw: "wonderland", steps: []step{{now: t0.Add(-time.Minute), want: Stale}}},
		{name: "forged nonce is stale", alg: 0, user: "alice", pw: "wonderland", steps: []step{{mutate: func(a *Authorization) {
			a.Nonce = strings.Repeat("A", nonceLen)
		}, want: Stale}}},
		{name: "replay with a different request is refused", alg: 0, user: "alice", pw: "wonderland", steps: []step{
			{fp: 1, want: OK}, {fp: 2, want: Stale},
		}},
		{name: "replay without fingerprint is refused", alg: 0, user: "alice", pw: "wonderland", steps: []step{
			{want: OK}, {want: Stale},
		}},
		{name: "retransmission is accepted again", alg: 1, user: "alice", pw: "wonderland", steps: []step{
			{fp: 7, want: OK}, {fp: 7, want: OK, retrans: true},
		}},
		{name: "higher nonce-count is fresh", alg: 0, user: "alice", pw: "wonderland", count: 1, steps: []step{
			{fp: 1, want: OK},
		}},
		{name: "nonce used from another address is stale", alg: 0, user: "alice", pw: "wonderland", steps: []step{{req: func(r *Request) {
			r.Source = netip.MustParseAddr("198.51.100.7")
		}, want: Stale}}},
		{name: "nonce used from the IPv4-mapped form of the same address", alg: 1, user: "alice", pw: "wonderland", steps: []step{{req: func(r *Request) {
			r.Source = netip.AddrFrom16(phoneIP.As16())
		}, want: OK}}},
		{name: "digest uri for another Request-URI is refused", alg: 0, user: "alice", pw: "wonderland", steps: []step{{req: func(r *Request) {
			r.URIMatches = func(u string) bool { return u == "sip:+19005550100@edgewise" }
		}, want: Failed}}},
		{name: "no URI check refuses", alg: 0, user: "alice", pw: "wonderland", steps: []step{{req: func(r *Request) {
			r.URIMatches = nil
		}, want: Failed}}},
		{name: "replay of a used nonce-count with another Request-URI", alg: 0, user: "alice", pw: "wonderland", steps: []step{
			{fp: 11, want: OK},
			{fp: 11, req: func(r *Request) {
				r.URIMatches = func(u string) bool { return u == "sip:+19005550100@edgewise" }
			}, want: Failed},
			{fp: 12, want: Stale},
		}},
		{name: "realm mismatch asks for a challenge", alg: 0, user: "alice", pw: "wonderland", steps: []step{{mutate: func(a *Authorization) {
			a.Realm = "other"
		}, want: Challenge}}},
		{name: "algorithm not offered", alg: 0, user: "alice", pw: "wonderland", steps: []step{{mutate: func(a *Authorization) {
			a.Algorithm = "SHA-512"
		}, want: Challenge}}},
		{name: "no qop", alg: 0, user: "alice", pw: "wonderland", steps: []step{{mutate: func(a *Authorization) {
			a.QOP = ""
		}, want: Challenge}}},
		{name: "userhash", alg: 0, user: "alice", pw: "wonderland", steps: []step{{mutate: func(a *Authorization) {
			a.UserHash = "true"
		}, want: Challenge}}},
		{name: "bad nonce-count", alg: 0, user: "alice", pw: "wonderland", steps: []step{{mutate: func(a *Authorization) {
			a.NC = "1"
		}, want: Malformed}}},
		{name: "zero nonce-count", alg: 0, user: "alice", pw: "wonderland", steps: []step{{mutate: func(a *Authorization) {
			a.NC = "00000000"
		}, want: Malformed}}},
		{name: "response not hex", alg: 1, user: "alice", pw: "wonderland", steps: []step{{mutate: func(a *Authorization) {
			a.Response = strings.Repeat("z", 32)
		}, want: Malformed}}},
		{name: "missing cnonce", alg: 1, user: "alice", pw: "wonderland", steps: []step{{mutate: func(a *Authorization) {
			a.CNonce = ""
		}, want: Malformed}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := newTestAuth(t, Config{})
			ch := a.Challenges(nil, phoneIP, false, t0)
			cred := answer(t, ch[tt.alg], tt.user, tt.pw, tt.count)
			for i, st := range tt.steps {
				c := cred
				if st.mutate != nil {
					st.mutate(&c)
				}
				now := st.now
				if now.IsZero() {
					now = t0.Add(time.Second)
				}
				r := req(st.fp)
				if st.req != nil {
					st.req(&r)
				}
				got := a.Verify(r, &c, lookup, now)
				if got.Outcome != st.want || got.Retransmission != st.retrans {
					t.Fatalf("step %d: got %+v, want outcome %v retransmission %v", i, got, st.want, st.retrans)
				}
			}
		})
	}
}

func TestVerifyIncreasingNonceCount(t *testing.T) {
	a := newTestAuth(t, Config{})
	lookup := users(map[string]Secret{"alice": {Password: "pw"}})
	ch := a.Challenges(nil, phoneIP, false, t0)
	for nc := 1; nc <= 3; nc++ {
		cred := answer(t, ch[0], "alice", "pw", nc)
		if got := a.Verify(req(uint64(nc)), &cred, lookup, t0); got.Outcome != OK {
			t.Fatalf("nc=%d: %+v", nc, got)
		}
	}
	old := answer(t, ch[0], "alice", "pw", 2)
	if got := a.Verify(req(99), &old, lookup, t0); got.Outcome != Stale {
		t.Fatalf("lower nonce-count accepted: %+v", got)
	}
}

func TestSetConfigKeepsNonces(t *testing.T) {
	a := newTestAuth(t, Config{NonceTTL: time.Minute})
	lookup := users(map[string]Secret{"alice": {Password: "pw"}})
	ch := a.Challenges(nil, phoneIP, false, t0)
	if err := a.SetConfig(Config{Realm: "edgewise", NonceTTL: 10 * time.Second, Algorithms: []Algorithm{SHA256}}); err != nil {
		t.Fatal(err)
	}
	cred := answer(t, ch[0], "alice", "pw", 0)
	if got := a.Verify(req(1), &cred, lookup, t0.Add(5*time.Second)); got.Outcome != OK {
		t.Fatalf("nonce from before reload: %+v", got)
	}
	if got := a.Verify(req(2), &cred, lookup, t0.Add(11*time.Second)); got.Outcome != Stale {
		t.Fatalf("new TTL not applied: %+v", got)
	}
	for _, bad := range []Config{
		{},
		{Realm: "a\r\nb"},
		{Realm: "r", NonceTTL: -1},
		{Realm: "r", Algorithms: []Algorithm{MD5, MD5}},
		{Realm: "r", Algorithms: []Algorithm{9}},
	} {
		if err := a.SetConfig(bad); err == nil {
			t.Errorf("SetConfig(%+v) accepted", bad)
		}
	}
}

func TestNCCacheBoundedAndForgets(t *testing.T) {
	c := newNCCache(ncShards * 2) // two entries per shard
	const period = 10 * time.Second
	id := func(i int) uint64 { return uint64(i * ncShards) } // all in shard 0
	for i := 1; i <= 2; i++ {
		if r := c.use(id(i), 1, 0, t0, t0, period); r != ncFresh {
			t.Fatalf("entry %d: %v", i, r)
		}
	}
	if r := c.use(id(3), 1, 0, t0, t0, period); r != ncFull {
		t.Fatalf("third entry in a full shard: %v, want ncFull", r)
	}
	// One period later the old entries move to the previous generation and
	// are still known; there is room again for new ones.
	if r := c.use(id(1), 1, 0, t0, t0.Add(period), period); r != ncReplay {
		t.Fatalf("entry lost after one period: %v", r)
	}
	if r := c.use(id(3), 1, 0, t0.Add(period), t0.Add(period), period); r != ncFresh {
		t.Fatalf("no room after rotation: %v", r)
	}
	// Two idle periods later everything is forgotten.
	c.use(id(4), 1, 0, t0.Add(4*period), t0.Add(4*period), period)
	if n := c.len(); n != 1 {
		t.Fatalf("cache holds %d entries after expiry, want 1", n)
	}
}

// TestNCCacheReplayAcrossRotation: a nonce used before a rotation is still
// refused when replayed after it, whenever it was issued (the lookup skips
// the previous generation only for nonces issued too late to be in it),
// also when the wall clock stepped back in between.
func TestNCCacheReplayAcrossRotation(t *testing.T) {
	const period = 30 * time.Second
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	for _, tc := range []struct {
		name                     string
		issued, used, rotate, re time.Time
	}{
		{"issued and used long before", at(time.Second), at(2 * time.Second), at(30 * time.Second), at(31 * time.Second)},
		{"used just before the rotation", at(29 * time.Second), at(30*time.Second - time.Millisecond), at(30 * time.Second), at(30*time.Second + time.Millisecond)},
		{"stamped in the future by the tolerated skew", at(30*time.Second + clockSkew - 2*time.Millisecond), at(30*time.Second - time.Millisecond), at(30 * time.Second), at(31 * time.Second)},
		// The rotation comes a period after the use by the monotonic
		// clock, but the wall clock was stepped back 40 s meanwhile, so
		// the rotation's wall-clock time is before the use's.
		{"clock stepped back before the rotation", at(40 * time.Second), at(40 * time.Second), at(30 * time.Second), at(31 * time.Second)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newNCCache(1000)
			const id, other = 7 * ncShards, 9 * ncShards // one shard
			sh := &c.shards[0]
			// The shard's generation began before the nonce's use.
			c.use(other, 1, 0, tc.used.Add(-time.Second), tc.used.Add(-time.Second), period)
			if r := c.use(id, 1, 11, tc.issued, tc.used, period); r != ncFresh {
				t.Fatalf("first use: %v", r)
			}
			// Rotate at tc.rotate (the monotonic clock says a period has
			// passed, whatever the wall clock says).
			sh.rotated = tc.rotate.Add(-period)
			c.use(other+ncShards, 1, 0, tc.rotate, tc.rotate, period)
			if !sh.rotated.Equal(tc.rotate) {
				t.Fatal("no rotation")
			}
			if _, inPrev := sh.prev[id]; !inPrev {
				t.Fatal("the nonce is not in the previous generation")
			}
			if r := c.use(id, 1, 22, tc.issued, tc.re, period); r != ncReplay {
				t.Fatalf("replay after the rotation: %v, want ncReplay", r)
			}
			if r := c.use(id, 1, 11, tc.issued, tc.re, period); r != ncRetransmission {
				t.Fatalf("retransmission after the rotation: %v, want ncRetransmission", r)
			}
		})
	}
	// A nonce issued after the rotation (beyond the skew) is looked up in
	// the current generation only.
	c := newNCCache(1000)
	sh := &c.shards[0]
	c.use(ncShards, 1, 0, t0, t0, period)
	sh.prev = map[uint64]ncEntry{5 * ncShards: {nc: 9}} // would read as a replay
	sh.prevUpToMs = t0.UnixMilli()
	if r := c.use(5*ncShards, 1, 0, t0.Add(clockSkew+time.Millisecond), t0.Add(clockSkew+time.Millisecond), period); r != ncFresh {
		t.Fatalf("nonce issued after every entry of prev: %v, want ncFresh without looking there", r)
	}
}

func BenchmarkVerify(b *testing.B) {
	for _, alg := range []int{0, 1} {
		a := newTestAuth(b, Config{})
		lookup := users(map[string]Secret{"alice": {Password: "wonderland"}})
		ch := a.Challenges(nil, phoneIP, false, t0)
		name := []string{"SHA-256", "MD5"}[alg]
		b.Run(name, func(b *testing.B) {
			cred := answer(b, ch[alg], "alice", "wonderland", 0)
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				// A fresh nonce id per iteration, as under real load.
				c := cred
				if r := a.Verify(req(uint64(i+1)), &c, lookup, t0); r.Outcome != OK && r.Outcome != Stale {
					b.Fatal(r)
				}
			}
		})
	}
}

func BenchmarkChallenges(b *testing.B) {
	a := newTestAuth(b, Config{})
	b.ReportAllocs()
	var dst []string
	for b.Loop() {
		dst = a.Challenges(dst[:0], phoneIP, false, t0)
	}
}

func BenchmarkParseAuthorization(b *testing.B) {
	in := `Digest username="alice", realm="edgewise", nonce="abcdefghijabcdefghijabcdefghijabcdefghij123", uri="sip:edgewise", response="01234567890123456789012345678901", algorithm=MD5, cnonce="xyz", qop=auth, nc=00000001`
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseAuthorization(in); err != nil {
			b.Fatal(err)
		}
	}
}
