// Package controller holds the loops that run on the elected leader of
// the control plane: the workload controller, which reconciles workloads
// and nodes from the member's cache through a work queue and places
// instances with the scheduler; the autoscaler of functions; and the blob
// collector. Run starts them for one leadership; every write goes through
// the leadership's fence.
package controller

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/sync/errgroup"

	"github.com/wasmorch/wasmorch/controlplane/cache"
	"github.com/wasmorch/wasmorch/controlplane/events"
	"github.com/wasmorch/wasmorch/controlplane/store"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// controller is the workload controller and the scheduler's plumbing. It
// runs only on the elected leader. It is level-based and incremental
// (controller-runtime's shape): the member's cache tells it what changed,
// the keys of what changed (a workload, a node) go into a work queue, and
// each key is reconciled from the cache's current state — one workload
// and its instances, not the cluster — with compare-and-swap writes. A
// periodic resync of every key is the safety net: a missed event is never
// fatal. Its own writes come back through the cache as changes to the
// workloads they touched, and are reconciled once the cache has them.
type controller struct {
	st    *store.Store
	cache *cache.Cache
	// kv is what the controller writes through: the store's client fenced
	// on this member's leadership (store.Fenced), so that a deposed leader
	// writes nothing.
	kv      clientv3.KV
	log     *slog.Logger
	resync  time.Duration
	metrics *Metrics
	events  *events.Recorder
	queue   *workQueue
	// written is the revision of the controller's latest write: a
	// reconcile waits until the cache has reached it, so that it never
	// decides on a state older than its own decisions.
	written int64

	nodes map[string]nodeSeen // what this leader last saw of each node
	// unhealthyWorkloads holds the workloads with a function replica
	// failing its health check (healthTransitions), whose status reports
	// are reconciled even when the workload is settled, to see it pass
	// again.
	unhealthyWorkloads sync.Map

	// rollouts: minReady is how long a new generation's instance must
	// have been running before it counts as available in a rolling
	// update; readySince is when this controller first saw each one
	// running (its own clock: no skew with workers), by workload; wake
	// is the earliest time the workload being reconciled must be looked
	// at again (an instance becomes available, a deadline passes).
	minReady   time.Duration
	readySince map[string]map[string]readyMark
	wake       time.Time
	// rollouts: automatic rollback (0 disables each) and the history
	// limit of the revisions it writes.
	failureRestarts  int
	progressDeadline time.Duration
	maxErrorPercent  int
	revisionLimit    int
	// unhealthy holds the function replicas last seen failing their
	// health checks, by workload, for events on a change
	// (healthTransitions).
	unhealthy map[string]map[string]bool
	// rollbackRefused is, by workload, the generation whose automatic
	// rollback was refused (its revision's route or port is another
	// workload's now), so that it is said once.
	rollbackRefused map[string]int64

	pendingEvents []*v1.Event // queued by a reconcile, recorded once its writes commit
}

// Work queue keys.
const (
	keyWorkload = "w/"      // + name: reconcile one workload
	keyNode     = "n/"      // + name: a node's readiness changed, or its record
	keyPending  = "pending" // place every pending instance (capacity appeared)
	keyOrphans  = "orphans" // delete the statuses of instances that are gone
)

// Defaults of the loop.
const (
	// controllerResync enqueues every workload and node again: the
	// safety net under the changes the cache reports.
	controllerResync = 30 * time.Second
	// maxBatch is how many keys one round takes from the queue: their
	// writes share transactions, and the instances they create are
	// placed by one scheduling call.
	maxBatch = 256
	// retryDelay is when a key whose writes lost a race (or failed) is
	// looked at again.
	retryDelay = 200 * time.Millisecond
	// settleDelay lets a burst of changes gather into one round.
	settleDelay = 2 * time.Millisecond
)

// Start reconciles what the cache reports as changed until ctx is done.
func (c *controller) Start(ctx context.Context) error {
	if c.queue == nil {
		c.queue = newWorkQueue()
	}
	defer c.queue.Stop()
	if c.resync <= 0 {
		c.resync = controllerResync
	}
	// A new leader decides on a cache that holds every write before its
	// election, including the last leader's.
	for {
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := c.cache.Sync(sctx)
		cancel()
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return nil
		}
		c.log.Warn("controller: the member's cache is not in sync yet; waiting", "err", err)
	}
	unsubscribe := c.cache.Subscribe(c.onChanges)
	defer unsubscribe()
	c.enqueueAll()
	ticker := time.NewTicker(c.resync)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-ticker.C:
			c.enqueueAll()
		default:
		}
		keys := c.queue.Take(maxBatch)
		c.metrics.queueDepth.Set(float64(c.queue.Len()))
		if len(keys) == 0 {
			select {
			case <-ctx.Done():
				return nil
			case <-ticker.C:
				c.enqueueAll()
			case <-c.queue.notify:
				// Let a burst of changes settle into one round.
				select {
				case <-time.After(settleDelay):
				case <-ctx.Done():
					return nil
				}
			}
			continue
		}
		if err := c.round(ctx, keys); err != nil && ctx.Err() == nil {
			c.log.Warn("controller round failed; retrying its keys", "err", err, "keys", len(keys))
			for _, k := range keys {
				c.queue.AddAfter(k, retryDelay)
			}
		}
	}
}

