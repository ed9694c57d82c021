// Command edgesim runs simulated Twilio edges, their DNS and a control API
// for demos and tests: edgesim -c configs/edgesim.yaml.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strconv"
	"syscall"

	"github.com/edgewise-sip/edgewise/test/edgesim"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "edgesim:", err)
		os.Exit(1)
	}
}

func run() error {
	cfgPath := flag.String("c", "configs/edgesim.yaml", "config `file`")
	level := flag.String("log-level", "info", "log level: debug, info, warn, error")
	flag.Parse()
	if flag.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", flag.Args())
	}

	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*level)); err != nil {
		return fmt.Errorf("-log-level: %w", err)
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))

	cfg, err := edgesim.LoadConfig(*cfgPath)
	if err != nil {
		return err
	}
	sim, err := edgesim.New(cfg, logger)
	if err != nil {
		return err
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	done := make(chan error, 1)
	go func() { done <- sim.Run(ctx) }()
	select {
	case err := <-done:
		return err
	case <-sim.Ready():
	}
	printListening(sim)

	err = <-done
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// printListening tells a person at the terminal where to point things.
func printListening(sim *edgesim.Sim) {
	fmt.Printf("edgesim: SIP Domain %q\n", sim.Domain())
	for _, e := range sim.Edges() {
		fmt.Printf("  edge %s: %v\n", e.Name, e.FQDNs)
		for _, ip := range e.IPs {
			fmt.Printf("    sip %s %v\n", net.JoinHostPort(ip.IP, strconv.Itoa(ip.Port)), sim.Config().Transports)
			if ip.TLSPort != 0 {
				fmt.Printf("    sip tls %s (certificate for %s; trust GET /v1/ca.pem)\n", net.JoinHostPort(ip.IP, strconv.Itoa(ip.TLSPort)), e.FQDNs[0])
			}
		}
	}
	if a := sim.DNSAddr(); a != "" {
		host, port, _ := net.SplitHostPort(a)
		fmt.Printf("  dns %s (udp, tcp)   try: dig @%s -p %s %s\n", a, host, port, sim.Edges()[0].FQDNs[0])
	}
	for _, e := range sim.REST().Edges {
		fmt.Printf("  rest https://%s:%d → %s (trust GET /v1/rest/ca.pem)\n", e.Host, sim.RESTPort(), e.Addr)
	}
	if a := sim.ControlAddr(); a != "" {
		fmt.Printf("  control http://%s/v1/edges\n", a)
		fmt.Printf("  calls   http://%s/v1/calls   try: curl -X POST -d '{\"to\":\"alice\"}' http://%s/v1/calls\n", a, a)
	}
}
