package worker

import (
	"context"
	"sync"
	"time"
)

// clock is the worker's view of time, replaced by a fake one in tests so
// that backoff and batching are deterministic.
type clock interface {
	Now() time.Time
	// AfterFunc calls f in its own goroutine once d has passed.
	AfterFunc(d time.Duration, f func()) timer
}

type timer interface {
	Stop() bool
}

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

func (realClock) AfterFunc(d time.Duration, f func()) timer { return time.AfterFunc(d, f) }

// sleep waits for d on c, or until ctx is done (reported as false).
func sleep(ctx context.Context, c clock, d time.Duration) bool {
	ch := make(chan struct{})
	t := c.AfterFunc(d, func() { close(ch) })
	defer t.Stop()
	select {
	case <-ch:
		return true
	case <-ctx.Done():
		return false
	}
}

// backoff returns the wait before retry number n (0-based): nothing for the
// first, then base, 2*base, 4*base ... capped at max.
func backoff(n int, base, max time.Duration) time.Duration {
	if n <= 0 || base <= 0 {
		return 0
	}
	d := base
	for i := 1; i < n; i++ {
		d *= 2
		if d >= max {
			return max
		}
	}
	return min(d, max)
}

// queue is an unbounded FIFO of instances consumed by a fixed set of
// goroutines; it holds pointers only, so ten thousand queued starts cost
// ten thousand words.
type queue struct {
	mu     sync.Mutex
	items  []*instance
	signal chan struct{} // capacity 1: items may be waiting
}

func newQueue() *queue { return &queue{signal: make(chan struct{}, 1)} }

func (q *queue) push(in *instance) {
	q.mu.Lock()
	q.items = append(q.items, in)
	q.mu.Unlock()
	q.notify()
}

func (q *queue) notify() {
	select {
	case q.signal <- struct{}{}:
	default:
	}
}

// pop waits for an item; false once ctx is done.
func (q *queue) pop(ctx context.Context) (*instance, bool) {
	for {
		q.mu.Lock()
		if len(q.items) > 0 {
			in := q.items[0]
			q.items[0] = nil
			q.items = q.items[1:]
			if len(q.items) == 0 {
				q.items = nil
			} else {
				q.notify() // Wake another consumer for the rest.
			}
			q.mu.Unlock()
			return in, true
		}
		q.mu.Unlock()
		select {
		case <-q.signal:
		case <-ctx.Done():
			return nil, false
		}
	}
}
