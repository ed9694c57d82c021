// Command relayd runs edgewise's media relay behind rtpengine's ng control
// protocol (offer/answer/delete), so the benchmark drives it exactly as it
// drives rtpengine. It is a test fixture, not part of the product.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/edgewise-sip/edgewise/media"
	"github.com/edgewise-sip/edgewise/test/bench/relaytest"
)

func main() {
	var (
		ng      = flag.String("ng", "127.0.0.1:22223", "ng control address")
		ip      = flag.String("ip", "127.0.0.1", "relay address (bound and advertised)")
		ports   = flag.String("ports", "20000-29999", "RTP port range")
		workers = flag.Int("workers", 0, "packet workers (0: GOMAXPROCS)")
		timeout = flag.Duration("timeout", 120*time.Second, "media timeout")
		coal    = flag.Duration("coalesce", 0, "worker nap under load (0: off)")
		profile = flag.String("cpuprofile", "", "write a CPU profile here until exit")
	)
	flag.Parse()
	if *profile != "" {
		f, err := os.Create(*profile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "relayd:", err)
			os.Exit(1)
		}
		pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}
	// GOMAXPROCS (and so the default worker count) follows the CPU mask
	// the process started with: a benchmark that pins relayd shows here.
	fmt.Fprintf(os.Stderr, "relayd: GOMAXPROCS %d, %d CPUs usable\n", runtime.GOMAXPROCS(0), runtime.NumCPU())
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	if err := run(*ng, *ip, *ports, *workers, *timeout, *coal, log); err != nil {
		fmt.Fprintln(os.Stderr, "relayd:", err)
		pprof.StopCPUProfile()
		os.Exit(1)
	}
}

func run(ng, ip, ports string, workers int, timeout, coalesce time.Duration, log *slog.Logger) error {
	addr, err := netip.ParseAddr(ip)
	if err != nil {
		return err
	}
	var pr media.PortRange
	if _, err := fmt.Sscanf(ports, "%d-%d", &pr.Min, &pr.Max); err != nil {
		return fmt.Errorf("ports %q: %w", ports, err)
	}
	relay, err := media.NewRelay(media.Settings{Ports: pr, Timeout: timeout, LocalIP: addr, BindIP: addr, Workers: workers, Coalesce: coalesce}, log)
	if err != nil {
		return err
	}
	conn, err := net.ListenPacket("udp", ng)
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return relay.Run(ctx) })
	g.Go(func() error { return relaytest.ServeNG(ctx, conn, relay, log) })
	return g.Wait()
}
