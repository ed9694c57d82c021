// Command regserve runs the SIP front end, the registrar and the bindings
// table on a fixed address for an external load generator (SIPp), and logs
// the table's size, the heap and the store's commits every 5 s:
//
//	go run ./test/bench/regserve -listen 127.0.0.1:5090 -seconds 90
//
// Users are u0, u1, ... with password "pw"; MD5 is offered alone because
// SIPp 3.6 cannot answer SHA-256. The registrar suite of test/bench drives the
// whole daemon instead; this is for profiling the registrar's own path.
package main

import (
	"context"
	"flag"
	"log"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/edgewise-sip/edgewise/registrar"
	"github.com/edgewise-sip/edgewise/registrar/directory"
	"github.com/edgewise-sip/edgewise/registrar/location"
	"github.com/edgewise-sip/edgewise/registrar/sip/digest"
	"github.com/edgewise-sip/edgewise/registrar/sip/frontend"
)

// users knows u0, u1, ... all with password "pw".
type users struct{}

func (users) Credential(user string) (directory.Credential, bool) {
	if !strings.HasPrefix(user, "u") {
		return directory.Credential{}, false
	}
	return directory.Credential{User: user, Password: "pw"}, true
}

func main() {
	listen := flag.String("listen", "127.0.0.1:5090", "UDP and TCP address to serve on")
	seconds := flag.Int("seconds", 60, "how long to serve")
	fsync := flag.Bool("fsync", false, "fdatasync every store commit")
	flag.Parse()
	host, portStr, err := net.SplitHostPort(*listen)
	if err != nil {
		log.Fatal(err)
	}
	port, _ := strconv.Atoi(portStr)
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	dir, err := os.MkdirTemp("", "regserve")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	table, err := location.Open(filepath.Join(dir, "edgewise.db"), logger, location.Settings{Fsync: *fsync})
	if err != nil {
		log.Fatal(err)
	}
	defer table.Close()
	srv, err := frontend.New(frontend.Settings{
		Listen: []frontend.Listen{{Transport: "udp", Host: host, Port: port}, {Transport: "tcp", Host: host, Port: port}},
	}, logger)
	if err != nil {
		log.Fatal(err)
	}
	reg, err := registrar.New(table, registrar.Settings{
		Realm: "edgewise", MinExpires: 60 * time.Second, MaxExpires: 3600 * time.Second, DefaultExpires: 3600 * time.Second,
		MaxContacts: 10, NonceTTL: 30 * time.Second, Algorithms: []digest.Algorithm{digest.MD5},
	}, users{}, registrar.Options{Logger: logger, Pinger: srv})
	if err != nil {
		log.Fatal(err)
	}
	srv.HandleStateless(sip.REGISTER, reg.ServeRegister)
	srv.SetGuard(reg.Blocked)

	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(*seconds)*time.Second)
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
				logger.Info("load", "bindings", table.Len(), "heap_mb", ms.HeapAlloc>>20, "sys_mb", ms.Sys>>20,
					"gc", ms.NumGC, "commits", st.Commits, "records", st.Records)
			}
		}
	})
	if err := srv.Run(ctx); err != nil {
		log.Fatal(err)
	}
	wg.Wait()
}
