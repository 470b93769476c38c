package cache

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"

	"github.com/wasmorch/wasmorch/controlplane/store"
	"github.com/wasmorch/wasmorch/internal/errdefs"
	"github.com/wasmorch/wasmorch/internal/etcdtest"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// fixture is a cache over a real etcd, started, with helpers to write.
type fixture struct {
	t   *testing.T
	cli *clientv3.Client
	c   *Cache
	st  *store.Store
}

func newFixture(t *testing.T, history int) *fixture {
	t.Helper()
	cli := etcdtest.Start(t)
	return &fixture{t: t, cli: cli, st: store.New(cli), c: New(Config{Client: cli, History: history, PageSize: 7})}
}

func (f *fixture) start() {
	f.t.Helper()
	etcdtest.Run(f.t, f.c.Start)
	select {
	case <-f.c.Synced():
	case <-time.After(30 * time.Second):
		f.t.Fatal("cache never synced")
	}
}

// put writes a record and returns the revision of the write.
func (f *fixture) put(key string, m proto.Message, opts ...clientv3.OpOption) int64 {
	f.t.Helper()
	return etcdtest.Put(f.t, f.cli, key, m, opts...)
}

func (f *fixture) del(key string) int64 {
	f.t.Helper()
	resp, err := f.cli.Delete(context.Background(), key)
	if err != nil {
		f.t.Fatal(err)
	}
	return resp.Header.Revision
}

// sync waits until the cache has reached etcd's current revision.
func (f *fixture) sync() {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := f.c.Sync(ctx); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) alive(node string) clientv3.LeaseID {
	f.t.Helper()
	l, err := f.cli.Grant(context.Background(), 60)
	if err != nil {
		f.t.Fatal(err)
	}
	if _, err := f.cli.Put(context.Background(), store.AlivePrefix+node, "", clientv3.WithLease(l.ID)); err != nil {
		f.t.Fatal(err)
	}
	return l.ID
}

func workload(name string, gen int64, replicas int32) *v1.Workload {
	return &v1.Workload{Name: name, Generation: gen, Spec: &v1.WorkloadSpec{Replicas: replicas, MemoryBytes: 1 << 20, MemoryRequestBytes: 64 << 10, CpuMillis: 10}}
}

func instance(wl *v1.Workload, id, node string) *v1.Instance {
	return &v1.Instance{Id: id, Workload: wl.GetName(), Generation: wl.GetGeneration(), Spec: proto.Clone(wl.GetSpec()).(*v1.WorkloadSpec), Node: node}
}

func running(id, node string) *v1.InstanceStatus {
	return &v1.InstanceStatus{Id: id, Node: node, State: v1.InstanceState_INSTANCE_STATE_RUNNING}
}

func ids(es []Instance) []string {
	out := make([]string, 0, len(es))
	for _, e := range es {
		out = append(out, e.Value.GetId())
	}
	return out
}

