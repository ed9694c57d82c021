package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"runtime/pprof"
	"sync"

	"github.com/edgewise-sip/edgewise/media/webrtc"
)

// request and reply are the driver ⇄ bridge process protocol, one JSON
// object a line.
type request struct {
	ID    int    `json:"id"`
	Op    string `json:"op"` // new | closeall | stats | profile
	Offer string `json:"offer,omitempty"`
	Far   string `json:"far,omitempty"`
	// File is where "profile" starts writing a CPU profile; empty stops it.
	File string `json:"file,omitempty"`
}

type reply struct {
	ID     int    `json:"id"`
	Err    string `json:"err,omitempty"`
	Answer string `json:"answer,omitempty"`
	Plain  string `json:"plain,omitempty"`
	Failed int    `json:"failed,omitempty"`
	// totals over live bridges (stats)
	SRTPIn, SRTPOut, RTPIn, RTPOut uint64
}

// serve is the bridge process: a Hub on loopback, one bridge per "new",
// answered as a far end offering PCMU and telephone-event would.
func serve(in io.Reader, out io.Writer) error {
	h, err := webrtc.NewHub(webrtc.Settings{Listen: netip.MustParseAddrPort("127.0.0.1:0")},
		slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})))
	if err != nil {
		return err
	}
	defer h.Close()
	var (
		mu     sync.Mutex
		enc    = json.NewEncoder(out)
		wg     sync.WaitGroup
		failed sync.Map
		prof   profiler
	)
	defer prof.toggle("")
	send := func(r reply) {
		mu.Lock()
		defer mu.Unlock()
		_ = enc.Encode(r)
	}
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var req request
		if err := json.Unmarshal(sc.Bytes(), &req); err != nil {
			return fmt.Errorf("bad request: %w", err)
		}
		switch req.Op {
		case "new":
			wg.Add(1)
			go func() {
				defer wg.Done()
				r := reply{ID: req.ID}
				b, plain, err := h.NewFromOffer(context.Background(), []byte(req.Offer))
				if err == nil {
					_ = plain
					b.OnFailure(func(error) { failed.Store(b, true) })
					var web []byte
					web, err = b.ToBrowser([]byte(farAnswer(req.Far)))
					r.Answer, r.Plain = string(web), b.PlainAddr().String()
				}
				if err != nil {
					r.Err = err.Error()
				}
				send(r)
			}()
		case "closeall":
			wg.Wait()
			for _, b := range h.Bridges() {
				_ = b.Close()
			}
			failed.Clear()
			send(reply{ID: req.ID})
		case "stats":
			r := reply{ID: req.ID}
			for _, b := range h.Bridges() {
				st := b.Stats()
				r.SRTPIn += st.SRTP.Rx.Packets
				r.SRTPOut += st.SRTP.Tx.Packets
				r.RTPIn += st.RTP.Rx.Packets
				r.RTPOut += st.RTP.Tx.Packets
			}
			failed.Range(func(any, any) bool { r.Failed++; return true })
			send(r)
		case "profile":
			r := reply{ID: req.ID}
			if err := prof.toggle(req.File); err != nil {
				r.Err = err.Error()
			}
			send(r)
		default:
			return fmt.Errorf("unknown op %q", req.Op)
		}
	}
	wg.Wait()
	return sc.Err()
}

func farAnswer(far string) string {
	ap := netip.MustParseAddrPort(far)
	return fmt.Sprintf("v=0\r\no=far 1 1 IN IP4 %[1]s\r\ns=-\r\nc=IN IP4 %[1]s\r\nt=0 0\r\n"+
		"m=audio %[2]d RTP/AVP 0 126\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:126 telephone-event/8000\r\n"+
		"a=fmtp:126 0-16\r\na=ptime:20\r\na=sendrecv\r\n", ap.Addr(), ap.Port())
}

// profiler writes the bridge process's CPU profile while the driver
// measures.
type profiler struct{ f *os.File }

// toggle starts a profile into file, or with file empty stops the running
// one.
func (p *profiler) toggle(file string) error {
	if p.f != nil {
		pprof.StopCPUProfile()
		err := p.f.Close()
		p.f = nil
		if err != nil {
			return err
		}
	}
	if file == "" {
		return nil
	}
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		_ = f.Close()
		return err
	}
	p.f = f
	return nil
}
