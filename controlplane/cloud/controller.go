// Package cloud is the cloud controller: on the leader, beside the
// workload controller, it keeps the nodes of the node groups that its
// providers (controlplane/cloud/provider) make in step with demand and with
// what the providers say exists:
//
//   - node lifecycle: a node of a group that its provider no longer lists
//     is removed at once (as 'node rm --force'), so that its instances are
//     replaced without waiting for the heartbeat grace;
//   - scale up: instances the scheduler left Pending (it found no node
//     for them) grow the smallest group whose template fits them, within
//     its max; the target asked for is recorded in etcd first, so that a
//     new leader does not ask again for nodes already coming;
//   - scale down: a node of a group that has held no instance for the
//     scale-down delay is cordoned, deleted by its provider and removed,
//     never below the group's min.
//
// Every decision is an event on nodegroup/<name> (or node/<name>).
package cloud

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"

	"github.com/wasmorch/wasmorch/controlplane/cache"
	"github.com/wasmorch/wasmorch/controlplane/cloud/provider"
	"github.com/wasmorch/wasmorch/controlplane/events"
	"github.com/wasmorch/wasmorch/controlplane/store"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// Defaults of Config's zero fields.
const (
	DefaultScaleDownDelay   = 5 * time.Minute
	DefaultProvisionTimeout = 5 * time.Minute
	DefaultPeriod           = time.Second
	// callTimeout bounds one provider call.
	callTimeout = 30 * time.Second
)

// GroupsPrefix holds each group's status as the leader last saw it
// (v1.NodeGroupStatus), which any member's API lists.
const GroupsPrefix = store.CloudPrefix + "groups/"

// SpecsPrefix holds the NodeGroup objects applied to the cluster
// (v1.NodeGroupSpec), which the API writes and the controller hands to
// the configurable providers, over the server's configured groups.
const SpecsPrefix = store.CloudPrefix + "specs/"

// Where a group is configured (v1.NodeGroupStatus.Source).
const (
	SourceConfig   = "config"
	SourceManifest = "manifest"
	SourcePlugin   = "plugin"
)

// ScaleUpsPrefix holds, per group, the scale-up in flight (JSON: the target
// size asked for and when), written before the provider is asked.
const ScaleUpsPrefix = store.CloudPrefix + "scaleups/"

// Config is what the controller needs.
type Config struct {
	Cache *cache.Cache
	// KV is fenced on the leadership: a deposed leader records no
	// scale-up (and so asks for none).
	KV        clientv3.KV
	Events    *events.Recorder
	Logger    *slog.Logger
	Metrics   *Metrics
	Providers []provider.Provider
	// Configured are the groups of the server's config (--node-group);
	// a NodeGroup object of the same name overrides one.
	Configured []provider.NodeGroup
	// RemoveNode removes a node as 'node rm --force' does; SetCordoned
	// cordons or uncordons one (the API's paths: api.Server).
	RemoveNode  func(ctx context.Context, name string) (int32, error)
	SetCordoned func(ctx context.Context, name string, cordoned bool) error
	// Token mints the join token of a node the controller asks for: one
	// use, bound to its name and labels (api.Server.NodeToken); Servers
	// are the API addresses it joins.
	Token   func(ctx context.Context, node string, labels map[string]string) (string, error)
	Servers func() []string

	ScaleDownDelay   time.Duration
	ProvisionTimeout time.Duration // how long a recorded scale-up counts as coming
	Period           time.Duration
	Now              func() time.Time
}

// scaleUp is a scale-up in flight as recorded in etcd.
type scaleUp struct {
	Target     int   `json:"target"`
	AtUnixNano int64 `json:"atUnixNano"`
}

// Controller is the cloud controller of one leadership.
type Controller struct {
	cfg    Config
	log    *slog.Logger
	groups []group
	// emptySince is when each node of a group was first seen holding no
	// instance (reset when it holds one); a new leader starts counting
	// anew, which only delays a scale-down.
	emptySince map[string]time.Time
	// mine are the groups whose recorded scale-up this leadership asked
	// its provider for (so the provider's target size already holds it).
	mine map[string]bool
	// said keeps the last message of repeated events, per object and
	// reason, so that a condition that lasts is recorded once.
	said map[string]string
	// known are the groups each provider last listed.
	known map[string][]group
	// handed is what each configurable provider was last given, and
	// source where each group is configured.
	handed map[string][]provider.NodeGroup
	source map[string]string
	// listed is each group's nodes as its provider last listed them.
	listed map[string][]provider.Node
	// written is each group's status as this leadership last recorded it.
	written map[string]*v1.NodeGroupStatus
	// pruned is the groups listed when the statuses of the others were
	// last deleted.
	pruned     string
	prunedOnce bool
	// due is when the earliest scale-down delay of a node ends (zero:
	// none is counting), for Start to wake then.
	due time.Time
	// active is whether any group is listed: changes wake a pass only then.
	active atomic.Bool
}

