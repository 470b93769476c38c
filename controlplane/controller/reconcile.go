package controller

import (
	"context"
	"crypto/rand"
	"sort"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/wasmorch/wasmorch/controlplane/cache"
	"github.com/wasmorch/wasmorch/controlplane/scheduler"
	"github.com/wasmorch/wasmorch/controlplane/store"
	"github.com/wasmorch/wasmorch/controlplane/workloads"
	"github.com/wasmorch/wasmorch/internal/volumes"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

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
	// terminating counts the instances marked terminating that still run
	// on a ready node (terminate.go): a rolling update counts them
	// against max surge.
	terminating int

	// slotsHeld are the replica slots of the current generation's
	// instances, for a workload with per-instance volumes (state):
	// rollingStep stops the old instance of a slot that has its
	// replacement first.
	slotsHeld map[int32]bool

	// loads are the gateways' load reports of the workload, if it is a
	// function (rollouts: its requests by generation).
	loads map[string][]*v1.FunctionLoad
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
			// Its workload was deleted: it goes, once stopped (terminate.go).
			if inst.Value.GetLostUnixNano() != 0 {
				remove(inst)
			} else if err := retire(inst, w, mark, remove); err != nil {
				return nil, err
			}
		}
		delete(c.readySince, name)
		delete(c.unhealthy, name)
		delete(c.rollbackRefused, name)
		c.unhealthyWorkloads.Delete(name)
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
		if c.terminating(w.instances[i], w, remove) {
			continue
		}
		if lost, err := c.lostOrGone(&w.instances[i], w, mark, remove); err != nil {
			return nil, err
		} else if !lost {
			live = append(live, w.instances[i])
		}
	}
	// edge: an instance its node cannot run at all is replaced on another
	// node, which its generation keeps to (unfit.go).
	live, err := c.unfitInstances(wl, live, w, g, mark, remove)
	if err != nil {
		return nil, err
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
	c.noteRolloutStep(wl.Value, live, toRemove, toCreate) // rollouts
	for _, inst := range toRemove {
		if err := retire(inst, w, mark, remove); err != nil {
			return nil, err
		}
	}
	created := make([]*v1.Instance, 0, toCreate)
	taken := make(map[string]bool, len(w.instances)+toCreate)
	for _, inst := range w.instances {
		taken[inst.Name] = true
	}
	for _, slot := range slotsFor(wl.Value, live, toRemove, w, toCreate) {
		inst := newInstance(wl.Value, taken)
		inst.Ordinal = slot // state: its replica slot, and with it its per-instance volumes
		taken[inst.GetId()] = true
		created = append(created, inst)
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
	var n cache.Node
	var exists bool
	var workloads map[string]bool
	c.cache.Read(func(r cache.Reader) { n, exists = r.Node(name) })
	if c.nodes == nil {
		c.nodes = map[string]nodeSeen{}
	}
	prev, known := c.nodes[name]
	cur := nodeSeen{alive: n.Alive, draining: n.Value.GetDraining(), cordoned: n.Value.GetCordoned(),
		diskPressure: scheduler.DiskPressure(n.Value), modRev: n.ModRevision}
	if exists {
		c.nodes[name] = cur
	} else {
		delete(c.nodes, name)
	}
	c.nodeTransition(name, known, prev.alive, exists, cur.alive)
	// The workloads with instances on it, when it came or went, or
	// started or stopped draining; not when it only registered again (a
	// worker reconnecting rewrites its record): with workloads spread
	// over every node, that would cost the cluster.
	if known && (!exists || prev.alive != cur.alive || prev.draining != cur.draining) || !known && exists && !cur.alive {
		c.cache.Read(func(r cache.Reader) {
			insts := r.InstancesOn(name)
			workloads = make(map[string]bool, len(insts))
			for _, e := range insts {
				workloads[e.Value.GetWorkload()] = true
			}
		})
		for w := range workloads {
			c.queue.Add(keyWorkload + w)
		}
	}
	// Room for pending instances: a node that can take instances and could
	// not before, or whose record changed (capacity, labels, runtimes). Not
	// one that just came under disk pressure: it takes nothing new.
	if exists && cur.alive && !cur.cordoned && !cur.diskPressure && (!known || !prev.alive || prev.cordoned || prev.modRev != cur.modRev) {
		c.queue.Add(keyPending)
	}
}

// nodeSeen is what the controller last saw of a node: what, when it
// changes, concerns the workloads on it (liveness, drain) or pending
// instances (room).
type nodeSeen struct {
	alive, draining, cordoned, diskPressure bool
	modRev                                  int64
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
	perInstance := volumes.PerInstance(wl.GetSpec())
	if len(current) > want {
		// Scale down: drop the ones that help least first; with
		// per-instance volumes (state), the highest replica slots, as a
		// StatefulSet does, so that the slots kept are 0..want-1.
		sort.SliceStable(current, func(i, j int) bool {
			if perInstance {
				return current[i].Value.GetOrdinal() > current[j].Value.GetOrdinal()
			}
			ci, ti := removalRank(current[i].Value, w)
			cj, tj := removalRank(current[j].Value, w)
			return ci < cj || ci == cj && ti > tj
		})
		remove = append(remove, current[:len(current)-want]...)
		current = current[len(current)-want:]
	}
	create = want - len(current)
	if perInstance {
		w.slotsHeld = make(map[int32]bool, len(current))
		for _, inst := range current {
			w.slotsHeld[inst.Value.GetOrdinal()] = true
		}
	}
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

// slotsFor chooses the replica slots (Instance.ordinal) of n instances a
// pass creates for wl: first the lowest slots below the replica count
// that no instance still running holds (the slot of a lost instance, or
// of an old one a rolling update stopped), then the lowest that no
// instance of the current generation holds (the replacement of an old
// instance still running, or of one evicted from a draining node, takes
// its slot). An instance keeps its slot for life, so a slot's
// per-instance volumes follow it from instance to instance (state).
func slotsFor(wl *v1.Workload, live, removed []store.Versioned[*v1.Instance], w *world, n int) []int32 {
	if n <= 0 {
		return nil
	}
	going := make(map[string]bool, len(removed))
	for _, inst := range removed {
		going[inst.Name] = true
	}
	current, other := map[int32]bool{}, map[int32]bool{}
	for _, inst := range live {
		if going[inst.Name] {
			continue
		}
		if inst.Value.GetGeneration() == wl.GetGeneration() && !w.draining[inst.Value.GetNode()] {
			current[inst.Value.GetOrdinal()] = true
		} else {
			other[inst.Value.GetOrdinal()] = true
		}
	}
	out := make([]int32, 0, n)
	for s := int32(0); len(out) < n && s < wl.GetSpec().GetReplicas(); s++ {
		if !current[s] && !other[s] {
			out, current[s] = append(out, s), true
		}
	}
	for s := int32(0); len(out) < n; s++ {
		if !current[s] {
			out, current[s] = append(out, s), true
		}
	}
	return out
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

// newInstance makes an instance of wl's generation with an ID none in taken
// has: five random characters give 14 million IDs per workload, which
// 10,000 replicas made at once would otherwise share a few times.
func newInstance(wl *v1.Workload, taken map[string]bool) *v1.Instance {
	id := wl.GetName() + "-" + randomSuffix(5)
	for taken[id] {
		id = wl.GetName() + "-" + randomSuffix(5)
	}
	return &v1.Instance{
		Id:              id,
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
