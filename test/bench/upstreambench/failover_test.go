package upstreambench

import (
	"context"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/edgewise-sip/edgewise/registrar/twilio/edge"
)

func TestMain(m *testing.M) {
	sip.SetDefaultLogger(slog.New(slog.DiscardHandler))
	os.Exit(m.Run())
}

// A small, fast run so the measurement code itself stays tested.
func TestFailoverSmall(t *testing.T) {
	fig, err := Failover(context.Background(), Config{
		Users: 20, Timeout: 200 * time.Millisecond, KeepaliveInterval: 300 * time.Millisecond,
		RegisterExpires: 60 * time.Second, Net: 204, Limit: time.Minute,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", Table([]Figures{fig}))
	if fig.DetectDown <= 0 || fig.AllOnSecondary < fig.DetectDown || fig.MaxGap > fig.AllOnSecondary+50*time.Millisecond {
		t.Errorf("inconsistent figures %+v", fig)
	}
	if fig.AllOnSecondary > fig.Target || fig.MaxGapAny != 0 {
		t.Errorf("figures %+v: want (b) within %s and no moment without any binding", fig, fig.Target)
	}
}

// TestFailoverFigures measures failover with 1,000 users at production
// timings (4 s timeout, 10 s keepalive, OPTIONS and REGISTER, the edge
// dropped at the worst moment of the probe cycle), and for context without
// keepalives (failover only when a refresh finds the edge dead). Gated:
//
//	EDGEWISE_BENCH=1 go test -run TestFailoverFigures -v ./registrar/upstream/upstreambench/
//
// EDGEWISE_BENCH_USERS overrides the 1,000 users; EDGEWISE_BENCH_NONE_EXPIRES
// (seconds, default 60) the expiry of the no-keepalive run, whose first
// refresh comes at about 40–50 % of it; EDGEWISE_BENCH_METHODS (e.g.
// "options,none") picks runs; EDGEWISE_BENCH_LOG=info logs to stderr.
func TestFailoverFigures(t *testing.T) {
	if os.Getenv("EDGEWISE_BENCH") == "" {
		t.Skip("set EDGEWISE_BENCH=1 to measure failover with 1,000 users")
	}
	users := envInt(t, "EDGEWISE_BENCH_USERS", 1000)
	noneExpires := time.Duration(envInt(t, "EDGEWISE_BENCH_NONE_EXPIRES", 60)) * time.Second
	runs := []Config{
		{Users: users, KeepaliveMethod: edge.KeepaliveOptions, Net: 205, WorstPhase: true},
		{Users: users, KeepaliveMethod: edge.KeepaliveRegister, Net: 206, WorstPhase: true},
		{Users: users, KeepaliveMethod: edge.KeepaliveNone, RegisterExpires: noneExpires, Net: 207},
	}
	if m := os.Getenv("EDGEWISE_BENCH_METHODS"); m != "" {
		runs = slices.DeleteFunc(runs, func(c Config) bool { return !strings.Contains(m, c.KeepaliveMethod) })
	}
	var logger *slog.Logger
	if lvl := os.Getenv("EDGEWISE_BENCH_LOG"); lvl != "" {
		var l slog.Level
		if err := l.UnmarshalText([]byte(lvl)); err != nil {
			t.Fatal(err)
		}
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l}))
	}
	var figs []Figures
	for _, c := range runs {
		c.Logger = logger
		fig, err := Failover(context.Background(), c)
		if err != nil {
			t.Fatalf("%s: %v", c.KeepaliveMethod, err)
		}
		figs = append(figs, fig)
		t.Logf("%s done: registered %d users in %s", c.KeepaliveMethod, c.Users, fig.Registered.Round(time.Millisecond))
	}
	table := Table(figs)
	t.Logf("failover figures:\n%s", table)
	if out := os.Getenv("EDGEWISE_BENCH_OUT"); out != "" {
		if err := os.WriteFile(out, []byte(table), 0o644); err != nil {
			t.Error(err)
		}
	}
	for _, f := range figs {
		if f.Config.KeepaliveMethod == edge.KeepaliveOptions && f.MaxGap > f.Target {
			t.Errorf("options keepalive: (c) %s exceeds the target %s", f.MaxGap, f.Target)
		}
	}
}

func envInt(t *testing.T, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		t.Fatalf("%s=%q is not a positive integer", name, v)
	}
	return n
}
