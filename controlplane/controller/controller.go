// Package controller holds the loops that run on the elected leader of
// the control plane: the workload controller, which reconciles workloads
// and nodes from the member's cache through a work queue and places
// instances with the scheduler; the autoscaler of functions; and the blob
// collector. Run starts them for one leadership; every write goes through
// the leadership's fence.
package controller

import (
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/wasmorch/wasmorch/controlplane/cache"
	"github.com/wasmorch/wasmorch/controlplane/events"
	"github.com/wasmorch/wasmorch/controlplane/store"
	"github.com/wasmorch/wasmorch/controlplane/workloads"
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

	ready map[string]bool // node readiness last seen, for events

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

	pendingEvents []*v1.Event // queued by a reconcile, recorded once its writes commit
}

// world is what one reconcile looks at: one workload's instances with
// their statuses, and the nodes they are bound to, read from the cache at
// one revision.
type world struct {
	instances  []store.Versioned[*v1.Instance]
	statuses   map[string]*v1.InstanceStatus
	alive      map[string]bool
	nodeByName map[string]*v1.Node
	draining   map[string]bool // nodes being drained
	rev        int64

	// loads are the gateways' load reports of the workload, if it is a
	// function (rollouts: its requests by generation).
	loads map[string][]*v1.FunctionLoad
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
		// Instances whose workload is gone (deleted while no leader ran).
		for _, e := range r.Pending() {
			if _, ok := r.Workload(e.Value.GetWorkload()); !ok {
				c.queue.Add(keyWorkload + e.Value.GetWorkload())
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
			c.queue.Add(keyWorkload + ch.Workload)
			if ch.Deleted && ch.PrevNode != "" {
				c.queue.Add(keyPending) // capacity freed
			}
		case cache.KindNode:
			c.queue.Add(keyNode + ch.Name)
		}
	}
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
	limit := store.MaxOpsPerTxn / 2
	var txn []*group
	size := 0
	flush := func() error {
		if len(txn) == 0 {
			return nil
		}
		var cmps []clientv3.Cmp
		var ops []clientv3.Op
		for _, g := range txn {
			cmps, ops = append(cmps, g.cmps...), append(ops, g.ops...)
		}
		failed, rev, err := c.txn(ctx, cmps, ops)
		if err != nil {
			return err
		}
		c.written = max(c.written, rev)
		for _, g := range txn {
			if failed {
				c.queue.AddAfter(g.key, retryDelay)
			} else {
				c.pendingEvents = append(c.pendingEvents, g.events...)
			}
		}
		txn, size = nil, 0
		return nil
	}
	for _, g := range b.groups {
		if len(g.ops) == 0 {
			c.pendingEvents = append(c.pendingEvents, g.events...)
			continue
		}
		if size+len(g.ops) > limit {
			if err := flush(); err != nil {
				return err
			}
		}
		txn = append(txn, g)
		size += len(g.ops)
	}
	if err := flush(); err != nil {
		return err
	}
	c.flushEvents(ctx, true)
	return nil
}

// txn writes guarded operations in transactions of at most half the
// request limit; failed says whether any lost its comparisons. rev is the
// revision of the last write.
func (c *controller) txn(ctx context.Context, cmps []clientv3.Cmp, ops []clientv3.Op) (failed bool, rev int64, err error) {
	limit := store.MaxOpsPerTxn / 2
	for start := 0; start < len(ops); start += limit {
		end := min(start+limit, len(ops))
		t := c.kv.Txn(ctx)
		if len(cmps) != 0 {
			t = t.If(cmps[start:end]...)
		}
		resp, err := t.Then(ops[start:end]...).Commit()
		if err != nil {
			return failed, rev, fmt.Errorf("controller write: %w", err)
		}
		rev = max(rev, resp.Header.Revision)
		if !resp.Succeeded {
			failed = true
		}
	}
	return failed, rev, nil
}