// TestListThenWatchKeepsIndexesAndCounts: records written before the cache
// starts (listed in pages) and after (watched) land in the same indexes,
// and a workload's counts and a node's usage follow its instances, their
// statuses, the node's liveness and the workload's generation.
func TestListThenWatchKeepsIndexesAndCounts(t *testing.T) {
	f := newFixture(t, 0)
	web := workload("web", 1, 3)
	f.put(store.WorkloadsPrefix+"web", web)
	f.put(store.NodesPrefix+"n1", &v1.Node{Name: "n1"})
	f.put(store.NodesPrefix+"n2", &v1.Node{Name: "n2"})
	lease := f.alive("n1")
	f.alive("n2")
	for i := range 10 { // more than a page of the initial list
		id := fmt.Sprintf("web-%02d", i)
		f.put(store.InstancesPrefix+id, instance(web, id, "n1"))
		f.put(store.StatusPrefix+id, running(id, "n1"))
	}
	f.start()

	var w Workload
	f.c.Read(func(r Reader) { w, _ = r.Workload("web") })
	if w.Counts != (Counts{Total: 10, Current: 10, Ready: 10}) {
		t.Fatalf("listed counts %+v, want 10/10/10", w.Counts)
	}
	n, _ := f.c.Node("n1")
	if !n.Alive || n.Used.Instances != 10 || n.Used.MemoryBytes != 10<<20 || n.Used.CPUMillis != 100 {
		t.Fatalf("listed node n1: %+v", n)
	}

	// Watched: one more instance, pending then placed on n2.
	x := instance(web, "web-xx", "")
	f.put(store.InstancesPrefix+"web-xx", x)
	f.sync()
	f.c.Read(func(r Reader) {
		if got := ids(r.Pending()); !slices.Equal(got, []string{"web-xx"}) {
			t.Errorf("pending %v", got)
		}
	})
	x.Node = "n2"
	f.put(store.InstancesPrefix+"web-xx", x)
	f.sync()
	f.c.Read(func(r Reader) {
		if len(r.Pending()) != 0 || !slices.Equal(ids(r.InstancesOn("n2")), []string{"web-xx"}) {
			t.Errorf("after binding: pending %v, on n2 %v", ids(r.Pending()), ids(r.InstancesOn("n2")))
		}
		if e, _ := r.Instance("web-xx"); e.State != v1.InstanceState_INSTANCE_STATE_SCHEDULED {
			t.Errorf("bound, unreported instance is %s, want Scheduled", e.State)
		}
		if w, _ := r.Workload("web"); w.Counts != (Counts{Total: 11, Current: 11, Ready: 10}) {
			t.Errorf("counts %+v, want 11/11/10", w.Counts)
		}
	})

	// n1's lease ends: its instances are Lost and not ready (still
	// counted: they are not marked lost yet), and come back.
	if _, err := f.cli.Revoke(context.Background(), lease); err != nil {
		t.Fatal(err)
	}
	f.sync()
	f.c.Read(func(r Reader) {
		w, _ := r.Workload("web")
		e, _ := r.Instance("web-00")
		n, _ := r.Node("n1")
		if w.Counts.Ready != 0 || w.Counts.Total != 11 || e.State != v1.InstanceState_INSTANCE_STATE_LOST || n.Alive {
			t.Errorf("node gone: counts %+v, web-00 %s, n1 alive %v", w.Counts, e.State, n.Alive)
		}
	})
	f.alive("n1")
	f.sync()
	if w, _ := f.c.Workload("web"); w.Counts.Ready != 10 {
		t.Errorf("node back: counts %+v", w.Counts)
	}

	// A new generation: nothing is current any more.
	f.put(store.WorkloadsPrefix+"web", workload("web", 2, 3))
	f.sync()
	if w, _ := f.c.Workload("web"); w.Counts != (Counts{Total: 11}) {
		t.Errorf("new generation: counts %+v, want 11/0/0", w.Counts)
	}

	// Marked lost: no longer counted or using its node.
	lost := instance(web, "web-00", "n1")
	lost.LostUnixNano = 1
	f.put(store.InstancesPrefix+"web-00", lost)
	f.del(store.InstancesPrefix + "web-01")
	f.sync()
	w, _ = f.c.Workload("web")
	n, _ = f.c.Node("n1")
	if w.Counts.Total != 9 || n.Used.Instances != 8 {
		t.Errorf("after one lost and one deleted: counts %+v, n1 holds %d", w.Counts, n.Used.Instances)
	}
	// The deleted instance's status stays an orphan until it is deleted.
	f.c.Read(func(r Reader) {
		if got := r.OrphanStatuses(); !slices.Equal(got, []string{"web-01"}) {
			t.Errorf("orphans %v", got)
		}
	})
}

