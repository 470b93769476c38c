package integration

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wasmorch/wasmorch/internal/errdefs"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
	"github.com/wasmorch/wasmorch/worker"
)

// State (issue 14): an instance that floods its scratch space stops at its
// limit with ENOSPC and keeps running, its neighbour's writes within its
// own limit succeed, and a workload's scratch spaces go with it.
func TestScratchSpaceFloodStopsAtItsLimitWhileANeighbourRuns(t *testing.T) {
	var workerDir string
	a := start(t, options{worker: func(c *worker.Config) {
		c.MaxScratchBytes = 4 << 20
		workerDir = c.DataDir
	}})
	a.deploy(t, "flood", "scratch.wasm", &v1.WorkloadSpec{Replicas: 1, ScratchBytes: 1 << 20})
	a.deploy(t, "calm", "scratch.wasm", &v1.WorkloadSpec{Replicas: 1, ScratchBytes: 2 << 20, Args: []string{"1500000"}})
	a.waitFor(t, "both to have written", func() (bool, string) {
		flood, calm := joined(a.logs(t, "flood")), joined(a.logs(t, "calm"))
		return strings.Contains(flood, "wrote 1048576 bytes to /tmp/fill: No space left on device\nalive 1\n") &&
			strings.Contains(calm, "wrote 1500000 bytes to /tmp/fill\nalive 1\n"), flood + " | " + calm
	})
	a.waitInstances(t, "flood", 1, state(v1.InstanceState_INSTANCE_STATE_RUNNING))
	id := a.instances(t, "flood")[0].GetInstance().GetId()
	fill := filepath.Join(workerDir, "scratch", id, "fill")
	if info, err := os.Stat(fill); err != nil || info.Size() != 1<<20 {
		t.Fatalf("the flood's file on the node: %v, %v; want 1 MiB", info, err)
	}

	// Deleting the workload removes its scratch space.
	if _, err := a.control.DeleteWorkload(t.Context(), &v1.DeleteWorkloadRequest{Name: "flood"}); err != nil {
		t.Fatal(err)
	}
	a.waitFor(t, "the flood's scratch space to be removed", func() (bool, string) {
		_, err := os.Stat(filepath.Dir(fill))
		return os.IsNotExist(err), "still there"
	})
}

// A scratch space over what the node allows one instance is refused
// before anything is stored.
func TestScratchSpaceOverTheNodesAllowanceIsRefused(t *testing.T) {
	a := start(t, options{worker: func(c *worker.Config) { c.MaxScratchBytes = 4 << 20 }})
	err := a.tryDeploy("big", "scratch.wasm", &v1.WorkloadSpec{Replicas: 1, ScratchBytes: 8 << 20})
	if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "scratch space of 8Mi is more than any node allows one instance (at most 4Mi") {
		t.Fatalf("deploy with 8Mi of scratch on a node allowing 4Mi: %v", err)
	}
	if _, err := a.control.GetWorkload(t.Context(), &v1.GetWorkloadRequest{Name: "big"}); !errdefs.IsNotFound(errdefs.FromGRPC(err)) {
		t.Fatalf("the refused workload was stored: %v", err)
	}
}

func joined(logs map[string]string) string {
	var b strings.Builder
	for _, l := range logs {
		b.WriteString(l)
	}
	return b.String()
}
