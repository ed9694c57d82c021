package edge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

var errRefused = errors.New("connect: connection refused")

func TestClassify(t *testing.T) {
	tests := []struct {
		name  string
		res   Result
		err   error
		alive bool
		class string
	}{
		{"200 OK", Result{StatusCode: 200}, nil, true, ""},
		{"100 Trying is a response", Result{StatusCode: 100}, nil, true, ""},
		{"401 challenge", Result{StatusCode: 401}, nil, true, ""},
		{"404", Result{StatusCode: 404}, nil, true, ""},
		{"405 OPTIONS not allowed", Result{StatusCode: 405}, nil, true, ""},
		{"486 busy", Result{StatusCode: 486}, nil, true, ""},
		{"603 decline", Result{StatusCode: 603}, nil, true, ""},
		{"408 timeout", Result{StatusCode: 408}, nil, false, classResponse},
		{"500", Result{StatusCode: 500}, nil, false, classResponse},
		{"503", Result{StatusCode: 503, RetryAfter: time.Second}, nil, false, classResponse},
		{"no response", Result{}, nil, false, classTimeout},
		{"deadline", Result{}, context.DeadlineExceeded, false, classTimeout},
		{"wrapped no response", Result{}, fmt.Errorf("probe: %w", ErrNoResponse), false, classTimeout},
		{"transport", Result{}, errRefused, false, classTransport},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out := classify(tc.res, tc.err, 4*time.Second)
			if out.ok != tc.alive || out.class != tc.class {
				t.Fatalf("classify = ok %v class %q, want ok %v class %q", out.ok, out.class, tc.alive, tc.class)
			}
		})
	}
}

// Any response below 500 keeps an IP up; 5xx/408 take it down.
func TestReportStatusCodes(t *testing.T) {
	for _, tc := range []struct {
		code int
		want State
	}{
		{200, StateUp}, {401, StateUp}, {404, StateUp}, {405, StateUp},
		{408, StateDown}, {500, StateDown}, {503, StateDown}, {504, StateDown},
	} {
		t.Run(fmt.Sprint(tc.code), func(t *testing.T) {
			m, _, _ := newClocked(t, testSettings())
			resolve(t, m, "ashburn", "10.0.0.1")
			m.Report(target(t, m, "ashburn", "10.0.0.1"), Result{StatusCode: tc.code, RTT: 20 * time.Millisecond}, nil)
			st := edgeStatus(t, m, "ashburn")
			if got := st.IPs[0].State; got != tc.want {
				t.Fatalf("ip state after %d = %s, want %s", tc.code, got, tc.want)
			}
			if st.State != tc.want {
				t.Fatalf("edge state after %d = %s, want %s (its only IP)", tc.code, st.State, tc.want)
			}
		})
	}
}

func TestOneIPDownEdgeStaysUp(t *testing.T) {
	m, _, _ := newClocked(t, testSettings())
	resolve(t, m, "ashburn", "10.0.0.3", "10.0.0.1", "10.0.0.2")
	if got, want := ips(m.Targets("ashburn")), []string{"10.0.0.1", "10.0.0.2", "10.0.0.3"}; !slices.Equal(got, want) {
		t.Fatalf("targets = %v, want sorted %v", got, want)
	}
	m.Report(target(t, m, "ashburn", "10.0.0.1"), Result{StatusCode: 200, RTT: 12 * time.Millisecond}, nil)
	m.Report(target(t, m, "ashburn", "10.0.0.1"), Result{}, ErrNoResponse)

	st := edgeStatus(t, m, "ashburn")
	if st.State != StateUp {
		t.Fatalf("edge state = %s, want up with one of three IPs down", st.State)
	}
	if st.IPs[0].State != StateDown || !strings.Contains(st.IPs[0].LastError, "no response within 4s") {
		t.Fatalf("ip 10.0.0.1 = %+v, want down with a timeout error", st.IPs[0])
	}
	if got, want := ips(m.Targets("ashburn")), []string{"10.0.0.2", "10.0.0.3", "10.0.0.1"}; !slices.Equal(got, want) {
		t.Fatalf("targets = %v, want the failed IP last %v", got, want)
	}
	if edge, ok := m.Active(); edge != "ashburn" || !ok {
		t.Fatalf("active = %s %v, want ashburn", edge, ok)
	}
	if ch := drain(m); len(ch) != 0 {
		t.Fatalf("changes = %+v, want none", ch)
	}
}

