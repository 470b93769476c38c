package cloud

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/wasmorch/wasmorch/controlplane/cloud/provider"
)

// lifecycle removes the nodes of g its provider no longer lists, and
// returns the group's target size. A provider that does not answer
// removes nothing.
func (c *Controller) lifecycle(ctx context.Context, g group, nodes []groupNode) (int, error) {
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	listed, err := g.p.Nodes(cctx, g.Name)
	if err == nil {
		var size int
		size, err = g.p.TargetSize(cctx, g.Name)
		if err == nil {
			c.clear("nodegroup/"+g.Name, "ProviderError")
			c.listed[g.Name] = listed
			exists := map[string]bool{}
			for _, n := range listed {
				exists[n.Name] = true
			}
			for _, n := range nodes {
				if exists[n.name] {
					continue
				}
				lost, err := c.cfg.RemoveNode(ctx, n.name)
				if err != nil {
					return 0, fmt.Errorf("removing node %s, which provider %s no longer lists: %w", n.name, g.p.Name(), err)
				}
				c.forgetNode(n.name)
				c.cfg.Metrics.removed(g.Name, "gone")
				c.record(ctx, "node/"+n.name, "NodeDeleted", "node %s removed: provider %s says it no longer exists (group %s); its %d instances are replaced", n.name, g.p.Name(), g.Name, lost)
			}
			for name := range c.deleting {
				if !exists[name] {
					delete(c.deleting, name)
				}
			}
			if err := c.shutdowns(ctx, g, listed, nodes); err != nil {
				return 0, err
			}
			if size, err = c.unjoinedNodes(ctx, g, listed, nodes, size); err != nil {
				return 0, err
			}
			if err := c.providerIDs(ctx, listed, nodes); err != nil {
				return 0, err
			}
			return size, nil
		}
	}
	c.cfg.Metrics.providerError(g.p.Name())
	c.once(ctx, "nodegroup/"+g.Name, "ProviderError", fmt.Sprintf("provider %s did not answer for group %s: %v; retrying", g.p.Name(), g.Name, err))
	return 0, fmt.Errorf("group %s: %w", g.Name, err)
}

// shutdowns cordons and drains the nodes of g its provider is shutting
// down on its own, so that their instances are replaced before they go.
func (c *Controller) shutdowns(ctx context.Context, g group, listed []provider.Node, nodes []groupNode) error {
	for _, name := range shuttingDown(listed, nodes, c.deleting) {
		if err := c.cfg.Drain(ctx, name); err != nil {
			return fmt.Errorf("draining node %s, which provider %s is shutting down: %w", name, g.p.Name(), err)
		}
		c.record(ctx, "node/"+name, "NodeShuttingDown", "provider %s is shutting node %s down (group %s): cordoned and drained, its instances replaced elsewhere", g.p.Name(), name, g.Name)
	}
	return nil
}

// providerIDs labels each joined node with its provider id
// (provider.LabelProviderID), once it differs from what the node has.
func (c *Controller) providerIDs(ctx context.Context, listed []provider.Node, nodes []groupNode) error {
	for _, pn := range listed {
		id := provider.ProviderIDLabel(pn.ProviderID)
		if id == "" {
			continue
		}
		i := slices.IndexFunc(nodes, func(n groupNode) bool { return n.name == pn.Name })
		if i < 0 || nodes[i].labels[provider.LabelProviderID] == id {
			continue
		}
		if err := c.cfg.LabelNode(ctx, pn.Name, map[string]string{provider.LabelProviderID: id}); err != nil {
			return fmt.Errorf("labelling node %s with its provider id: %w", pn.Name, err)
		}
	}
	return nil
}

// unjoinedNodes deletes, through their provider, the nodes it lists that
// have not joined the cluster within the provision timeout (a machine
// that never booted, an agent that cannot reach the servers), so that the
// need they were asked for is planned again at once: the group's scale-up
// record is forgotten. The timeout runs from when the node was asked for,
// as recorded in etcd with the scale-up (so a new leader does not start it
// anew), or, for a node the controller did not ask for, from when this
// leadership first saw it. It returns the group's target size after.
func (c *Controller) unjoinedNodes(ctx context.Context, g group, listed []provider.Node, nodes []groupNode, size int) (int, error) {
	now := c.cfg.Now()
	joinedSet, listedSet := map[string]bool{}, map[string]bool{}
	for _, n := range nodes {
		joinedSet[n.name] = true
	}
	for _, pn := range listed {
		listedSet[pn.Name] = true
	}
	if err := c.sweepAsked(ctx, g.Name, listedSet, joinedSet); err != nil {
		return size, err
	}
	for _, pn := range listed {
		if joinedSet[pn.Name] || pn.State == provider.Deleting || c.deleting[pn.Name] {
			delete(c.unjoined, pn.Name)
			continue
		}
		first, ok := c.unjoined[pn.Name]
		if !ok {
			first = now
			if a, asked := c.asked[pn.Name]; asked && a.Group == g.Name {
				first = time.Unix(0, a.AtUnixNano)
			}
			c.unjoined[pn.Name] = first
		}
		if due := first.Add(c.cfg.ProvisionTimeout); now.Before(due) {
			c.wakeAt(due)
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, callTimeout)
		err := g.p.DeleteNodes(cctx, g.Name, []string{pn.Name})
		cancel()
		if err != nil {
			c.cfg.Metrics.providerError(g.p.Name())
			c.once(ctx, "nodegroup/"+g.Name, "ProviderError", fmt.Sprintf("provider %s could not delete node %s, which never joined: %v; retrying", g.p.Name(), pn.Name, err))
			continue
		}
		delete(c.unjoined, pn.Name)
		c.deleting[pn.Name] = true
		size = max(0, size-1)
		if err := c.forget(ctx, g.Name); err != nil {
			return size, err
		}
		if err := c.unask(ctx, []string{pn.Name}); err != nil {
			return size, err
		}
		c.cfg.Metrics.removed(g.Name, "unjoined")
		c.log.Warn("deleted a node that never joined", "group", g.Name, "node", pn.Name, "after", c.cfg.ProvisionTimeout)
		c.record(ctx, "nodegroup/"+g.Name, "NodeNeverJoined", "group %s: node %s (%s) did not join within %s: deleted by provider %s; what it was asked for is planned again",
			g.Name, pn.Name, pn.ProviderID, c.cfg.ProvisionTimeout, g.p.Name())
	}
	for name := range c.unjoined {
		if !slices.ContainsFunc(listed, func(pn provider.Node) bool { return pn.Name == name }) {
			delete(c.unjoined, name)
		}
	}
	return size, nil
}
