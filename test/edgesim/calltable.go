package edgesim

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"
)

// callManager holds every call of the simulator and owns the goroutines
// of placed calls and of answered calls' hang-ups.
type callManager struct {
	sim *Sim

	mu        sync.Mutex
	accepting bool // new calls allowed (Run is serving and not stopping)
	stopped   bool // no goroutine may start any more
	calls     map[CallID]*call
	order     []*call          // by creation, for listing and trimming history
	dialogs   map[string]*call // established dialog key → call
	active    int              // calls not finished

	quit chan struct{} // closed when Run stops: every call goroutine returns
	wg   sync.WaitGroup
}

func newCallManager(s *Sim) *callManager {
	return &callManager{
		sim:     s,
		calls:   map[CallID]*call{},
		dialogs: map[string]*call{},
		quit:    make(chan struct{}),
	}
}

// start lets calls in; Run calls it once everything is bound.
func (m *callManager) start() {
	m.mu.Lock()
	m.accepting = !m.stopped
	m.mu.Unlock()
}

// hangUpGrace bounds how long stopping waits for BYEs and CANCELs to be
// answered before it drops the remaining calls silently.
const hangUpGrace = time.Second

// stop hangs up every call in progress (BYE, CANCEL or a final response),
// waits up to hangUpGrace, then ends what is left without signalling and
// waits for every call goroutine. Run calls it before closing the edges,
// whose sockets the hang-ups need.
func (m *callManager) stop() {
	m.mu.Lock()
	m.accepting = false
	live := m.liveLocked()
	m.mu.Unlock()

	grace, cancel := context.WithTimeout(context.Background(), hangUpGrace)
	for _, c := range live {
		c.requestHangUp("edgesim stopped")
	}
	for _, c := range live {
		select {
		case <-c.ended:
		case <-grace.Done():
		}
	}
	cancel()

	m.mu.Lock()
	m.stopped = true
	live = m.liveLocked()
	m.mu.Unlock()
	close(m.quit)
	for _, c := range live {
		c.finish(CallFailed, 0, "edgesim stopped", endedByEdgesim)
	}
	m.wg.Wait()
}

func (m *callManager) liveLocked() []*call {
	var out []*call
	for _, c := range m.order {
		if !c.isFinished() {
			out = append(out, c)
		}
	}
	return out
}

// spawn runs f on a goroutine the manager waits for; false once stopping
// has gone past the point where goroutines may start.
func (m *callManager) spawn(f func()) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.stopped {
		return false
	}
	m.wg.Go(f)
	return true
}

// newCall registers a call in progress, or fails when calls are not
// accepted or too many are in progress.
func (m *callManager) newCall(dir CallDirection, from, to string) (*call, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.accepting {
		return nil, ErrNotRunning
	}
	if m.active >= m.sim.cfg.Calls.MaxCalls {
		return nil, fmt.Errorf("%w (max_calls %d)", ErrTooManyCalls, m.sim.cfg.Calls.MaxCalls)
	}
	c := &call{
		m:       m,
		id:      newCallSid(),
		changed: make(chan struct{}),
		hangup:  make(chan struct{}),
		ended:   make(chan struct{}),
		acks:    map[uint32]chan struct{}{},
		sdp:     newSDPSession(),
		st: CallStatus{
			Direction: dir, State: CallTrying, From: from, To: to, StartedAt: m.sim.clock(),
		},
	}
	c.st.ID = c.id
	m.calls[c.id] = c
	m.order = append(m.order, c)
	m.active++
	return c, nil
}

// retire takes a finishing call out of the dialog table and the active
// count and trims the history to calls.history finished calls.
func (m *callManager) retire(c *call) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for k, v := range m.dialogs {
		if v == c {
			delete(m.dialogs, k)
		}
	}
	m.active--
	finished := len(m.order) - m.active
	if excess := finished - m.sim.cfg.Calls.History; excess > 0 {
		kept := m.order[:0]
		for _, o := range m.order {
			if excess > 0 && o.isFinished() {
				delete(m.calls, o.id)
				excess--
				continue
			}
			kept = append(kept, o)
		}
		clear(m.order[len(kept):])
		m.order = kept
	}
}

