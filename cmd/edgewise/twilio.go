package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"syscall"

	"github.com/edgewise-sip/edgewise/configs"
	"github.com/edgewise-sip/edgewise/registrar/twilio/provision"
)

const twilioUsage = `usage: edgewise twilio check -c FILE
       edgewise twilio sync -c FILE [--update-passwords] [--prune] [--dry-run]

check  reads the SIP Domain through Twilio's REST API and prints each problem
       with its fix, and a note for what it cannot see; exit 0 when all is
       well, 1 with problems, 2 when the config or the REST API failed
sync   creates what the phones need in the domain's registration credential
       lists, maps them for calls when no list is, and prints each change;
       exit 0 when done, 1 when the config or the domain stops it, 2 when
       the config or the REST API failed
`

// restPortEnv dials edgesim's REST listeners instead of port 443 in the
// integration tests; see the provision package doc.
const restPortEnv = "EDGEWISE_TWILIO_REST_PORT"

// cmdTwilio runs `edgewise twilio check|sync`.
func cmdTwilio(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, twilioUsage)
		return 2
	}
	switch args[0] {
	case "check":
		return twilioCheck(args[1:], stdout, stderr)
	case "sync":
		return twilioSync(args[1:], stdout, stderr)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, twilioUsage)
		return 0
	}
	fmt.Fprintf(stderr, "edgewise twilio: unknown command %q\n\n%s", args[0], twilioUsage)
	return 2
}

func twilioCheck(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("twilio check", flag.ContinueOnError)
	run, code := newTwilioRun(fs, args, stderr)
	if run == nil {
		return code
	}
	defer run.close()
	r, err := provision.Check(run.ctx, run.api, run.want)
	if err != nil {
		return run.restFailed(err)
	}
	// Notices follow the ok line or the problems, before the count, so the
	// last line stays the verdict.
	if len(r.Problems) == 0 {
		fmt.Fprintln(stdout, r.OK)
		printNotices(stdout, r.Notices)
		return 0
	}
	for _, p := range r.Problems {
		fmt.Fprintln(stdout, p.String())
	}
	printNotices(stdout, r.Notices)
	fmt.Fprintf(stdout, "%d problem(s) with %s\n", len(r.Problems), r.Domain)
	return 1
}

func printNotices(w io.Writer, notices []string) {
	for _, n := range notices {
		fmt.Fprintln(w, "note: "+n)
	}
}

func twilioSync(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("twilio sync", flag.ContinueOnError)
	var opt provision.SyncOptions
	fs.BoolVar(&opt.UpdatePasswords, "update-passwords", false, "set every phone's existing credential's password from the config (Twilio never returns passwords, so sync cannot compare them)")
	fs.BoolVar(&opt.Prune, "prune", false, "delete credentials of the registration and calls lists that no phone uses")
	fs.BoolVar(&opt.DryRun, "dry-run", false, "print what would change and change nothing")
	run, code := newTwilioRun(fs, args, stderr)
	if run == nil {
		return code
	}
	defer run.close()
	_, err := provision.Sync(run.ctx, run.api, run.want, opt, stdout)
	var ce *provision.ConfigError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ce):
		for _, p := range ce.Problems {
			fmt.Fprintln(stderr, p)
		}
		fmt.Fprintf(stderr, "%d phone(s) cannot be provisioned; nothing was sent to Twilio\n", len(ce.Problems))
		return 1
	case errors.Is(err, provision.ErrDomainMissing):
		fmt.Fprintln(stderr, "edgewise twilio sync:", err)
		return 1
	}
	return run.restFailed(err)
}

// twilioRun is one twilio command's config, REST client and context.
type twilioRun struct {
	cfg     *configs.Config
	api     *provision.REST
	want    provision.Want
	account string
	keySID  string
	keyFrom string // the config fields the API key came from
	stderr  io.Writer
	ctx     context.Context
	stop    context.CancelFunc
}

