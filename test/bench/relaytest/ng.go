package relaytest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgewise-sip/edgewise/media"
)

// NGClient speaks rtpengine's ng control protocol over UDP: each request is
// "<cookie> <bencoded dict>" and its reply carries the same cookie. Requests
// may run concurrently; a lost datagram is retried with the same cookie
// (the server answers duplicates from its cache).
type NGClient struct {
	conn   *net.UDPConn
	prefix string
	seq    atomic.Uint64

	mu      sync.Mutex
	waiting map[string]chan map[string]any
	done    chan struct{}
}

// DialNG connects to an ng server at addr (host:port).
func DialNG(addr string) (*NGClient, error) {
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, err
	}
	conn, err := net.DialUDP("udp", nil, ua)
	if err != nil {
		return nil, err
	}
	conn.SetReadBuffer(1 << 20)
	c := &NGClient{conn: conn, prefix: strconv.FormatInt(time.Now().UnixNano(), 36), waiting: map[string]chan map[string]any{}, done: make(chan struct{})}
	go c.read()
	return c, nil
}

// Close stops the client.
func (c *NGClient) Close() error {
	err := c.conn.Close()
	<-c.done
	return err
}

func (c *NGClient) read() {
	defer close(c.done)
	buf := make([]byte, 65536)
	for {
		n, err := c.conn.Read(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue // ICMP refusals while the server starts
		}
		cookie, body, ok := bytes.Cut(buf[:n], []byte(" "))
		if !ok {
			continue
		}
		m, err := decodeDict(body)
		if err != nil {
			continue
		}
		c.mu.Lock()
		ch := c.waiting[string(cookie)]
		delete(c.waiting, string(cookie))
		c.mu.Unlock()
		if ch != nil {
			ch <- m
		}
	}
}

// Do sends one command and returns the reply; a reply whose result is
// "error" becomes an error.
func (c *NGClient) Do(ctx context.Context, cmd map[string]any) (map[string]any, error) {
	cookie := c.prefix + "_" + strconv.FormatUint(c.seq.Add(1), 10)
	body, err := bencode(cmd)
	if err != nil {
		return nil, err
	}
	msg := append([]byte(cookie+" "), body...)
	ch := make(chan map[string]any, 1)
	c.mu.Lock()
	c.waiting[cookie] = ch
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.waiting, cookie)
		c.mu.Unlock()
	}()
	for attempt := 0; attempt < 5; attempt++ {
		if _, err := c.conn.Write(msg); err != nil && attempt == 4 {
			return nil, err
		}
		t := time.NewTimer(time.Duration(250<<attempt) * time.Millisecond)
		select {
		case m := <-ch:
			t.Stop()
			if r, _ := m["result"].(string); r == "error" {
				return m, fmt.Errorf("ng %v: %v", cmd["command"], m["error-reason"])
			}
			return m, nil
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
	}
	return nil, fmt.Errorf("ng %v: no reply", cmd["command"])
}

// Ping checks the server answers.
func (c *NGClient) Ping(ctx context.Context) error {
	_, err := c.Do(ctx, map[string]any{"command": "ping"})
	return err
}

// Offer sends the caller's SDP and returns the SDP for the callee.
func (c *NGClient) Offer(ctx context.Context, callID, fromTag, sdp string) (string, error) {
	m, err := c.Do(ctx, map[string]any{"command": "offer", "call-id": callID, "from-tag": fromTag, "sdp": sdp,
		"replace": []string{"origin", "session-connection"}})
	if err != nil {
		return "", err
	}
	s, _ := m["sdp"].(string)
	return s, nil
}

// Answer sends the callee's SDP and returns the SDP for the caller.
func (c *NGClient) Answer(ctx context.Context, callID, fromTag, toTag, sdp string) (string, error) {
	m, err := c.Do(ctx, map[string]any{"command": "answer", "call-id": callID, "from-tag": fromTag, "to-tag": toTag, "sdp": sdp,
		"replace": []string{"origin", "session-connection"}})
	if err != nil {
		return "", err
	}
	s, _ := m["sdp"].(string)
	return s, nil
}

// Delete ends a call.
func (c *NGClient) Delete(ctx context.Context, callID, fromTag string) error {
	_, err := c.Do(ctx, map[string]any{"command": "delete", "call-id": callID, "from-tag": fromTag})
	return err
}

// ServeNG answers ng commands (ping, offer, answer, delete) on conn with
// relay, so the generator drives edgewise exactly as it drives rtpengine.
// An offer's SDP is the caller's (leg A), an answer's the callee's (leg B).
// It returns nil when ctx is done and closes every session it made.
func ServeNG(ctx context.Context, conn net.PacketConn, relay *media.Relay, log *slog.Logger) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	stop := context.AfterFunc(ctx, func() { conn.SetReadDeadline(time.Now()) })
	defer stop()
	made := map[string]*media.Session{}
	defer func() {
		for _, s := range made {
			s.Close()
		}
	}()
	buf := make([]byte, 65536)
	for {
		n, from, err := conn.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return err
		}
		cookie, body, ok := bytes.Cut(buf[:n], []byte(" "))
		if !ok {
			continue
		}
		reply := map[string]any{"result": "ok"}
		if cmd, err := decodeDict(body); err != nil {
			reply = map[string]any{"result": "error", "error-reason": err.Error()}
		} else if err := handleNG(relay, made, cmd, reply); err != nil {
			reply = map[string]any{"result": "error", "error-reason": err.Error()}
			log.Debug("ng", "command", cmd["command"], "err", err)
		}
		out, _ := bencode(reply)
		conn.WriteTo(append(append(cookie, ' '), out...), from)
	}
}

func handleNG(relay *media.Relay, made map[string]*media.Session, cmd, reply map[string]any) error {
	callID, _ := cmd["call-id"].(string)
	sdpIn, _ := cmd["sdp"].(string)
	switch cmd["command"] {
	case "ping":
		reply["result"] = "pong"
		return nil
	case "offer":
		s := made[callID]
		if s == nil {
			var err error
			if s, err = relay.NewSession(callID); err != nil {
				return err
			}
			made[callID] = s
		}
		out, err := s.Translate(media.A, media.Offer, []byte(sdpIn))
		if err != nil {
			return err
		}
		reply["sdp"] = string(out)
		return nil
	case "answer":
		s := made[callID]
		if s == nil {
			return fmt.Errorf("unknown call %q", callID)
		}
		out, err := s.Translate(media.B, media.Answer, []byte(sdpIn))
		if err != nil {
			return err
		}
		s.Answered()
		reply["sdp"] = string(out)
		return nil
	case "delete":
		if s := made[callID]; s != nil {
			s.Close()
			delete(made, callID)
		}
		return nil
	}
	return fmt.Errorf("unsupported command %v", cmd["command"])
}
