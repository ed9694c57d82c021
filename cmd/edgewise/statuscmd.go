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

	"github.com/edgewise-sip/edgewise/cmd/edgewise/admin"
	"github.com/edgewise-sip/edgewise/configs"
	"github.com/edgewise-sip/edgewise/registrar/calls"
	"github.com/edgewise-sip/edgewise/registrar/twilio/edge"
)

const defaultAdminURL = "http://127.0.0.1:9060"

// maxCallRows bounds the calls table: during an incident the operator needs
// the count and a sample, not a thousand lines scrolling the edges away.
const maxCallRows = 20

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
	var st admin.Status
	if err := json.Unmarshal(body, &st); err != nil {
		fmt.Fprintf(stderr, "edgewise status: the daemon's answer is not a status document: %v\n", err)
		return 1
	}
	printStatus(stdout, &st, time.Now())
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
func printStatus(w io.Writer, st *admin.Status, now time.Time) {
	byEdge := map[string][]admin.UserStatus{}
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
	printSurvival(w, st.Survival, now)
	printCluster(w, st.Store, now)

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
	printCalls(w, st.Calls, now)
	fmt.Fprintf(w, "\nLast reload: %s\n", describeReload(st.Config.LastReload))
	// A refused or no-op reload (a SIGHUP after the file watcher already
	// applied the file) would hide the change that is running; name it too.
	if last := st.Config.LastReload; !last.OK || last.Unchanged {
		if c, ok := lastChange(st.Config.Reloads); ok {
			fmt.Fprintf(w, "Last change: %s\n", describeReload(c))
		}
	}
}

// lastChange is the newest applied reload that changed something.
func lastChange(hist []configs.ReloadResult) (configs.ReloadResult, bool) {
	for i := len(hist) - 1; i >= 0; i-- {
		if r := hist[i]; r.OK && !r.Unchanged && len(r.Changed) > 0 {
			return r, true
		}
	}
	return configs.ReloadResult{}, false
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

// printCalls lists up to maxCallRows calls with their RTP counters per leg
// (A: phone side, B: Twilio side): packets received/sent and lost.
func printCalls(w io.Writer, list []calls.CallStatus, now time.Time) {
	if len(list) == 0 {
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CALL\tDIRECTION\tUSER\tTO\tEDGE\tSTATE\tAGE\tRTP RX/TX/LOST")
	for i, c := range list {
		if i == maxCallRows {
			break
		}
		age := "-"
		if !c.Started.IsZero() {
			age = now.Sub(c.Started).Round(time.Second).String()
		}
		rtp := "-"
		if c.Media != nil && len(c.Media.Legs) > 0 {
			legs := make([]string, 0, len(c.Media.Legs))
			for _, l := range c.Media.Legs {
				legs = append(legs, fmt.Sprintf("%s %d/%d/%d", l.Side, l.RX.Packets, l.TX.Packets, l.RX.Lost))
			}
			rtp = strings.Join(legs, " ")
		}
		via := c.Edge
		if c.Route == "local" || c.Route == "fallback" {
			via = c.Route // no edge: edgewise connected it itself
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", c.ID, c.Direction, orDash(c.User), orDash(c.To), orDash(via), c.State, age, rtp)
	}
	_ = tw.Flush()
	if len(list) > maxCallRows {
		fmt.Fprintf(w, "... and %d more (edgewise status --json lists all)\n", len(list)-maxCallRows)
	}
}

// printSurvival says when edgewise carries calls without Twilio, and
// since when: during an incident it is the first thing to know.
func printSurvival(w io.Writer, sv *calls.SurvivalStatus, now time.Time) {
	if sv == nil || !sv.Active || sv.Since == nil {
		return
	}
	fmt.Fprintf(w, "SURVIVAL MODE since %s (%s): no Twilio edge is usable; %d calls carried without Twilio\n",
		sv.Since.UTC().Format(time.RFC3339), now.Sub(*sv.Since).Round(time.Second), sv.Calls)
}

// printCluster names this node of a cluster, the live nodes and what it
// owns; etcd being away comes first.
func printCluster(w io.Writer, s *admin.StoreStatus, now time.Time) {
	if s == nil || s.Backend != "etcd" {
		return
	}
	if s.DegradedSince != nil {
		fmt.Fprintf(w, "ETCD UNREACHABLE since %s (%s): serving from memory, changes queued\n",
			s.DegradedSince.UTC().Format(time.RFC3339), now.Sub(*s.DegradedSince).Round(time.Second))
	}
	fmt.Fprintf(w, "cluster node %s of %d (%s); registers %d users at Twilio\n", s.Node, len(s.Nodes), strings.Join(s.Nodes, ", "), s.Owned)
}

// orDash shows an empty cell as "-" so columns stay aligned and countable.
func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
