package cloud

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/wasmorch/wasmorch/controlplane/cloud/provider"
	"github.com/wasmorch/wasmorch/controlplane/events"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// targets returns how many nodes of each group are asked for: the
// provider's target size, or a scale-up recorded in etcd by another
// leadership while it is younger than the provision timeout (this
// leadership's provider may not know of it). A record is forgotten once
// the group has as many Ready nodes, once it is too old, or, for another
// leadership's, once none of the nodes it asked for is listed by the
// provider or in the cluster: they are not coming, and the need is
// planned again at once.
func (c *Controller) targets(ctx context.Context, v view, sizes map[string]int) (map[string]int, error) {
	if err := c.loadRecords(ctx); err != nil {
		return nil, err
	}
	recs := c.recs
	out := map[string]int{}
	for name, size := range sizes {
		out[name] = size
		ready := 0
		for _, n := range v.nodes[name] {
			if n.alive {
				ready++
			}
		}
		c.cfg.Metrics.group(name, size, ready)
		if err := c.status(ctx, name, size, ready); err != nil {
			return nil, err
		}
		su, ok := recs[name]
		if !ok {
			continue
		}
		if ready >= su.Target || c.cfg.Now().Sub(time.Unix(0, su.AtUnixNano)) > c.cfg.ProvisionTimeout {
			if err := c.forget(ctx, name); err != nil {
				return nil, err
			}
			continue
		}
		if _, mine := c.mine[name]; mine {
			continue
		}
		if len(su.Nodes) > 0 && !slices.ContainsFunc(su.Nodes, func(n string) bool {
			return slices.ContainsFunc(c.listed[name], func(pn provider.Node) bool { return pn.Name == n }) ||
				slices.ContainsFunc(v.nodes[name], func(gn groupNode) bool { return gn.name == n })
		}) {
			if err := c.forget(ctx, name); err != nil {
				return nil, err
			}
			c.record(ctx, "nodegroup/"+name, "ScaleUpLost", "group %s: none of the %d nodes an earlier leader asked for (%s) exists: planning again", name, len(su.Nodes), strings.Join(su.Nodes, ", "))
			continue
		}
		out[name] = max(size, su.Target)
	}
	return out, nil
}

func (c *Controller) forget(ctx context.Context, group string) error {
	delete(c.mine, group)
	if _, err := c.cfg.KV.Txn(ctx).Then(clientv3.OpDelete(ScaleUpsPrefix + group)).Commit(); err != nil {
		return err
	}
	delete(c.recs, group)
	return nil
}

// scaleUp carries out the plan: events for the limited groups and for the
// instances no group takes, and a recorded request to the provider for
// each growth.
func (c *Controller) scaleUp(ctx context.Context, v view, targets map[string]int) error {
	groups := make([]provider.NodeGroup, len(c.groups))
	for i, g := range c.groups {
		groups[i] = g.NodeGroup
	}
	decisions, left := plan(groups, v.nodes, v.pending, targets)
	limited := map[string]bool{}
	for _, d := range decisions {
		g := c.groups[slices.IndexFunc(c.groups, func(g group) bool { return g.Name == d.group })]
		if d.limited {
			limited[d.group] = true
			c.once(ctx, "nodegroup/"+g.Name, "ScaleUpLimited", fmt.Sprintf("group %s is at its max of %d nodes; %d instances stay pending", g.Name, g.Max, d.pending))
			continue
		}
		if err := c.grow(ctx, g, d.from, d.by, d.pending); err != nil {
			return err
		}
	}
	for _, g := range c.groups {
		if !limited[g.Name] {
			c.clear("nodegroup/"+g.Name, "ScaleUpLimited")
		}
	}
	byWorkload := map[string][]*v1.Instance{}
	for _, inst := range left {
		byWorkload[inst.GetWorkload()] = append(byWorkload[inst.GetWorkload()], inst)
	}
	for wl, insts := range byWorkload {
		c.once(ctx, events.Workload(wl), "NotTriggerScaleUp", fmt.Sprintf("%d pending instances fit no node group with room left (%s)", len(insts), insts[0].GetPendingReason()))
	}
	for key := range c.said {
		object, reason, _ := strings.Cut(key, "\x00")
		if reason == "NotTriggerScaleUp" && byWorkload[strings.TrimPrefix(object, events.Workload(""))] == nil {
			delete(c.said, key)
		}
	}
	return nil
}

// grow records the scale-up in etcd, then asks the provider.
func (c *Controller) grow(ctx context.Context, g group, from, by, pending int) error {
	names := make([]string, by)
	for i := range names {
		names[i] = g.Name + "-" + suffix()
	}
	now := c.cfg.Now()
	su := scaleUp{Target: from + by, AtUnixNano: now.UnixNano(), Nodes: append(slices.Clone(c.mine[g.Name]), names...)}
	b, err := json.Marshal(su)
	if err != nil {
		return err
	}
	// With the record, when each node is asked for: a new leader measures
	// the never-joined timeout from then.
	ops := []clientv3.Op{clientv3.OpPut(ScaleUpsPrefix+g.Name, string(b))}
	asked := askedNode{Group: g.Name, AtUnixNano: now.UnixNano()}
	ab, err := json.Marshal(asked)
	if err != nil {
		return err
	}
	for _, name := range names {
		ops = append(ops, clientv3.OpPut(AskedPrefix+name, string(ab)))
	}
	// Through a transaction, which the fence holds: a deposed leader
	// records nothing and so asks for nothing.
	resp, err := c.cfg.KV.Txn(ctx).Then(ops...).Commit()
	if err != nil {
		return fmt.Errorf("recording the scale-up of group %s: %w", g.Name, err)
	}
	if !resp.Succeeded {
		return fmt.Errorf("recording the scale-up of group %s: no longer the leader", g.Name)
	}
	c.recs[g.Name] = su
	for _, name := range names {
		c.asked[name] = asked
	}
	nodes := make([]provider.NewNode, by)
	for i, name := range names {
		labels := g.NodeLabels(g.Zone)
		tok, err := c.cfg.Token(ctx, name, labels)
		if err != nil {
			_ = c.forget(ctx, g.Name)
			_ = c.unask(ctx, names)
			return fmt.Errorf("join token for node %s of group %s: %w", name, g.Name, err)
		}
		nodes[i] = provider.NewNode{Name: name, Labels: labels, Token: tok, Servers: c.cfg.Servers()}
	}
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	if err := g.p.IncreaseSize(cctx, g.Name, nodes); err != nil {
		_ = c.forget(ctx, g.Name)
		_ = c.unask(ctx, names)
		c.record(ctx, "nodegroup/"+g.Name, "FailedScaleUp", "provider %s could not grow group %s by %d: %v", g.p.Name(), g.Name, by, err)
		return fmt.Errorf("growing group %s: %w", g.Name, err)
	}
	c.mine[g.Name] = append(c.mine[g.Name], names...)
	c.cfg.Metrics.scaledUp(g.Name, by)
	c.log.Info("scaled up", "group", g.Name, "from", from, "to", from+by, "pending", pending)
	c.record(ctx, "nodegroup/"+g.Name, "ScaledUp", "group %s: %d -> %d nodes: %d instances pending for lack of a node", g.Name, from, from+by, pending)
	return nil
}
