package cloud

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"

	"github.com/wasmorch/wasmorch/controlplane/cache"
	"github.com/wasmorch/wasmorch/controlplane/cloud/local"
	"github.com/wasmorch/wasmorch/controlplane/cloud/provider"
	"github.com/wasmorch/wasmorch/controlplane/events"
	"github.com/wasmorch/wasmorch/controlplane/store"
	"github.com/wasmorch/wasmorch/internal/etcdtest"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

func newGroup(name string, min, max int, instances int32) provider.NodeGroup {
	return provider.NodeGroup{Name: name, Provider: "local", Min: min, Max: max, Template: provider.Template{Instances: instances}}
}

// startCache runs a member cache over cli until the test ends, and
// returns the context it runs in.
func startCache(t *testing.T, cli *clientv3.Client) (context.Context, *cache.Cache) {
	ctx, cancel := context.WithCancel(context.Background())
	c := cache.New(cache.Config{Client: cli})
	done := make(chan struct{})
	go func() { defer close(done); _ = c.Start(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return ctx, c
}

// onePending stores one instance Pending for lack of a node, and has the
// cache see it.
func onePending(t *testing.T, ctx context.Context, st *store.Store, c *cache.Cache) {
	t.Helper()
	if _, err := st.Instances.Create(ctx, "w-1", &v1.Instance{Id: "w-1", Workload: "w", PendingReason: "0/0 nodes fit", Spec: &v1.WorkloadSpec{Kind: "wasm"}}); err != nil {
		t.Fatal(err)
	}
	if err := c.Sync(ctx); err != nil {
		t.Fatal(err)
	}
}

func pending(workload string, n int, pl *v1.Placement) []*v1.Instance {
	out := make([]*v1.Instance, n)
	for i := range out {
		out[i] = &v1.Instance{Id: fmt.Sprintf("%s-%d", workload, i), Workload: workload, PendingReason: "0/0 nodes fit: ",
			Spec: &v1.WorkloadSpec{Placement: pl}}
	}
	return out
}

func TestPlan(t *testing.T) {
	pool := newGroup("pool", 0, 3, 10)
	ssd := newGroup("ssd", 0, 2, 20)
	ssd.Template.Labels = map[string]string{"disk": "ssd"}
	for _, tc := range []struct {
		name    string
		groups  []provider.NodeGroup
		nodes   map[string][]groupNode
		pending []*v1.Instance
		targets map[string]int
		want    []growth
		left    int
	}{
		{name: "25 pending, none there: 3 nodes of 10", groups: []provider.NodeGroup{pool}, pending: pending("w", 25, nil),
			targets: map[string]int{"pool": 0}, want: []growth{{group: "pool", from: 0, by: 3, pending: 25}}},
		{name: "nodes asked for and not Ready yet count", groups: []provider.NodeGroup{pool}, pending: pending("w", 25, nil),
			targets: map[string]int{"pool": 3}},
		{name: "a Ready node's room counts", groups: []provider.NodeGroup{pool}, pending: pending("w", 12, nil),
			nodes:   map[string][]groupNode{"pool": {{name: "a", alive: true, instances: 2}}},
			targets: map[string]int{"pool": 1}, want: []growth{{group: "pool", from: 1, by: 1, pending: 4}}},
		{name: "a cordoned node's room does not", groups: []provider.NodeGroup{pool}, pending: pending("w", 5, nil),
			nodes:   map[string][]groupNode{"pool": {{name: "a", alive: true, cordoned: true}}},
			targets: map[string]int{"pool": 1}, want: []growth{{group: "pool", from: 1, by: 1, pending: 5}}},
		{name: "within max", groups: []provider.NodeGroup{pool}, pending: pending("w", 45, nil),
			targets: map[string]int{"pool": 1}, want: []growth{{group: "pool", from: 1, by: 2, pending: 35}}, left: 15},
		{name: "at max", groups: []provider.NodeGroup{pool}, pending: pending("w", 5, nil),
			nodes:   map[string][]groupNode{"pool": {{name: "a", alive: true, instances: 10}, {name: "b", alive: true, instances: 10}, {name: "c", alive: true, instances: 10}}},
			targets: map[string]int{"pool": 3}, want: []growth{{group: "pool", from: 3, pending: 5, limited: true}}, left: 5},
		{name: "the smallest fitting group first, the next for the rest", groups: []provider.NodeGroup{pool, ssd}, pending: pending("w", 45, nil),
			targets: map[string]int{"pool": 0, "ssd": 0}, want: []growth{{group: "pool", from: 0, by: 3, pending: 45}, {group: "ssd", from: 0, by: 1, pending: 15}}},
		{name: "a selector only one group's template has", groups: []provider.NodeGroup{pool, ssd}, pending: pending("w", 5, &v1.Placement{Selector: map[string]string{"disk": "ssd"}}),
			targets: map[string]int{"pool": 0, "ssd": 0}, want: []growth{{group: "ssd", from: 0, by: 1, pending: 5}}},
		{name: "a selector no template has", groups: []provider.NodeGroup{pool, ssd}, pending: pending("w", 5, &v1.Placement{Selector: map[string]string{"gpu": "yes"}}),
			targets: map[string]int{"pool": 0, "ssd": 0}, left: 5},
		{name: "a group whose provider did not answer is not grown", groups: []provider.NodeGroup{pool}, pending: pending("w", 5, nil),
			targets: map[string]int{}, left: 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, left := plan(tc.groups, tc.nodes, tc.pending, tc.targets)
			if fmt.Sprint(got) != fmt.Sprint(tc.want) || len(left) != tc.left {
				t.Errorf("plan = %+v, %d left; want %+v, %d left", got, len(left), tc.want, tc.left)
			}
		})
	}
}

func TestFits(t *testing.T) {
	g := newGroup("pool", 0, 1, 10)
	g.Template.Arch = "amd64"
	g.Template.MemoryBytes = 1 << 30
	g.Template.CPUMillis = 1000
	g.Template.Labels = map[string]string{"tier": "web"}
	spec := func(f func(*v1.WorkloadSpec)) *v1.Instance {
		s := &v1.WorkloadSpec{Placement: &v1.Placement{}}
		f(s)
		return &v1.Instance{Spec: s}
	}
	for _, tc := range []struct {
		name string
		inst *v1.Instance
		want bool
	}{
		{"nothing asked", spec(func(*v1.WorkloadSpec) {}), true},
		{"its arch", spec(func(s *v1.WorkloadSpec) { s.Placement.Arch = []string{"amd64"} }), true},
		{"another arch", spec(func(s *v1.WorkloadSpec) { s.Placement.Arch = []string{"arm64"} }), false},
		{"its labels and group", spec(func(s *v1.WorkloadSpec) {
			s.Placement.Selector = map[string]string{"tier": "web", "node-group": "pool"}
		}), true},
		{"another group", spec(func(s *v1.WorkloadSpec) { s.Placement.Selector = map[string]string{"node-group": "big"} }), false},
		{"a container", spec(func(s *v1.WorkloadSpec) { s.Kind = "container" }), false},
		{"more memory than a node has", spec(func(s *v1.WorkloadSpec) { s.MemoryBytes = 2 << 30 }), false},
		{"more CPU than a node has", spec(func(s *v1.WorkloadSpec) { s.CpuMillis = 1500 }), false},
	} {
		if got := fits(g, tc.inst); got != tc.want {
			t.Errorf("%s: fits = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestRecordedScaleUpCountsForANewLeader: a scale-up recorded in etcd by
// another leadership is counted as nodes on their way (a new leader does
// not ask twice for one need) until the group has as many Ready nodes or
// the record is older than the provision timeout; this leadership's own
// record does not add to its provider's target size.
func TestRecordedScaleUpCountsForANewLeader(t *testing.T) {
	cli := etcdtest.Start(t)
	ctx := context.Background()
	now := time.Unix(1_000_000, 0)
	c := New(Config{KV: cli, Now: func() time.Time { return now }, ProvisionTimeout: time.Minute})
	// A record written by another leadership: this one reads the records
	// at its first pass (c.recs nil), as here after each write.
	record := func(target int, at time.Time) {
		b, _ := json.Marshal(scaleUp{Target: target, AtUnixNano: at.UnixNano()})
		if _, err := cli.Put(ctx, ScaleUpsPrefix+"pool", string(b)); err != nil {
			t.Fatal(err)
		}
		c.recs = nil
	}
	recorded := func() bool {
		resp, err := cli.Get(ctx, ScaleUpsPrefix+"pool")
		if err != nil {
			t.Fatal(err)
		}
		return len(resp.Kvs) == 1
	}
	sizes := map[string]int{"pool": 0}
	oneReady := view{nodes: map[string][]groupNode{"pool": {{name: "a", alive: true}}}}

	record(3, now.Add(-30*time.Second))
	if got, err := c.targets(ctx, oneReady, sizes); err != nil || got["pool"] != 3 || !recorded() {
		t.Errorf("another leadership's scale-up to 3: target %v (%v), want 3, kept", got, err)
	}
	c.mine["pool"] = []string{"pool-b", "pool-c"}
	if got, err := c.targets(ctx, oneReady, sizes); err != nil || got["pool"] != 0 || !recorded() {
		t.Errorf("this leadership's own scale-up: target %v (%v), want the provider's 0, kept", got, err)
	}
	delete(c.mine, "pool")
	threeReady := view{nodes: map[string][]groupNode{"pool": {{name: "a", alive: true}, {name: "b", alive: true}, {name: "c", alive: true}}}}
	if got, err := c.targets(ctx, threeReady, map[string]int{"pool": 3}); err != nil || got["pool"] != 3 || recorded() {
		t.Errorf("with 3 Ready nodes: target %v (%v), want 3 and the record forgotten", got, err)
	}
	record(3, now.Add(-2*time.Minute))
	if got, err := c.targets(ctx, oneReady, sizes); err != nil || got["pool"] != 0 || recorded() {
		t.Errorf("a record older than the provision timeout: target %v (%v), want 0 and the record forgotten", got, err)
	}

	// A record that names its nodes: counted while the provider lists one
	// of them (or it has joined); forgotten at once when none exists (the
	// agents of the local provider died with the leader that asked).
	named := func(nodes ...string) {
		b, _ := json.Marshal(scaleUp{Target: 3, AtUnixNano: now.Add(-time.Second).UnixNano(), Nodes: nodes})
		if _, err := cli.Put(ctx, ScaleUpsPrefix+"pool", string(b)); err != nil {
			t.Fatal(err)
		}
		c.recs = nil
	}
	named("pool-b", "pool-c")
	c.listed["pool"] = []provider.Node{{Name: "pool-c", State: provider.Creating}}
	if got, err := c.targets(ctx, oneReady, sizes); err != nil || got["pool"] != 3 || !recorded() {
		t.Errorf("a record one of whose nodes the provider lists: target %v (%v), want 3, kept", got, err)
	}
	c.listed["pool"] = nil
	if got, err := c.targets(ctx, view{nodes: map[string][]groupNode{"pool": {{name: "pool-b"}}}}, sizes); err != nil || got["pool"] != 3 || !recorded() {
		t.Errorf("a record one of whose nodes has joined: target %v (%v), want 3, kept", got, err)
	}
	if got, err := c.targets(ctx, oneReady, sizes); err != nil || got["pool"] != 0 || recorded() {
		t.Errorf("a record none of whose nodes exists: target %v (%v), want the provider's 0 and the record forgotten", got, err)
	}
}

// cloudFake is a provider standing in for a cloud whose machines may never
// join: it lists what it was asked to make until asked to delete it.
type cloudFake struct {
	group   provider.NodeGroup
	nodes   []provider.Node
	deleted []string
}

func (f *cloudFake) Name() string { return "fake" }
func (f *cloudFake) NodeGroups(context.Context) ([]provider.NodeGroup, error) {
	return []provider.NodeGroup{f.group}, nil
}
func (f *cloudFake) TargetSize(context.Context, string) (int, error) { return len(f.nodes), nil }
func (f *cloudFake) IncreaseSize(_ context.Context, _ string, nodes []provider.NewNode) error {
	for _, n := range nodes {
		f.nodes = append(f.nodes, provider.Node{Name: n.Name, ProviderID: "fake:///" + n.Name, State: provider.Creating})
	}
	return nil
}
func (f *cloudFake) DeleteNodes(_ context.Context, _ string, names []string) error {
	for _, n := range names {
		f.nodes = slices.DeleteFunc(f.nodes, func(pn provider.Node) bool { return pn.Name == n })
		f.deleted = append(f.deleted, n)
	}
	return nil
}
func (f *cloudFake) Nodes(context.Context, string) ([]provider.Node, error) {
	return slices.Clone(f.nodes), nil
}
func (f *cloudFake) Close() error { return nil }

// TestNodeThatNeverJoinsIsDeleted: a node its provider made that has not
// joined within the provision timeout is deleted through the provider, with
// an event, and the instances waiting for it make the controller ask for
// another at once.
func TestNodeThatNeverJoinsIsDeleted(t *testing.T) {
	cli := etcdtest.Start(t)
	ctx, c0 := startCache(t, cli)
	st := store.New(cli)
	onePending(t, ctx, st, c0)
	now := time.Unix(1_000_000, 0)
	fake := &cloudFake{group: newGroup("pool", 0, 3, 10)}
	rec := events.New(cli, "test")
	c := New(Config{Cache: c0, KV: cli, Events: rec, Providers: []provider.Provider{fake}, Now: func() time.Time { return now }, ProvisionTimeout: time.Minute,
		Token:   func(context.Context, string, map[string]string) (string, error) { return "token", nil },
		Servers: func() []string { return []string{"127.0.0.1:1"} }})
	if err := c.Pass(ctx); err != nil || len(fake.nodes) != 1 {
		t.Fatalf("first pass: %v, provider nodes %v; want one asked for", err, fake.nodes)
	}
	first := fake.nodes[0].Name
	now = now.Add(30 * time.Second)
	if err := c.Pass(ctx); err != nil || len(fake.deleted) != 0 || len(fake.nodes) != 1 {
		t.Fatalf("within the timeout: %v, deleted %v, nodes %v; want it kept and no other asked for", err, fake.deleted, fake.nodes)
	}
	now = now.Add(time.Minute)
	if err := c.Pass(ctx); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(fake.deleted) != "["+first+"]" || len(fake.nodes) != 1 || fake.nodes[0].Name == first {
		t.Fatalf("past the timeout: deleted %v, nodes %v; want %s deleted and another asked for", fake.deleted, fake.nodes, first)
	}
	evs, err := rec.List(ctx, "nodegroup/pool")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(evs, func(e *v1.Event) bool {
		return e.GetReason() == "NodeNeverJoined" && strings.Contains(e.GetMessage(), "node "+first+" (fake:///"+first+") did not join within 1m0s")
	}) {
		t.Errorf("no NodeNeverJoined event for %s: %v", first, evs)
	}
}

// TestNeverJoinedTimeoutRunsFromWhenTheNodeWasAsked: the provision timeout
// of a node that never joins runs from when the node was asked for, as
// recorded in etcd with the scale-up, so that a new leader does not start
// it anew (the bound would double with each leader change); the record is
// forgotten once the node is deleted or joins. And a pass with nothing
// changed reads nothing from etcd.
func TestNeverJoinedTimeoutRunsFromWhenTheNodeWasAsked(t *testing.T) {
	cli := etcdtest.Start(t)
	ctx, c0 := startCache(t, cli)
	st := store.New(cli)
	onePending(t, ctx, st, c0)
	now := time.Unix(1_000_000, 0)
	// The provider outlives the leaders (a plugin, a cloud).
	fake := &cloudFake{group: newGroup("pool", 0, 3, 10)}
	rec := events.New(cli, "test")
	leadership := func() (*Controller, *countingKV) {
		kv := &countingKV{KV: cli}
		return New(Config{Cache: c0, KV: kv, Watcher: cli, Events: rec, Providers: []provider.Provider{fake}, Now: func() time.Time { return now }, ProvisionTimeout: time.Minute,
			Token:     func(context.Context, string, map[string]string) (string, error) { return "token", nil },
			Servers:   func() []string { return []string{"127.0.0.1:1"} },
			LabelNode: func(context.Context, string, map[string]string) error { return nil }}), kv
	}
	asked := func() []string {
		resp, err := cli.Get(ctx, AskedPrefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, kv := range resp.Kvs {
			out = append(out, strings.TrimPrefix(string(kv.Key), AskedPrefix))
		}
		return out
	}
	// A node asked for of a group no provider lists any more.
	if _, err := cli.Put(ctx, AskedPrefix+"old-x", `{"group":"old","atUnixNano":1}`); err != nil {
		t.Fatal(err)
	}
	first, _ := leadership()
	if err := first.Pass(ctx); err != nil || len(fake.nodes) != 1 {
		t.Fatalf("first pass: %v, provider nodes %v; want one asked for", err, fake.nodes)
	}
	node := fake.nodes[0].Name
	if got := asked(); fmt.Sprint(got) != "["+node+"]" {
		t.Fatalf("nodes recorded as asked for: %v, want [%s] (and not old-x, of a group gone)", got, node)
	}

	// 40 s later the leader changes: the new one first sees the node then.
	now = now.Add(40 * time.Second)
	second, kv := leadership()
	if err := second.Pass(ctx); err != nil || len(fake.deleted) != 0 || len(fake.nodes) != 1 {
		t.Fatalf("the new leader's first pass, 40s after the node was asked for: %v, deleted %v, nodes %v; want it kept and no other asked for", err, fake.deleted, fake.nodes)
	}
	kv.gets.Store(0)
	if err := second.Pass(ctx); err != nil {
		t.Fatal(err)
	}
	if n := kv.gets.Load(); n != 0 {
		t.Errorf("a pass with nothing changed read etcd %d times, want none", n)
	}
	// 61 s after it was asked for (21 s after the new leader first saw it).
	now = now.Add(21 * time.Second)
	if err := second.Pass(ctx); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(fake.deleted) != "["+node+"]" || len(fake.nodes) != 1 || fake.nodes[0].Name == node {
		t.Fatalf("61s after it was asked for: deleted %v, nodes %v; want %s deleted and another asked for", fake.deleted, fake.nodes, node)
	}
	evs, err := rec.List(ctx, "nodegroup/pool")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(evs, func(e *v1.Event) bool {
		return e.GetReason() == "NodeNeverJoined" && strings.Contains(e.GetMessage(), "node "+node+" ")
	}) {
		t.Errorf("no NodeNeverJoined event for %s: %v", node, evs)
	}
	replacement := fake.nodes[0].Name
	if got := asked(); fmt.Sprint(got) != "["+replacement+"]" {
		t.Errorf("nodes recorded as asked for: %v, want only the replacement %s", got, replacement)
	}
	// The replacement joins: its record is forgotten.
	if _, err := st.Nodes.Create(ctx, replacement, &v1.Node{Name: replacement, Runtimes: []string{"wasm"}, Labels: map[string]string{provider.LabelGroup: "pool"},
		Capacity: &v1.Resources{Instances: 10}}); err != nil {
		t.Fatal(err)
	}
	if err := c0.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if err := second.Pass(ctx); err != nil {
		t.Fatal(err)
	}
	if got := asked(); len(got) != 0 {
		t.Errorf("nodes recorded as asked for once the replacement joined: %v, want none", got)
	}
}

// TestAppliedGroupsOverrideConfigured: the local provider is handed the
// server's configured groups merged with the NodeGroup objects stored in
// etcd, an applied group replacing a configured one of its name; deleting
// the object brings the configured group back; the status says where each
// group comes from.
func TestAppliedGroupsOverrideConfigured(t *testing.T) {
	cli := etcdtest.Start(t)
	ctx := context.Background()
	configured := newGroup("pool", 0, 1, 10)
	p, err := local.New(local.Config{DataDir: t.TempDir(), Groups: []provider.NodeGroup{configured}})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	kv := &countingKV{KV: cli}
	c := New(Config{KV: kv, Watcher: cli, Providers: []provider.Provider{p}, Configured: []provider.NodeGroup{configured}})
	// The objects are read at the first pass, then followed through etcd's
	// watch, which wakes a pass at each change.
	wctx, stop := context.WithCancel(ctx)
	woken := make(chan struct{}, 16)
	watched := make(chan struct{})
	go func() { defer close(watched); c.watchSpecs(wctx, func() { woken <- struct{}{} }) }()
	defer func() { stop(); <-watched }()
	apply := func(g provider.NodeGroup) {
		b, _ := proto.Marshal(g.Spec())
		if _, err := cli.Put(ctx, SpecsPrefix+g.Name, string(b)); err != nil {
			t.Fatal(err)
		}
	}
	groups := func() string {
		c.refresh(ctx)
		var out []string
		for _, g := range c.groups {
			out = append(out, fmt.Sprintf("%s:%d-%d:%s", g.Name, g.Min, g.Max, c.source[g.Name]))
		}
		return strings.Join(out, " ")
	}
	// wait waits for the watch to have seen the store's revision.
	wait := func() {
		t.Helper()
		resp, err := cli.Get(ctx, "x")
		if err != nil {
			t.Fatal(err)
		}
		for deadline := time.Now().Add(10 * time.Second); ; {
			c.specsMu.Lock()
			rev := c.specsRev
			c.specsMu.Unlock()
			if rev >= resp.Header.Revision {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("the watch of the applied groups is at revision %d, the store at %d", rev, resp.Header.Revision)
			}
			select {
			case <-woken:
			case <-time.After(10 * time.Millisecond):
			}
		}
	}
	if got := groups(); got != "pool:0-1:config" {
		t.Errorf("configured only: %s", got)
	}
	apply(newGroup("pool", 0, 3, 10))
	apply(newGroup("extra", 1, 2, 5))
	select {
	case <-woken:
	case <-time.After(10 * time.Second):
		t.Fatal("an applied group did not wake a pass")
	}
	wait()
	if got := groups(); got != "extra:1-2:manifest pool:0-3:manifest" {
		t.Errorf("with pool and extra applied: %s, want extra and pool's max 3", got)
	}
	if _, err := cli.Delete(ctx, SpecsPrefix+"pool"); err != nil {
		t.Fatal(err)
	}
	wait()
	if got := groups(); got != "extra:1-2:manifest pool:0-1:config" {
		t.Errorf("pool's object deleted: %s, want the configured pool back", got)
	}
	// An object the provider cannot take is an event and a retry: the
	// provider keeps its groups.
	bad := newGroup("bad", 0, 1, 1)
	bad.Template.Arch = "not-" + runtime.GOARCH
	apply(bad)
	wait()
	if got := groups(); got != "extra:1-2:manifest pool:0-1:config" {
		t.Errorf("with an object the provider refuses: %s, want the groups as they were", got)
	}
	// Passes while nothing changes read nothing from etcd: the specs are
	// the ones the watch keeps.
	kv.gets.Store(0)
	for range 3 {
		c.refresh(ctx)
	}
	if n := kv.gets.Load(); n != 0 {
		t.Errorf("3 refreshes with nothing changed read etcd %d times, want none", n)
	}
}

// countingKV counts the reads of etcd.
type countingKV struct {
	clientv3.KV
	gets atomic.Int64
}

func (k *countingKV) Get(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	k.gets.Add(1)
	return k.KV.Get(ctx, key, opts...)
}

// scaleDownWorld is a group of three Ready nodes of 10 slots in etcd,
// which the controller's node writes change as the API would.
type scaleDownWorld struct {
	t     *testing.T
	ctx   context.Context
	cli   *clientv3.Client
	st    *store.Store
	cache *cache.Cache
	fake  *cloudFake
	c     *Controller
	now   time.Time
	ops   []string // the controller's writes to nodes, in order
}

func newScaleDownWorld(t *testing.T, min int, held map[string]int) *scaleDownWorld {
	cli := etcdtest.Start(t)
	ctx, c0 := startCache(t, cli)
	w := &scaleDownWorld{t: t, ctx: ctx, cli: cli, st: store.New(cli), cache: c0, now: time.Unix(1_000_000, 0),
		fake: &cloudFake{group: newGroup("pool", min, 3, 10)}}
	lease, err := cli.Grant(ctx, 600)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"pool-1", "pool-2", "pool-3"} {
		w.fake.nodes = append(w.fake.nodes, provider.Node{Name: n, ProviderID: "fake:///" + n, State: provider.Running})
		if _, err := w.st.Nodes.Create(ctx, n, &v1.Node{Name: n, Runtimes: []string{"wasm"}, Labels: map[string]string{provider.LabelGroup: "pool"},
			Capacity: &v1.Resources{Instances: 10, MemoryBytes: 8 << 30}}); err != nil {
			t.Fatal(err)
		}
		if _, err := cli.Put(ctx, store.AlivePrefix+n, "", clientv3.WithLease(lease.ID)); err != nil {
			t.Fatal(err)
		}
		for i := range held[n] {
			id := fmt.Sprintf("%s-w%d", n, i)
			if _, err := w.st.Instances.Create(ctx, id, &v1.Instance{Id: id, Workload: "w", Node: n, Spec: &v1.WorkloadSpec{Kind: "wasm"}}); err != nil {
				t.Fatal(err)
			}
		}
	}
	change := func(name, op string, f func(*v1.Node)) error {
		cur, err := w.st.Nodes.Get(ctx, name)
		if err != nil {
			return err
		}
		n := proto.Clone(cur.Value).(*v1.Node)
		f(n)
		_, err = w.st.Nodes.Update(ctx, name, n, cur.ModRevision)
		w.ops = append(w.ops, op+" "+name)
		return err
	}
	w.c = New(Config{Cache: c0, KV: cli, Providers: []provider.Provider{w.fake}, Now: func() time.Time { return w.now },
		ScaleDownDelay: time.Minute, DrainTimeout: 10 * time.Minute,
		Drain: func(_ context.Context, name string) error {
			return change(name, "drain", func(n *v1.Node) { n.Cordoned, n.Draining = true, true })
		},
		SetCordoned: func(_ context.Context, name string, cordoned bool) error {
			return change(name, fmt.Sprintf("cordon=%v", cordoned), func(n *v1.Node) { n.Cordoned, n.Draining = cordoned, false })
		},
		LabelNode: func(_ context.Context, name string, set map[string]string) error {
			return change(name, "label", func(n *v1.Node) { maps.Copy(n.Labels, set) })
		},
		RemoveNode: func(_ context.Context, name string) (int32, error) {
			w.ops = append(w.ops, "remove "+name)
			_, err := cli.Delete(ctx, w.st.Nodes.Key(name))
			return 0, err
		}})
	return w
}

// pass syncs the cache and runs a pass at the world's time.
func (w *scaleDownWorld) pass() {
	w.t.Helper()
	if err := w.cache.Sync(w.ctx); err != nil {
		w.t.Fatal(err)
	}
	if err := w.c.Pass(w.ctx); err != nil {
		w.t.Fatal(err)
	}
}

// moved deletes the instances on node, as the workload controller does
// once their replacements run elsewhere.
func (w *scaleDownWorld) moved(node string) {
	w.t.Helper()
	for _, e := range w.cache.InstancesOn(node) {
		if _, err := w.cli.Delete(w.ctx, w.st.Instances.Key(e.Value.GetId())); err != nil {
			w.t.Fatal(err)
		}
	}
}

// drains returns the nodes drained so far.
func (w *scaleDownWorld) drains() []string {
	var out []string
	for _, op := range w.ops {
		if name, ok := strings.CutPrefix(op, "drain "); ok {
			out = append(out, name)
		}
	}
	return out
}

// TestScaleDownDrainsOneNodeAtATimeAboveMin: nodes whose instances could
// run elsewhere are drained after the delay, one at a time, each deleted
// through its provider once it holds nothing, never taking the group
// below its min; each node is labelled with its provider id.
func TestScaleDownDrainsOneNodeAtATimeAboveMin(t *testing.T) {
	w := newScaleDownWorld(t, 2, map[string]int{"pool-1": 2, "pool-2": 2, "pool-3": 5})
	w.pass()
	if got := w.drains(); len(got) != 0 {
		t.Fatalf("drained %v before the delay", got)
	}
	w.now = w.now.Add(61 * time.Second)
	w.pass()
	w.pass()
	if got := w.drains(); fmt.Sprint(got) != "[pool-1]" {
		t.Fatalf("after the delay drained %v, want only pool-1 (one at a time)", got)
	}
	w.moved("pool-1")
	w.pass()
	if fmt.Sprint(w.fake.deleted) != "[pool-1]" || !slices.Contains(w.ops, "remove pool-1") {
		t.Fatalf("pool-1 emptied: provider deleted %v, ops %v; want it deleted and removed", w.fake.deleted, w.ops)
	}
	w.now = w.now.Add(time.Minute)
	w.pass()
	w.pass()
	if got := w.drains(); fmt.Sprint(got) != "[pool-1]" {
		t.Errorf("at min 2 with 2 nodes: drained %v, want no other", got)
	}
	for _, n := range []string{"pool-2", "pool-3"} {
		if cur, ok := w.cache.Node(n); !ok || cur.Value.GetLabels()[provider.LabelProviderID] != n {
			t.Errorf("node %s labels %v, want %s=%s", n, cur.Value.GetLabels(), provider.LabelProviderID, n)
		}
	}
}

// TestScaleDownGivesUpADrainThatDoesNotFinish: a drain that has not
// emptied its node within the drain timeout is given up: the node is
// uncordoned and kept.
func TestScaleDownGivesUpADrainThatDoesNotFinish(t *testing.T) {
	w := newScaleDownWorld(t, 0, map[string]int{"pool-1": 2, "pool-2": 9, "pool-3": 9})
	w.pass()
	w.now = w.now.Add(61 * time.Second)
	w.pass()
	if got := w.drains(); fmt.Sprint(got) != "[pool-1]" {
		t.Fatalf("drained %v, want pool-1 (ops %v, why %+v)", got, w.ops, w.c.checked)
	}
	w.now = w.now.Add(11 * time.Minute)
	w.pass()
	if !slices.Contains(w.ops, "cordon=false pool-1") || len(w.fake.deleted) != 0 {
		t.Errorf("a drain past its timeout: ops %v, deleted %v; want pool-1 uncordoned and kept", w.ops, w.fake.deleted)
	}
}

// TestNodeShutDownByItsProviderIsDrained: a node its provider lists as
// Deleting though the controller did not delete it is drained at once.
func TestNodeShutDownByItsProviderIsDrained(t *testing.T) {
	w := newScaleDownWorld(t, 0, map[string]int{"pool-1": 9, "pool-2": 9, "pool-3": 9})
	w.pass()
	w.fake.nodes[1].State = provider.Deleting
	w.pass()
	w.pass()
	if got := w.drains(); fmt.Sprint(got) != "[pool-2]" {
		t.Errorf("drained %v, want pool-2, once", got)
	}
}
