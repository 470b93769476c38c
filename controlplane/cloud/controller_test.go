package cloud

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/wasmorch/wasmorch/controlplane/cloud/local"
	"github.com/wasmorch/wasmorch/controlplane/cloud/provider"
	"github.com/wasmorch/wasmorch/internal/etcdtest"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

func newGroup(name string, min, max int, instances int32) provider.NodeGroup {
	return provider.NodeGroup{Name: name, Provider: "local", Min: min, Max: max, Template: provider.Template{Instances: instances}}
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
	record := func(target int, at time.Time) {
		b, _ := json.Marshal(scaleUp{Target: target, AtUnixNano: at.UnixNano()})
		if _, err := cli.Put(ctx, ScaleUpsPrefix+"pool", string(b)); err != nil {
			t.Fatal(err)
		}
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
	c.mine["pool"] = true
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
	c := New(Config{KV: cli, Providers: []provider.Provider{p}, Configured: []provider.NodeGroup{configured}})
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
	if got := groups(); got != "pool:0-1:config" {
		t.Errorf("configured only: %s", got)
	}
	apply(newGroup("pool", 0, 3, 10))
	apply(newGroup("extra", 1, 2, 5))
	if got := groups(); got != "extra:1-2:manifest pool:0-3:manifest" {
		t.Errorf("with pool and extra applied: %s, want extra and pool's max 3", got)
	}
	if _, err := cli.Delete(ctx, SpecsPrefix+"pool"); err != nil {
		t.Fatal(err)
	}
	if got := groups(); got != "extra:1-2:manifest pool:0-1:config" {
		t.Errorf("pool's object deleted: %s, want the configured pool back", got)
	}
	// An object the provider cannot take is an event and a retry: the
	// provider keeps its groups.
	bad := newGroup("bad", 0, 1, 1)
	bad.Template.Arch = "not-" + runtime.GOARCH
	apply(bad)
	if got := groups(); got != "extra:1-2:manifest pool:0-1:config" {
		t.Errorf("with an object the provider refuses: %s, want the groups as they were", got)
	}
}