type group struct {
	provider.NodeGroup
	p provider.Provider
}

// New returns the controller for cfg's providers' groups.
func New(cfg Config) *Controller {
	if cfg.ScaleDownDelay <= 0 {
		cfg.ScaleDownDelay = DefaultScaleDownDelay
	}
	if cfg.ProvisionTimeout <= 0 {
		cfg.ProvisionTimeout = DefaultProvisionTimeout
	}
	if cfg.Period <= 0 {
		cfg.Period = DefaultPeriod
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Controller{cfg: cfg, log: cfg.Logger.With("loop", "cloud"), emptySince: map[string]time.Time{}, mine: map[string]bool{}, said: map[string]string{},
		known: map[string][]group{}, written: map[string]*v1.NodeGroupStatus{}, handed: map[string][]provider.NodeGroup{}, source: map[string]string{},
		listed: map[string][]provider.Node{}}
}

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
		resp, err := c.cfg.KV.Get(ctx, SpecsPrefix, clientv3.WithPrefix())
		if err != nil {
			c.log.Warn("reading the applied node groups; keeping the groups as they were", "err", err)
			return
		}
		for _, kv := range resp.Kvs {
			spec := &v1.NodeGroupSpec{}
			if proto.Unmarshal(kv.Value, spec) != nil {
				continue
			}
			g := provider.FromSpec(spec)
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

// minGap is the least time between two passes woken by changes.
const minGap = 50 * time.Millisecond

// Start runs a pass every period until ctx ends, and sooner when the
// cache changes in a way a pass may act on (an instance created, placed
// or removed, a node joining or leaving) or a node's scale-down delay
// ends: a Pending instance is seen at once rather than at the next tick.
func (c *Controller) Start(ctx context.Context) error {
	if len(c.cfg.Providers) == 0 {
		return nil
	}
	wake := make(chan struct{}, 1)
	if c.cfg.Cache != nil {
		defer c.cfg.Cache.Subscribe(func(cs []cache.Change) {
			if !c.active.Load() {
				return
			}
			for _, ch := range cs {
				if ch.Kind == cache.KindNode || (ch.Kind == cache.KindInstance && !ch.Observed) {
					select {
					case wake <- struct{}{}:
					default:
					}
					return
				}
			}
		})()
	}
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-wake:
		}
		if err := c.Pass(ctx); err != nil && ctx.Err() == nil {
			c.log.Warn("cloud controller pass failed; retrying", "err", err)
		}
		next := c.cfg.Period
		if !c.due.IsZero() {
			next = min(next, max(c.due.Sub(c.cfg.Now()), minGap))
		}
		t.Reset(next)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(minGap):
		}
	}
}

// groupNode is a node of a group as the cache has it.
type groupNode struct {
	name      string
	alive     bool
	cordoned  bool
	instances int32
}

// view is what one pass reads from the cache.
type view struct {
	nodes   map[string][]groupNode // by group
	pending []*v1.Instance         // unplaced for want of a node
}

func (c *Controller) read() view {
	v := view{nodes: map[string][]groupNode{}}
	c.cfg.Cache.Read(func(r cache.Reader) {
		for _, n := range r.Nodes() {
			g := n.Value.GetLabels()[provider.LabelGroup]
			if g == "" {
				continue
			}
			v.nodes[g] = append(v.nodes[g], groupNode{name: n.Value.GetName(), alive: n.Alive, cordoned: n.Value.GetCordoned(), instances: n.Used.Instances})
		}
		for _, inst := range r.Pending() {
			iv := inst.Value
			if iv.GetNode() == "" && iv.GetPendingReason() != "" && iv.GetTerminatingUnixNano() == 0 && iv.GetLostUnixNano() == 0 {
				v.pending = append(v.pending, iv)
			}
		}
	})
	return v
}

