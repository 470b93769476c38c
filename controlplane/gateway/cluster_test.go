package gateway

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"

	"github.com/wasmorch/wasmorch/controlplane/cache"
	"github.com/wasmorch/wasmorch/controlplane/store"
	"github.com/wasmorch/wasmorch/internal/etcdtest"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// cluster is a real embedded etcd and a member's cache over it, started,
// with helpers to write records as the API, the controllers and the
// workers write them.
type cluster struct {
	tb  testing.TB
	cli *clientv3.Client
	st  *store.Store
	c   *cache.Cache
	ops []clientv3.Op // batched puts (flush)
}

func newCluster(tb testing.TB) *cluster {
	tb.Helper()
	cli := etcdtest.Start(tb)
	k := &cluster{tb: tb, cli: cli, st: store.New(cli), c: cache.New(cache.Config{Client: cli})}
	etcdtest.Run(tb, k.c.Start)
	select {
	case <-k.c.Synced():
	case <-time.After(30 * time.Second):
		tb.Fatal("the cache never synced")
	}
	return k
}

// put writes a record and returns the revision of the write.
func (k *cluster) put(key string, m proto.Message, opts ...clientv3.OpOption) int64 {
	k.tb.Helper()
	return etcdtest.Put(k.tb, k.cli, key, m, opts...)
}

// queue adds a put to the next flush: many records in few transactions.
func (k *cluster) queue(key string, m proto.Message) {
	k.tb.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		k.tb.Fatal(err)
	}
	k.ops = append(k.ops, clientv3.OpPut(key, string(b)))
	if len(k.ops) == 128 { // etcd's default limit of operations per transaction
		k.flush()
	}
}

func (k *cluster) flush() int64 {
	k.tb.Helper()
	if len(k.ops) == 0 {
		return 0
	}
	resp, err := k.cli.Txn(context.Background()).Then(k.ops...).Commit()
	if err != nil {
		k.tb.Fatal(err)
	}
	k.ops = k.ops[:0]
	return resp.Header.Revision
}

func (k *cluster) del(key string) int64 {
	k.tb.Helper()
	resp, err := k.cli.Delete(context.Background(), key)
	if err != nil {
		k.tb.Fatal(err)
	}
	return resp.Header.Revision
}

// node registers a node with a function server at addr and the Wasm
// runtime, alive until the returned lease is revoked.
func (k *cluster) node(name, addr string) clientv3.LeaseID {
	k.tb.Helper()
	k.put(store.NodesPrefix+name, &v1.Node{Name: name, HttpAddress: addr, Runtimes: []string{"wasm"}})
	l, err := k.cli.Grant(context.Background(), 60)
	if err != nil {
		k.tb.Fatal(err)
	}
	if _, err := k.cli.Put(context.Background(), store.AlivePrefix+name, "", clientv3.WithLease(l.ID)); err != nil {
		k.tb.Fatal(err)
	}
	return l.ID
}

// replica writes an instance of wl bound to node and its node's report
// that it runs (as the worker sends it).
func (k *cluster) replica(wl *v1.Workload, id, node string) {
	k.tb.Helper()
	k.queue(store.InstancesPrefix+id, &v1.Instance{Id: id, Workload: wl.GetName(), Generation: wl.GetGeneration(), Node: node, Spec: wl.GetSpec()})
	k.queue(store.StatusPrefix+id, &v1.InstanceStatus{Id: id, Node: node, State: v1.InstanceState_INSTANCE_STATE_RUNNING})
}

// sync waits until the cache holds everything written so far.
func (k *cluster) sync() {
	k.tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := k.c.Sync(ctx); err != nil {
		k.tb.Fatal(err)
	}
}

// follower is a builder fed by the cluster's cache, whose passes a test
// runs itself (update), one at a time.
type follower struct {
	k    *cluster
	b    *builder
	t    *table
	seen atomic.Int64 // the latest revision whose changes b has noted
}

func (k *cluster) follow() *follower {
	f := &follower{k: k, b: newBuilder(), t: &table{}}
	cancel := k.c.Subscribe(func(cs []cache.Change) {
		f.b.note(cs)
		for _, c := range cs {
			if c.Rev > f.seen.Load() {
				f.seen.Store(c.Rev)
			}
		}
	})
	k.tb.Cleanup(cancel)
	return f
}

// pass runs one pass over what changed up to revision rev (noted by
// then) and returns the table.
func (f *follower) pass(rev int64) *table {
	f.k.tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for f.seen.Load() < rev {
		if time.Now().After(deadline) {
			f.k.tb.Fatalf("the changes up to revision %d never reached the gateway (at %d)", rev, f.seen.Load())
		}
		time.Sleep(time.Millisecond)
	}
	read := func(fn func(source)) { f.k.c.Read(func(r cache.Reader) { fn(r) }) }
	f.t = f.b.update(read, f.t, f.b.take(), nil)
	return f.t
}

// full runs a full pass, as the first one and the periodic one are.
func (f *follower) full() *table {
	f.b.markAll()
	return f.pass(0)
}

// eventually polls cond until it holds, or fails the test after a while.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("never: %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}