// TestSpecsAreShared: instances of one generation with equal specs hold
// one spec message, so that many instances cost little more than their
// own fields.
func TestSpecsAreShared(t *testing.T) {
	f := newFixture(t, 0)
	wl := workload("w", 1, 2)
	f.put(store.WorkloadsPrefix+"w", wl)
	f.put(store.InstancesPrefix+"w-a", instance(wl, "w-a", ""))
	f.start()
	f.put(store.InstancesPrefix+"w-b", instance(wl, "w-b", ""))
	f.sync()
	a, _ := f.c.Instance("w-a")
	b, _ := f.c.Instance("w-b")
	if a.Value.GetSpec() != b.Value.GetSpec() {
		t.Error("two instances of one generation hold two copies of the spec")
	}
}

// TestListInstancesPages: pages follow ID order, continue after the last
// ID of the previous page, and filter by workload (a workload whose name
// prefixes another's included), node and state.
func TestListInstancesPages(t *testing.T) {
	f := newFixture(t, 0)
	a, ab := workload("a", 1, 0), workload("a-b", 1, 0)
	f.put(store.WorkloadsPrefix+"a", a)
	f.put(store.WorkloadsPrefix+"a-b", ab)
	f.alive("n1")
	var all []string
	for i := range 25 {
		id, wl, node := fmt.Sprintf("a-%02d", i), a, "n1"
		if i%5 == 0 {
			id, wl, node = fmt.Sprintf("a-b-%02d", i), ab, ""
		}
		f.put(store.InstancesPrefix+id, instance(wl, id, node))
		all = append(all, id)
	}
	slices.Sort(all)
	f.start()

	pages := func(filter InstanceFilter) (out []string, n int) {
		after := ""
		for {
			var page []Instance
			var more bool
			f.c.Read(func(r Reader) { page, more = r.ListInstances(filter, after, 10) })
			n++
			out = append(out, ids(page)...)
			if !more {
				return out, n
			}
			after = page[len(page)-1].Value.GetId()
		}
	}
	if got, n := pages(InstanceFilter{}); !slices.Equal(got, all) || n != 3 {
		t.Errorf("all in %d pages: %v", n, got)
	}
	if got, _ := pages(InstanceFilter{Workload: "a"}); len(got) != 20 || slices.ContainsFunc(got, func(id string) bool { return id[:3] == "a-b" }) {
		t.Errorf("workload a: %v", got)
	}
	if got, _ := pages(InstanceFilter{Workload: "a-b"}); len(got) != 5 {
		t.Errorf("workload a-b: %v", got)
	}
	if got, _ := pages(InstanceFilter{Node: "n1"}); len(got) != 20 {
		t.Errorf("node n1: %v", got)
	}
	if got, _ := pages(InstanceFilter{States: []v1.InstanceState{v1.InstanceState_INSTANCE_STATE_PENDING}}); len(got) != 5 {
		t.Errorf("pending: %v", got)
	}
	// The big-workload path walks IDs in order with the same answer.
	bigA := func() []string {
		var out []string
		f.c.Read(func(r Reader) {
			r.s.instanceIDs.AscendGreaterOrEqual("a-", func(id string) bool {
				if r.s.instances[id].Value.GetWorkload() == "a" {
					out = append(out, id)
				}
				return true
			})
		})
		return out
	}()
	if got, _ := pages(InstanceFilter{Workload: "a"}); !slices.Equal(got, bigA) {
		t.Errorf("workload a: %v, want %v", got, bigA)
	}
}

