package main

import (
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/edgewise-sip/edgewise/configs"
)

// cmdCheck validates a config file with the same code path serve and reload
// use, so "check passes" means "serve will accept it".
func cmdCheck(args []string, stdout, stderr io.Writer) int {
	cfg, code := loadFromFlags("check", args, stderr)
	if cfg == nil {
		return code
	}
	fmt.Fprintf(stdout, "%s: ok (version %s, %d phones, edges %v)\n", cfg.Path, cfg.Version, len(cfg.Phones), cfg.Twilio.Edges)
	return 0
}

// loadFromFlags parses "-c FILE" and loads the config. On failure it has
// printed why and returns a nil config with the exit code: 2 for bad flags,
// 1 for a config that was refused.
func loadFromFlags(name string, args []string, stderr io.Writer) (*configs.Config, int) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("c", "/etc/edgewise/edgewise.yaml", "config `file`")
	if err := fs.Parse(args); err != nil {
		return nil, 2
	}
	cfg, err := configs.Load(*path)
	if err != nil {
		printConfigError(stderr, err)
		return nil, 1
	}
	return cfg, 0
}

// printConfigError prints one FILE:LINE problem per line, or the plain error
// when the file could not be read at all.
func printConfigError(w io.Writer, err error) {
	var ps configs.Problems
	if errors.As(err, &ps) {
		for _, p := range ps {
			fmt.Fprintln(w, p.String())
		}
		fmt.Fprintf(w, "%d problem(s); the file was not accepted\n", len(ps))
		return
	}
	fmt.Fprintln(w, err)
}
