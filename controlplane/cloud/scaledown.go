package cloud

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/wasmorch/wasmorch/controlplane/cache"
	"github.com/wasmorch/wasmorch/controlplane/cloud/provider"
	"github.com/wasmorch/wasmorch/controlplane/scheduler"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// What scale-down decides, apart from carrying it out: whether a node's
// instances can all run elsewhere (so that draining it loses nothing), and
// which nodes the provider is shutting down on its own. Pure functions
// over what the cache holds.

// movable reports whether every instance on node could be placed on the
// cluster's other nodes as the scheduler would place it now (ready,
// uncordoned, matching its runtime, arch, OS, selector and host mounts,
// with free slots, memory and CPU, counting each placement against the
// next), and if not, why. An instance that mounts a named volume lives
// with its volume on this node, and one that has finished (Succeeded,
// or Failed for good) would be run again: neither can move. Instances
// already terminating or lost are leaving anyway.
func movable(node string, nodes []cache.Node, on []cache.Instance) (bool, string) {
	var moving []*v1.Instance
	for _, e := range on {
		v := e.Value
		if v.GetTerminatingUnixNano() != 0 || v.GetLostUnixNano() != 0 {
			continue
		}
		if vols := v.GetSpec().GetVolumes(); len(vols) > 0 {
			return false, fmt.Sprintf("instance %s mounts volume %s, which lives on this node", v.GetId(), vols[0].GetName())
		}
		switch e.State {
		case v1.InstanceState_INSTANCE_STATE_SUCCEEDED, v1.InstanceState_INSTANCE_STATE_FAILED:
			return false, fmt.Sprintf("instance %s has finished: moving it would run it again", v.GetId())
		}
		c := proto.Clone(v).(*v1.Instance)
		c.Node = ""
		moving = append(moving, c)
	}
	if len(moving) == 0 {
		return true, ""
	}
	infos := make([]scheduler.NodeInfo, 0, len(nodes))
	for _, n := range nodes {
		if n.Value.GetName() != node {
			infos = append(infos, scheduler.NodeInfo{Node: n.Value, Ready: n.Alive, Used: n.Used, Ports: n.Ports})
		}
	}
	sort.Slice(moving, func(i, j int) bool { return moving[i].GetId() < moving[j].GetId() })
	plan := scheduler.Schedule(scheduler.Snapshot{Nodes: infos}, moving)
	for _, inst := range moving {
		if why, ok := plan.Unplaced[inst.GetId()]; ok {
			return false, fmt.Sprintf("instance %s could not run elsewhere: %s", inst.GetId(), why)
		}
	}
	return true, ""
}

// shuttingDown returns the nodes of a group that its provider lists as
// Deleting though the controller did not delete them (a cloud reclaiming
// a spot machine, an operator deleting it in the cloud's console), that
// are still Ready and not yet draining: they are to be cordoned and
// drained before they go.
func shuttingDown(listed []provider.Node, nodes []groupNode, deleting map[string]bool) []string {
	var out []string
	for _, pn := range listed {
		if pn.State != provider.Deleting || deleting[pn.Name] {
			continue
		}
		if i := slices.IndexFunc(nodes, func(n groupNode) bool { return n.name == pn.Name }); i >= 0 && nodes[i].alive && !nodes[i].draining {
			out = append(out, pn.Name)
		}
	}
	return out
}

// scaleDown deletes the nodes of g that have held nothing but what could
// run elsewhere for the delay, down to the group's min: an empty one at
// once, one that holds instances (at most half what it takes, as
// cluster-autoscaler's utilization threshold: a fuller node is not worth
// the moves, and it bounds the checks) after a drain (one node at a time
// in the cluster, and only while no instance waits for room and no node
// of the group is on its way: its room may be what they need). A drain that has
// not emptied the node within the drain timeout is given up: the node is
// uncordoned and kept.
func (c *Controller) scaleDown(ctx context.Context, g group, nodes []groupNode, size int, waiting bool, target int) error {
	now := c.cfg.Now()
	ready := 0
	for _, n := range nodes {
		if n.alive {
			ready++
		}
	}
	for _, n := range nodes {
		began, ok := c.draining[n.name]
		switch {
		case !ok:
		case !n.alive:
			delete(c.draining, n.name) // the heartbeat grace or the provider's listing takes it from here
		case n.instances == 0:
			if err := c.deleteNode(ctx, g, n, "drained"); err != nil {
				return err
			}
			size--
		case now.Sub(began) > c.cfg.DrainTimeout:
			delete(c.draining, n.name)
			if err := c.cfg.SetCordoned(ctx, n.name, false); err != nil {
				return fmt.Errorf("uncordoning node %s, whose drain did not finish: %w", n.name, err)
			}
			c.record(ctx, "nodegroup/"+g.Name, "FailedScaleDown", "group %s: node %s still held %d instances %s after its drain began: uncordoned and kept", g.Name, n.name, n.instances, c.cfg.DrainTimeout)
		default:
			c.wakeAt(began.Add(c.cfg.DrainTimeout))
		}
	}
	for _, n := range nodes {
		if _, ok := c.draining[n.name]; ok {
			continue
		}
		candidate, why := n.alive && n.instances == 0, ""
		if n.alive && n.instances > 0 && 2*n.instances <= g.Template.Instances && !n.cordoned && !waiting && target <= ready {
			candidate, why = c.movable(n.name, now)
		}
		if !candidate {
			delete(c.since, n.name)
			if why != "" {
				c.log.Debug("node kept", "node", n.name, "why", why)
			}
			continue
		}
		since, ok := c.since[n.name]
		if !ok {
			since = now
			c.since[n.name] = now
		}
		if size <= g.Min {
			continue
		}
		if due := since.Add(c.cfg.ScaleDownDelay); now.Before(due) {
			c.wakeAt(due)
			continue
		}
		if n.instances == 0 {
			if err := c.deleteEmpty(ctx, g, n); err != nil {
				return err
			}
			size--
			continue
		}
		if len(c.draining) > 0 {
			continue // one drain at a time
		}
		if err := c.drain(ctx, g, n); err != nil {
			return err
		}
		size--
	}
	return nil
}

