package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/edgewise-sip/edgewise/configs"
	"github.com/edgewise-sip/edgewise/registrar/edge"
)

const defaultAdminURL = "http://127.0.0.1:9060"

// cliStatus is the part of GET /v1/status the table shows. Calls stay raw:
// only their number is printed, and decoding them fully would tie this
// command to every media type's JSON form.
type cliStatus struct {
	Version string            `json:"version"`
	Config  configStatus      `json:"config"`
	Users   []userStatus      `json:"users"`
	Edges   []edge.EdgeStatus `json:"edges"`
	Calls   []json.RawMessage `json:"calls"`
}

// cmdStatus prints the running daemon's status as a table, or the raw JSON
// with --json. Exit 1 when the daemon cannot be asked, 2 for bad flags.
func cmdStatus(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	adminURL := fs.String("admin", defaultAdminURL, "admin API base `URL`")
	token := fs.String("token", "", "admin bearer `token` (default $EDGEWISE_ADMIN_TOKEN)")
	raw := fs.Bool("json", false, "print the raw status JSON")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "edgewise status: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	if *token == "" {
		*token = os.Getenv("EDGEWISE_ADMIN_TOKEN")
	}
	body, err := fetchStatus(*adminURL, *token)
	if err != nil {
		fmt.Fprintf(stderr, "edgewise status: %v\n", err)
		return 1
	}
	if *raw {
		_, _ = stdout.Write(body)
		return 0
	}
	var st cliStatus
	if err := json.Unmarshal(body, &st); err != nil {
		fmt.Fprintf(stderr, "edgewise status: the daemon's answer is not a status document: %v\n", err)
		return 1
	}
	printStatus(stdout, &st)
	return 0
}

func fetchStatus(base, token string) ([]byte, error) {
	url := strings.TrimSuffix(base, "/") + "/v1/status"
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("bad admin URL %q: %w", base, err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("cannot reach the edgewise daemon at %s (is it running? set -admin): %w", base, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("read status from %s: %w", url, err)
	}
	switch {
	case resp.StatusCode == http.StatusUnauthorized:
		return nil, errors.New("the admin API wants a token: pass -token or set EDGEWISE_ADMIN_TOKEN")
	case resp.StatusCode != http.StatusOK:
		return nil, fmt.Errorf("GET %s: %s: %s", url, resp.Status, bytes.TrimSpace(body))
	}
	return body, nil
}

// printStatus writes the operator's table: edges in configured order, users
// grouped by the edge they are registered upstream on, calls, last reload.
func printStatus(w io.Writer, st *cliStatus) {
	byEdge := map[string][]userStatus{}
	for _, u := range st.Users {
		name := ""
		if u.Upstream != nil {
			name = u.Upstream.Edge
		}
		byEdge[name] = append(byEdge[name], u)
	}

	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "EDGE\tSTATE\tACTIVE\tIPS UP\tUSERS\tREASON")
	for _, e := range st.Edges {
		up := 0
		for _, ip := range e.IPs {
			if ip.State == edge.StateUp {
				up++
			}
		}
		active := ""
		if e.Active {
			active = "*"
		}
		state := string(e.State)
		if e.State == edge.StateDown {
			state = "DOWN"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d/%d\t%d\t%s\n", e.Name, state, active, up, len(e.IPs), len(byEdge[e.Name]), e.Reason)
	}
	if len(st.Edges) == 0 {
		fmt.Fprintln(tw, "(no edges)")
	}
	_ = tw.Flush()

	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "USER\tCONTACTS\tUPSTREAM EDGE\tUPSTREAM STATE\tLAST ERROR")
	order := make([]string, 0, len(st.Edges)+1)
	for _, e := range st.Edges {
		order = append(order, e.Name)
	}
	for name := range byEdge {
		if !slices.Contains(order, name) && name != "" {
			order = append(order, name) // an edge no longer configured
		}
	}
	order = append(order, "") // not registered upstream last
	for _, name := range order {
		for _, u := range byEdge[name] {
			edgeName, state, lastErr := "-", "-", ""
			if u.Upstream != nil {
				state, lastErr = u.Upstream.State, u.Upstream.LastError
				if u.Upstream.Edge != "" {
					edgeName = u.Upstream.Edge
				}
			}
			fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\n", u.User, len(u.Contacts), edgeName, state, lastErr)
		}
	}
	if len(st.Users) == 0 {
		fmt.Fprintln(tw, "(no users)")
	}
	_ = tw.Flush()

	fmt.Fprintf(w, "\nCalls: %d active\n", len(st.Calls))
	fmt.Fprintf(w, "Last reload: %s\n", describeReload(st.Config.LastReload))
}

func describeReload(r configs.ReloadResult) string {
	if r.Trigger == "" {
		return "none"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s by %s: ", r.Time.UTC().Format(time.RFC3339), r.Trigger)
	switch {
	case !r.OK:
		fmt.Fprintf(&b, "refused (%d problems)", len(r.Problems))
		for _, p := range r.Problems {
			b.WriteString("\n  " + p)
		}
		return b.String()
	case r.Unchanged:
		b.WriteString("ok, unchanged")
	default:
		b.WriteString("ok")
	}
	if len(r.Changed) > 0 {
		b.WriteString("; changed " + strings.Join(r.Changed, ", "))
	}
	if len(r.NeedsRestart) > 0 {
		b.WriteString("; needs restart: " + strings.Join(r.NeedsRestart, ", "))
	}
	return b.String()
}
