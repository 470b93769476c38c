package integration

import (
	"context"
	"runtime"
	"slices"
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

// BenchmarkAPIUnderBusyGuests times ListWorkloads over one connection, 30
// calls 100 ms apart, on an all-in-one node first as it is (two tickers),
// then with ten busy-loop guests per CPU beside them, and reports both
// and their ratio ([hardening] 21 item 17). Run it once (-count 1): the
// benchmark harness sets GOMAXPROCS before every run, under the feet of
// the runtime, which sizes it for busy guests.
func BenchmarkAPIUnderBusyGuests(b *testing.B) {
	for b.Loop() {
		a := start(b, options{})
		a.deploy(b, "neighbour", "ticker.wasm", &v1.WorkloadSpec{Replicas: 2, MemoryBytes: tickerMemory})
		a.waitInstances(b, "neighbour", 2, state(running))
		measure := func() []time.Duration {
			var lat []time.Duration
			for range 30 {
				t0 := time.Now()
				if _, err := a.control.ListWorkloads(context.Background(), &v1.ListWorkloadsRequest{}); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(t0))
				time.Sleep(100 * time.Millisecond)
			}
			slices.Sort(lat)
			return lat
		}
		idle := measure()
		busy := 10 * runtime.NumCPU()
		a.deploy(b, "busy", "loop.wasm", &v1.WorkloadSpec{Replicas: int32(busy), MemoryBytes: tickerMemory})
		a.waitInstances(b, "busy", busy, state(running))
		loaded := measure()
		ms := func(d time.Duration) float64 { return float64(d) / 1e6 }
		b.ReportMetric(ms(idle[15]), "ms-p50-idle")
		b.ReportMetric(ms(idle[27]), "ms-p90-idle")
		b.ReportMetric(ms(loaded[15]), "ms-p50-busy")
		b.ReportMetric(ms(loaded[27]), "ms-p90-busy")
		b.ReportMetric(ms(loaded[29]), "ms-max-busy")
		b.ReportMetric(float64(loaded[15])/float64(idle[15]), "p50-ratio")
		b.ReportMetric(float64(busy), "busy-guests")
	}
}
