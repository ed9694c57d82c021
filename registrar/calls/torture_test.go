package calls

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestTortureMessages sends RFC 4475's torture messages (as sipgo's test
// data ships them) to the B2BUA's SIP front end over UDP and TCP: nothing
// panics, no call is made and nothing is left running (the environment
// checks goroutines when the test ends), and the front end still answers.
func TestTortureMessages(t *testing.T) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/emiago/sipgo").Output()
	if err != nil {
		t.Fatalf("locating sipgo's module: %v", err)
	}
	files, _ := filepath.Glob(filepath.Join(strings.TrimSpace(string(out)), "sip", "testdata", "torture", "*", "*.dat"))
	if len(files) < 40 {
		t.Fatalf("found %d torture messages, want the RFC 4475 set (about 50)", len(files))
	}
	e := newEnv(t)
	udp, err := net.DialUDP("udp", &net.UDPAddr{IP: e.n.IP(9).AsSlice()}, net.UDPAddrFromAddrPort(e.udp()))
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	for _, f := range files {
		msg, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		udp.Write(msg)
		tcp, err := net.DialTCP("tcp", &net.TCPAddr{IP: e.n.IP(9).AsSlice()}, net.TCPAddrFromAddrPort(e.tcp()))
		if err != nil {
			t.Fatal(err)
		}
		tcp.Write(msg)
		tcp.Write([]byte("\r\n\r\n"))
		tcp.CloseWrite()
		tcp.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		buf := make([]byte, 4096)
		for { // until the server closes or goes quiet
			if _, err := tcp.Read(buf); err != nil {
				break
			}
		}
		tcp.Close()
	}
	// Still answering.
	me := udp.LocalAddr().String()
	udp.Write([]byte("OPTIONS sip:" + e.udp().String() + " SIP/2.0\r\nVia: SIP/2.0/UDP " + me + ";branch=z9hG4bKprobe\r\n" +
		"From: <sip:probe@test>;tag=p\r\nTo: <sip:" + e.udp().String() + ">\r\nCall-ID: probe\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"))
	buf := make([]byte, 65535)
	for {
		udp.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := udp.Read(buf)
		if err != nil {
			t.Fatalf("no answer to OPTIONS after the torture: %v", err)
		}
		if strings.HasPrefix(string(buf[:n]), "SIP/2.0 200") && strings.Contains(string(buf[:n]), "Call-ID: probe") {
			break
		}
	}
	if n := len(e.b.Calls()); n != 0 {
		t.Fatalf("%d calls after the torture messages", n)
	}
}
