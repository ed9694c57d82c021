package calls

import (
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/edgewise-sip/edgewise/test/kit"
)

// fakeContacts holds the Contacts edgewise registered at Twilio.
type fakeContacts map[string]bool

func (f fakeContacts) HasContact(user, edge string) bool { return f[user+"~"+edge] }

// TestInboundOnlyToHeldContacts: a call from Twilio's addresses is taken
// only for a Contact edgewise holds at Twilio; anything else is forged and
// gets 404 without a phone ringing.
func TestInboundOnlyToHeldContacts(t *testing.T) {
	e := newEnv(t, func(c *envConfig) { c.contacts = fakeContacts{"alice~ashburn": true} })
	tc := newTwilioCaller(e, 2)
	phone := newPhone(e, 3, "answer", nil)
	e.binds.set("alice", e.bindingFor("alice", phone.peer))
	ctx := testCtx(t)
	for _, tt := range []struct {
		user, edge string
		want       int
	}{
		{"alice", "umatilla", 404}, // never registered there
		{"bob", "ashburn", 404},    // no Twilio identity
	} {
		req := tc.inviteReq(e, tt.user, tt.edge, "")
		res, err := tc.dialogUA("twilio").Client.Do(ctx, req)
		if err != nil {
			t.Fatalf("%s~%s: %v", tt.user, tt.edge, err)
		}
		if res.StatusCode != tt.want {
			t.Fatalf("%s~%s: got %d %s, want %d", tt.user, tt.edge, res.StatusCode, res.Reason, tt.want)
		}
	}
	if n := len(phone.requests(sip.INVITE)); n != 0 {
		t.Fatalf("the phone rang %d times for forged calls", n)
	}
	if got := testutil.ToFloat64(e.b.metrics.setups.WithLabelValues("inbound", outUnknownContact)); got != 1 {
		t.Errorf("unknown_contact setups = %v, want 1", got)
	}
	sess, err := tc.call(ctx, e, "alice", "", nil)
	if err != nil {
		t.Fatalf("the call to the held Contact: %v", err)
	}
	if err := sess.Bye(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestCallLimits: over calls.max_per_user a user's next call, made or
// received, gets 486; over calls.max_concurrent anyone's gets 503 with
// Retry-After; a call that ends gives its place back.
func TestCallLimits(t *testing.T) {
	for _, tt := range []struct {
		name          string
		total, user   int
		code          int
		outcome       string
		wantRetryHdrs bool
	}{
		{"per user", 0, 1, 486, outUserCallLimit, false},
		{"total", 1, 0, 503, outCallLimit, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, func(c *envConfig) {
				c.tune = func(s *Settings) { s.MaxCalls, s.MaxCallsPerUser = tt.total, tt.user }
			})
			twilio := newTwilioEdge(e, 4, "answer")
			e.edges.setPlan(twilioTarget("ashburn", twilio.addr))
			tc := newTwilioCaller(e, 2)
			phone := newPhone(e, 3, "answer", nil)
			e.binds.set("alice", e.bindingFor("alice", phone.peer))
			ctx := testCtx(t)

			first, err := tc.call(ctx, e, "alice", "CA1", nil)
			if err != nil {
				t.Fatalf("first call: %v", err)
			}
			// alice's own call out, then Twilio's second call to her.
			desk := newPeer(e, "alice-desk", 5)
			_, err = e.dialOut(ctx, desk, "15550001111", offer(newRTP(e, 5, false).addr, "sendrecv"), nil)
			if code := statusCode(err); code != tt.code {
				t.Fatalf("alice's call out: %v (status %d), want %d", err, code, tt.code)
			}
			res, err := tc.dialogUA("twilio").Client.Do(ctx, tc.inviteReq(e, "alice", "ashburn", "CA2"))
			if err != nil || res.StatusCode != tt.code || (res.GetHeader("Retry-After") != nil) != tt.wantRetryHdrs {
				t.Fatalf("second call to alice: %v %v, want %d", res, err, tt.code)
			}
			for _, dir := range []string{"inbound", "outbound"} {
				if got := testutil.ToFloat64(e.b.metrics.setups.WithLabelValues(dir, tt.outcome)); got != 1 {
					t.Errorf("%s %s = %v, want 1", dir, tt.outcome, got)
				}
			}
			if err := first.Bye(ctx); err != nil {
				t.Fatal(err)
			}
			kit.WaitFor(t, 5*time.Second, "the call to end", func() bool { return len(e.b.Calls()) == 0 })
			again, err := tc.call(ctx, e, "alice", "CA3", nil)
			if err != nil {
				t.Fatalf("a call after the first ended: %v", err)
			}
			if err := again.Bye(ctx); err != nil {
				t.Fatal(err)
			}
		})
	}
}
