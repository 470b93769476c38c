package controlplane_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wasmorch/wasmorch/controlplane/blobs"
	"github.com/wasmorch/wasmorch/internal/errdefs"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// fakeNode is a node registered over the Agent API whose heartbeats the
// test can pause, and which reports the states the test chooses; like a
// worker, it reports the instances its set marks terminating Stopped
// (unless paused, or holdStops says to keep them running).
type fakeNode struct {
	name      string
	paused    atomic.Bool
	holdStops atomic.Bool
}

// stopTerminating follows the node's session as a worker would, and
// reports Stopped the instances its set marks terminating.
func (n *fakeNode) stopTerminating(ctx context.Context, c *cluster) {
	session, err := c.agent.Session(ctx, &v1.SessionRequest{Node: n.name})
	if err != nil {
		return
	}
	for {
		set, err := session.Recv()
		if err != nil {
			return
		}
		if n.paused.Load() || n.holdStops.Load() {
			continue
		}
		reportTerminatingStopped(ctx, c, n.name, set)
	}
}

// reportTerminatingStopped reports, as node's worker, the instances set
// marks terminating as stopped.
func reportTerminatingStopped(ctx context.Context, c *cluster, node string, set *v1.Assignments) {
	batch := &v1.StatusBatch{Node: node}
	for _, inst := range set.GetInstances() {
		if inst.GetTerminatingUnixNano() != 0 {
			batch.Statuses = append(batch.Statuses, &v1.InstanceStatus{Id: inst.GetId(), State: v1.InstanceState_INSTANCE_STATE_STOPPED})
		}
	}
	if len(batch.Statuses) > 0 {
		_, _ = c.agent.ReportStatus(ctx, batch)
	}
}

func registerFake(t *testing.T, c *cluster, names ...string) map[string]*fakeNode {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	out := map[string]*fakeNode{}
	for _, name := range names {
		if _, err := c.agent.Register(ctx, &v1.RegisterRequest{Node: &v1.Node{
			Name: name, Runtimes: []string{"wasm"}, Capacity: &v1.Resources{MemoryBytes: 16 << 30, Instances: 100}, // room for 100 instances at the default 128 MiB
		}}); err != nil {
			t.Fatal(err)
		}
		n := &fakeNode{name: name}
		out[name] = n
		wg.Add(2)
		go func() {
			defer wg.Done()
			n.stopTerminating(ctx, c)
		}()
		go func() {
			defer wg.Done()
			tick := time.NewTicker(200 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
				if !n.paused.Load() {
					_, _ = c.agent.Heartbeat(ctx, &v1.HeartbeatRequest{Node: name})
				}
			}
		}()
	}
	return out
}

