package controlplane

import (
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"

	"github.com/wasmorch/wasmorch/controlplane/gateway"
	"github.com/wasmorch/wasmorch/controlplane/scheduler"
	"github.com/wasmorch/wasmorch/controlplane/store"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// controller is the level-based workload controller and the scheduler's
// plumbing. It runs only on the elected leader. Every pass reads the whole
// state, computes what differs from the specs, and writes the difference
// with compare-and-swap; a pass that loses a race is simply repeated, so a
// missed event is never fatal.
type controller struct {
	st *store.Store
	// kv is what the controller writes through: the store's client fenced
	// on this member's leadership (fencedKV), so that a deposed leader
	// writes nothing.
	kv      clientv3.KV
	log     *slog.Logger
	alive   func(ctx context.Context) (map[string]bool, error)
	resync  time.Duration
	metrics *metrics
	events  *events

	ready         map[string]bool // node readiness seen by the last pass, for events
	pendingEvents []*v1.Event     // queued by a pass, recorded at its end

	// rollouts: minReady is how long a new generation's instance must
	// have been running before it counts as available in a rolling
	// update; readySince is when this controller first saw each one
	// running (its own clock: no skew with workers); wake is the earliest
	// time an instance becomes available, when a pass must look again.
	minReady   time.Duration
	readySince map[string]readyMark
	wake       time.Time
	// rollouts: automatic rollback (0 disables each) and the history
	// limit of the revisions it writes.
	failureRestarts  int
	progressDeadline time.Duration
	maxErrorPercent  int
	revisionLimit    int
	// unhealthy holds the function replicas last seen failing their
	// health checks, for events on a change (healthTransitions).
	unhealthy map[string]bool
}

// world is one consistent read of everything the controller looks at.
type world struct {
	workloads map[string]store.Versioned[*v1.Workload]
	instances []store.Versioned[*v1.Instance]
	statuses  map[string]*v1.InstanceStatus
	nodes     []store.Versioned[*v1.Node]
	alive     map[string]bool
	rev       int64

	nodeByName map[string]*v1.Node
	draining   map[string]bool // nodes being drained

	// loads are the gateways' load reports, read only when a function is
	// being rolled out (rollouts: its requests by generation).
	loads map[string][]*v1.FunctionLoad
}

// Start runs passes whenever the state changes, until ctx is done.
func (c *controller) Start(ctx context.Context) error {
	wch := c.st.Client.Watch(clientv3.WithRequireLeader(ctx), store.Root, clientv3.WithPrefix())
	kick := make(chan struct{}, 1)
	go func() {
		for resp := range wch {
			for _, ev := range resp.Events {
				if ignoredByController(ev.Kv.Key) {
					continue
				}
				select {
				case kick <- struct{}{}:
				default:
				}
				break
			}
		}
	}()
	ticker := time.NewTicker(c.resync)
	defer ticker.Stop()
	for {
		if err := c.pass(ctx); err != nil && ctx.Err() == nil {
			c.log.Warn("controller pass failed; retrying", "err", err)
			select {
			case <-time.After(200 * time.Millisecond):
			case <-ctx.Done():
			}
		}
		var wake <-chan time.Time // rollouts: an instance becomes available
		if !c.wake.IsZero() {
			wake = time.After(time.Until(c.wake))
		}
		select {
		case <-ctx.Done():
			return nil
		case <-wake:
		case <-kick:
			// Let a burst of writes settle into one pass.
			select {
			case <-time.After(2 * time.Millisecond):
			case <-ctx.Done():
				return nil
			}
		case <-ticker.C:
		}
	}
}

// ignoredByController says whether a change under key cannot affect a pass:
// blobs, events (which passes themselves write) and the election.
func ignoredByController(key []byte) bool {
	k := string(key)
	return strings.HasPrefix(k, store.BlobsPrefix) || strings.HasPrefix(k, store.EventsPrefix) || strings.HasPrefix(k, store.ElectionPrefix) ||
		strings.HasPrefix(k, gateway.LoadPrefix)
}

func (c *controller) read(ctx context.Context) (*world, error) {
	w := &world{workloads: map[string]store.Versioned[*v1.Workload]{}, statuses: map[string]*v1.InstanceStatus{}}
	wls, rev, err := c.st.Workloads.List(ctx)
	if err != nil {
		return nil, err
	}
	w.rev = rev
	for _, wl := range wls {
		w.workloads[wl.Name] = wl
	}
	if w.instances, _, err = c.st.Instances.List(ctx); err != nil {
		return nil, err
	}
	sts, _, err := c.st.Statuses.List(ctx)
	if err != nil {
		return nil, err
	}
	for _, s := range sts {
		w.statuses[s.Name] = s.Value
	}
	if w.nodes, _, err = c.st.Nodes.List(ctx); err != nil {
		return nil, err
	}
	if w.alive, err = c.alive(ctx); err != nil {
		return nil, err
	}
	w.nodeByName, w.draining = make(map[string]*v1.Node, len(w.nodes)), map[string]bool{}
	for _, n := range w.nodes {
		w.nodeByName[n.Name] = n.Value
		if n.Value.GetDraining() {
			w.draining[n.Name] = true
		}
	}
	return w, nil
}

// pass is one reconciliation of every workload, then one scheduling pass.
func (c *controller) pass(ctx context.Context) (err error) {
	c.metrics.passes.Inc()
	w, err := c.read(ctx)
	if err != nil {
		return err
	}
	defer func() { c.flushEvents(context.WithoutCancel(ctx), err == nil) }()
	c.forgetReadySince(w) // rollouts
	c.nodeTransitions(w)
	c.healthTransitions(w) // rollouts
	var cmps []clientv3.Cmp
	var ops []clientv3.Op
	remove := func(inst store.Versioned[*v1.Instance]) {
		cmps = append(cmps, c.st.Instances.Unchanged(inst.Name, inst.ModRevision))
		ops = append(ops, c.st.Instances.DeleteOp(inst.Name)) // its status goes on the next pass
	}
	mark := func(inst store.Versioned[*v1.Instance], updated *v1.Instance) error {
		op, err := c.st.Instances.PutOp(inst.Name, updated)
		if err != nil {
			return err
		}
		cmps, ops = append(cmps, c.st.Instances.Unchanged(inst.Name, inst.ModRevision)), append(ops, op)
		return nil
	}
	byWorkload := map[string][]store.Versioned[*v1.Instance]{}
	for i := range w.instances {
		inst := w.instances[i]
		if _, ok := w.workloads[inst.Value.GetWorkload()]; !ok {
			remove(inst) // its workload was deleted
			continue
		}
		if lost, err := c.lostOrGone(&w.instances[i], w, mark, remove); err != nil {
			return err
		} else if lost {
			continue
		}
		byWorkload[inst.Value.GetWorkload()] = append(byWorkload[inst.Value.GetWorkload()], inst)
	}
	var created []*v1.Instance
	for name, wl := range w.workloads {
		// rollouts: a failed rollout goes back to the previous revision;
		// the next pass rolls the new generation.
		if rolled, err := c.autoRollback(ctx, wl, byWorkload[name], w); err != nil {
			return err
		} else if rolled {
			continue
		}
		if promoted, err := c.canaryPromotion(ctx, wl, byWorkload[name], w); err != nil { // canary.go
			return err
		} else if promoted {
			continue
		}
		toRemove, toCreate := c.diff(wl.Value, byWorkload[name], w)
		for _, inst := range toRemove {
			remove(inst)
		}
		for i := 0; i < toCreate; i++ {
			created = append(created, newInstance(wl.Value))
		}
	}
	// Statuses whose instance is gone (a report that raced a deletion).
	live := make(map[string]bool, len(w.instances))
	for _, inst := range w.instances {
		live[inst.Name] = true
	}
	var cleanups []clientv3.Op
	for id := range w.statuses {
		if !live[id] {
			cleanups = append(cleanups, c.st.Statuses.DeleteOp(id))
		}
	}
	failedBatches, err := store.Txn(ctx, c.kv, cmps, ops)
	if err != nil {
		return err
	}
	if _, err := store.Txn(ctx, c.kv, nil, cleanups); err != nil {
		return err
	}
	c.flushEvents(ctx, failedBatches == 0) // lost instances, now marked
	if len(ops) > 0 || len(created) > 0 {
		c.log.Debug("reconciled", "removed", len(ops), "created", len(created))
	}
	// New instances are scheduled before they are first written, so that a
	// deploy costs one pass, not two.
	return c.schedule(ctx, w, created)
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
		surge, unavailable := RolloutBounds(wl.GetSpec())
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
	if inst.GetNode() == "" || inst.GetLostUnixNano() != 0 || !alive[inst.GetNode()] || st == nil || st.GetNode() != inst.GetNode() {
		return false
	}
	s := st.GetState()
	return s == v1.InstanceState_INSTANCE_STATE_RUNNING && !st.GetUnhealthy() || s == v1.InstanceState_INSTANCE_STATE_SUCCEEDED
}

// EffectiveState is the state users see: Pending and Scheduled until the
// worker reports, Lost while the node is not ready.
func EffectiveState(inst *v1.Instance, st *v1.InstanceStatus, alive map[string]bool) v1.InstanceState {
	switch {
	case inst.GetNode() == "":
		return v1.InstanceState_INSTANCE_STATE_PENDING
	case !alive[inst.GetNode()] || inst.GetLostUnixNano() != 0:
		return v1.InstanceState_INSTANCE_STATE_LOST
	case st == nil || st.GetNode() != inst.GetNode():
		return v1.InstanceState_INSTANCE_STATE_SCHEDULED
	}
	return st.GetState()
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

// schedule binds pending instances (unbound ones already stored, and
// created ones not yet written) to nodes, and records why the rest wait.
func (c *controller) schedule(ctx context.Context, w *world, created []*v1.Instance) error {
	var pending []store.Versioned[*v1.Instance]
	snap := scheduler.Snapshot{}
	for _, inst := range w.instances {
		if _, ok := w.workloads[inst.Value.GetWorkload()]; !ok {
			continue
		}
		switch {
		case inst.Value.GetNode() == "":
			pending = append(pending, inst)
		case inst.Value.GetLostUnixNano() == 0 && !w.draining[inst.Value.GetNode()]:
			// Lost and evicted instances are leaving: they neither hold
			// capacity nor count for spreading.
			snap.Placed = append(snap.Placed, inst.Value)
		}
	}
	if len(pending) == 0 && len(created) == 0 {
		return nil
	}
	for _, n := range w.nodes {
		snap.Nodes = append(snap.Nodes, scheduler.NodeInfo{Node: n.Value, Ready: w.alive[n.Name]})
	}
	sort.Slice(pending, func(i, j int) bool {
		return pending[i].Value.GetCreatedUnixNano() < pending[j].Value.GetCreatedUnixNano()
	})
	values := make([]*v1.Instance, 0, len(pending)+len(created))
	for _, p := range pending {
		values = append(values, p.Value)
	}
	values = append(values, created...)
	plan := scheduler.Schedule(snap, values)
	var cmps []clientv3.Cmp
	var ops []clientv3.Op
	bound, failed := map[string]map[string]int{}, map[string]map[string]int{}
	count := func(m map[string]map[string]int, workload, key string) {
		if m[workload] == nil {
			m[workload] = map[string]int{}
		}
		m[workload][key]++
	}
	apply := func(inst *v1.Instance, guard clientv3.Cmp, isNew bool) error {
		updated := inst
		if !isNew {
			updated = proto.Clone(inst).(*v1.Instance)
		}
		if node, ok := plan.Bindings[inst.GetId()]; ok {
			updated.Node, updated.PendingReason = node, ""
			if c, ok := plan.Runtimes[inst.GetId()]; ok {
				updated.Runtime, updated.RuntimeReason = c.Runtime, c.Reason
			}
			count(bound, inst.GetWorkload(), node)
		} else if reason := plan.Unplaced[inst.GetId()]; isNew || reason != inst.GetPendingReason() {
			updated.PendingReason = reason
			count(failed, inst.GetWorkload(), reason)
		} else {
			return nil
		}
		op, err := c.st.Instances.PutOp(inst.GetId(), updated)
		if err != nil {
			return err
		}
		cmps, ops = append(cmps, guard), append(ops, op)
		return nil
	}
	for _, p := range pending {
		if err := apply(p.Value, c.st.Instances.Unchanged(p.Name, p.ModRevision), false); err != nil {
			return err
		}
	}
	for _, inst := range created {
		guard := clientv3.Compare(clientv3.CreateRevision(c.st.Instances.Key(inst.GetId())), "=", 0)
		if err := apply(inst, guard, true); err != nil {
			return err
		}
	}
	lostRaces, err := store.Txn(ctx, c.kv, cmps, ops)
	if err != nil {
		return err
	}
	if lostRaces > 0 {
		return fmt.Errorf("%d scheduling batches lost a race; will retry", lostRaces)
	}
	c.schedulingEvents(bound, failed)
	if len(plan.Bindings) > 0 {
		c.log.Debug("scheduled", "bound", len(plan.Bindings), "unplaced", len(plan.Unplaced))
	}
	return nil
}
