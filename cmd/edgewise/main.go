// Command edgewise is the SIP gateway daemon and its tools.
//
//	edgewise serve -c FILE         run the gateway
//	edgewise check -c FILE         validate a config file
//	edgewise token serve -c FILE   run a standalone token provider replica
//	edgewise twilio check|sync -c FILE   check or provision the Twilio SIP Domain
//	edgewise status [-admin URL] [-token T] [--json]
//	edgewise version
package main

import (
	"fmt"
	"io"
	"os"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

const usage = `usage: edgewise <command> [flags]

commands:
  serve -c FILE         run the gateway (SIGHUP reloads, SIGINT/SIGTERM stop)
  check -c FILE         validate a config; print every problem as FILE:LINE: field: problem
  token serve -c FILE   run a token provider replica only (no SIP)
  twilio check -c FILE  read the Twilio SIP Domain through the REST API and
                        print each problem with its fix
  twilio sync -c FILE [--update-passwords] [--prune] [--dry-run]
                        put the phones' Twilio users into the domain's
                        registration credential lists
  status [-admin URL] [-token T] [--json]
                        show the running daemon's edges, users, calls and last
                        reload (token also from $EDGEWISE_ADMIN_TOKEN)
  version               print the version
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run dispatches a subcommand and returns the process exit code.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "serve":
		return cmdServe(args[1:], stderr)
	case "token":
		return cmdToken(args[1:], stderr)
	case "check":
		return cmdCheck(args[1:], stdout, stderr)
	case "twilio":
		return cmdTwilio(args[1:], stdout, stderr)
	case "status":
		return cmdStatus(args[1:], stdout, stderr)
	case "version", "-version", "--version":
		fmt.Fprintln(stdout, "edgewise", version)
		return 0
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "edgewise: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
}
