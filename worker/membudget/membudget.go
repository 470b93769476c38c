// Package membudget is a worker's memory budget: the node's allocatable
// memory, shared by the instances assigned to the node and the Wasm
// function requests it runs. An instance reserves its memory limit for as
// long as it is on the node, and is refused when the reservations would
// pass the budget; a request borrows its function's memory limit from
// what no instance has reserved while it runs, and waits in line (first
// come, first served; bounded in number, and in time by its context) while
// not enough is free.
package membudget

import (
	"container/list"
	"context"
	"fmt"
	"sync"
)

// Budget is one node's memory budget. It is safe for concurrent use.
type Budget struct {
	total    int64
	maxQueue int

	mu       sync.Mutex
	reserved int64     // by instances
	borrowed int64     // by requests running
	queue    list.List // of *waiter, in arrival order
}

type waiter struct {
	n     int64
	ready chan struct{} // closed once n is lent
}

// Usage is what a budget holds at one moment.
type Usage struct {
	Total    int64 // the budget
	Reserved int64 // by instances
	Borrowed int64 // by requests running
	Waiting  int   // requests waiting for memory
}

// Free is what is neither reserved nor lent.
func (u Usage) Free() int64 { return max(0, u.Total-u.Reserved-u.Borrowed) }

// QueueFullError is Borrow's error when maxQueue requests wait already.
type QueueFullError struct{ Waiting int }

func (e *QueueFullError) Error() string {
	return fmt.Sprintf("no more requests may wait for memory (%d wait already)", e.Waiting)
}

// New returns a budget of total bytes, with none reserved or lent, that
// lets at most maxQueue requests wait for memory at once.
func New(total int64, maxQueue int) *Budget {
	return &Budget{total: total, maxQueue: maxQueue}
}

// Reserve takes n bytes for an instance, unless the instances' reservations
// would then pass the budget: then it takes nothing and reports false.
// Memory lent to requests does not refuse an instance (the scheduler
// placed it within the node's allocatable memory); until those requests
// end, the budget lends no more.
func (b *Budget) Reserve(n int64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.reserved+n > b.total {
		return false
	}
	b.reserved += n
	return true
}

// Unreserve gives back an instance's reservation.
func (b *Budget) Unreserve(n int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.reserved -= n
	b.grantLocked()
}

// Borrow lends n bytes to a request, when they are free and no request
// waits before it; otherwise it waits in line until they are, or ctx is
// done (its error is then ctx's cause), or fails at once with a
// *QueueFullError when maxQueue requests wait already. What it lends is
// given back with Return.
func (b *Budget) Borrow(ctx context.Context, n int64) error {
	b.mu.Lock()
	if b.queue.Len() == 0 && b.fitsLocked(n) {
		b.borrowed += n
		b.mu.Unlock()
		return nil
	}
	if b.queue.Len() >= b.maxQueue {
		waiting := b.queue.Len()
		b.mu.Unlock()
		return &QueueFullError{Waiting: waiting}
	}
	w := &waiter{n: n, ready: make(chan struct{})}
	elem := b.queue.PushBack(w)
	b.mu.Unlock()

	select {
	case <-w.ready:
		return nil
	case <-ctx.Done():
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	select {
	case <-w.ready:
		// Lent while ctx ended: give it back, to whoever waits next.
		b.borrowed -= n
	default:
		b.queue.Remove(elem)
	}
	// Those behind it may fit now.
	b.grantLocked()
	return context.Cause(ctx)
}

// TryBorrow lends n bytes if they are free and no request waits before
// it, without waiting: Borrow's first step.
func (b *Budget) TryBorrow(n int64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.queue.Len() == 0 && b.fitsLocked(n) {
		b.borrowed += n
		return true
	}
	return false
}

// Return gives back what Borrow lent.
func (b *Budget) Return(n int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.borrowed -= n
	b.grantLocked()
}

// Usage returns what the budget holds now.
func (b *Budget) Usage() Usage {
	b.mu.Lock()
	defer b.mu.Unlock()
	return Usage{Total: b.total, Reserved: b.reserved, Borrowed: b.borrowed, Waiting: b.queue.Len()}
}

func (b *Budget) fitsLocked(n int64) bool {
	return b.reserved+b.borrowed+n <= b.total
}

// grantLocked lends to the waiting requests, in order, while the first
// one fits.
func (b *Budget) grantLocked() {
	for e := b.queue.Front(); e != nil; e = b.queue.Front() {
		w := e.Value.(*waiter)
		if !b.fitsLocked(w.n) {
			return
		}
		b.borrowed += w.n
		b.queue.Remove(e)
		close(w.ready)
	}
}

// FormatBytes writes a size as a user reads it: "512 KiB", "128 MiB",
// "21.6 GiB".
func FormatBytes(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", n>>30)
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d B", n)
}