func TestAllIPsDownMovesToNextEdge(t *testing.T) {
	m, _, logs := newClocked(t, testSettings())
	resolve(t, m, "ashburn", "10.0.0.1", "10.0.0.2", "10.0.0.3")
	resolve(t, m, "umatilla", "10.0.1.1", "10.0.1.2")
	for _, ip := range []string{"10.0.0.1", "10.0.0.2", "10.0.0.3"} {
		if edge, _ := m.Active(); edge != "ashburn" {
			t.Fatalf("active moved to %s before every IP failed", edge)
		}
		m.Report(target(t, m, "ashburn", ip), Result{}, context.DeadlineExceeded)
	}
	if edge, ok := m.Active(); edge != "umatilla" || !ok {
		t.Fatalf("active = %s %v, want umatilla", edge, ok)
	}
	const reason = "edge ashburn down: 3/3 IPs timed out after 4s"
	if st := edgeStatus(t, m, "ashburn"); st.State != StateDown || st.Reason != reason {
		t.Fatalf("ashburn = %s %q, want down %q", st.State, st.Reason, reason)
	}
	want := []Change{{From: "ashburn", To: "umatilla", Kind: ChangeFailover, Reason: reason}}
	if got := drain(m); !sameChanges(got, want) {
		t.Fatalf("changes = %+v, want %+v", got, want)
	}
	if !strings.Contains(logs.String(), `msg="`+reason+`"`) {
		t.Fatalf("log lacks the transition line %q:\n%s", reason, logs)
	}
}

func TestMixedFailureReason(t *testing.T) {
	m, _, _ := newClocked(t, testSettings())
	resolve(t, m, "ashburn", "10.0.0.1", "10.0.0.2", "10.0.0.3")
	m.Report(target(t, m, "ashburn", "10.0.0.1"), Result{}, ErrNoResponse)
	m.Report(target(t, m, "ashburn", "10.0.0.2"), Result{StatusCode: 503}, nil)
	m.Report(target(t, m, "ashburn", "10.0.0.3"), Result{}, errRefused)
	const want = "edge ashburn down: 1/3 IPs timed out after 4s, 1/3 IPs answered 503, 1/3 IPs failed with transport errors"
	if st := edgeStatus(t, m, "ashburn"); st.Reason != want {
		t.Fatalf("reason = %q, want %q", st.Reason, want)
	}
}

func TestRetryAfterHonoured(t *testing.T) {
	m, clk, _ := newClocked(t, testSettings())
	resolve(t, m, "ashburn", "10.0.0.1", "10.0.0.2", "10.0.0.3")
	m.Report(target(t, m, "ashburn", "10.0.0.1"), Result{StatusCode: 503, RetryAfter: 30 * time.Second}, nil)
	m.Report(target(t, m, "ashburn", "10.0.0.2"), Result{}, ErrNoResponse)

	// Down IPs still get tried before giving up, but one that asked us to
	// wait goes after every other.
	if got, want := ips(m.Targets("ashburn")), []string{"10.0.0.3", "10.0.0.2", "10.0.0.1"}; !slices.Equal(got, want) {
		t.Fatalf("targets = %v, want %v", got, want)
	}
	st := edgeStatus(t, m, "ashburn")
	if ra := st.IPs[0].RetryAfter; ra == nil || !ra.Equal(clk.Now().Add(30*time.Second)) {
		t.Fatalf("retry_after = %v, want now+30s", ra)
	}
	probeIPs := func() []string {
		m.mu.Lock()
		defer m.mu.Unlock()
		m.byName["ashburn"].state = StateDown // probe every IP, as for a down edge
		var out []string
		for _, ip := range m.probeSet(m.byName["ashburn"], clk.Now()) {
			out = append(out, ip.addr.String())
		}
		return out
	}
	if got := probeIPs(); slices.Contains(got, "10.0.0.1") {
		t.Fatalf("probe set %v includes an IP inside its Retry-After", got)
	}
	clk.Add(30 * time.Second)
	if got := probeIPs(); !slices.Contains(got, "10.0.0.1") {
		t.Fatalf("probe set %v lacks the IP after its Retry-After passed", got)
	}
	if got, want := ips(m.Targets("ashburn")), []string{"10.0.0.3", "10.0.0.1", "10.0.0.2"}; !slices.Equal(got, want) {
		t.Fatalf("targets = %v after Retry-After passed, want %v", got, want)
	}
}

