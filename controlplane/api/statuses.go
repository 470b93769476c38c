package api

import (
	"context"
	"sync"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/wasmorch/wasmorch/controlplane/store"
)

// statusWriter writes the status reports of every node connected to this
// member in shared transactions: the reports that arrive while one
// transaction is being written go together into the next (as swarmkit's
// dispatcher batches status updates), so that a thousand nodes reporting
// at once cost a few etcd transactions, not a thousand, and a lone report
// waits for nothing.
type statusWriter struct {
	kv   clientv3.KV
	kick chan struct{}

	mu      sync.Mutex
	pending []*statusWrite
	txns    int // transactions written (tests)
}

// statusWrite is one report's operations and where its outcome goes.
type statusWrite struct {
	ops  []clientv3.Op
	done chan error
}

func newStatusWriter(kv clientv3.KV) *statusWriter {
	return &statusWriter{kv: kv, kick: make(chan struct{}, 1)}
}

// write stores ops with the next transaction and returns its outcome.
func (w *statusWriter) write(ctx context.Context, ops []clientv3.Op) error {
	if len(ops) == 0 {
		return nil
	}
	sw := &statusWrite{ops: ops, done: make(chan error, 1)}
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
		return ctx.Err() // written or not, the worker reports again
	}
}

// run writes what is pending until ctx ends.
func (w *statusWriter) run(ctx context.Context) {
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
			txns := (len(ops) + store.MaxOpsPerTxn/2 - 1) / (store.MaxOpsPerTxn / 2)
			_, err := store.Txn(ctx, w.kv, nil, ops)
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
func (w *statusWriter) take() []*statusWrite {
	w.mu.Lock()
	defer w.mu.Unlock()
	n, ops := 0, 0
	for n < len(w.pending) && (n == 0 || ops+len(w.pending[n].ops) <= store.MaxOpsPerTxn/2) {
		ops += len(w.pending[n].ops)
		n++
	}
	batch := w.pending[:n:n]
	w.pending = w.pending[n:]
	return batch
}

// fail answers every pending write with err.
func (w *statusWriter) fail(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, sw := range w.pending {
		sw.done <- err
	}
	w.pending = nil
}