// forgetFinished drops every finished call from the list (Reset).
func (m *callManager) forgetFinished() {
	m.mu.Lock()
	defer m.mu.Unlock()
	kept := m.order[:0]
	for _, c := range m.order {
		if c.isFinished() {
			delete(m.calls, c.id)
			continue
		}
		kept = append(kept, c)
	}
	clear(m.order[len(kept):])
	m.order = kept
}

func (m *callManager) addDialog(d *dialog, c *call) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.dialogs[d.key()] = c
}

// lookupDialog finds the call an in-dialog request from the gateway
// belongs to: edgesim's tag is in To, the gateway's in From.
func (m *callManager) lookupDialog(req *sip.Request) *call {
	key, ok := incomingDialogKey(req)
	if !ok {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.dialogs[key]
}

func (m *callManager) get(id CallID) (*call, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	c, ok := m.calls[id]
	if !ok {
		return nil, fmt.Errorf("%w %q", ErrUnknownCall, id)
	}
	return c, nil
}

func (m *callManager) list() []*call {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.order)
}

// call is one call in either direction.
type call struct {
	m   *callManager
	id  CallID
	sdp *sdpSession // edgesim's o= line; guarded by mu

	mu       sync.Mutex
	st       CallStatus // without media counters, filled in by status()
	mst      MediaStatus
	media    *mediaStream
	dlg      *dialog
	changed  chan struct{} // closed and replaced on every change
	finished bool
	acks     map[uint32]chan struct{} // CSeq of a 2xx edgesim sent → closed on its ACK

	hangupOnce   sync.Once
	hangupReason string        // written before hangup is closed
	hangup       chan struct{} // closed when edgesim should hang up
	ended        chan struct{} // closed by finish
}

// update applies f to the status under the lock and wakes waiters.
func (c *call) update(f func(st *CallStatus)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.finished {
		return
	}
	f(&c.st)
	c.notifyLocked()
}

func (c *call) notifyLocked() {
	close(c.changed)
	c.changed = make(chan struct{})
}

func (c *call) isFinished() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.finished
}

// buildSDP runs f with the call's o= line state under the lock.
func (c *call) buildSDP(f func(*sdpSession) []byte) []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return f(c.sdp)
}

// setMedia attaches the media stream whose counters the status shows.
func (c *call) setMedia(ms *mediaStream, codec, remoteSDP, dir string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.media = ms
	c.mst = MediaStatus{Codec: codec, RemoteSDP: remoteSDP, Direction: dir}
	ms.echo.Store(canSend(dir))
	c.notifyLocked()
}

// renegotiated records a new offer/answer in the dialog (hold, resume,
// new address) and starts or stops the echo; count says it came with a
// re-INVITE or UPDATE rather than an ACK.
func (c *call) renegotiated(info *sdpInfo, dir string, count bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if info != nil {
		c.mst.Codec = info.codec
		if info.addr.IsValid() {
			c.mst.RemoteSDP = info.addr.String()
		}
	}
	c.mst.Direction = dir
	if c.media != nil {
		c.media.echo.Store(canSend(dir))
	}
	if count {
		c.st.Reinvites++
	}
	c.notifyLocked()
}

// setDialog makes d the call's dialog. It is set before the 2xx leaves,
// so a BYE right behind the ACK finds it.
func (c *call) setDialog(d *dialog) {
	c.m.addDialog(d, c)
	c.mu.Lock()
	c.dlg = d
	c.mu.Unlock()
}

// answered marks the call answered in dialog d.
func (c *call) answered(d *dialog, edit func(st *CallStatus)) {
	now := c.m.sim.clock()
	c.update(func(st *CallStatus) {
		st.State, st.Code, st.AnsweredAt = CallAnswered, sip.StatusOK, &now
		st.SIPCallID = d.callID
		if edit != nil {
			edit(st)
		}
	})
}