func TestFailbackOnlyAfterHold(t *testing.T) {
	const hold = time.Minute
	m, clk, _ := newClocked(t, testSettings())
	resolve(t, m, "ashburn", "10.0.0.1", "10.0.0.2")
	resolve(t, m, "umatilla", "10.0.1.1")
	fail := func(ip string) { m.Report(target(t, m, "ashburn", ip), Result{}, ErrNoResponse) }
	ok := func(ip string) { m.Report(target(t, m, "ashburn", ip), Result{StatusCode: 200}, nil) }
	fail("10.0.0.1")
	fail("10.0.0.2")
	if edge, _ := m.Active(); edge != "umatilla" {
		t.Fatalf("active = %s, want umatilla after ashburn went down", edge)
	}
	drain(m)

	clk.Add(10 * time.Second)
	ok("10.0.0.1") // ashburn recovers: the hold starts now
	if st := edgeStatus(t, m, "ashburn"); st.State != StateUp {
		t.Fatalf("ashburn = %s, want up", st.State)
	}
	clk.Add(hold / 2)
	fail("10.0.0.1") // flaps during the hold: down again, hold restarts on recovery
	clk.Add(time.Second)
	ok("10.0.0.1")
	upAt := clk.Now()

	clk.Add(hold - time.Millisecond)
	if edge, _ := m.Active(); edge != "umatilla" {
		t.Fatalf("active = %s %s after recovery, want umatilla until the hold (%s) passes", edge, hold-time.Millisecond, hold)
	}
	clk.Add(time.Millisecond)
	if edge, _ := m.Active(); edge != "ashburn" {
		t.Fatalf("active = %s at the end of the hold, want ashburn", edge)
	}
	got := drain(m)
	if len(got) != 1 || got[0].Kind != ChangeFailback || got[0].From != "umatilla" || got[0].To != "ashburn" || !got[0].At.Equal(upAt.Add(hold)) {
		t.Fatalf("changes = %+v, want one failback umatilla → ashburn at %s", got, upAt.Add(hold))
	}
}

// A recovering edge is used at once when the edge in use fails: the hold is
// about preference, not about having some edge.
func TestRecoveringEdgeBeatsNone(t *testing.T) {
	m, clk, _ := newClocked(t, testSettings())
	resolve(t, m, "ashburn", "10.0.0.1")
	resolve(t, m, "umatilla", "10.0.1.1")
	m.Report(target(t, m, "ashburn", "10.0.0.1"), Result{}, ErrNoResponse)
	clk.Add(time.Second)
	m.Report(target(t, m, "ashburn", "10.0.0.1"), Result{StatusCode: 200}, nil)
	m.Report(target(t, m, "umatilla", "10.0.1.1"), Result{StatusCode: 500}, nil)
	if edge, ok := m.Active(); edge != "ashburn" || !ok {
		t.Fatalf("active = %s %v, want ashburn (recovering) once umatilla is down", edge, ok)
	}
}

func TestEveryEdgeDown(t *testing.T) {
	m, _, _ := newClocked(t, testSettings())
	resolve(t, m, "ashburn", "10.0.0.1")
	resolve(t, m, "umatilla", "10.0.1.1")
	m.Report(target(t, m, "ashburn", "10.0.0.1"), Result{}, ErrNoResponse)
	m.Report(target(t, m, "umatilla", "10.0.1.1"), Result{}, ErrNoResponse)
	if edge, ok := m.Active(); edge != "umatilla" || ok {
		t.Fatalf("active = %s %v, want umatilla (last resort) and ok=false", edge, ok)
	}
	if got := m.Targets("umatilla"); len(got) != 1 {
		t.Fatalf("targets = %v, want the down IP still offered", got)
	}
	m.Report(target(t, m, "ashburn", "10.0.0.1"), Result{StatusCode: 200}, nil)
	if edge, ok := m.Active(); edge != "ashburn" || !ok {
		t.Fatalf("active = %s %v, want ashburn", edge, ok)
	}
	var kinds []ChangeKind
	for _, c := range drain(m) {
		kinds = append(kinds, c.Kind)
	}
	if want := []ChangeKind{ChangeFailover, ChangeUnavailable, ChangeAvailable}; !slices.Equal(kinds, want) {
		t.Fatalf("change kinds = %v, want %v", kinds, want)
	}
}

