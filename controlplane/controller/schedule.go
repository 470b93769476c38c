package controller

import (
	"context"
	"sort"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"

	"github.com/wasmorch/wasmorch/controlplane/cache"
	"github.com/wasmorch/wasmorch/controlplane/scheduler"
	"github.com/wasmorch/wasmorch/controlplane/store"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// schedule places the instances a round created and those already stored
// that wait for a node — of the workloads the round reconciled, or of
// every workload when all is set (capacity may have appeared) — and
// records why the rest wait. The scheduler decides on a snapshot of the
// nodes with what their instances reserve (kept by the cache), and the
// placements of only the workloads being placed: the cost is the nodes
// and those workloads, not the cluster. New instances are written once,
// already bound where they fit; stored ones are bound with
// compare-and-swap on the record as read.
func (c *controller) schedule(ctx context.Context, created []*v1.Instance, workloads map[string]bool, all bool) error {
	var pending []store.Versioned[*v1.Instance]
	snap := scheduler.Snapshot{Placed: map[string][]string{}}
	c.cache.Read(func(r cache.Reader) {
		add := func(e cache.Instance) {
			if e.Value.GetNode() != "" {
				return
			}
			if _, ok := r.Workload(e.Value.GetWorkload()); !ok {
				return // its workload is gone: its reconcile removes it
			}
			pending = append(pending, store.Versioned[*v1.Instance]{Name: e.Value.GetId(), Value: e.Value, ModRevision: e.ModRevision})
		}
		if all {
			for _, e := range r.Pending() {
				add(e)
			}
		} else {
			for w := range workloads {
				for _, e := range r.InstancesOf(w) {
					add(e)
				}
			}
		}
		if len(pending) == 0 && len(created) == 0 {
			return
		}
		draining := map[string]bool{}
		for _, n := range r.Nodes() {
			snap.Nodes = append(snap.Nodes, scheduler.NodeInfo{Node: n.Value, Ready: n.Alive, Used: n.Used, Ports: n.Ports})
			if n.Value.GetDraining() {
				draining[n.Value.GetName()] = true
			}
		}
		placing := map[string]bool{}
		for _, p := range pending {
			placing[p.Value.GetWorkload()] = true
		}
		for _, inst := range created {
			placing[inst.GetWorkload()] = true
		}
		// edge: the nodes each workload's generation could not run on
		// (unfit.go).
		now := time.Now()
		for w := range placing {
			if cw, ok := r.Workload(w); ok {
				if a := unfitFor(cw.Value, now); a != nil {
					if snap.Avoid == nil {
						snap.Avoid = map[string]*scheduler.Avoid{}
					}
					snap.Avoid[w] = a
				}
			}
		}
		// Lost, terminating and evicted instances are leaving: they do
		// not count for spreading.
		for w := range placing {
			for _, e := range r.InstancesOf(w) {
				if n := e.Value.GetNode(); n != "" && e.Value.GetLostUnixNano() == 0 && e.Value.GetTerminatingUnixNano() == 0 && !draining[n] {
					snap.Placed[w] = append(snap.Placed[w], n)
				}
			}
		}
	})
	if len(pending) == 0 && len(created) == 0 {
		return nil
	}
	sort.Slice(pending, func(i, j int) bool {
		return pending[i].Value.GetCreatedUnixNano() < pending[j].Value.GetCreatedUnixNano()
	})
	values := make([]*v1.Instance, 0, len(pending)+len(created))
	for _, p := range pending {
		values = append(values, p.Value)
	}
	values = append(values, created...)
	vols, err := c.readVolumes(ctx, values, &snap) // volumes.go
	if err != nil {
		return err
	}
	began := time.Now()
	plan := scheduler.Schedule(snap, values)
	c.metrics.observePlan(time.Since(began), len(plan.Bindings), len(plan.Unplaced))
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
			updated = proto.Clone(inst).(*v1.Instance) // the cache's copy is shared
		}
		if node, ok := plan.Bindings[inst.GetId()]; ok {
			updated.Node, updated.PendingReason = node, ""
			if c, ok := plan.Runtimes[inst.GetId()]; ok {
				updated.Runtime, updated.RuntimeReason = c.Runtime, c.Reason
			}
			count(bound, inst.GetWorkload(), node)
			var err error
			if cmps, ops, err = vols.bind(c.st, updated, plan, cmps, ops); err != nil {
				return err
			}
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
	lostRace, rev, err := c.txn(ctx, cmps, ops)
	c.written = max(c.written, rev)
	if err != nil {
		return err
	}
	if lostRace {
		// Some placements were not written: place again once the cache
		// shows what changed them.
		c.queue.AddAfter(keyPending, retryDelay)
		for w := range workloads {
			c.queue.AddAfter(keyWorkload+w, retryDelay)
		}
		return nil
	}
	c.schedulingEvents(bound, failed)
	c.flushEvents(ctx, true)
	if len(plan.Bindings) > 0 {
		c.log.Debug("scheduled", "bound", len(plan.Bindings), "unplaced", len(plan.Unplaced))
	}
	return nil
}
