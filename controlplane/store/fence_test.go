package store

import (
	"context"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/wasmorch/wasmorch/internal/etcdtest"
)

// TestFencedWritesStopWithLeadership: writes through the fence succeed
// while the election key is ours and fail, writing nothing, once another
// leadership has replaced it.
func TestFencedWritesStopWithLeadership(t *testing.T) {
	ctx := context.Background()
	cli := etcdtest.Start(t)

	sess, err := concurrency.NewSession(cli, concurrency.WithTTL(5))
	if err != nil {
		t.Fatal(err)
	}
	el := concurrency.NewElection(sess, ElectionPrefix)
	if err := el.Campaign(ctx, "me"); err != nil {
		t.Fatal(err)
	}
	kv := Fenced(cli, el)

	put := func(key string, cmps ...clientv3.Cmp) bool {
		t.Helper()
		failed, err := Txn(ctx, kv, cmps, []clientv3.Op{clientv3.OpPut(key, "v")})
		if err != nil {
			t.Fatal(err)
		}
		return failed == 0
	}
	if !put("/wasmorch/test/a") {
		t.Fatal("a fenced write failed while leading")
	}
	if !put("/wasmorch/test/b", clientv3.Compare(clientv3.ModRevision("/wasmorch/test/b"), "=", 0)) {
		t.Fatal("a fenced compare-and-swap failed while leading")
	}

	// Leadership ends (as when a dead leader's lease is revoked) and
	// another member is elected.
	if _, err := cli.Revoke(ctx, sess.Lease()); err != nil {
		t.Fatal(err)
	}
	other, err := concurrency.NewSession(cli, concurrency.WithTTL(5))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if err := concurrency.NewElection(other, ElectionPrefix).Campaign(ctx, "other"); err != nil {
		t.Fatal(err)
	}
	if put("/wasmorch/test/c") {
		t.Fatal("a deposed leader's write went through")
	}
	if resp, err := cli.Get(ctx, "/wasmorch/test/c"); err != nil || len(resp.Kvs) != 0 {
		t.Fatalf("the deposed leader's key exists: %v %v", resp, err)
	}
}
