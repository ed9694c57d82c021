package kit

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Etcd is an etcd cluster a test started on its own Net: members on
// n.Addr(200), n.Addr(201), …, client port 2379, peer port 2380, each with a
// fresh data directory. It stops with the test.
type Etcd struct {
	t       testing.TB
	net     Net
	members []*etcdMember
}

type etcdMember struct {
	name string
	ip   string
	args []string
	cmd  *exec.Cmd
	done chan struct{}
}

// StartEtcd starts members etcd servers (Debian's etcd-server, /usr/bin/etcd)
// as one cluster and waits until every member reports healthy.
func StartEtcd(t testing.TB, n Net, members int) *Etcd {
	t.Helper()
	bin, err := exec.LookPath("etcd")
	if err != nil {
		t.Fatalf("etcd not installed: run `make test`, which installs etcd-server")
	}
	e := &Etcd{t: t, net: n}
	var initial []string
	for i := range members {
		m := &etcdMember{name: fmt.Sprintf("m%d", i+1), ip: n.Addr(200 + i)}
		e.members = append(e.members, m)
		initial = append(initial, fmt.Sprintf("%s=http://%s:2380", m.name, m.ip))
	}
	for _, m := range e.members {
		m.args = []string{bin,
			"--name", m.name, "--data-dir", t.TempDir(),
			"--listen-client-urls", "http://" + m.ip + ":2379", "--advertise-client-urls", "http://" + m.ip + ":2379",
			"--listen-peer-urls", "http://" + m.ip + ":2380", "--initial-advertise-peer-urls", "http://" + m.ip + ":2380",
			"--initial-cluster", strings.Join(initial, ","), "--initial-cluster-state", "new",
			"--initial-cluster-token", "kit-" + n.String(), "--log-level", "error"}
		m.start(t)
	}
	t.Cleanup(e.stop)
	for _, m := range e.members {
		WaitFor(t, 20*time.Second, "etcd "+m.name+" healthy", func() bool { return m.healthy() })
	}
	return e
}

func (m *etcdMember) start(t testing.TB) {
	m.cmd = exec.Command(m.args[0], m.args[1:]...)
	if os.Getenv(LogEnv) != "" {
		m.cmd.Stdout, m.cmd.Stderr = os.Stderr, os.Stderr
	}
	if err := m.cmd.Start(); err != nil {
		t.Fatalf("start etcd %s: %v", m.name, err)
	}
	m.done = make(chan struct{})
	go func() { _ = m.cmd.Wait(); close(m.done) }()
}

func (m *etcdMember) healthy() bool {
	select {
	case <-m.done:
		return false
	default:
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+m.ip+":2379/health", nil)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	defer res.Body.Close()
	return res.StatusCode == http.StatusOK
}

// Endpoints are the members' client URLs.
func (e *Etcd) Endpoints() []string {
	out := make([]string, len(e.members))
	for i, m := range e.members {
		out[i] = "http://" + m.ip + ":2379"
	}
	return out
}

// Kill stops member i (0-based) at once, as a crash would.
func (e *Etcd) Kill(i int) {
	e.t.Helper()
	m := e.members[i]
	_ = m.cmd.Process.Signal(syscall.SIGKILL)
	<-m.done
}

// WaitLeader waits until every running member is healthy, which etcd's
// /health only reports with a leader: after Kill of the leader the others
// need an election (about a second) before writes go through again.
func (e *Etcd) WaitLeader() {
	e.t.Helper()
	WaitFor(e.t, 20*time.Second, "the running etcd members to have a leader", func() bool {
		for _, m := range e.members {
			select {
			case <-m.done:
				continue
			default:
			}
			if !m.healthy() {
				return false
			}
		}
		return true
	})
}

// Restart starts member i again on its data directory (after Kill) and
// waits until it is healthy.
func (e *Etcd) Restart(i int) {
	e.t.Helper()
	m := e.members[i]
	m.start(e.t)
	WaitFor(e.t, 20*time.Second, "etcd "+m.name+" healthy again", func() bool { return m.healthy() })
}

// stop ends every member: SIGTERM, then SIGKILL after a short grace (a
// member whose peers are gone can take many seconds to exit on its own).
func (e *Etcd) stop() {
	for _, m := range e.members {
		_ = m.cmd.Process.Signal(syscall.SIGTERM)
	}
	for _, m := range e.members {
		select {
		case <-m.done:
		case <-time.After(2 * time.Second):
			_ = m.cmd.Process.Signal(syscall.SIGKILL)
			<-m.done
		}
	}
}