// deployOn applies workload web with replicas instances, all placed on
// node (the others cordoned meanwhile), and reports them Running.
func deployOn(t *testing.T, c *cluster, replicas int32, node string, others ...string) {
	t.Helper()
	ctx := context.Background()
	hello := readModule(t, "hello.wasm")
	digest := blobs.Digest(hello)
	if err := upload(ctx, t, c.control, hello, digest); err != nil {
		t.Fatal(err)
	}
	for _, o := range others {
		if _, err := c.control.CordonNode(ctx, &v1.NodeRequest{Name: o}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.control.ApplyWorkload(ctx, &v1.ApplyWorkloadRequest{Name: "web", Spec: &v1.WorkloadSpec{ModuleDigest: digest, Replicas: replicas}}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "web placed on "+node, func() (bool, string) {
		on := instancesOn(t, c, node)
		return len(on) == int(replicas), fmt.Sprint(on)
	})
	report(t, c, node, instancesOn(t, c, node)...)
	for _, o := range others {
		if _, err := c.control.UncordonNode(ctx, &v1.NodeRequest{Name: o}); err != nil {
			t.Fatal(err)
		}
	}
}

// instancesOn lists the IDs of web's instances bound to node, lost or not.
func instancesOn(t *testing.T, c *cluster, node string) []string {
	t.Helper()
	l, err := c.control.ListInstances(context.Background(), &v1.ListInstancesRequest{Workload: "web"})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, iv := range l.GetInstances() {
		if iv.GetInstance().GetNode() == node {
			ids = append(ids, iv.GetInstance().GetId())
		}
	}
	return ids
}

// report tells the control plane, as node's worker, that ids are Running.
func report(t *testing.T, c *cluster, node string, ids ...string) {
	t.Helper()
	batch := &v1.StatusBatch{Node: node}
	for _, id := range ids {
		batch.Statuses = append(batch.Statuses, &v1.InstanceStatus{Id: id, State: v1.InstanceState_INSTANCE_STATE_RUNNING})
	}
	if _, err := c.agent.ReportStatus(context.Background(), batch); err != nil {
		t.Fatal(err)
	}
}

func ready(t *testing.T, c *cluster) int32 {
	t.Helper()
	v, err := c.control.GetWorkload(context.Background(), &v1.GetWorkloadRequest{Name: "web"})
	if err != nil {
		t.Fatal(err)
	}
	return v.GetReady()
}

// TestDrainRemovesAnInstanceOnlyOnceItsReplacementRuns drains a node
// holding both replicas of a workload and plays the workers: each
// original goes only after a replacement reports Running, so the workload
// never has fewer than 2 ready instances.
func TestDrainRemovesAnInstanceOnlyOnceItsReplacementRuns(t *testing.T) {
	c := startCluster(t, t.TempDir())
	registerFake(t, c, "d1", "d2")
	deployOn(t, c, 2, "d1", "d2")
	eventually(t, "web 2/2 ready", func() (bool, string) { r := ready(t, c); return r == 2, fmt.Sprint(r) })
	ctx := context.Background()

	if _, err := c.control.DrainNode(ctx, &v1.NodeRequest{Name: "d1"}); err != nil {
		t.Fatal(err)
	}
	var repl []string
	eventually(t, "two replacements bound to d2", func() (bool, string) {
		repl = instancesOn(t, c, "d2")
		return len(repl) == 2, fmt.Sprint(repl)
	})
	if on := instancesOn(t, c, "d1"); len(on) != 2 || ready(t, c) != 2 {
		t.Fatalf("before any replacement runs: d1 holds %v and %d are ready, want both originals kept and 2 ready", on, ready(t, c))
	}

	report(t, c, "d2", repl[0])
	eventually(t, "one original removed", func() (bool, string) {
		on := instancesOn(t, c, "d1")
		return len(on) == 1, fmt.Sprint(on)
	})
	if r := ready(t, c); r != 2 {
		t.Errorf("with one replacement running, %d ready, want 2", r)
	}

	report(t, c, "d2", repl[1])
	eventually(t, "d1 empty", func() (bool, string) {
		on := instancesOn(t, c, "d1")
		return len(on) == 0, fmt.Sprint(on)
	})
	l, err := c.control.ListNodes(ctx, &v1.ListNodesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, nv := range l.GetNodes() {
		if nv.GetNode().GetName() == "d1" && (!nv.GetNode().GetCordoned() || !nv.GetNode().GetDraining() || nv.GetInstances() != 0) {
			t.Errorf("d1 after drain: %v", nv)
		}
	}
	if _, err := c.control.DrainNode(ctx, &v1.NodeRequest{Name: "nope"}); !errdefs.IsNotFound(errdefs.FromGRPC(err)) {
		t.Errorf("drain of an unknown node: %v, want NotFound", err)
	}
}

// TestNodeLossMarksInstancesLostAndReplacesThem stops one node's heartbeats:
// the node goes NotReady, its instances Lost, replacements are bound to the
// other node; when the heartbeats resume the lost records go.
func TestNodeLossMarksInstancesLostAndReplacesThem(t *testing.T) {
	c := startCluster(t, t.TempDir())
	nodes := registerFake(t, c, "l1", "l2")
	deployOn(t, c, 2, "l1", "l2")
	ctx := context.Background()
	lostIDs := instancesOn(t, c, "l1")

	nodes["l1"].paused.Store(true)
	eventually(t, "l1's instances Lost and replaced on l2", func() (bool, string) {
		l, err := c.control.ListInstances(ctx, &v1.ListInstancesRequest{Workload: "web"})
		if err != nil {
			t.Fatal(err)
		}
		lost, onL2 := 0, 0
		for _, iv := range l.GetInstances() {
			switch {
			case iv.GetInstance().GetNode() == "l1" && iv.GetState() == v1.InstanceState_INSTANCE_STATE_LOST && iv.GetInstance().GetLostUnixNano() != 0:
				lost++
			case iv.GetInstance().GetNode() == "l2":
				onL2++
			}
		}
		return lost == 2 && onL2 == 2, l.String()
	})
	for object, reason := range map[string]string{"workload/web": "InstanceLost", "node/l1": "NodeNotReady"} {
		eventually(t, reason+" recorded", func() (bool, string) {
			evs, err := c.control.ListEvents(ctx, &v1.ListEventsRequest{Object: object})
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range evs.GetEvents() {
				if e.GetReason() == reason {
					return true, ""
				}
			}
			return false, evs.String()
		})
	}
	// The node's worker would stop them: reports for lost instances change
	// nothing, and they are no longer ready.
	report(t, c, "l1", lostIDs...)

	nodes["l1"].paused.Store(false)
	eventually(t, "lost records dropped once l1 is back", func() (bool, string) {
		on := instancesOn(t, c, "l1")
		return len(on) == 0, fmt.Sprint(on)
	})
	if on := instancesOn(t, c, "l2"); len(on) != 2 {
		t.Errorf("l2 holds %v, want the 2 replacements", on)
	}

	_, err := c.control.RemoveNode(ctx, &v1.RemoveNodeRequest{Name: "l2"})
	if !errdefs.IsFailedPrecondition(errdefs.FromGRPC(err)) || !strings.Contains(err.Error(), "is Ready") {
		t.Errorf("removing Ready l2 without force: %v, want FailedPrecondition", err)
	}
	resp, err := c.control.RemoveNode(ctx, &v1.RemoveNodeRequest{Name: "l2", Force: true})
	if err != nil || resp.GetLostInstances() != 2 {
		t.Fatalf("forced removal of l2: %v, %v; want 2 instances to replace", resp, err)
	}
	// l2's registration is gone, so its heartbeats fail until it registers
	// again; its instances are replaced on l1.
	eventually(t, "replacements on l1 after l2's removal", func() (bool, string) {
		on := instancesOn(t, c, "l1")
		return len(on) == 2 && len(instancesOn(t, c, "l2")) == 0, fmt.Sprint(on)
	})
}
