package integration

import (
	"context"
	"runtime"
	"testing"
	"time"

	"github.com/wasmorch/wasmorch/controlplane"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// TestBusyGuestsDoNotStarveTheNode: ten busy-loop guests per CPU run on
// the node for five of its lease periods while the control plane watches
// the node. Its heartbeats must keep its lease alive the whole time (not
// one NotReady), and the neighbours running beside the loops are neither
// lost nor replaced.
func TestBusyGuestsDoNotStarveTheNode(t *testing.T) {
	a := start(t, options{})
	a.deploy(t, "neighbour", "ticker.wasm", &v1.WorkloadSpec{Replicas: 2, MemoryBytes: tickerMemory})
	neighbours := a.waitInstances(t, "neighbour", 2, state(running))

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	watch, err := a.control.Watch(ctx, &v1.WatchRequest{Kind: v1.WatchKind_WATCH_KIND_NODES})
	if err != nil {
		t.Fatal(err)
	}
	if ev, err := watch.Recv(); err != nil || ev.GetType() != v1.WatchEventType_WATCH_EVENT_TYPE_BOOKMARK {
		t.Fatalf("watch nodes: first event %v, %v; want a bookmark", ev, err)
	}
	notReady := make(chan int, 1)
	go func() {
		n := 0
		defer func() { notReady <- n }()
		for {
			ev, err := watch.Recv()
			if err != nil {
				return
			}
			if ev.GetNode() != nil && !ev.GetNode().GetReady() {
				n++
			}
		}
	}()

	busy := 10 * runtime.NumCPU()
	a.deploy(t, "busy", "loop.wasm", &v1.WorkloadSpec{Replicas: int32(busy), MemoryBytes: tickerMemory})
	a.waitInstances(t, "busy", busy, state(running))
	// The busy guests hold the node for five lease periods: a node whose
	// heartbeats fall behind by one lease is NotReady in that time.
	time.Sleep(5 * controlplane.DefaultConfig().NodeGrace)
	if _, err := a.control.DeleteWorkload(context.Background(), &v1.DeleteWorkloadRequest{Name: "busy"}); err != nil {
		t.Fatal(err)
	}
	a.waitInstances(t, "busy", 0, nil)
	cancel()
	if n := <-notReady; n > 0 {
		t.Errorf("the control plane saw the node NotReady %d times while %d busy guests ran", n, busy)
	}
	after := a.waitInstances(t, "neighbour", 2, state(running))
	for i, iv := range after {
		was := neighbours[i].GetInstance()
		if iv.GetInstance().GetId() != was.GetId() || iv.GetStatus().GetRestarts() != 0 {
			t.Errorf("neighbour %s was replaced or restarted: now %s with %d restarts", was.GetId(), iv.GetInstance().GetId(), iv.GetStatus().GetRestarts())
		}
	}
}
