package store

import (
	"context"
	"sync"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Batcher writes the operations of many callers in shared transactions:
// what arrives while one transaction is being written goes together into
// the next (as swarmkit's dispatcher batches status updates), so that a
// thousand nodes reporting their statuses at once cost a few etcd
// transactions, not a thousand, and a lone write waits for nothing. Each
// caller's operations carry their own comparisons (nested transactions)
// where they need any: the shared transaction has none at its top.
type Batcher struct {
	kv   clientv3.KV
	kick chan struct{}

	mu      sync.Mutex
	pending []*batchedWrite
	txns    int // transactions written (tests)
}

// batchedWrite is one caller's operations and where its outcome goes.
type batchedWrite struct {
	ops  []clientv3.Op
	done chan error
}

// NewBatcher writes through kv once Run runs.
func NewBatcher(kv clientv3.KV) *Batcher {
	return &Batcher{kv: kv, kick: make(chan struct{}, 1)}
}

// Write stores ops with the next transaction and returns its outcome.
func (w *Batcher) Write(ctx context.Context, ops []clientv3.Op) error {
	if len(ops) == 0 {
		return nil
	}
	sw := &batchedWrite{ops: ops, done: make(chan error, 1)}
	w.mu.Lock()
	w.pending = append(w.pending, sw)
	w.mu.Unlock()
	select {
	case w.kick <- struct{}{}:
	default:
	}
	select {
	case err := <-sw.done:
		return err
	case <-ctx.Done():
		return ctx.Err() // written or not: the caller tries again
	}
}

// Run writes what is pending until ctx ends.
func (w *Batcher) Run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			w.fail(ctx.Err())
			return
		case <-w.kick:
		}
		for {
			batch := w.take()
			if len(batch) == 0 {
				break
			}
			var ops []clientv3.Op
			for _, sw := range batch {
				ops = append(ops, sw.ops...)
			}
			// Without comparisons at the top (each report's own is nested),
			// a transaction fails only as a whole, and only when etcd does.
			txns := (len(ops) + MaxOpsPerTxn/2 - 1) / (MaxOpsPerTxn / 2)
			_, err := Txn(ctx, w.kv, nil, ops)
			w.mu.Lock()
			w.txns += txns
			w.mu.Unlock()
			for _, sw := range batch {
				sw.done <- err
			}
		}
	}
}

// take removes the pending writes that fit one transaction (at least one,
// whatever its size).
func (w *Batcher) take() []*batchedWrite {
	w.mu.Lock()
	defer w.mu.Unlock()
	n, ops := 0, 0
	for n < len(w.pending) && (n == 0 || ops+len(w.pending[n].ops) <= MaxOpsPerTxn/2) {
		ops += len(w.pending[n].ops)
		n++
	}
	batch := w.pending[:n:n]
	w.pending = w.pending[n:]
	return batch
}

// fail answers every pending write with err.
func (w *Batcher) fail(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, sw := range w.pending {
		sw.done <- err
	}
	w.pending = nil
}