// checkEvery is how long a node's positive movable check holds while the
// cluster changes: a check reads every node, so that a pass woken by each
// change does not repeat it (the drain checks afresh anyway).
const checkEvery = time.Second

// movable is the movable check of node's instances against the cache:
// made again once the cache has changed since, but a positive one only
// once per checkEvery.
func (c *Controller) movable(node string, now time.Time) (bool, string) {
	rev := c.cfg.Cache.Rev()
	if ch, ok := c.checked[node]; ok && (ch.rev == rev || ch.ok && now.Sub(ch.at) < checkEvery) {
		return ch.ok, ch.why
	}
	var ok bool
	var why string
	c.cfg.Cache.Read(func(r cache.Reader) {
		if c.passNodes == nil {
			c.passNodes = r.Nodes()
		}
		ok, why = movable(node, c.passNodes, r.InstancesOn(node))
	})
	c.checked[node] = check{at: now, rev: rev, ok: ok, why: why}
	return ok, why
}

// drain starts moving a node's instances away to delete it, once a fresh
// look says they can all still run elsewhere.
func (c *Controller) drain(ctx context.Context, g group, n groupNode) error {
	if err := c.cfg.Cache.Sync(ctx); err != nil {
		return err
	}
	delete(c.checked, n.name)
	c.passNodes = nil
	ok, why := c.movable(n.name, c.cfg.Now())
	if !ok {
		delete(c.since, n.name)
		c.log.Debug("node kept", "node", n.name, "why", why)
		return nil
	}
	if err := c.cfg.Drain(ctx, n.name); err != nil {
		return fmt.Errorf("draining node %s to delete it: %w", n.name, err)
	}
	c.draining[n.name] = c.cfg.Now()
	c.log.Info("scaling down: draining node", "group", g.Name, "node", n.name, "instances", n.instances)
	c.record(ctx, "nodegroup/"+g.Name, "ScaleDown", "group %s: draining node %s to delete it: its %d instances can run on other nodes and have for %s", g.Name, n.name, n.instances, c.cfg.ScaleDownDelay)
	return nil
}

// deleteEmpty cordons the node, checks that it is still empty (the
// scheduler may have placed something meanwhile), has the provider delete
// it and removes it.
func (c *Controller) deleteEmpty(ctx context.Context, g group, n groupNode) error {
	if err := c.cfg.SetCordoned(ctx, n.name, true); err != nil {
		return fmt.Errorf("cordoning node %s to delete it: %w", n.name, err)
	}
	return c.deleteNode(ctx, g, n, "idle")
}

// deleteNode deletes a cordoned node once the cache, synced, says it holds
// nothing (else it is uncordoned and kept, unless it is draining): its
// provider deletes it, then it is removed from the cluster.
func (c *Controller) deleteNode(ctx context.Context, g group, n groupNode, reason string) error {
	if err := c.cfg.Cache.Sync(ctx); err != nil {
		return err
	}
	if cur, ok := c.cfg.Cache.Node(n.name); !ok || cur.Used.Instances > 0 {
		if ok && reason == "idle" {
			return c.cfg.SetCordoned(ctx, n.name, false)
		}
		return nil
	}
	c.deleting[n.name] = true
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	if err := g.p.DeleteNodes(cctx, g.Name, []string{n.name}); err != nil {
		delete(c.deleting, n.name)
		c.record(ctx, "nodegroup/"+g.Name, "FailedScaleDown", "provider %s could not delete node %s: %v", g.p.Name(), n.name, err)
		return fmt.Errorf("deleting node %s: %w", n.name, err)
	}
	if _, err := c.cfg.RemoveNode(ctx, n.name); err != nil {
		return fmt.Errorf("removing deleted node %s: %w", n.name, err)
	}
	c.forgetNode(n.name)
	c.cfg.Metrics.removed(g.Name, reason)
	c.log.Info("scaled down", "group", g.Name, "node", n.name, "reason", reason)
	if reason == "drained" {
		c.record(ctx, "nodegroup/"+g.Name, "ScaledDown", "group %s: node %s deleted: its instances moved to other nodes", g.Name, n.name)
	} else {
		c.record(ctx, "nodegroup/"+g.Name, "ScaledDown", "group %s: node %s deleted: it held no instance for %s", g.Name, n.name, c.cfg.ScaleDownDelay)
	}
	return nil
}

// forgetNode drops what the controller keeps of a node that is gone.
func (c *Controller) forgetNode(name string) {
	delete(c.since, name)
	delete(c.draining, name)
	delete(c.checked, name)
}
