// Package cache is a control-plane member's view of the cluster, fed by an
// etcd watch (the informer pattern of Kubernetes' client-go, as etcd's
// watch cache and Nomad's in-memory state store do it): it lists the
// records once at one revision, then follows every change from that
// revision, and keeps them decoded and indexed by workload, node, route
// and state. Every reader on the member — the API, the node sessions, the
// gateway, the leader's controllers — reads here rather than etcd, so
// that the cost of one change does not grow with the cluster. A read that
// must see a write waits until the cache has reached its revision
// (WaitFor), or etcd's current one (Sync).
//
// Writes do not go through the cache: they are etcd transactions, guarded
// by the mod revisions the cache reports.
package cache

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"

	"github.com/wasmorch/wasmorch/controlplane/store"
	"github.com/wasmorch/wasmorch/internal/errdefs"
)

// Kind is what a change is about.
type Kind uint8

// The kinds of records the cache follows.
const (
	KindWorkload Kind = iota + 1
	KindInstance      // the instance record, its status, or its node's liveness
	KindNode          // the node record or its liveness
	KindConfig
	KindSecret
	KindLoad // a gateway's load report of a function (not kept in the history)
)

func (k Kind) String() string {
	switch k {
	case KindWorkload:
		return "workload"
	case KindInstance:
		return "instance"
	case KindNode:
		return "node"
	case KindConfig:
		return "config"
	case KindSecret:
		return "secret"
	case KindLoad:
		return "load"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Change says that a record changed at revision Rev. Changes are level
// signals: the record's current state is read from the cache.
type Change struct {
	Rev     int64
	Kind    Kind
	Name    string // the workload, instance ID, node, config or secret; for a load, the workload
	Deleted bool
	// Prev is the last value of a deleted record.
	Prev proto.Message
	// CountsOnly marks a workload change that is only to its counts (an
	// instance of it started, stopped, became ready).
	CountsOnly bool
	// Observed marks an instance change that is only its node's report
	// (its status), not its record or its node's liveness.
	Observed bool
	// For instances: their workload, and the node they are bound to now
	// and were bound to before the change ("" when unplaced).
	Workload, Node, PrevNode string
}

// Config configures a cache.
type Config struct {
	Client *clientv3.Client
	Logger *slog.Logger
	// History is how many changes are kept for watches that start from a
	// past revision (zero: DefaultHistory).
	History int
	// PageSize is how many keys one read of the initial list takes (zero:
	// 5,000), so that listing a big cluster does not hold it all twice.
	PageSize int64
}

// DefaultHistory keeps about the last minutes of a busy cluster's
// changes; a watch from further back relists.
const DefaultHistory = 100_000

// Cache is the member's view of the cluster. Its methods are safe for
// concurrent use.
type Cache struct {
	cli      *clientv3.Client
	log      *slog.Logger
	pageSize int64

	mu     sync.RWMutex
	s      *state
	hist   *history
	nodeWs map[string]map[*NodeWatch]struct{}
	// workloadWs are the node watches that follow workloads too
	// (FollowWorkloads).
	workloadWs map[*NodeWatch]struct{}
	subs       map[int]func([]Change)
	nextID     int
	// advanced is closed and replaced each time the revision moves.
	advanced chan struct{}
	synced   chan struct{}

	watchMu  sync.Mutex
	watchCtx context.Context // the running watch's, for progress requests
}

// New returns a cache; Start fills it and keeps it current.
func New(cfg Config) *Cache {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	page := cfg.PageSize
	if page <= 0 {
		page = 5000
	}
	h := cfg.History
	if h <= 0 {
		h = DefaultHistory
	}
	return &Cache{
		cli: cfg.Client, log: log, pageSize: page,
		s: newState(), hist: newHistory(h), nodeWs: map[string]map[*NodeWatch]struct{}{}, workloadWs: map[*NodeWatch]struct{}{}, subs: map[int]func([]Change){},
		advanced: make(chan struct{}), synced: make(chan struct{}),
	}
}

// Synced is closed once the cache holds its first complete list.
func (c *Cache) Synced() <-chan struct{} { return c.synced }

// Rev is the etcd revision the cache has reached: every change up to it
// is applied.
func (c *Cache) Rev() int64 {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.s.rev
}

// Subscribe calls fn with every batch of changes the cache applies, in
// order, after they are applied (a read in fn sees them, or later ones).
// fn runs on the cache's own goroutine: it must return quickly (enqueue,
// signal). It returns the function that ends the subscription.
func (c *Cache) Subscribe(fn func([]Change)) (cancel func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	id := c.nextID
	c.nextID++
	c.subs[id] = fn
	return func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		delete(c.subs, id)
	}
}

// WaitFor blocks until the cache has reached rev, or ctx ends.
func (c *Cache) WaitFor(ctx context.Context, rev int64) error {
	asked := false
	for {
		c.mu.RLock()
		cur, ch := c.s.rev, c.advanced
		c.mu.RUnlock()
		if cur >= rev {
			return nil
		}
		t := time.NewTimer(20 * time.Millisecond)
		select {
		case <-ch:
			t.Stop()
		case <-t.C:
			// The latest revision may carry no change the watch reports
			// promptly: ask etcd to say how far the watch is.
			if !asked {
				c.requestProgress(ctx)
				asked = true
			}
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w: the member's cache has not reached revision %d (it is at %d): %w", errdefs.ErrUnavailable, rev, cur, ctx.Err())
		}
	}
}

// Sync waits until the cache holds everything etcd held when it was
// called, so that a read after it sees every write acknowledged before
// (on any member). It costs one linearizable read of a single key.
func (c *Cache) Sync(ctx context.Context) error {
	select {
	case <-c.synced:
	case <-ctx.Done():
		return fmt.Errorf("%w: the member's cache is not filled yet: %w", errdefs.ErrUnavailable, ctx.Err())
	}
	resp, err := c.cli.Get(ctx, store.Root, clientv3.WithCountOnly(), clientv3.WithLimit(1))
	if err != nil {
		return fmt.Errorf("%w: etcd: %w", errdefs.ErrUnavailable, err)
	}
	return c.WaitFor(ctx, resp.Header.Revision)
}

func (c *Cache) requestProgress(ctx context.Context) {
	c.watchMu.Lock()
	wctx := c.watchCtx
	c.watchMu.Unlock()
	if wctx != nil {
		_ = c.cli.RequestProgress(wctx)
	}
}

// Start lists and then watches until ctx ends. A watch that fails
// resumes from the last revision applied; one whose revision etcd has
// compacted meanwhile lists again, and subscribers receive the
// differences as changes.
func (c *Cache) Start(ctx context.Context) error {
	backoff := 50 * time.Millisecond
	listed := false
	for ctx.Err() == nil {
		if !listed {
			if err := c.list(ctx); err != nil {
				if ctx.Err() == nil {
					c.log.Warn("cache: listing the cluster failed; retrying", "err", err)
					sleep(ctx, backoff)
					backoff = min(2*backoff, 2*time.Second)
				}
				continue
			}
			listed = true
		}
		err := c.watch(ctx)
		switch {
		case ctx.Err() != nil:
		case errors.Is(err, rpctypes.ErrCompacted):
			c.log.Warn("cache: the watch fell behind etcd's compaction; listing again", "rev", c.Rev())
			listed = false
		default:
			c.log.Debug("cache: watch ended; resuming", "rev", c.Rev(), "err", err)
			sleep(ctx, backoff)
			backoff = min(2*backoff, 2*time.Second)
			continue
		}
		backoff = 50 * time.Millisecond
	}
	return nil
}

// list reads everything the cache holds at one revision into a new state
// and swaps it in.
func (c *Cache) list(ctx context.Context) error {
	ns := newState()
	var rev int64
	for _, prefix := range []string{store.WorkloadsPrefix, store.NodesPrefix, store.AlivePrefix, store.InstancesPrefix, store.StatusPrefix,
		store.ConfigsPrefix, store.SecretsPrefix, store.LoadsPrefix} {
		key, end := prefix, clientv3.GetPrefixRangeEnd(prefix)
		for {
			opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(c.pageSize)}
			if rev != 0 {
				opts = append(opts, clientv3.WithRev(rev))
			}
			resp, err := c.cli.Get(ctx, key, opts...)
			if err != nil {
				return err
			}
			if rev == 0 {
				rev = resp.Header.Revision
			}
			for _, kv := range resp.Kvs {
				ns.apply(string(kv.Key), kv.Value, kv.ModRevision, kv.Lease, false)
			}
			if !resp.More || len(resp.Kvs) == 0 {
				break
			}
			key = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
		}
	}
	ns.out, ns.countsChanged = nil, map[string]struct{}{}
	ns.rev = rev

	c.mu.Lock()
	first := c.s.rev == 0
	var changes []Change
	if !first {
		changes = diff(c.s, ns, rev)
	}
	c.s = ns
	if first {
		c.hist.floor = rev // the changes before the list are not kept
	} else {
		c.hist.add(changes)
		c.dispatchToNodes(changes)
	}
	c.advance()
	subs := c.subscribers()
	c.mu.Unlock()
	if first {
		close(c.synced)
		c.log.Debug("cache: listed the cluster", "rev", rev, "workloads", len(ns.workloads), "instances", len(ns.instances), "nodes", len(ns.nodes))
	}
	for _, fn := range subs {
		if len(changes) > 0 {
			fn(changes)
		}
	}
	return nil
}

