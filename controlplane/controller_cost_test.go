package controlplane_test

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wasmorch/wasmorch/controlplane"
	"github.com/wasmorch/wasmorch/controlplane/blobs"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// TestOneChangeReconcilesOneWorkload: with 40 workloads placed, scaling
// one of them has the controller reconcile that workload (a few times, as
// its own writes come back), never every workload as a full pass would;
// a node registering again and status reports that change nothing cost
// no reconcile at all: the cost of one change does not grow with the
// cluster.
func TestOneChangeReconcilesOneWorkload(t *testing.T) {
	c := startClusterWith(t, t.TempDir(), func(cfg *controlplane.Config) {
		cfg.ControllerResync = time.Hour // no safety-net pass during the test
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	registerNode(ctx, t, c, "n1")
	wasm := readModule(t, "hello.wasm")
	digest := blobs.Digest(wasm)
	if err := upload(ctx, t, c.control, wasm, digest); err != nil {
		t.Fatal(err)
	}
	const workloads = 40
	for i := range workloads {
		if _, err := c.control.ApplyWorkload(ctx, &v1.ApplyWorkloadRequest{Name: fmt.Sprintf("w%02d", i), Spec: &v1.WorkloadSpec{ModuleDigest: digest, Replicas: 1}}); err != nil {
			t.Fatal(err)
		}
	}
	waitBound(t, c, "", workloads)
	before := reconciles(t, c)

	if _, err := c.control.ScaleWorkload(ctx, &v1.ScaleRequest{Name: "w07", Replicas: 3}); err != nil {
		t.Fatal(err)
	}
	waitBound(t, c, "w07", 3)
	// Let the writes of the change come back through the cache.
	time.Sleep(300 * time.Millisecond)
	n := reconciles(t, c) - before
	t.Logf("scaling one workload: %d workload reconciles", n)
	if n < 1 || n > 8 {
		t.Fatalf("scaling one of %d workloads cost %d workload reconciles; want a few, for that one only", workloads, n)
	}

	// The node, which holds an instance of every workload, registers
	// again (as a worker does when it reconnects): its record changes, it
	// stays alive, and no workload needs looking at.
	before = reconciles(t, c)
	registerNode(ctx, t, c, "n1")
	time.Sleep(300 * time.Millisecond)
	if n := reconciles(t, c) - before; n != 0 {
		t.Errorf("a node registering again cost %d workload reconciles; want none", n)
	}

	// Its worker reports every instance Running: the reports that make a
	// workload ready are reconciled; once every workload is settled (its
	// replicas all current and ready), more reports of them cost nothing.
	report := func(msg string) {
		l, err := c.control.ListInstances(ctx, &v1.ListInstancesRequest{Limit: 500})
		if err != nil {
			t.Fatal(err)
		}
		batch := &v1.StatusBatch{Node: "n1"}
		for _, iv := range l.GetInstances() {
			batch.Statuses = append(batch.Statuses, &v1.InstanceStatus{Id: iv.GetInstance().GetId(), State: v1.InstanceState_INSTANCE_STATE_RUNNING, Message: msg})
		}
		if _, err := c.agent.ReportStatus(ctx, batch); err != nil {
			t.Fatal(err)
		}
	}
	report("started")
	eventually(t, "every workload ready", func() (bool, string) {
		l, err := c.control.ListWorkloads(ctx, &v1.ListWorkloadsRequest{})
		if err != nil {
			return false, err.Error()
		}
		for _, w := range l.GetWorkloads() {
			if w.GetReady() != w.GetWorkload().GetSpec().GetReplicas() {
				return false, w.String()
			}
		}
		return true, ""
	})
	time.Sleep(300 * time.Millisecond)
	before = reconciles(t, c)
	report("still running")
	time.Sleep(300 * time.Millisecond)
	if n := reconciles(t, c) - before; n != 0 {
		t.Errorf("reports that change nothing of %d settled workloads cost %d workload reconciles; want none", workloads, n)
	}
}

// registerNode registers a node with room for many instances and keeps
// its lease alive until ctx ends.
func registerNode(ctx context.Context, t *testing.T, c *cluster, name string) {
	t.Helper()
	node := &v1.Node{Name: name, Arch: "amd64", Os: "linux", Runtimes: []string{"wasm"},
		Capacity: &v1.Resources{MemoryBytes: 64 << 30, CpuMillis: 64000, Instances: 1000}}
	if _, err := c.agent.Register(ctx, &v1.RegisterRequest{Node: node}); err != nil {
		t.Fatal(err)
	}
	go func() {
		t := time.NewTicker(300 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				_, _ = c.agent.Heartbeat(ctx, &v1.HeartbeatRequest{Node: name})
			}
		}
	}()
}

// waitBound waits until want instances (of workload, or of all) are bound.
func waitBound(t *testing.T, c *cluster, workload string, want int) {
	t.Helper()
	eventually(t, fmt.Sprintf("%d instances of %q bound", want, workload), func() (bool, string) {
		l, err := c.control.ListInstances(context.Background(), &v1.ListInstancesRequest{Workload: workload})
		if err != nil {
			return false, err.Error()
		}
		bound := 0
		for _, iv := range l.GetInstances() {
			if iv.GetInstance().GetNode() != "" {
				bound++
			}
		}
		return bound == want, fmt.Sprintf("%d bound of %d", bound, len(l.GetInstances()))
	})
}

// reconciles reads wasmorch_controller_reconciles_total{kind="workload"}
// from the member's /metrics.
func reconciles(t *testing.T, c *cluster) int {
	t.Helper()
	resp, err := http.Get("http://" + c.srv.MetricsAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), `wasmorch_controller_reconciles_total{kind="workload"} `); ok {
			n, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatal(err)
			}
			return int(n)
		}
	}
	t.Fatal("no wasmorch_controller_reconciles_total{kind=\"workload\"} in /metrics")
	return 0
}