// enqueueAll queues every workload and node: the resync.
func (c *controller) enqueueAll() {
	c.cache.Read(func(r cache.Reader) {
		for _, w := range r.Workloads() {
			c.queue.Add(keyWorkload + w.Value.GetName())
		}
		for _, n := range r.Nodes() {
			c.queue.Add(keyNode + n.Value.GetName())
		}
		// Instances whose workload is gone (deleted while no leader ran,
		// or still terminating when it was deleted).
		for _, s := range []v1.InstanceState{v1.InstanceState_INSTANCE_STATE_PENDING, v1.InstanceState_INSTANCE_STATE_TERMINATING,
			v1.InstanceState_INSTANCE_STATE_STOPPED, v1.InstanceState_INSTANCE_STATE_LOST} {
			for _, e := range r.InState(s) {
				if _, ok := r.Workload(e.Value.GetWorkload()); !ok {
					c.queue.Add(keyWorkload + e.Value.GetWorkload())
				}
			}
		}
	})
	c.queue.Add(keyPending)
	c.queue.Add(keyOrphans)
}

// onChanges turns the cache's changes into keys (on the cache's
// goroutine: it only queues).
func (c *controller) onChanges(cs []cache.Change) {
	for _, ch := range cs {
		switch ch.Kind {
		case cache.KindWorkload:
			if !ch.CountsOnly {
				c.queue.Add(keyWorkload + ch.Name)
			}
		case cache.KindInstance:
			if ch.Observed && c.settled(ch.Workload) {
				continue // a report that changes no decision
			}
			c.queue.Add(keyWorkload + ch.Workload)
			if ch.Deleted && ch.PrevNode != "" {
				c.queue.Add(keyPending) // capacity freed
			}
		case cache.KindNode:
			c.queue.Add(keyNode + ch.Name)
		}
	}
}

// settled says whether a status report of an instance of workload can
// change nothing the controller decides: the workload has exactly its
// replicas, all of its generation and ready (no rollout, no scale, no
// crash, no failing health check to follow). A report that unsettles it
// (an instance stops being ready) is seen settled no more.
func (c *controller) settled(workload string) bool {
	if _, ok := c.unhealthyWorkloads.Load(workload); ok {
		return false
	}
	w, ok := c.cache.Workload(workload)
	if !ok {
		return false
	}
	n := w.Value.GetSpec().GetReplicas()
	return w.Counts.Total == n && w.Counts.Current == n && w.Counts.Ready == n
}

// round reconciles a batch of keys: the workloads' writes first, then,
// once the cache has them, the placement of every instance that waits.
func (c *controller) round(ctx context.Context, keys []string) error {
	start := time.Now()
	defer func() { c.metrics.reconcileSeconds.Observe(time.Since(start).Seconds()) }()
	c.metrics.passes.Inc()
	if err := c.cache.WaitFor(ctx, c.written); err != nil {
		return err
	}
	b := &batch{}
	schedule := map[string]bool{}
	placeAll := false
	for _, k := range keys {
		switch {
		case strings.HasPrefix(k, keyWorkload):
			name := k[len(keyWorkload):]
			c.metrics.reconciles.WithLabelValues("workload").Inc()
			created, err := c.reconcile(ctx, name, b)
			if err != nil {
				c.log.Warn("reconciling a workload failed; retrying", "workload", name, "err", err)
				c.queue.AddAfter(k, retryDelay)
				continue
			}
			schedule[name] = true
			b.created = append(b.created, created...)
		case strings.HasPrefix(k, keyNode):
			c.metrics.reconciles.WithLabelValues("node").Inc()
			c.reconcileNode(k[len(keyNode):])
		case k == keyPending:
			placeAll = true
		case k == keyOrphans:
			c.removeOrphanStatuses(b)
		}
	}
	if err := c.commit(ctx, b); err != nil {
		return err
	}
	// Placement decides on capacity: wait until the cache has the
	// removals just written, which free some.
	if err := c.cache.WaitFor(ctx, c.written); err != nil {
		return err
	}
	return c.schedule(ctx, b.created, schedule, placeAll)
}

// batch collects the writes of one round, by workload, so that a
// workload whose writes lose a race is reconciled again as a whole.
type batch struct {
	groups  []*group
	created []*v1.Instance
}

// group is one workload's guarded writes and the events they make:
// cmps[i] guards ops[i].
type group struct {
	key    string
	cmps   []clientv3.Cmp
	ops    []clientv3.Op
	events []*v1.Event
}

func (b *batch) group(key string) *group {
	g := &group{key: key}
	b.groups = append(b.groups, g)
	return g
}

