package calls

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
)

func TestOrderTargets(t *testing.T) {
	ts := []Target{
		{URI: "a", Priority: 20, Weight: 10},
		{URI: "b", Priority: 10, Weight: 0},
		{URI: "c", Priority: 10, Weight: 30},
		{URI: "d", Priority: 10, Weight: 10},
	}
	uris := func(ts []Target) []string {
		var out []string
		for _, t := range ts {
			out = append(out, t.URI)
		}
		return out
	}
	for _, tc := range []struct {
		name  string
		draws []int // what rnd returns, in order
		want  []string
	}{
		// Priority 10 first (weights c 30, d 10; b 0 last), then a.
		{"heavy first", []int{0, 0}, []string{"c", "d", "b", "a"}},
		{"light drawn", []int{35, 0}, []string{"d", "c", "b", "a"}},
		{"last of the heavy range", []int{29, 0}, []string{"c", "d", "b", "a"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			draws := slices.Clone(tc.draws)
			rnd := func(n int) int {
				if len(draws) == 0 {
					return 0
				}
				v := draws[0]
				draws = draws[1:]
				if v >= n {
					t.Fatalf("draw %d out of [0,%d)", v, n)
				}
				return v
			}
			if got := uris(orderTargets(ts, rnd)); !slices.Equal(got, tc.want) {
				t.Errorf("order %v, want %v", got, tc.want)
			}
		})
	}

	// Over many draws the split follows the weights (30:10 → ~75 % c first).
	first := map[string]int{}
	for range 4000 {
		first[orderTargets(ts, randIntN)[0].URI]++
	}
	if c := first["c"]; c < 2700 || c > 3300 {
		t.Errorf("c first in %d of 4000 orders, want about 3000 (%v)", c, first)
	}
	if first["b"] != 0 || first["a"] != 0 {
		t.Errorf("weight 0 or a later priority came first: %v", first)
	}
}

func withTargets(t *testing.T, e *env, user string, ts ...Target) {
	t.Helper()
	s := e.b.Settings()
	s.Targets = map[string][]Target{user: ts}
	st := e.b.state.Load()
	if err := e.b.Apply(s, st.phones, st.twilio); err != nil {
		t.Fatal(err)
	}
}

// TestInboundFallsThroughToTargets: the registered phone is silent, the
// first target too; the second target (next priority) answers.
func TestInboundFallsThroughToTargets(t *testing.T) {
	e := newEnv(t)
	tc := newTwilioCaller(e, 2)
	silentPhone := newRTP(e, 5, false)
	silentPBX := newRTP(e, 6, false)
	pbx := newPhone(e, 3, "answer", nil)
	e.binds.set("alice", e.bindingFor("alice", &peer{addr: silentPhone.addr}))
	withTargets(t, e, "alice",
		Target{URI: fmt.Sprintf("sip:alice@%s", pbx.addr), Priority: 2, Weight: 10},
		Target{URI: fmt.Sprintf("sip:alice@%s", silentPBX.addr), Priority: 1, Weight: 10},
	)
	start := time.Now()
	sess, err := tc.call(testCtx(t), e, "alice", "", nil)
	if err != nil {
		t.Fatalf("call failed: %v", err)
	}
	// Two silent stages of Timeout (400 ms) each before the answer.
	if took := time.Since(start); took < 800*time.Millisecond {
		t.Errorf("answered after %v: the silent stages were not tried first", took)
	}
	pbx.waitRequest(sip.ACK, 1)
	if err := sess.Bye(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	pbx.waitRequest(sip.BYE, 1)
}

// TestInboundBusyTargetEndsTheSearch: busy is the user's answer; the
// targets after it are not rung.
func TestInboundBusyTargetEndsTheSearch(t *testing.T) {
	e := newEnv(t)
	tc := newTwilioCaller(e, 2)
	busy := newPhone(e, 3, "busy", nil)
	spare := newPhone(e, 4, "answer", nil)
	withTargets(t, e, "alice",
		Target{URI: fmt.Sprintf("sip:alice@%s", busy.addr), Priority: 1, Weight: 10},
		Target{URI: fmt.Sprintf("sip:alice@%s", spare.addr), Priority: 2, Weight: 10},
	)
	_, err := tc.call(testCtx(t), e, "alice", "", nil)
	if code := statusCode(err); code != 486 {
		t.Fatalf("got %v (code %d), want 486", err, code)
	}
	if n := len(spare.requests(sip.INVITE)); n != 0 {
		t.Errorf("the next target got %d INVITEs after a busy", n)
	}
}
