package store

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/wasmorch/wasmorch/internal/etcdtest"
)

// gatedKV holds its first transaction until the gate opens.
type gatedKV struct {
	clientv3.KV
	once    sync.Once
	entered chan struct{}
	gate    chan struct{}
}

func (g *gatedKV) Txn(ctx context.Context) clientv3.Txn {
	g.once.Do(func() { close(g.entered); <-g.gate })
	return g.KV.Txn(ctx)
}

// TestBatchedWritesShareTransactions: the reports that arrive while a
// transaction is being written all go into the next one, so fifty nodes
// reporting at once cost two transactions, and every report is stored.
func TestBatchedWritesShareTransactions(t *testing.T) {
	cli := etcdtest.Start(t)
	kv := &gatedKV{KV: cli, entered: make(chan struct{}), gate: make(chan struct{})}
	w := NewBatcher(kv)
	etcdtest.Run(t, func(ctx context.Context) error { w.Run(ctx); return nil })
	ctx := context.Background()
	const nodes = 50
	errs := make(chan error, nodes)
	put := func(i int) {
		errs <- w.Write(ctx, []clientv3.Op{clientv3.OpPut(fmt.Sprintf("/wasmorch/test/%02d", i), "Running")})
	}
	go put(0)
	<-kv.entered // the first report's transaction is being written
	for i := 1; i < nodes; i++ {
		go put(i)
	}
	for deadline := time.Now().Add(30 * time.Second); ; {
		w.mu.Lock()
		n := len(w.pending)
		w.mu.Unlock()
		if n == nodes-1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d reports pending", n, nodes-1)
		}
		time.Sleep(time.Millisecond)
	}
	close(kv.gate)
	for range nodes {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if w.txns != 2 {
		t.Errorf("%d reports took %d transactions; want 2 (the first, then the rest together)", nodes, w.txns)
	}
	resp, err := cli.Get(ctx, "/wasmorch/test/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil || resp.Count != nodes {
		t.Errorf("%d reports stored (%v), want %d", resp.Count, err, nodes)
	}
}
