package token

import (
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// parseToken verifies tok with golang-jwt, independently of twilio-go's own
// decoding, and returns header and claims.
func parseToken(t *testing.T, tok, secret string) (map[string]any, jwt.MapClaims) {
	t.Helper()
	claims := jwt.MapClaims{}
	parsed, err := jwt.ParseWithClaims(tok, claims, func(*jwt.Token) (any, error) {
		return []byte(secret), nil
	}, jwt.WithValidMethods([]string{"HS256"}), jwt.WithExpirationRequired())
	if err != nil {
		t.Fatalf("token does not verify with the signing secret: %v", err)
	}
	return parsed.Header, claims
}

func TestTokenContents(t *testing.T) {
	for _, tc := range []struct {
		name string
		ttl  time.Duration
	}{
		{"default 1h", 0},
		{"10 minutes", 10 * time.Minute}, // below twilio-go's silent 1 h floor
		{"90 minutes", 90 * time.Minute},
		{"24h max", 24 * time.Hour},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := testSettings()
			s.TTL = tc.ttl
			want := tc.ttl
			if want == 0 {
				want = time.Hour
			}
			r := startReplica(t, newTestProvider(t, s))
			before := time.Now().Unix()
			status, ans, msg := postToken(t, r.url, "alice", "alice-pw")
			after := time.Now().Unix()
			if status != 200 {
				t.Fatalf("status %d: %s", status, msg)
			}
			if ans.TTL != int(want.Seconds()) || ans.Identity != "alice" {
				t.Errorf("answer ttl=%d identity=%q, want %d alice", ans.TTL, ans.Identity, int(want.Seconds()))
			}

			hdr, c := parseToken(t, ans.Token, testSecret)
			for k, v := range map[string]string{"alg": "HS256", "typ": "JWT", "cty": "twilio-fpa;v=1"} {
				if hdr[k] != v {
					t.Errorf("header %s = %v, want %s", k, hdr[k], v)
				}
			}
			if _, ok := hdr["twr"]; ok {
				t.Errorf("header has twr without a region: %v", hdr)
			}
			if c["iss"] != testKeySID || c["sub"] != testAccount {
				t.Errorf("iss=%v sub=%v", c["iss"], c["sub"])
			}
			if jti, _ := c["jti"].(string); !strings.HasPrefix(jti, testKeySID+"-") {
				t.Errorf("jti = %q", jti)
			}
			nbf, _ := c.GetNotBefore()
			exp, _ := c.GetExpirationTime()
			if nbf == nil || exp == nil {
				t.Fatalf("nbf/exp missing: %v", c)
			}
			if n := nbf.Unix(); n < before || n > after {
				t.Errorf("nbf %d not within request time %d..%d", n, before, after)
			}
			if got := exp.Sub(nbf.Time); got != want {
				t.Errorf("exp-nbf = %s, want %s", got, want)
			}
			if !exp.Time.Equal(ans.ExpiresAt) {
				t.Errorf("expires_at %s != exp %s", ans.ExpiresAt, exp.Time)
			}

			grants, _ := c["grants"].(map[string]any)
			if grants["identity"] != "alice" {
				t.Errorf("grants.identity = %v", grants["identity"])
			}
			voice, _ := grants["voice"].(map[string]any)
			incoming, _ := voice["incoming"].(map[string]any)
			outgoing, _ := voice["outgoing"].(map[string]any)
			if incoming["allow"] != true || outgoing["application_sid"] != testApp || voice["push_credential_sid"] != testPush {
				t.Errorf("grants.voice = %v", voice)
			}
		})
	}
}

func TestTokenSignature(t *testing.T) {
	r := startReplica(t, newTestProvider(t, testSettings()))
	_, ans, _ := postToken(t, r.url, "alice", "alice-pw")
	parseToken(t, ans.Token, testSecret)

	for _, key := range []string{"old-secret", testSecret + "x", ""} {
		_, err := jwt.Parse(ans.Token, func(*jwt.Token) (any, error) { return []byte(key), nil },
			jwt.WithValidMethods([]string{"HS256"}))
		if err == nil {
			t.Errorf("token verifies with wrong secret %q", key)
		}
	}
}

func TestMintRefusesEmptySecret(t *testing.T) {
	s := testSettings()
	// twilio-go would panic here; mint must return an error instead.
	if _, _, err := mint(&s, Key{SID: testKeySID}, "alice", time.Now(), time.Hour); err == nil {
		t.Fatal("mint with an empty secret succeeded")
	}
}

func TestOptionalGrantsOmitted(t *testing.T) {
	s := testSettings()
	s.TwiMLAppSID, s.PushCredentialSID = "", ""
	tok, _, err := mint(&s, s.Keys[0], "bob", time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	_, c := parseToken(t, tok, testSecret)
	voice := c["grants"].(map[string]any)["voice"].(map[string]any)
	if _, ok := voice["outgoing"]; ok {
		t.Errorf("outgoing grant without an app: %v", voice)
	}
	if _, ok := voice["push_credential_sid"]; ok {
		t.Errorf("push credential without one configured: %v", voice)
	}
}

// TestRegion: a token for an account outside us1 names its region in the
// JWT header, as the Voice SDK requires; us1 tokens carry none.
func TestRegion(t *testing.T) {
	for _, tc := range []struct{ region, twr string }{{"", ""}, {"us1", ""}, {"ie1", "ie1"}, {"au1", "au1"}} {
		s := testSettings()
		s.Region = tc.region
		r := startReplica(t, newTestProvider(t, s))
		status, ans, msg := postToken(t, r.url, "alice", "alice-pw")
		if status != 200 {
			t.Fatalf("%q: status %d: %s", tc.region, status, msg)
		}
		hdr, _ := parseToken(t, ans.Token, testSecret)
		if got, _ := hdr["twr"].(string); got != tc.twr {
			t.Errorf("region %q: twr = %q, want %q", tc.region, got, tc.twr)
		}
	}
	s := testSettings()
	s.Region = "eu1"
	if err := s.Validate(); err == nil || !strings.Contains(err.Error(), `region: "eu1"`) {
		t.Errorf("eu1: %v", err)
	}
}