// commit writes the batch's groups in as few transactions as the limits
// allow, a group never split unless it alone is over the limit; the
// groups of a transaction that lost a race are queued again. Events are
// recorded for the groups that committed.
func (c *controller) commit(ctx context.Context, b *batch) error {
	var txn []*group
	ops, bytes := 0, 0
	flush := func() error {
		if len(txn) == 0 {
			return nil
		}
		err := c.write(ctx, txn)
		txn, ops, bytes = nil, 0, 0
		return err
	}
	for _, g := range b.groups {
		if len(g.ops) == 0 {
			c.pendingEvents = append(c.pendingEvents, g.events...)
			continue
		}
		n, size := len(g.ops), opsSize(g.ops)
		if ops+n > store.MaxOpsPerTxn/2 || bytes+size > maxTxnBytes {
			if err := flush(); err != nil {
				return err
			}
		}
		txn = append(txn, g)
		ops, bytes = ops+n, bytes+size
	}
	if err := flush(); err != nil {
		return err
	}
	c.flushEvents(ctx, true)
	return nil
}

// write commits groups together. If etcd refuses the writes as such (a
// request over its size or operation limit: not a lost race, not etcd
// being unavailable), each group is written alone, so that one workload's
// bad writes cost the others nothing; a group refused alone is looked at
// again later, with an event saying why.
func (c *controller) write(ctx context.Context, groups []*group) error {
	var cmps []clientv3.Cmp
	var ops []clientv3.Op
	for _, g := range groups {
		cmps, ops = append(cmps, g.cmps...), append(ops, g.ops...)
	}
	failed, rev, err := c.txn(ctx, cmps, ops)
	refused := errors.Is(err, rpctypes.ErrRequestTooLarge) || errors.Is(err, rpctypes.ErrTooManyOps)
	if refused && len(groups) > 1 {
		for _, g := range groups {
			if err := c.write(ctx, []*group{g}); err != nil {
				return err
			}
		}
		return nil
	}
	if refused {
		g := groups[0]
		c.log.Warn("cannot write a workload's changes; trying again later", "key", g.key, "err", err)
		if name, ok := strings.CutPrefix(g.key, keyWorkload); ok {
			c.note(events.Workload(name), "WriteFailed", "the control plane cannot store this workload's changes (%d writes): %v", len(g.ops), err)
		}
		c.queue.AddAfter(g.key, failedWriteDelay)
		return nil
	}
	if err != nil {
		return err
	}
	c.written = max(c.written, rev)
	for _, g := range groups {
		if failed {
			c.queue.AddAfter(g.key, retryDelay)
		} else {
			c.pendingEvents = append(c.pendingEvents, g.events...)
		}
	}
	return nil
}

// maxTxnBytes bounds the size of one transaction's operations, well under
// etcd's request limit (2 MiB).
const maxTxnBytes = 1 << 20

// failedWriteDelay is when a workload whose writes etcd refused is looked
// at again.
const failedWriteDelay = 10 * time.Second

// opsSize is about what ops weigh in a request: their keys and values.
func opsSize(ops []clientv3.Op) int {
	n := 0
	for _, op := range ops {
		n += opSize(op)
	}
	return n
}

func opSize(op clientv3.Op) int {
	if op.IsTxn() {
		_, then, els := op.Txn()
		return opsSize(then) + opsSize(els) + 16
	}
	return len(op.KeyBytes()) + len(op.ValueBytes()) + 16
}

// txn writes guarded operations in transactions of at most half etcd's
// operation limit and maxTxnBytes, several at a time (they are independent: each operation
// has its own guard, and etcd's raft commits concurrent proposals
// together); failed says whether any lost its comparisons. rev is the
// revision of the latest write.
func (c *controller) txn(ctx context.Context, cmps []clientv3.Cmp, ops []clientv3.Op) (failed bool, rev int64, err error) {
	var mu sync.Mutex
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(parallelTxns)
	for start := 0; start < len(ops); {
		// A transaction takes operations up to half etcd's operation limit
		// and maxTxnBytes (at least one, whatever its size).
		end, bytes := start, 0
		for end < len(ops) && end-start < store.MaxOpsPerTxn/2 && (end == start || bytes+opSize(ops[end]) <= maxTxnBytes) {
			bytes += opSize(ops[end])
			end++
		}
		from, to := start, end
		start = end
		g.Go(func() error {
			t := c.kv.Txn(gctx)
			if len(cmps) != 0 {
				t = t.If(cmps[from:to]...)
			}
			resp, err := t.Then(ops[from:to]...).Commit()
			if err != nil {
				return fmt.Errorf("controller write: %w", err)
			}
			mu.Lock()
			defer mu.Unlock()
			rev = max(rev, resp.Header.Revision)
			failed = failed || !resp.Succeeded
			return nil
		})
	}
	err = g.Wait()
	return failed, rev, err
}

// parallelTxns is how many of the controller's transactions are written at
// once.
const parallelTxns = 4
