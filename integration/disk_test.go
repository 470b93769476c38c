package integration

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wasmorch/wasmorch/internal/disktest"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
	"github.com/wasmorch/wasmorch/worker"
)

// logBytesOnDisk sums the files of the worker's instance logs.
func logBytesOnDisk(t *testing.T, workerDir string) int64 {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(workerDir, "logs"))
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, e := range entries {
		fi, err := e.Info()
		if err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		if err == nil {
			n += fi.Size()
		}
	}
	return n
}

// Many chatty instances (as `scale flood --replicas 160`), each within its
// own bound, keep within the node's budget together: the oldest output is
// deleted first, and the newest kept.
func TestInstanceLogsTogetherStayWithinTheNodesBudget(t *testing.T) {
	const perInstance, budget, replicas = 64 << 10, 512 << 10, 24
	var workerDir string
	a := start(t, options{logBytes: perInstance, worker: func(c *worker.Config) {
		c.LogBytesTotal = budget
		workerDir = c.DataDir
	}})
	a.deploy(t, "burst", "burst.wasm", &v1.WorkloadSpec{Replicas: replicas, Restart: v1.RestartPolicy_RESTART_POLICY_NEVER})
	a.waitInstances(t, "burst", replicas, state(v1.InstanceState_INSTANCE_STATE_SUCCEEDED))

	// Each wrote 2 MiB and keeps its newest 64 KiB on its own: 1.5 MiB
	// for all of them without a node budget.
	if got := logBytesOnDisk(t, workerDir); got > budget {
		t.Fatalf("%d bytes of instance logs on disk, want at most the node's budget of %d", got, budget)
	}
	var kept int
	for _, out := range a.logs(t, "burst") {
		kept += len(out)
		if out != "" && !strings.HasSuffix(out, strings.Repeat("x", 63)+"\n") {
			t.Fatalf("a log kept by the budget does not end with the instance's last line: ...%q", out[max(0, len(out)-80):])
		}
	}
	if kept < budget/4 {
		t.Fatalf("the logs read back hold %d bytes: the budget kept too little of %d", kept, budget)
	}
}

// The worker's data dir on a small real filesystem that fills: the node
// reports DiskPressure, which the control plane keeps in its record and
// as an event; a new workload is not placed there (its instance pending,
// saying why) while the instances running there keep running; once there
// is room again, the pending instance runs.
func TestANodeUnderDiskPressureTakesNoNewInstances(t *testing.T) {
	disk := disktest.Tmpfs(t, 64<<20)
	a := start(t, options{worker: func(c *worker.Config) {
		c.DataDir = filepath.Join(disk, "worker")
		c.DiskPressureFree = 16 << 20
		c.DiskPressureFreePercent = -1
	}})
	ctx := context.Background()
	a.deploy(t, "before", "ticker.wasm", &v1.WorkloadSpec{Replicas: 1})
	a.waitInstances(t, "before", 1, state(v1.InstanceState_INSTANCE_STATE_RUNNING))

	node := func() *v1.NodeView {
		l, err := a.control.ListNodes(ctx, &v1.ListNodesRequest{})
		if err != nil || len(l.GetNodes()) != 1 {
			t.Fatalf("ListNodes: %v, %v", l, err)
		}
		return l.GetNodes()[0]
	}
	disktest.Fill(t, disk, 4<<20)
	var cond *v1.NodeCondition
	a.waitFor(t, "DiskPressure on the node", func() (bool, string) {
		n := node()
		if cs := n.GetNode().GetConditions(); len(cs) == 1 {
			cond = cs[0]
		}
		return cond != nil, n.String()
	})
	if cond.GetType() != v1.NodeConditionType_NODE_CONDITION_TYPE_DISK_PRESSURE ||
		!strings.Contains(cond.GetMessage(), "the disk holding "+filepath.Join(disk, "worker")+" has ") ||
		!strings.Contains(cond.GetMessage(), "of 64 MiB, below the 16 MiB the worker keeps free") {
		t.Fatalf("the node's condition is %v", cond)
	}
	if !node().GetReady() {
		t.Fatal("a node under disk pressure is not Ready")
	}

	a.deploy(t, "after", "hello.wasm", &v1.WorkloadSpec{Replicas: 1, Restart: v1.RestartPolicy_RESTART_POLICY_NEVER})
	a.waitFor(t, "the new instance pending for disk pressure", func() (bool, string) {
		ivs := a.instances(t, "after")
		if len(ivs) != 1 {
			return false, describe(ivs)
		}
		why := ivs[0].GetInstance().GetPendingReason()
		return why == "0/1 nodes fit: 1 disk pressure", describe(ivs) + " pending: " + why
	})
	if ivs := a.instances(t, "before"); len(ivs) != 1 || ivs[0].GetState() != v1.InstanceState_INSTANCE_STATE_RUNNING {
		t.Fatalf("the instance running before the pressure: %s", describe(ivs))
	}
	evs, err := a.control.ListEvents(ctx, &v1.ListEventsRequest{Object: "node/it-node"})
	if err != nil {
		t.Fatal(err)
	}
	var seen bool
	for _, e := range evs.GetEvents() {
		seen = seen || e.GetReason() == "NodeHasDiskPressure" && strings.Contains(e.GetMessage(), cond.GetMessage())
	}
	if !seen {
		t.Fatalf("no NodeHasDiskPressure event with the worker's message among %v", evs.GetEvents())
	}

	disktest.Unfill(t, disk)
	a.waitFor(t, "DiskPressure to end", func() (bool, string) {
		n := node()
		return len(n.GetNode().GetConditions()) == 0, n.String()
	})
	a.waitInstances(t, "after", 1, state(v1.InstanceState_INSTANCE_STATE_SUCCEEDED))
}