// newTwilioRun parses flags (fs plus -c), loads the config and builds the
// REST client. On failure it has printed why and returns the exit code.
func newTwilioRun(fs *flag.FlagSet, args []string, stderr io.Writer) (*twilioRun, int) {
	fs.SetOutput(stderr)
	path := fs.String("c", "/etc/edgewise/edgewise.yaml", "config `file`")
	if err := fs.Parse(args); err != nil {
		return nil, 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "edgewise %s: unexpected arguments %q\n", fs.Name(), fs.Args())
		return nil, 2
	}
	cfg, err := configs.Load(*path)
	if err != nil {
		printConfigError(stderr, err)
		return nil, 2
	}
	s, keyFrom, problems := restSettings(cfg)
	if len(problems) > 0 {
		for _, p := range problems {
			fmt.Fprintln(stderr, p)
		}
		return nil, 2
	}
	if v := os.Getenv(restPortEnv); v != "" {
		port, err := strconv.Atoi(v)
		if err != nil || port < 1 || port > 65535 {
			fmt.Fprintf(stderr, "edgewise %s: %s=%q is not a port\n", fs.Name(), restPortEnv, v)
			return nil, 2
		}
		s.Port = port
	}
	s.OnFallback = func(from, to, why string) {
		fmt.Fprintf(stderr, "edgewise %s: %s failed (%s); trying %s\n", fs.Name(), from, why, to)
	}
	api, err := provision.NewREST(s)
	if err != nil {
		fmt.Fprintf(stderr, "edgewise %s: %v\n", fs.Name(), err)
		return nil, 2
	}
	w := provision.Want{Domain: cfg.Twilio.Domain, MediaEncryption: cfg.Twilio.MediaEncryption}
	for i, p := range cfg.Phones {
		w.Phones = append(w.Phones, provision.Phone{User: p.User, TwilioUser: p.TwilioUser, Password: p.TwilioPassword.Value(),
			At: fmt.Sprintf("%s:%d: phones[%d]", cfg.Path, p.Line, i)})
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	return &twilioRun{cfg: cfg, api: api, want: w, account: s.AccountSID, keySID: s.APIKeySID, keyFrom: keyFrom, stderr: stderr, ctx: ctx, stop: stop}, 0
}

func (r *twilioRun) close() {
	r.stop()
	r.api.Close()
}

// restFailed prints a REST failure as one line and returns exit code 2.
func (r *twilioRun) restFailed(err error) int {
	var ae *provision.APIError
	switch {
	case errors.As(err, &ae) && ae.Status == 401:
		fmt.Fprintf(r.stderr, "edgewise twilio: Twilio refused the API key %s (401 at %s): check %s, and that the key belongs to account %s\n",
			r.keySID, ae.Host, r.keyFrom, r.account)
	default:
		fmt.Fprintln(r.stderr, "edgewise twilio:", err)
	}
	return 2
}

// restSettings maps the config onto the REST client: twilio.rest, falling
// back to the token section's account and first API key; the REST edges
// are the public edges of twilio.edges, in order. Problems name FILE:LINE.
func restSettings(cfg *configs.Config) (s provision.Settings, keyFrom string, problems []string) {
	r := cfg.Twilio.REST
	at := fmt.Sprintf("%s:%d: ", cfg.Path, r.Line)
	s = provision.Settings{
		AccountSID: r.AccountSID, APIKeySID: r.APIKeySID, APIKeySecret: r.APIKeySecret.Value(),
		Region: r.Region, DNSServer: cfg.Twilio.DNSServer,
	}
	keyFrom = "twilio.rest.api_key_sid and api_key_secret"
	if t := cfg.Token; t != nil {
		if s.AccountSID == "" {
			s.AccountSID = t.AccountSID
		}
		if s.APIKeySID == "" && len(t.APIKeys) > 0 {
			s.APIKeySID, s.APIKeySecret = t.APIKeys[0].SID, t.APIKeys[0].Secret.Value()
			keyFrom = "token.api_keys[0] (used while twilio.rest.api_key_sid is not set)"
		}
	}
	if s.AccountSID == "" {
		problems = append(problems, at+"twilio.rest.account_sid: required by `edgewise twilio` (hint: AC followed by 32 hex digits; or a token section's account_sid)")
	}
	if s.APIKeySID == "" {
		problems = append(problems, at+"twilio.rest.api_key_sid: required by `edgewise twilio` (hint: an API key of the account, with api_key_secret: ${TWILIO_API_KEY_SECRET}; or a token section's api_keys)")
	} else if !alnum(s.APIKeySecret) {
		// twilio-go would refuse it without sending anything.
		problems = append(problems, at+keyFrom+": the API key secret has characters a Twilio secret never has (hint: copy it exactly as Twilio showed it)")
	}
	if r.CAFile != "" {
		pem, err := os.ReadFile(r.CAFile)
		if err != nil {
			problems = append(problems, at+"twilio.rest.ca_file: "+err.Error())
		}
		s.CAPEM = pem
	}
	for _, e := range cfg.Twilio.Edges {
		// The -ix and legacy names are SIP-only; REST has the public edges.
		if slices.Contains(configs.PublicEdges, e) {
			s.Edges = append(s.Edges, e)
		}
	}
	return s, keyFrom, problems
}

func alnum(s string) bool {
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
			return false
		}
	}
	return s != ""
}