func TestApplyReload(t *testing.T) {
	tests := []struct {
		name      string
		edges     []string
		wantEdge  string
		wantKinds []ChangeKind
	}{
		{"reversed order switches at once", []string{"umatilla", "ashburn"}, "umatilla", []ChangeKind{ChangeReload}},
		{"same order keeps the edge", []string{"ashburn", "umatilla"}, "ashburn", nil},
		{"active edge removed", []string{"umatilla"}, "umatilla", []ChangeKind{ChangeReload}},
		{"new first edge not yet resolved", []string{"dublin", "ashburn"}, "dublin", []ChangeKind{ChangeReload}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, _, _ := newClocked(t, testSettings())
			resolve(t, m, "ashburn", "10.0.0.1")
			resolve(t, m, "umatilla", "10.0.1.1")
			m.Report(target(t, m, "ashburn", "10.0.0.1"), Result{StatusCode: 200}, nil)
			m.Report(target(t, m, "umatilla", "10.0.1.1"), Result{StatusCode: 200}, nil)
			if err := m.Apply(testSettings(tc.edges...)); err != nil {
				t.Fatal(err)
			}
			if edge, ok := m.Active(); edge != tc.wantEdge || !ok {
				t.Fatalf("active = %s %v, want %s", edge, ok, tc.wantEdge)
			}
			var kinds []ChangeKind
			for _, c := range drain(m) {
				kinds = append(kinds, c.Kind)
				if !strings.HasPrefix(c.Reason, "reload: edge order now ") {
					t.Errorf("reason = %q", c.Reason)
				}
			}
			if !slices.Equal(kinds, tc.wantKinds) {
				t.Fatalf("changes = %v, want %v", kinds, tc.wantKinds)
			}
			// Health of kept edges survives the reload.
			if st := edgeStatus(t, m, tc.edges[len(tc.edges)-1]); tc.edges[len(tc.edges)-1] != "dublin" && st.State != StateUp {
				t.Fatalf("kept edge %s = %s, want its health kept", st.Name, st.State)
			}
		})
	}
}

// A down edge stays skipped after a reload puts it first.
func TestApplySkipsDownEdge(t *testing.T) {
	m, _, _ := newClocked(t, testSettings())
	resolve(t, m, "ashburn", "10.0.0.1")
	resolve(t, m, "umatilla", "10.0.1.1")
	m.Report(target(t, m, "umatilla", "10.0.1.1"), Result{StatusCode: 503}, nil)
	if err := m.Apply(testSettings("umatilla", "ashburn")); err != nil {
		t.Fatal(err)
	}
	if edge, _ := m.Active(); edge != "ashburn" {
		t.Fatalf("active = %s, want ashburn (umatilla is down)", edge)
	}
}

func TestReloadChangingDomainMovesRegistrations(t *testing.T) {
	m, _, _ := newClocked(t, testSettings())
	resolve(t, m, "ashburn", "10.0.0.1")
	old := target(t, m, "ashburn", "10.0.0.1")
	s := testSettings()
	s.Domain = "other"
	if err := m.Apply(s); err != nil {
		t.Fatal(err)
	}
	got := drain(m)
	if len(got) != 1 || got[0].From != "ashburn" || got[0].To != "ashburn" || got[0].Kind != ChangeReload {
		t.Fatalf("changes = %+v, want a reload change ashburn → ashburn", got)
	}
	if ts := m.Targets("ashburn"); len(ts) != 0 {
		t.Fatalf("targets = %v, want none until other.sip.ashburn.twilio.com resolves", ts)
	}
	m.Report(old, Result{}, ErrNoResponse) // a late outcome for the old FQDN
	if st := edgeStatus(t, m, "ashburn"); st.State != StateUnknown {
		t.Fatalf("state = %s, want a report for the old FQDN ignored", st.State)
	}
}

func TestDNSFailureWithoutAnswerIsDown(t *testing.T) {
	m, _, _ := newClocked(t, testSettings())
	m.mu.Lock()
	e := m.byName["ashburn"]
	e.dnsBusy = true
	m.mu.Unlock()
	m.lookupDone(e, nil, 0, errors.New("lookup example.sip.ashburn.twilio.com: NXDOMAIN"))
	if edge, _ := m.Active(); edge != "umatilla" {
		t.Fatalf("active = %s, want umatilla", edge)
	}
	st := edgeStatus(t, m, "ashburn")
	if st.State != StateDown || !strings.Contains(st.Reason, "dns lookup failed") || st.DNS.Stale {
		t.Fatalf("ashburn = %+v", st)
	}
}

func TestStatusJSONShape(t *testing.T) {
	m, _, _ := newClocked(t, testSettings())
	resolve(t, m, "ashburn", "10.0.0.1")
	m.Report(target(t, m, "ashburn", "10.0.0.1"), Result{StatusCode: 200, RTT: 1500 * time.Microsecond}, nil)
	b, err := json.Marshal(m.Status())
	if err != nil {
		t.Fatal(err)
	}
	var got []map[string]any
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if got[0]["name"] != "ashburn" || got[0]["state"] != "up" || got[0]["active"] != true {
		t.Fatalf("edge = %s", b)
	}
	ip := got[0]["ips"].([]any)[0].(map[string]any)
	if ip["ip"] != "10.0.0.1" || ip["state"] != "up" || ip["last_rtt_ms"] != 1.5 || ip["last_error"] != "" {
		t.Fatalf("ip = %v", ip)
	}
	if got[1]["state"] != "unknown" || len(got[1]["ips"].([]any)) != 0 {
		t.Fatalf("unresolved edge = %v", got[1])
	}
}