// watch follows etcd from the revision after the cache's until it fails.
func (c *Cache) watch(ctx context.Context) error {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	c.watchMu.Lock()
	c.watchCtx = wctx
	c.watchMu.Unlock()
	defer func() {
		c.watchMu.Lock()
		c.watchCtx = nil
		c.watchMu.Unlock()
	}()
	wch := c.cli.Watch(wctx, store.Root, clientv3.WithPrefix(), clientv3.WithRev(c.Rev()+1))
	for resp := range wch {
		if err := resp.Err(); err != nil {
			return err
		}
		if resp.IsProgressNotify() {
			c.mu.Lock()
			if resp.Header.Revision > c.s.rev {
				c.s.rev = resp.Header.Revision
				c.advance()
			}
			c.mu.Unlock()
			continue
		}
		c.applyEvents(resp.Events)
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return errors.New("watch channel closed")
}

// applyEvents applies one watch response and hands its changes to the
// history, the node watches and the subscribers.
func (c *Cache) applyEvents(evs []*clientv3.Event) {
	if len(evs) == 0 {
		return
	}
	c.mu.Lock()
	s := c.s
	rev := s.rev
	for _, ev := range evs {
		kv := ev.Kv
		s.apply(string(kv.Key), kv.Value, kv.ModRevision, kv.Lease, ev.Type == mvccpb.DELETE)
		rev = max(rev, kv.ModRevision)
	}
	s.flushCounts(rev)
	s.rev = rev
	changes := s.out
	s.out = nil
	c.hist.add(changes)
	c.dispatchToNodes(changes)
	c.advance()
	subs := c.subscribers()
	c.mu.Unlock()
	if len(changes) == 0 {
		return
	}
	for _, fn := range subs {
		fn(changes)
	}
}

// advance wakes the waiters of WaitFor (under the write lock).
func (c *Cache) advance() {
	close(c.advanced)
	c.advanced = make(chan struct{})
}

func (c *Cache) subscribers() []func([]Change) {
	out := make([]func([]Change), 0, len(c.subs))
	for _, fn := range c.subs {
		out = append(out, fn)
	}
	return out
}

// diff is what changed between two states, as changes at rev (a relist
// after the watch fell behind).
func diff(old, cur *state, rev int64) []Change {
	var out []Change
	for name, w := range cur.workloads {
		if o, ok := old.workloads[name]; !ok || o.ModRevision != w.ModRevision || o.Counts != w.Counts {
			out = append(out, Change{Rev: rev, Kind: KindWorkload, Name: name})
		}
	}
	for name, w := range old.workloads {
		if _, ok := cur.workloads[name]; !ok {
			out = append(out, Change{Rev: rev, Kind: KindWorkload, Name: name, Deleted: true, Prev: w.Value})
		}
	}
	for id, e := range cur.instances {
		o, ok := old.instances[id]
		if !ok || o.ModRevision != e.ModRevision || o.StatusModRevision != e.StatusModRevision || o.State != e.State {
			prev := ""
			if ok {
				prev = o.Value.GetNode()
			}
			out = append(out, Change{Rev: rev, Kind: KindInstance, Name: id, Workload: e.Value.GetWorkload(), Node: e.Value.GetNode(), PrevNode: prev})
		}
	}
	for id, o := range old.instances {
		if _, ok := cur.instances[id]; !ok {
			out = append(out, Change{Rev: rev, Kind: KindInstance, Name: id, Deleted: true, Prev: o.Value, Workload: o.Value.GetWorkload(), PrevNode: o.Value.GetNode()})
		}
	}
	for name, n := range cur.nodes {
		if o, ok := old.nodes[name]; !ok || o.ModRevision != n.ModRevision || old.isAlive(name) != cur.isAlive(name) {
			out = append(out, Change{Rev: rev, Kind: KindNode, Name: name})
		}
	}
	for name, n := range old.nodes {
		if _, ok := cur.nodes[name]; !ok {
			out = append(out, Change{Rev: rev, Kind: KindNode, Name: name, Deleted: true, Prev: n.Value})
		}
	}
	for name, v := range cur.configs {
		if o, ok := old.configs[name]; !ok || o.ModRevision != v.ModRevision {
			out = append(out, Change{Rev: rev, Kind: KindConfig, Name: name})
		}
	}
	for name := range old.configs {
		if _, ok := cur.configs[name]; !ok {
			out = append(out, Change{Rev: rev, Kind: KindConfig, Name: name, Deleted: true})
		}
	}
	for name, v := range cur.secrets {
		if o, ok := old.secrets[name]; !ok || o.ModRevision != v.ModRevision {
			out = append(out, Change{Rev: rev, Kind: KindSecret, Name: name})
		}
	}
	for name := range old.secrets {
		if _, ok := cur.secrets[name]; !ok {
			out = append(out, Change{Rev: rev, Kind: KindSecret, Name: name, Deleted: true})
		}
	}
	for w := range cur.loads {
		out = append(out, Change{Rev: rev, Kind: KindLoad, Name: w})
	}
	for w := range old.loads {
		if _, ok := cur.loads[w]; !ok {
			out = append(out, Change{Rev: rev, Kind: KindLoad, Name: w})
		}
	}
	return out
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
