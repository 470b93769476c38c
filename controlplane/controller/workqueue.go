package controller

import (
	"context"
	"sync"
	"time"
)

// workQueue holds the keys a controller has to look at (a workload, a
// node), each at most once however often it is added, in the order they
// were first added (controller-runtime's work queue, without its rate
// limiters: a key that fails is added again after a delay).
type workQueue struct {
	mu     sync.Mutex
	queued map[string]struct{}
	order  []string
	timers map[string]*delayed
	notify chan struct{}
}

type delayed struct {
	at    time.Time
	timer *time.Timer
}

func newWorkQueue() *workQueue {
	return &workQueue{queued: map[string]struct{}{}, timers: map[string]*delayed{}, notify: make(chan struct{}, 1)}
}

// Add queues key unless it is queued already.
func (q *workQueue) Add(key string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.add(key)
}

func (q *workQueue) add(key string) {
	if _, ok := q.queued[key]; ok {
		return
	}
	q.queued[key] = struct{}{}
	q.order = append(q.order, key)
	select {
	case q.notify <- struct{}{}:
	default:
	}
}

// AddAfter queues key after d, or sooner if it is added meanwhile; of
// several delays pending for one key, the earliest holds.
func (q *workQueue) AddAfter(key string, d time.Duration) {
	if d <= 0 {
		q.Add(key)
		return
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	at := time.Now().Add(d)
	if t, ok := q.timers[key]; ok {
		if !at.Before(t.at) {
			return
		}
		t.timer.Stop()
	}
	dl := &delayed{at: at}
	dl.timer = time.AfterFunc(d, func() {
		q.mu.Lock()
		defer q.mu.Unlock()
		if q.timers[key] == dl {
			delete(q.timers, key)
		}
		q.add(key)
	})
	q.timers[key] = dl
}

// Take removes and returns up to max queued keys, oldest first; none when
// the queue is empty.
func (q *workQueue) Take(max int) []string {
	q.mu.Lock()
	defer q.mu.Unlock()
	n := min(max, len(q.order))
	keys := make([]string, n)
	copy(keys, q.order[:n])
	q.order = q.order[n:]
	if len(q.order) == 0 {
		q.order = nil // let the backing array go after a burst
	}
	for _, k := range keys {
		delete(q.queued, k)
	}
	return keys
}

// Len is how many keys are queued.
func (q *workQueue) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.order)
}

// Wait returns when a key may be queued, or when ctx ends.
func (q *workQueue) Wait(ctx context.Context) {
	select {
	case <-q.notify:
	case <-ctx.Done():
	}
}

// Stop cancels the pending delays.
func (q *workQueue) Stop() {
	q.mu.Lock()
	defer q.mu.Unlock()
	for k, t := range q.timers {
		t.timer.Stop()
		delete(q.timers, k)
	}
}
