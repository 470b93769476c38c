package worker

import (
	"context"
	"sync"
	"time"

	"github.com/wasmorch/wasmorch/internal/errdefs"
	pb "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

const (
	defaultMaxBatch    = 1000
	reportTimeout      = 10 * time.Second
	reportRetryBackoff = time.Second
)

// statusBatcher collects status changes, keeping only the latest per
// instance, for the sender to ship in batches. Statuses put in it are never
// modified afterwards.
type statusBatcher struct {
	max int

	mu      sync.Mutex
	pending map[string]*pb.InstanceStatus
	wake    chan struct{} // capacity 1: something is pending
	full    chan struct{} // capacity 1: a full batch is pending
}

func newStatusBatcher(max int) *statusBatcher {
	return &statusBatcher{
		max:     max,
		pending: map[string]*pb.InstanceStatus{},
		wake:    make(chan struct{}, 1),
		full:    make(chan struct{}, 1),
	}
}

func (b *statusBatcher) add(st *pb.InstanceStatus) {
	b.mu.Lock()
	b.pending[st.GetId()] = st
	n := len(b.pending)
	b.mu.Unlock()
	b.signal(n)
}

func (b *statusBatcher) addAll(sts []*pb.InstanceStatus) {
	b.mu.Lock()
	for _, st := range sts {
		b.pending[st.GetId()] = st
	}
	n := len(b.pending)
	b.mu.Unlock()
	b.signal(n)
}

func (b *statusBatcher) signal(n int) {
	if n == 0 {
		return
	}
	select {
	case b.wake <- struct{}{}:
	default:
	}
	if n >= b.max {
		select {
		case b.full <- struct{}{}:
		default:
		}
	}
}

// take removes and returns up to max pending statuses.
func (b *statusBatcher) take() []*pb.InstanceStatus {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := min(len(b.pending), b.max)
	if n == 0 {
		return nil
	}
	out := make([]*pb.InstanceStatus, 0, n)
	for id, st := range b.pending {
		out = append(out, st)
		delete(b.pending, id)
		if len(out) == n {
			break
		}
	}
	return out
}

// putBack returns unsent statuses, unless a newer one arrived meanwhile. It
// does not wake the sender: a reconnect or the next change will.
func (b *statusBatcher) putBack(sts []*pb.InstanceStatus) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, st := range sts {
		if _, newer := b.pending[st.GetId()]; !newer {
			b.pending[st.GetId()] = st
		}
	}
}

func (b *statusBatcher) len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.pending)
}

// sendStatuses ships pending statuses: after the first change it waits one
// StatusBatchInterval (or until a full batch is pending) so that changes
// collect, then sends them in batches of at most max.
func (w *Worker) sendStatuses(ctx context.Context) error {
	b := w.statuses
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-b.wake:
		}
		select {
		case <-b.full: // Stale: a full batch that has been sent already.
		default:
		}
		if b.len() < b.max && w.cfg.StatusBatchInterval > 0 {
			ch := make(chan struct{})
			t := w.clock.AfterFunc(w.cfg.StatusBatchInterval, func() { close(ch) })
			select {
			case <-ctx.Done():
				t.Stop()
				return nil
			case <-ch:
			case <-b.full:
				t.Stop()
			}
		}
		// Send what is pending; of what arrives meanwhile, only full batches
		// go at once, the rest waits for the next interval.
		for {
			batch := b.take()
			if len(batch) == 0 {
				break
			}
			if err := w.report(ctx, batch); err != nil {
				b.putBack(batch)
				if ctx.Err() != nil {
					return nil
				}
				w.logger.Debug("status report deferred", "statuses", len(batch), "err", err)
				// Retry later even if nothing changes and no reconnect comes.
				w.clock.AfterFunc(reportRetryBackoff, func() { b.signal(b.len()) })
				break
			}
			if n := b.len(); n < b.max {
				b.signal(n)
				break
			}
		}
	}
}

func (w *Worker) report(ctx context.Context, batch []*pb.InstanceStatus) error {
	client := w.agentClient()
	if client == nil {
		return errdefs.Unavailablef("not connected to a control plane")
	}
	ctx, cancel := context.WithTimeout(ctx, reportTimeout)
	defer cancel()
	_, err := client.ReportStatus(ctx, &pb.StatusBatch{Node: w.cfg.NodeName, Statuses: batch})
	return errdefs.FromGRPC(err)
}
