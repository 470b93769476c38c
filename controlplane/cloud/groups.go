package cloud

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"

	"github.com/wasmorch/wasmorch/controlplane/cloud/provider"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// configure hands each configurable provider its groups: those of the
// server's config, overridden by the NodeGroup objects applied to the
// cluster. A spec that cannot be read keeps what the providers have.
func (c *Controller) configure(ctx context.Context) {
	source := map[string]string{}
	merged := map[string]provider.NodeGroup{}
	for _, g := range c.cfg.Configured {
		merged[g.Name], source[g.Name] = g, SourceConfig
	}
	if c.cfg.KV != nil {
		specs, err := c.appliedSpecs(ctx)
		if err != nil {
			c.log.Warn("reading the applied node groups; keeping the groups as they were", "err", err)
			return
		}
		for _, spec := range specs {
			g := provider.FromSpec(proto.Clone(spec).(*v1.NodeGroupSpec)) // specs are shared
			merged[g.Name], source[g.Name] = g, SourceManifest
		}
	}
	for _, p := range c.cfg.Providers {
		cp, ok := p.(provider.Configurable)
		if !ok {
			continue
		}
		var mine []provider.NodeGroup
		for _, name := range slices.Sorted(maps.Keys(merged)) {
			if g := merged[name]; g.Provider == p.Name() {
				mine = append(mine, g)
			}
		}
		if handed, ok := c.handed[p.Name()]; ok && slices.EqualFunc(handed, mine, provider.NodeGroup.Equal) {
			continue
		}
		if err := cp.SetNodeGroups(mine); err != nil {
			c.once(ctx, "provider/"+p.Name(), "ProviderError", fmt.Sprintf("provider %s refused its node groups: %v; retrying", p.Name(), err))
			continue
		}
		c.handed[p.Name()] = mine
	}
	c.source = source
}

// refresh asks each provider for its groups; a provider that does not
// answer (or answers groups that are not valid) keeps the groups it last
// listed, and every call about them fails until it answers again.
func (c *Controller) refresh(ctx context.Context) {
	c.configure(ctx)
	for _, p := range c.cfg.Providers {
		cctx, cancel := context.WithTimeout(ctx, callTimeout)
		gs, err := p.NodeGroups(cctx)
		cancel()
		if err != nil {
			c.cfg.Metrics.providerError(p.Name())
			c.once(ctx, "provider/"+p.Name(), "ProviderError", fmt.Sprintf("provider %s did not list its node groups: %v; retrying", p.Name(), err))
			continue
		}
		c.clear("provider/"+p.Name(), "ProviderError")
		var known []group
		for _, g := range gs {
			g.Provider = p.Name()
			known = append(known, group{g, p})
		}
		c.known[p.Name()] = known
	}
	// A group name two providers list is kept for the first (a plugin's
	// group and an applied one of the same name, say).
	c.groups = c.groups[:0]
	seen := map[string]string{}
	for _, p := range c.cfg.Providers {
		for _, g := range c.known[p.Name()] {
			if other, dup := seen[g.Name]; dup {
				c.once(ctx, "nodegroup/"+g.Name, "NodeGroupConflict", fmt.Sprintf("group %s is listed by providers %s and %s: only %s's is kept", g.Name, other, p.Name(), other))
				continue
			}
			seen[g.Name] = p.Name()
			c.groups = append(c.groups, g)
		}
	}
	// The smallest group first: scale-ups grow the smallest that fits.
	sort.SliceStable(c.groups, func(i, j int) bool {
		a, b := c.groups[i].Template, c.groups[j].Template
		if a.Instances != b.Instances {
			return a.Instances < b.Instances
		}
		if a.MemoryBytes != b.MemoryBytes {
			return a.MemoryBytes < b.MemoryBytes
		}
		return c.groups[i].Name < c.groups[j].Name
	})
}

// prune deletes the recorded statuses of groups no provider lists (a
// group taken out of the config, a NodeGroup deleted), once every provider
// has listed its groups, and again whenever the groups listed change.
func (c *Controller) prune(ctx context.Context) error {
	names := make([]string, len(c.groups))
	for i, g := range c.groups {
		names[i] = g.Name
	}
	slices.Sort(names)
	listed := strings.Join(names, ",")
	if c.prunedOnce && c.pruned == listed || len(c.known) < len(c.cfg.Providers) {
		return nil
	}
	resp, err := c.cfg.KV.Get(ctx, GroupsPrefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return err
	}
	for _, kv := range resp.Kvs {
		name := strings.TrimPrefix(string(kv.Key), GroupsPrefix)
		if !slices.Contains(names, name) {
			if _, err := c.cfg.KV.Txn(ctx).Then(clientv3.OpDelete(string(kv.Key))).Commit(); err != nil {
				return err
			}
			delete(c.written, name)
			c.cfg.Metrics.forget(name)
		}
	}
	// The nodes asked for of groups no longer listed will not be swept
	// with their group's.
	if c.asked != nil {
		var gone []string
		for name, a := range c.asked {
			if !slices.Contains(names, a.Group) {
				gone = append(gone, name)
			}
		}
		if err := c.unask(ctx, gone); err != nil {
			return err
		}
	}
	c.pruned, c.prunedOnce = listed, true
	return nil
}

// status records a group's status when it changed since this leadership
// last wrote it.
func (c *Controller) status(ctx context.Context, name string, target, ready int) error {
	i := slices.IndexFunc(c.groups, func(g group) bool { return g.Name == name })
	if i < 0 {
		return nil
	}
	g := c.groups[i]
	t := g.Template
	source := c.source[g.Name]
	if _, configurable := g.p.(provider.Configurable); !configurable {
		source = SourcePlugin
	}
	st := &v1.NodeGroupStatus{Name: g.Name, Provider: g.Provider, MinSize: int32(g.Min), MaxSize: int32(g.Max), TargetSize: int32(target), ReadyNodes: int32(ready),
		Zone: g.Zone, InstancesPerNode: t.Instances, Labels: t.Labels, Arch: t.Arch, Source: source, MemoryBytes: t.MemoryBytes, CpuMillis: t.CPUMillis, Runtimes: t.Runtimes,
		InstanceType: t.InstanceType}
	for _, n := range c.listed[g.Name] {
		st.Nodes = append(st.Nodes, &v1.NodeGroupNode{Name: n.Name, ProviderId: n.ProviderID, State: n.State.String()})
	}
	if last, ok := c.written[name]; ok && proto.Equal(last, st) {
		return nil
	}
	rec := proto.Clone(st).(*v1.NodeGroupStatus)
	rec.UpdatedUnixNano = c.cfg.Now().UnixNano()
	b, err := proto.Marshal(rec)
	if err != nil {
		return err
	}
	resp, err := c.cfg.KV.Txn(ctx).Then(clientv3.OpPut(GroupsPrefix+name, string(b))).Commit()
	if err != nil {
		return fmt.Errorf("recording the status of group %s: %w", name, err)
	}
	if resp.Succeeded {
		c.written[name] = st
	}
	return nil
}
