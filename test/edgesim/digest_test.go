package edgesim

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// answer computes a client's digest response the way RFC 2617 §3.2.2 says,
// spelled out here apart from verify so a slip in one does not hide in both.
func answer(user, pass, nonce, nc, cnonce, method, uri string) string {
	ha1 := md5Hex(fmt.Sprintf("%s:%s:%s", user, digestRealm, pass))
	ha2 := md5Hex(method + ":" + uri)
	return md5Hex(strings.Join([]string{ha1, nonce, nc, cnonce, "auth", ha2}, ":"))
}

func TestDigestVerify(t *testing.T) {
	t.Parallel()
	store := newNonceStore()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	pw := func(u string) (string, bool) { return alicePass, u == "alice" }

	fresh := func() digestCredentials {
		chal := store.challenge(t0, false)
		params, err := parseAuthParams(strings.TrimPrefix(chal, "Digest "))
		if err != nil {
			t.Fatal(err)
		}
		c := digestCredentials{
			username: "alice", realm: params["realm"], nonce: params["nonce"], uri: "sip:demo.sip.ashburn.twilio.com",
			algorithm: "MD5", cnonce: "c0ffee", qop: "auth", nc: "00000001", opaque: params["opaque"],
		}
		c.response = answer("alice", alicePass, c.nonce, c.nc, c.cnonce, "REGISTER", c.uri)
		return c
	}

	c := fresh()
	if got, why := store.verify(c, "REGISTER", pw, t0); got != authOK {
		t.Fatalf("valid credentials: %v %s", got, why)
	}
	if got, _ := store.verify(c, "REGISTER", pw, t0); got != authChallenge {
		t.Errorf("replayed nc: %v, want a new challenge", got)
	}
	c.nc = "00000002"
	c.response = answer("alice", alicePass, c.nonce, c.nc, c.cnonce, "REGISTER", c.uri)
	if got, why := store.verify(c, "REGISTER", pw, t0.Add(time.Minute)); got != authOK {
		t.Errorf("next nc: %v %s", got, why)
	}

	for _, tc := range []struct {
		name string
		edit func(*digestCredentials)
		at   time.Duration
		want authOutcome
	}{
		{"expired nonce", func(*digestCredentials) {}, nonceTTL + time.Second, authStale},
		{"unknown nonce", func(c *digestCredentials) { c.nonce = "feed" }, 0, authChallenge},
		{"other realm", func(c *digestCredentials) { c.realm = "example.com" }, 0, authChallenge},
		{"other opaque", func(c *digestCredentials) { c.opaque = "x" }, 0, authChallenge},
		{"no qop", func(c *digestCredentials) { c.qop = "" }, 0, authBad},
		{"MD5-sess", func(c *digestCredentials) { c.algorithm = "MD5-sess" }, 0, authBad},
		{"short nc", func(c *digestCredentials) { c.nc = "1" }, 0, authBad},
		{"wrong response", func(c *digestCredentials) { c.response = strings.Repeat("0", 32) }, 0, authForbidden},
		{"unknown user", func(c *digestCredentials) { c.username = "eve" }, 0, authForbidden},
		{"method differs", func(c *digestCredentials) {
			c.response = answer("alice", alicePass, c.nonce, c.nc, c.cnonce, "INVITE", c.uri)
		}, 0, authForbidden},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := fresh()
			tc.edit(&c)
			if got, why := store.verify(c, "REGISTER", pw, t0.Add(tc.at)); got != tc.want {
				t.Errorf("got %v (%s), want %v", got, why, tc.want)
			}
		})
	}
}

func TestParseDigestCredentials(t *testing.T) {
	t.Parallel()
	c, err := parseDigestCredentials(`Digest username="al\"ice", realm="sip.twilio.com",nonce="n1", uri="sip:d", response="abc", qop=auth, nc=00000001, cnonce="x,y", algorithm=MD5`)
	if err != nil {
		t.Fatal(err)
	}
	if c.username != `al"ice` || c.cnonce != "x,y" || c.qop != "auth" || c.nc != "00000001" || c.algorithm != "MD5" {
		t.Errorf("parsed %+v", c)
	}
	for _, bad := range []string{
		`Basic YWxpY2U6cHc=`,
		`Digest username="alice"`,
		`Digest username="alice, realm="r", nonce="n", uri="u", response="r"`,
		`Digest username="a", username="b", realm="r", nonce="n", uri="u", response="r"`,
		`Digest garbage`,
	} {
		if _, err := parseDigestCredentials(bad); err == nil {
			t.Errorf("%s: no error", bad)
		}
	}
}
