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
//   - scale down: a node of a group that has held nothing but instances
//     that could run elsewhere for the scale-down delay is cordoned,
//     drained (replacements first) and deleted by its provider, never
//     below the group's min (scaledown.go decides what can move);
//   - a node its provider shuts down on its own is drained first, and
//     each node carries its provider's well-known labels.
//
// Every decision is an event on nodegroup/<name> (or node/<name>).
package cloud

import (
	"context"
	"crypto/rand"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

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
	DefaultDrainTimeout     = 10 * time.Minute
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
	// scale-up (and so asks for none). Watcher follows the applied
	// NodeGroup objects (nil: they are read once, at the first pass).
	KV        clientv3.KV
	Watcher   clientv3.Watcher
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
	// Drain cordons a node and has the workload controller move its
	// instances, replacements first (as 'wasmorch drain'); LabelNode sets
	// labels of one. All four write through the leader's fence.
	Drain     func(ctx context.Context, name string) error
	LabelNode func(ctx context.Context, name string, set map[string]string) error
	// Token mints the join token of a node the controller asks for: one
	// use, bound to its name and labels (api.Server.NodeToken); Servers
	// are the API addresses it joins.
	Token   func(ctx context.Context, node string, labels map[string]string) (string, error)
	Servers func() []string

	ScaleDownDelay   time.Duration
	ProvisionTimeout time.Duration // how long a recorded scale-up counts as coming
	// DrainTimeout bounds a scale-down's drain: a node still holding
	// instances then is uncordoned and kept.
	DrainTimeout time.Duration
	Period       time.Duration
	Now          func() time.Time
}

// scaleUp is a scale-up in flight as recorded in etcd.
type scaleUp struct {
	Target     int   `json:"target"`
	AtUnixNano int64 `json:"atUnixNano"`
	// Nodes are the names of the nodes asked for: a new leader whose
	// provider lists none of them, and whose cluster has none, knows they
	// will not come (the local provider's agents die with the leader that
	// started them) and plans again at once.
	Nodes []string `json:"nodes,omitempty"`
}

// Controller is the cloud controller of one leadership.
type Controller struct {
	cfg    Config
	log    *slog.Logger
	groups []group
	// since is when each node of a group was first seen holding nothing
	// but what could run elsewhere (reset when it holds more); a new leader
	// starts counting anew, which only delays a scale-down.
	since map[string]time.Time
	// draining are the nodes this leadership is draining to delete them,
	// with when it began; deleting those it asked their provider to
	// delete (so that their provider's Deleting is no surprise).
	draining map[string]time.Time
	deleting map[string]bool
	// checked is when each node's instances were last found able to run
	// elsewhere or not (movable), and why not: a check reads every node,
	// so it is not repeated while the cache has not changed.
	checked map[string]check
	// passNodes are the cluster's nodes as this pass's first movable
	// check read them: one read of every node a pass, however many
	// nodes are checked.
	passNodes []cache.Node
	// mine are the groups whose recorded scale-up this leadership asked
	// its provider for (so the provider's target size already holds it),
	// with the nodes it asked for.
	mine map[string][]string
	// unjoined is when each node a provider lists was first seen not
	// joined: one that has not joined within the provision timeout is
	// deleted. asked is when each node the controller asked for was asked
	// for, as recorded in etcd (AskedPrefix), which counts instead, so that
	// a new leader does not start the timeout anew; recs are the scale-ups
	// in flight as recorded (ScaleUpsPrefix). Both are read at the first
	// pass and kept after (records.go).
	unjoined map[string]time.Time
	asked    map[string]askedNode
	recs     map[string]scaleUp
	// specs are the applied NodeGroup objects (nil: not read yet), as read
	// at specsRev and followed since by watchSpecs.
	specsMu     sync.Mutex
	specs       map[string]*v1.NodeGroupSpec
	specsRev    int64
	specsLoaded chan struct{}
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

type check struct {
	at  time.Time
	rev int64 // the cache's revision it read
	ok  bool
	why string
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
	if cfg.DrainTimeout <= 0 {
		cfg.DrainTimeout = DefaultDrainTimeout
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Controller{cfg: cfg, log: cfg.Logger.With("loop", "cloud"), since: map[string]time.Time{}, mine: map[string][]string{}, unjoined: map[string]time.Time{}, said: map[string]string{},
		known: map[string][]group{}, written: map[string]*v1.NodeGroupStatus{}, handed: map[string][]provider.NodeGroup{}, source: map[string]string{},
		listed: map[string][]provider.Node{}, draining: map[string]time.Time{}, deleting: map[string]bool{}, checked: map[string]check{}, specsLoaded: make(chan struct{})}
}

// minGap is the least time between two passes woken by changes.
const minGap = 50 * time.Millisecond

// Start runs a pass every period until ctx ends, and sooner when the
// cache changes in a way a pass may act on (an instance created, placed
// or removed, a node joining or leaving), a NodeGroup object changes or a
// node's scale-down delay ends: a Pending instance is seen at once rather
// than at the next tick. A pass reads the cluster from the member cache
// and etcd's records only when they change (records.go).
func (c *Controller) Start(ctx context.Context) error {
	if len(c.cfg.Providers) == 0 {
		return nil
	}
	wake := make(chan struct{}, 1)
	poke := func() {
		select {
		case wake <- struct{}{}:
		default:
		}
	}
	if c.cfg.Watcher != nil {
		wctx, stop := context.WithCancel(ctx)
		watched := make(chan struct{})
		go func() { defer close(watched); c.watchSpecs(wctx, poke) }()
		defer func() { stop(); <-watched }()
	}
	if c.cfg.Cache != nil {
		defer c.cfg.Cache.Subscribe(func(cs []cache.Change) {
			if !c.active.Load() {
				return
			}
			for _, ch := range cs {
				if ch.Kind == cache.KindNode || (ch.Kind == cache.KindInstance && !ch.Observed) {
					poke()
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
	draining  bool
	instances int32
	labels    map[string]string // shared: never modified
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
			v.nodes[g] = append(v.nodes[g], groupNode{name: n.Value.GetName(), alive: n.Alive, cordoned: n.Value.GetCordoned(), draining: n.Value.GetDraining(),
				instances: n.Used.Instances, labels: n.Value.GetLabels()})
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
	c.due = time.Time{} // this pass says when the next is due
	c.passNodes = nil
	c.refresh(ctx)
	v := c.read()
	var errs []error
	if err := c.loadRecords(ctx); err != nil {
		return err
	}
	if err := c.prune(ctx); err != nil {
		errs = append(errs, err)
	}
	c.active.Store(len(c.groups) > 0)
	if len(c.groups) == 0 {
		return errors.Join(errs...)
	}
	sizes := map[string]int{}
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
	// Instances waiting for room a group could give: no node that holds
	// any is drained meanwhile (its room may be what they need).
	waiting := slices.ContainsFunc(v.pending, func(inst *v1.Instance) bool {
		return slices.ContainsFunc(c.groups, func(g group) bool { return fits(g.NodeGroup, inst) })
	})
	for _, g := range c.groups {
		if size, ok := sizes[g.Name]; ok {
			if err := c.scaleDown(ctx, g, v.nodes[g.Name], size, waiting, targets[g.Name]); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// wakeAt has Start run a pass at t at the latest.
func (c *Controller) wakeAt(t time.Time) {
	if c.due.IsZero() || t.Before(c.due) {
		c.due = t
	}
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