func (c *call) dialog() *dialog {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.dlg
}

// finish ends the call once. An answered call ends as ended with code 200
// kept, unless state is CallFailed with a code (the 200 never reached the
// gateway); others end with state and code. The media stream is closed and
// the dialog forgotten before the final state is published, so whoever
// waits for it finds the ports released. It reports whether this call did
// the finishing.
func (c *call) finish(state CallState, code int, reason, by string) bool {
	c.mu.Lock()
	if c.finished {
		c.mu.Unlock()
		return false
	}
	c.finished = true
	media := c.media
	c.mu.Unlock()

	if media != nil {
		media.close()
	}
	c.m.retire(c)

	now := c.m.sim.clock()
	c.mu.Lock()
	switch {
	case c.st.State == CallAnswered && !(state == CallFailed && code != 0):
		state, code = CallEnded, sip.StatusOK
	case state == CallFailed:
		c.st.AnsweredAt = nil
	}
	c.st.State, c.st.Reason, c.st.EndedBy, c.st.EndedAt = state, reason, by, &now
	if code != 0 || state == CallFailed {
		c.st.Code = code
	}
	c.notifyLocked()
	close(c.ended)
	st := c.st
	c.mu.Unlock()

	c.m.sim.log.Info("call ended", "call", c.id, "direction", st.Direction, "state", st.State, "code", st.Code,
		"reason", reason, "ended_by", by, "from", st.From, "to", st.To)
	return true
}

// requestHangUp asks whoever drives the call to end it: CANCEL or BYE for
// placed calls, a final response or BYE for received ones.
func (c *call) requestHangUp(reason string) {
	c.hangupOnce.Do(func() {
		c.hangupReason = reason
		close(c.hangup)
	})
}

// expectAck registers interest in the ACK for the 2xx to CSeq seq.
func (c *call) expectAck(seq uint32) <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan struct{})
	c.acks[seq] = ch
	return ch
}

func (c *call) ackReceived(seq uint32) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if ch, ok := c.acks[seq]; ok {
		close(ch)
		delete(c.acks, seq)
	}
}

func (c *call) forgetAck(seq uint32) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.acks, seq)
}

// status is a snapshot with the media counters read now.
func (c *call) status() (CallStatus, <-chan struct{}) {
	c.mu.Lock()
	st := c.st
	st.Forks = slices.Clone(c.st.Forks)
	media, mst, changed := c.media, c.mst, c.changed
	c.mu.Unlock()
	if media != nil {
		media.fill(&mst)
		st.Media = &mst
	}
	return st, changed
}

// superviseAnswered waits, on a manager goroutine, until an answered call
// ends: by a BYE from the gateway (which finishes it), by a hang-up request
// (edgesim sends BYE), or by the simulator stopping.
func (c *call) superviseAnswered() {
	select {
	case <-c.ended:
	case <-c.hangup:
		c.bye(c.hangupReason)
	case <-c.m.quit:
		c.finish(CallEnded, 0, "edgesim stopped", endedByEdgesim)
	}
}

// byeTimeout bounds a BYE edgesim sends; the call ends either way.
const byeTimeout = 10 * time.Second

func (c *call) bye(reason string) {
	d := c.dialog()
	if d == nil {
		c.finish(CallEnded, 0, reason, endedByEdgesim)
		return
	}
	ctx, cancel := context.WithTimeout(doneContext(c.m.quit), byeTimeout)
	defer cancel()
	res, err := d.do(ctx, d.newRequest(sip.BYE))
	switch {
	case err != nil:
		reason += fmt.Sprintf(" (BYE failed: %v)", err)
	case res.StatusCode != sip.StatusOK:
		reason += fmt.Sprintf(" (BYE answered %d %s)", res.StatusCode, res.Reason)
	}
	c.finish(CallEnded, 0, reason, endedByEdgesim)
}