// Pass runs node lifecycle, scale up and scale down once.
func (c *Controller) Pass(ctx context.Context) error {
	c.refresh(ctx)
	v := c.read()
	var errs []error
	if err := c.prune(ctx); err != nil {
		errs = append(errs, err)
	}
	c.active.Store(len(c.groups) > 0)
	if len(c.groups) == 0 {
		return errors.Join(errs...)
	}
	sizes := map[string]int{}
	c.due = time.Time{}
	for _, g := range c.groups {
		size, err := c.lifecycle(ctx, g, v.nodes[g.Name])
		if err != nil {
			errs = append(errs, err)
			continue
		}
		sizes[g.Name] = size
	}
	targets, err := c.targets(ctx, v, sizes)
	if err != nil {
		errs = append(errs, err)
	} else if err := c.scaleUp(ctx, v, targets); err != nil {
		errs = append(errs, err)
	}
	for _, g := range c.groups {
		if size, ok := sizes[g.Name]; ok {
			if err := c.scaleDown(ctx, g, v.nodes[g.Name], size); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

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
				delete(c.emptySince, n.name)
				c.cfg.Metrics.removed(g.Name, "gone")
				c.record(ctx, "node/"+n.name, "NodeDeleted", "node %s removed: provider %s says it no longer exists (group %s); its %d instances are replaced", n.name, g.p.Name(), g.Name, lost)
			}
			return size, nil
		}
	}
	c.cfg.Metrics.providerError(g.p.Name())
	c.once(ctx, "nodegroup/"+g.Name, "ProviderError", fmt.Sprintf("provider %s did not answer for group %s: %v; retrying", g.p.Name(), g.Name, err))
	return 0, fmt.Errorf("group %s: %w", g.Name, err)
}

// targets returns how many nodes of each group are asked for: the
// provider's target size, or a scale-up recorded in etcd by another
// leadership while it is younger than the provision timeout (this
// leadership's provider may not know of it). A record is forgotten once
// the group has as many Ready nodes, or once it is too old.
func (c *Controller) targets(ctx context.Context, v view, sizes map[string]int) (map[string]int, error) {
	resp, err := c.cfg.KV.Get(ctx, ScaleUpsPrefix, clientv3.WithPrefix())
	if err != nil {
		return nil, err
	}
	recs := map[string]scaleUp{}
	for _, kv := range resp.Kvs {
		var su scaleUp
		name := strings.TrimPrefix(string(kv.Key), ScaleUpsPrefix)
		if err := json.Unmarshal(kv.Value, &su); err != nil {
			su = scaleUp{} // unreadable: forgotten below
		}
		recs[name] = su
	}
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
		if !c.mine[name] {
			out[name] = max(size, su.Target)
		}
	}
	return out, nil
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
		Zone: g.Zone, InstancesPerNode: t.Instances, Labels: t.Labels, Arch: t.Arch, Source: source, MemoryBytes: t.MemoryBytes, CpuMillis: t.CPUMillis, Runtimes: t.Runtimes}
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

func (c *Controller) forget(ctx context.Context, group string) error {
	delete(c.mine, group)
	_, err := c.cfg.KV.Txn(ctx).Then(clientv3.OpDelete(ScaleUpsPrefix + group)).Commit()
	return err
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
	b, err := json.Marshal(scaleUp{Target: from + by, AtUnixNano: c.cfg.Now().UnixNano()})
	if err != nil {
		return err
	}
	// Through a transaction, which the fence holds: a deposed leader
	// records nothing and so asks for nothing.
	resp, err := c.cfg.KV.Txn(ctx).Then(clientv3.OpPut(ScaleUpsPrefix+g.Name, string(b))).Commit()
	if err != nil {
		return fmt.Errorf("recording the scale-up of group %s: %w", g.Name, err)
	}
	if !resp.Succeeded {
		return fmt.Errorf("recording the scale-up of group %s: no longer the leader", g.Name)
	}
	nodes := make([]provider.NewNode, by)
	for i := range nodes {
		name := g.Name + "-" + suffix()
		labels := g.NodeLabels(g.Zone)
		tok, err := c.cfg.Token(ctx, name, labels)
		if err != nil {
			_ = c.forget(ctx, g.Name)
			return fmt.Errorf("join token for node %s of group %s: %w", name, g.Name, err)
		}
		nodes[i] = provider.NewNode{Name: name, Labels: labels, Token: tok, Servers: c.cfg.Servers()}
	}
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	if err := g.p.IncreaseSize(cctx, g.Name, nodes); err != nil {
		_ = c.forget(ctx, g.Name)
		c.record(ctx, "nodegroup/"+g.Name, "FailedScaleUp", "provider %s could not grow group %s by %d: %v", g.p.Name(), g.Name, by, err)
		return fmt.Errorf("growing group %s: %w", g.Name, err)
	}
	c.mine[g.Name] = true
	c.cfg.Metrics.scaledUp(g.Name, by)
	c.log.Info("scaled up", "group", g.Name, "from", from, "to", from+by, "pending", pending)
	c.record(ctx, "nodegroup/"+g.Name, "ScaledUp", "group %s: %d -> %d nodes: %d instances pending for lack of a node", g.Name, from, from+by, pending)
	return nil
}