func TestNewRejectsBadSettings(t *testing.T) {
	for _, s := range []Settings{
		{Edges: []string{"ashburn"}},
		{Domain: "example"},
		{Domain: "example", Edges: []string{"ashburn", "ashburn"}},
		{Domain: "example", Edges: []string{"ashburn"}, Transport: "sctp"},
		{Domain: "example", Edges: []string{"ashburn"}, KeepaliveMethod: "ping"},
	} {
		if _, err := New(s, ProberFunc(nil), nil); err == nil {
			t.Errorf("New(%+v) accepted", s)
		}
	}
	m, err := New(Settings{Domain: "example", Edges: []string{"ashburn"}, Transport: "TLS"}, ProberFunc(nil), nil)
	if err != nil {
		t.Fatal(err)
	}
	s := m.Settings()
	if s.Port != 5061 || s.Timeout != 4*time.Second || s.KeepaliveInterval != 10*time.Second || s.FailbackHold != time.Minute || s.KeepaliveMethod != "options" {
		t.Fatalf("defaults = %+v", s)
	}
}

func sameChanges(got, want []Change) bool {
	return slices.EqualFunc(got, want, func(a, b Change) bool {
		return a.From == b.From && a.To == b.To && a.Kind == b.Kind && a.Reason == b.Reason
	})
}

func TestPlan(t *testing.T) {
	m, _, _ := newClocked(t, testSettings("ashburn", "umatilla", "dublin"))
	resolve(t, m, "ashburn", "10.0.0.1", "10.0.0.2")
	resolve(t, m, "umatilla", "10.0.1.1")
	resolve(t, m, "dublin", "10.0.2.1")
	m.Report(target(t, m, "ashburn", "10.0.0.1"), Result{}, ErrNoResponse)
	if got, want := ips(m.Plan()), []string{"10.0.0.2", "10.0.0.1", "10.0.1.1", "10.0.2.1"}; !slices.Equal(got, want) {
		t.Fatalf("plan = %v, want %v", got, want)
	}
	m.Report(target(t, m, "umatilla", "10.0.1.1"), Result{StatusCode: 503}, nil)
	if got, want := ips(m.Plan()), []string{"10.0.0.2", "10.0.0.1", "10.0.2.1"}; !slices.Equal(got, want) {
		t.Fatalf("plan = %v, want %v (umatilla down)", got, want)
	}
}

// TestOnEdgeState: every edge going down, and coming back from down, is
// heard (the status page's events), outside the monitor's lock (the
// function may call the monitor); an edge first seen up is not news.
func TestOnEdgeState(t *testing.T) {
	m, clk, _ := newClocked(t, testSettings())
	var mu sync.Mutex
	var heard []string
	m.OnEdgeState(func(edge string, down bool, reason string, at time.Time) {
		_ = m.Status() // takes the monitor's lock: deadlocks if called under it
		mu.Lock()
		defer mu.Unlock()
		heard = append(heard, fmt.Sprintf("%s down=%v %q at+%s", edge, down, reason, at.Sub(clk.Now())))
	})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { m.deliver(ctx) })
	defer func() { cancel(); wg.Wait() }()
	resolve(t, m, "ashburn", "10.0.0.1")
	resolve(t, m, "umatilla", "10.0.1.1")
	m.Report(target(t, m, "umatilla", "10.0.1.1"), Result{StatusCode: 200}, nil) // unknown → up: quiet
	m.Report(target(t, m, "ashburn", "10.0.0.1"), Result{}, ErrNoResponse)
	m.Report(target(t, m, "ashburn", "10.0.0.1"), Result{StatusCode: 200}, nil)
	want := []string{
		`ashburn down=true "edge ashburn down: 1/1 IPs timed out after 4s" at+0s`,
		`ashburn down=false "edge ashburn up: 10.0.0.1 answered 200 in 0s" at+0s`,
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		got := slices.Clone(heard)
		mu.Unlock()
		if slices.Equal(got, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("heard %q, want %q", got, want)
		}
		time.Sleep(5 * time.Millisecond) // polling, not synchronisation
	}
}
