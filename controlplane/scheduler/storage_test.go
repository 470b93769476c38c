package scheduler

import (
	"strings"
	"testing"

	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// An instance that asks for scratch space is placed only on a node that
// allows that much; a fallback running as its container needs none.
func TestScratchSpacePlacesOnNodesThatAllowIt(t *testing.T) {
	small, big := node("small", 1<<30, 100), node("big", 1<<30, 100)
	small.Node.MaxScratchBytes, big.Node.MaxScratchBytes = 64<<20, 1<<30
	pending := instances("a", 3, 1<<20)
	for _, inst := range pending {
		inst.Spec.ScratchBytes = 256 << 20
	}
	plan := Schedule(SnapshotOf([]NodeInfo{small, big}, nil), pending)
	for _, inst := range pending {
		if got := plan.Bindings[inst.GetId()]; got != "big" {
			t.Errorf("%s placed on %q, want big (the only node allowing 256Mi of scratch)", inst.GetId(), got)
		}
	}

	plan = Schedule(SnapshotOf([]NodeInfo{small}, nil), pending)
	for _, inst := range pending {
		if why := plan.Unplaced[inst.GetId()]; !strings.Contains(why, "0/1 nodes fit: 1 scratch space over the node's allowance") {
			t.Errorf("%s unplaced because %q", inst.GetId(), why)
		}
	}

	ctr := node("ctr", 1<<30, 100, "container")
	fallback := &v1.Instance{Id: "f-0", Workload: "f", Spec: &v1.WorkloadSpec{Kind: "wasm", FallbackImage: "team/f:1", ScratchBytes: 256 << 20}}
	plan = Schedule(SnapshotOf([]NodeInfo{ctr}, nil), []*v1.Instance{fallback})
	if plan.Bindings["f-0"] != "ctr" {
		t.Errorf("a fallback running as its container was not placed: %v", plan.Unplaced)
	}
}
