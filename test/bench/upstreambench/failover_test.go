package upstreambench

import (
	"context"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
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