// readWorld reads one workload and what its reconcile looks at.
func (c *controller) readWorld(name string) (wl store.Versioned[*v1.Workload], exists bool, w *world) {
	w = &world{statuses: map[string]*v1.InstanceStatus{}, alive: map[string]bool{}, nodeByName: map[string]*v1.Node{}, draining: map[string]bool{}}
	c.cache.Read(func(r cache.Reader) {
		w.rev = r.Rev()
		if cw, ok := r.Workload(name); ok {
			wl, exists = store.Versioned[*v1.Workload]{Name: name, Value: cw.Value, ModRevision: cw.ModRevision}, true
			if cw.Value.GetSpec().GetHttp() != nil {
				w.loads = map[string][]*v1.FunctionLoad{name: r.Loads(name)}
			}
		}
		insts := r.InstancesOf(name)
		w.instances = make([]store.Versioned[*v1.Instance], 0, len(insts))
		for _, e := range insts {
			w.instances = append(w.instances, store.Versioned[*v1.Instance]{Name: e.Value.GetId(), Value: e.Value, ModRevision: e.ModRevision})
			if e.Status != nil {
				w.statuses[e.Value.GetId()] = e.Status
			}
			node := e.Value.GetNode()
			if _, seen := w.alive[node]; node == "" || seen {
				continue
			}
			w.alive[node] = r.NodeAlive(node)
			if n, ok := r.Node(node); ok {
				w.nodeByName[node] = n.Value
				if n.Value.GetDraining() {
					w.draining[node] = true
				}
			}
		}
	})
	return wl, exists, w
}

// reconcile is one workload's reconciliation: instances of a deleted
// workload go, lost ones are marked and replaced, a failed rollout is
// rolled back, a canary promoted, and the instances are brought to the
// spec (rolling updates, scaling, evictions from draining nodes). It adds
// its writes to b and returns the instances to create, which the round
// places before it first writes them.
func (c *controller) reconcile(ctx context.Context, name string, b *batch) ([]*v1.Instance, error) {
	wl, exists, w := c.readWorld(name)
	g := b.group(keyWorkload + name)
	queued := len(c.pendingEvents)
	defer func() {
		// The events noted here belong to this workload's writes.
		g.events = append(g.events, c.pendingEvents[queued:]...)
		c.pendingEvents = c.pendingEvents[:queued]
	}()
	remove := func(inst store.Versioned[*v1.Instance]) {
		// Its status goes with it: a later report of a gone instance is
		// dropped (ReportStatus writes only where the instance exists).
		g.cmps = append(g.cmps, c.st.Instances.Unchanged(inst.Name, inst.ModRevision))
		g.ops = append(g.ops, clientv3.OpTxn(nil, []clientv3.Op{c.st.Instances.DeleteOp(inst.Name), c.st.Statuses.DeleteOp(inst.Name)}, nil))
	}
	mark := func(inst store.Versioned[*v1.Instance], updated *v1.Instance) error {
		op, err := c.st.Instances.PutOp(inst.Name, updated)
		if err != nil {
			return err
		}
		g.cmps, g.ops = append(g.cmps, c.st.Instances.Unchanged(inst.Name, inst.ModRevision)), append(g.ops, op)
		return nil
	}
	if !exists {
		for _, inst := range w.instances {
			remove(inst) // its workload was deleted
		}
		delete(c.readySince, name)
		delete(c.unhealthy, name)
		return nil, nil
	}
	c.wake = time.Time{}
	defer func() {
		if !c.wake.IsZero() {
			c.queue.AddAfter(keyWorkload+name, time.Until(c.wake))
		}
	}()
	c.forgetReadySince(name, w)  // rollouts
	c.healthTransitions(name, w) // rollouts
	live := w.instances[:0:0]
	for i := range w.instances {
		if lost, err := c.lostOrGone(&w.instances[i], w, mark, remove); err != nil {
			return nil, err
		} else if !lost {
			live = append(live, w.instances[i])
		}
	}
	// rollouts: a failed rollout goes back to the previous revision; the
	// next reconcile rolls the new generation.
	if rolled, err := c.autoRollback(ctx, wl, live, w); err != nil {
		return nil, err
	} else if rolled {
		return nil, nil
	}
	if promoted, err := c.canaryPromotion(ctx, wl, live, w); err != nil { // canary.go
		return nil, err
	} else if promoted {
		return nil, nil
	}
	toRemove, toCreate := c.diff(wl.Value, live, w)
	for _, inst := range toRemove {
		remove(inst)
	}
	created := make([]*v1.Instance, 0, toCreate)
	for range toCreate {
		created = append(created, newInstance(wl.Value))
	}
	if len(g.ops) > 0 || len(created) > 0 {
		c.log.Debug("reconciled", "workload", name, "writes", len(g.ops), "created", len(created))
	}
	return created, nil
}

