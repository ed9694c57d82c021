package location

import (
	"sync"
	"sync/atomic"
)

// notifier delivers live-count changes to subscribers from its own goroutine,
// so that table locks are never held while subscriber code runs. Pending
// changes coalesce per user (latest count wins): subscribers want the current
// state, not every step, and the queue stays bounded by the number of users.
type notifier struct {
	mu      sync.Mutex
	subs    []func(string, int)
	pending map[string]int
	active  atomic.Bool // any subscriber; posting is free otherwise
	kick    chan struct{}
	quit    chan struct{}
	done    chan struct{}
	once    sync.Once
}

func newNotifier() *notifier {
	return &notifier{
		pending: make(map[string]int),
		kick:    make(chan struct{}, 1),
		quit:    make(chan struct{}),
		done:    make(chan struct{}),
	}
}

func (n *notifier) start() { go n.loop() }

func (n *notifier) stop() {
	n.once.Do(func() { close(n.quit) })
	<-n.done
}

func (n *notifier) subscribe(fn func(string, int)) {
	n.mu.Lock()
	n.subs = append(n.subs, fn)
	n.mu.Unlock()
	n.active.Store(true)
}

// post is called with the user's shard lock held, which orders posts per user.
func (n *notifier) post(user string, live int) {
	if !n.active.Load() {
		return
	}
	n.mu.Lock()
	n.pending[user] = live
	n.mu.Unlock()
	select {
	case n.kick <- struct{}{}:
	default:
	}
}

func (n *notifier) loop() {
	defer close(n.done)
	spare := make(map[string]int)
	for {
		select {
		case <-n.quit:
			return
		case <-n.kick:
		}
		n.mu.Lock()
		p := n.pending
		n.pending = spare
		subs := n.subs
		n.mu.Unlock()
		for user, live := range p {
			for _, fn := range subs {
				fn(user, live)
			}
		}
		clear(p)
		spare = p
	}
}