// TestNodeWatchDeltasAndResume: a node's watch starts with its full set,
// then names the instances that were bound to it, changed or left; a
// watch resumed from a revision names what changed since.
func TestNodeWatchDeltasAndResume(t *testing.T) {
	f := newFixture(t, 0)
	wl := workload("w", 1, 0)
	f.put(store.WorkloadsPrefix+"w", wl)
	f.put(store.InstancesPrefix+"w-1", instance(wl, "w-1", "n1"))
	f.put(store.InstancesPrefix+"w-2", instance(wl, "w-2", "n2"))
	f.start()

	w, full, rev, resumed := f.c.WatchNode("n1", 0)
	defer w.Close()
	if resumed || !slices.Equal(ids(full), []string{"w-1"}) {
		t.Fatalf("full set %v (resumed %v)", ids(full), resumed)
	}
	f.put(store.InstancesPrefix+"w-3", instance(wl, "w-3", "n1"))
	f.put(store.InstancesPrefix+"w-4", instance(wl, "w-4", "n2")) // another node's
	f.del(store.InstancesPrefix + "w-1")
	f.sync()
	select {
	case <-w.Changed():
	case <-time.After(10 * time.Second):
		t.Fatal("no change signalled")
	}
	got, _ := w.Take()
	slices.Sort(got)
	if !slices.Equal(got, []string{"w-1", "w-3"}) {
		t.Errorf("changed on n1: %v", got)
	}

	// A session that reconnects with the revision of its full set.
	w2, full2, _, resumed := f.c.WatchNode("n1", rev)
	defer w2.Close()
	got, _ = w2.Take()
	slices.Sort(got)
	if !resumed || full2 != nil || !slices.Equal(got, []string{"w-1", "w-3"}) {
		t.Errorf("resumed %v: full %v, changed %v", resumed, ids(full2), got)
	}
}

// TestWatchFromRevision: a watch replays the history after its revision
// and then follows; one from before the history is refused as expired.
func TestWatchFromRevision(t *testing.T) {
	f := newFixture(t, 8)
	f.start()
	wl := workload("w", 1, 0)
	first := f.put(store.WorkloadsPrefix+"w", wl)
	for i := range 3 {
		f.put(store.InstancesPrefix+fmt.Sprintf("w-%d", i), instance(wl, fmt.Sprintf("w-%d", i), ""))
	}
	f.sync()
	w, err := f.c.Watch(first, func(c Change) bool { return c.Kind == KindInstance })
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	f.put(store.InstancesPrefix+"w-9", instance(wl, "w-9", ""))
	var seen []string
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for len(seen) < 4 {
		cs, err := w.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range cs {
			seen = append(seen, c.Name)
		}
	}
	if !slices.Equal(seen, []string{"w-0", "w-1", "w-2", "w-9"}) {
		t.Errorf("watched %v", seen)
	}
	// A history of 8 changes lets the workload's creation go.
	for i := range 8 {
		f.put(store.InstancesPrefix+fmt.Sprintf("x-%d", i), instance(wl, fmt.Sprintf("x-%d", i), ""))
	}
	f.sync()
	if _, err := f.c.Watch(first-1, nil); !errdefs.IsExpired(err) {
		t.Errorf("a watch from before the history: %v, want expired", err)
	}
}

// TestRelistReportsDifferences: a second list (after the watch fell behind
// compaction) swaps in the new state and hands subscribers what differs.
func TestRelistReportsDifferences(t *testing.T) {
	f := newFixture(t, 0)
	wl := workload("w", 1, 0)
	f.put(store.WorkloadsPrefix+"w", wl)
	f.put(store.InstancesPrefix+"w-1", instance(wl, "w-1", ""))
	ctx := context.Background()
	if err := f.c.list(ctx); err != nil {
		t.Fatal(err)
	}
	var got []Change
	f.c.Subscribe(func(cs []Change) { got = append(got, cs...) })
	f.del(store.InstancesPrefix + "w-1")
	f.put(store.InstancesPrefix+"w-2", instance(wl, "w-2", ""))
	if err := f.c.list(ctx); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, c := range got {
		names = append(names, fmt.Sprintf("%s %s deleted=%v", c.Kind, c.Name, c.Deleted))
	}
	slices.Sort(names)
	want := []string{"instance w-1 deleted=true", "instance w-2 deleted=false"} // w's counts are the same
	if !slices.Equal(names, want) {
		t.Errorf("changes %v, want %v", names, want)
	}
	if _, ok := f.c.Instance("w-1"); ok {
		t.Error("w-1 still in the cache after the relist")
	}
}