// reconcileNode records a change of a node's readiness and has the
// workloads with instances on it reconciled (lost, back, drained,
// removed), and pending instances placed when it may take some.
func (c *controller) reconcileNode(name string) {
	var workloads map[string]bool
	var n cache.Node
	var exists bool
	c.cache.Read(func(r cache.Reader) {
		n, exists = r.Node(name)
		insts := r.InstancesOn(name)
		workloads = make(map[string]bool, len(insts))
		for _, e := range insts {
			workloads[e.Value.GetWorkload()] = true
		}
	})
	c.nodeTransition(name, exists, n.Alive)
	for w := range workloads {
		c.queue.Add(keyWorkload + w)
	}
	if exists && n.Alive && !n.Value.GetCordoned() {
		c.queue.Add(keyPending)
	}
}

// removeOrphanStatuses deletes the status reports of instances that are
// gone (a report that raced its instance's deletion, or written by an
// older version that deleted statuses on a later pass).
func (c *controller) removeOrphanStatuses(b *batch) {
	var ids []string
	c.cache.Read(func(r cache.Reader) { ids = r.OrphanStatuses() })
	if len(ids) == 0 {
		return
	}
	g := b.group(keyOrphans)
	for _, id := range ids {
		g.cmps = append(g.cmps, clientv3.Compare(clientv3.CreateRevision(c.st.Instances.Key(id)), "=", 0))
		g.ops = append(g.ops, c.st.Statuses.DeleteOp(id))
	}
}

// diff decides which instances of one workload go and how many to create.
// Instances of an older generation are replaced in a rolling update
// (rollingStep), so a new revision never takes the workload down.
func (c *controller) diff(wl *v1.Workload, insts []store.Versioned[*v1.Instance], w *world) (remove []store.Versioned[*v1.Instance], create int) {
	want := int(wl.GetSpec().GetReplicas())
	var current, old, evicting []store.Versioned[*v1.Instance]
	for _, inst := range insts {
		if inst.Value.GetGeneration() == wl.GetGeneration() {
			if w.draining[inst.Value.GetNode()] {
				evicting = append(evicting, inst)
				continue
			}
			current = append(current, inst)
		} else {
			old = append(old, inst)
		}
	}
	if len(current) > want {
		// Scale down: drop the ones that help least first.
		sort.SliceStable(current, func(i, j int) bool {
			ci, ti := removalRank(current[i].Value, w)
			cj, tj := removalRank(current[j].Value, w)
			return ci < cj || ci == cj && ti > tj
		})
		remove = append(remove, current[:len(current)-want]...)
		current = current[len(current)-want:]
	}
	create = want - len(current)
	ready := 0
	for _, inst := range current {
		if isReady(inst.Value, w.statuses[inst.Name], w.alive) {
			ready++
		}
	}
	remove = append(remove, evictions(evicting, ready, want, w)...)
	if len(old) > 0 {
		// rollouts: a canary waiting for promotion (canary.go), else a
		// rolling update bounded by max surge and max unavailable
		// (rollout.go).
		if gone, n, held := canaryStep(wl, current, old, w); held {
			return append(remove, gone...), n
		}
		surge, unavailable := workloads.RolloutBounds(wl.GetSpec())
		available := 0
		for _, inst := range current {
			if c.available(inst.Value, w) {
				available++
			}
		}
		gone, n := rollingStep(want, surge, unavailable, len(current), available, old, wl.GetSpec(), w)
		remove, create = append(remove, gone...), n
	}
	return remove, create
}

// removalRank orders instances for scale-down: unplaced first, then not
// ready, then ready; within a class the newest goes first.
func removalRank(inst *v1.Instance, w *world) (class int, created int64) {
	switch {
	case inst.GetNode() == "":
		return 0, inst.GetCreatedUnixNano()
	case !isReady(inst, w.statuses[inst.GetId()], w.alive):
		return 1, inst.GetCreatedUnixNano()
	}
	return 2, inst.GetCreatedUnixNano()
}

// isReady says whether an instance is doing its job: running, or (for a
// command) its last run completed.
func isReady(inst *v1.Instance, st *v1.InstanceStatus, alive map[string]bool) bool {
	return cache.IsReady(inst, st, alive[inst.GetNode()])
}

func newInstance(wl *v1.Workload) *v1.Instance {
	return &v1.Instance{
		Id:              wl.GetName() + "-" + randomSuffix(5),
		Workload:        wl.GetName(),
		Generation:      wl.GetGeneration(),
		Spec:            wl.GetSpec(),
		CreatedUnixNano: time.Now().UnixNano(),
	}
}

const suffixAlphabet = "bcdfghjklmnpqrstvwxz2456789" // no vowels: no words by accident

func randomSuffix(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = suffixAlphabet[int(b[i])%len(suffixAlphabet)]
	}
	return string(b)
}
