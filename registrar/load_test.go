package registrar

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/edgewise-sip/edgewise/registrar/location"
	"github.com/edgewise-sip/edgewise/registrar/lockout"
	"github.com/edgewise-sip/edgewise/registrar/sip/digest"
	"github.com/edgewise-sip/edgewise/registrar/sip/frontend"
)

// TestServeForLoad runs the SIP front end + registrar + location on a fixed address
// for an external load generator (SIPp), e.g.
//
//	EDGEWISE_REG_LOAD=127.0.0.1:5090 EDGEWISE_REG_LOAD_SECONDS=90 go test -run TestServeForLoad -v ./registrar/
//
// Users are u0, u1, ... with password "pw"; MD5 is offered alone because
// SIPp 3.6 cannot answer SHA-256. It is skipped unless the variable is set.
func TestServeForLoad(t *testing.T) {
	addr := os.Getenv("EDGEWISE_REG_LOAD")
	if addr == "" {
		t.Skip("set EDGEWISE_REG_LOAD=host:port to serve for a load test")
	}
	secs, _ := strconv.Atoi(os.Getenv("EDGEWISE_REG_LOAD_SECONDS"))
	if secs <= 0 {
		secs = 60
	}
	host, portStr, _ := cut(addr)
	port, _ := strconv.Atoi(portStr)
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))

	table, err := location.Open(filepath.Join(t.TempDir(), "edgewise.db"), log, location.Settings{Fsync: os.Getenv("EDGEWISE_REG_LOAD_FSYNC") != ""})
	if err != nil {
		t.Fatal(err)
	}
	defer table.Close()
	srv, err := frontend.New(frontend.Settings{
		Listen: []frontend.Listen{{Transport: "udp", Host: host, Port: port}, {Transport: "tcp", Host: host, Port: port}},
	}, log)
	if err != nil {
		t.Fatal(err)
	}
	s := defaultSettings()
	s.Algorithms = []digest.Algorithm{digest.MD5}
	s.Lockout = lockout.Settings{}
	reg, err := New(table, s, benchDirectory{}, Options{Logger: log, Pinger: srv})
	if err != nil {
		t.Fatal(err)
	}
	srv.HandleStateless(sip.REGISTER, reg.ServeRegister)
	srv.SetGuard(reg.Blocked)

	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(secs)*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	wg.Go(func() { reg.Run(ctx) })
	wg.Go(func() { table.Run(ctx) })
	wg.Go(func() {
		tick := time.NewTicker(5 * time.Second)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				var ms runtime.MemStats
				runtime.ReadMemStats(&ms)
				st := table.Stats()
				t.Logf("bindings=%d heap=%dMB sys=%dMB gc=%d commits=%d records=%d nonces=%d",
					table.Len(), ms.HeapAlloc>>20, ms.Sys>>20, ms.NumGC, st.Commits, st.Records, reg.auth.TrackedNonces())
			}
		}
	})
	if err := srv.Run(ctx); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
}

func cut(addr string) (string, string, bool) {
	for i := len(addr) - 1; i >= 0; i-- {
		if addr[i] == ':' {
			return addr[:i], addr[i+1:], true
		}
	}
	return addr, "", false
}