// scaleDown deletes nodes of g that have held nothing for the delay, down
// to the group's min.
func (c *Controller) scaleDown(ctx context.Context, g group, nodes []groupNode, size int) error {
	now := c.cfg.Now()
	for _, n := range nodes {
		if !n.alive || n.instances > 0 {
			delete(c.emptySince, n.name)
			continue
		}
		since, ok := c.emptySince[n.name]
		if !ok {
			since = now
			c.emptySince[n.name] = now
		}
		if size <= g.Min {
			continue
		}
		if due := since.Add(c.cfg.ScaleDownDelay); now.Before(due) {
			if c.due.IsZero() || due.Before(c.due) {
				c.due = due
			}
			continue
		}
		if err := c.deleteEmpty(ctx, g, n); err != nil {
			return err
		}
		delete(c.emptySince, n.name)
		size--
	}
	return nil
}

// deleteEmpty cordons the node, checks that it is still empty (the
// scheduler may have placed something meanwhile), has the provider delete
// it and removes it.
func (c *Controller) deleteEmpty(ctx context.Context, g group, n groupNode) error {
	if err := c.cfg.SetCordoned(ctx, n.name, true); err != nil {
		return fmt.Errorf("cordoning node %s to delete it: %w", n.name, err)
	}
	if err := c.cfg.Cache.Sync(ctx); err != nil {
		return err
	}
	if cur, ok := c.cfg.Cache.Node(n.name); !ok || cur.Used.Instances > 0 {
		if ok {
			return c.cfg.SetCordoned(ctx, n.name, false)
		}
		return nil
	}
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	if err := g.p.DeleteNodes(cctx, g.Name, []string{n.name}); err != nil {
		c.record(ctx, "nodegroup/"+g.Name, "FailedScaleDown", "provider %s could not delete node %s: %v", g.p.Name(), n.name, err)
		return fmt.Errorf("deleting node %s: %w", n.name, err)
	}
	if _, err := c.cfg.RemoveNode(ctx, n.name); err != nil {
		return fmt.Errorf("removing deleted node %s: %w", n.name, err)
	}
	c.cfg.Metrics.removed(g.Name, "idle")
	c.log.Info("scaled down", "group", g.Name, "node", n.name)
	c.record(ctx, "nodegroup/"+g.Name, "ScaledDown", "group %s: node %s deleted: it held no instance for %s", g.Name, n.name, c.cfg.ScaleDownDelay)
	return nil
}

// record records an event; a failure is only logged.
func (c *Controller) record(ctx context.Context, object, reason, format string, a ...any) {
	if c.cfg.Events == nil {
		return
	}
	if err := c.cfg.Events.Record(ctx, object, reason, format, a...); err != nil {
		c.log.Debug("recording an event failed", "object", object, "reason", reason, "err", err)
	}
}

// once records an event unless the same was the last said for that
// object and reason.
func (c *Controller) once(ctx context.Context, object, reason, msg string) {
	key := object + "\x00" + reason
	if c.said[key] == msg {
		return
	}
	c.said[key] = msg
	c.record(ctx, object, reason, "%s", msg)
}

func (c *Controller) clear(object, reason string) { delete(c.said, object+"\x00"+reason) }

// suffix is five random lowercase letters and digits, for a new node's
// name.
func suffix() string {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, 5)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}
