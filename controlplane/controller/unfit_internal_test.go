package controller

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

func unfitEntry(node string, gen int64, at time.Time) *v1.UnfitNode {
	return &v1.UnfitNode{Node: node, Generation: gen, Reason: "ModuleTooLarge", UnixNano: at.UnixNano(), UntilUnixNano: at.Add(UnfitFor).UnixNano()}
}

// A workload's unfit nodes are forgotten on a new generation and once
// their time is up, one entry is kept per node (the newest), and at most
// MaxUnfitNodes (the newest).
func TestUnfitNodesAreForgottenAndBounded(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	had := []*v1.UnfitNode{
		unfitEntry("old-generation", 1, now.Add(-time.Minute)),
		unfitEntry("expired", 2, now.Add(-UnfitFor-time.Second)),
		unfitEntry("again", 2, now.Add(-2*time.Minute)),
		unfitEntry("kept", 2, now.Add(-time.Minute)),
	}
	got := mergeUnfit(had, []*v1.UnfitNode{unfitEntry("again", 2, now), unfitEntry("new", 2, now)}, 2, now)
	var names []string
	for _, u := range got {
		names = append(names, u.GetNode())
		if u.GetNode() == "again" && u.GetUnixNano() != now.UnixNano() {
			t.Errorf("node again kept its older entry")
		}
	}
	if want := "again,new,kept"; strings.Join(names, ",") != want {
		t.Fatalf("merged %v, want %s (newest first; generation 1 and the expired one forgotten)", names, want)
	}

	var many []*v1.UnfitNode
	for i := range MaxUnfitNodes + 10 {
		many = append(many, unfitEntry(fmt.Sprintf("n%03d", i), 2, now.Add(time.Duration(i)*time.Millisecond)))
	}
	got = mergeUnfit(nil, many, 2, now.Add(time.Second))
	if len(got) != MaxUnfitNodes || got[0].GetNode() != fmt.Sprintf("n%03d", MaxUnfitNodes+9) || got[len(got)-1].GetNode() != "n010" {
		t.Fatalf("kept %d entries from %s to %s, want the newest %d", len(got), got[0].GetNode(), got[len(got)-1].GetNode(), MaxUnfitNodes)
	}

	// What the scheduler is given: the current generation's, unexpired.
	wl := &v1.Workload{Name: "app", Generation: 2, UnfitNodes: had}
	a := unfitFor(wl, now)
	if a == nil || a.Generation != 2 || len(a.Nodes) != 2 || a.Nodes["kept"] != "ModuleTooLarge" || a.Nodes["again"] == "" {
		t.Fatalf("unfitFor = %+v, want kept and again for generation 2", a)
	}
	// edge: only a wasm runtime's failure leaves the node to a fallback image.
	engine := unfitEntry("wasm-failed", 2, now)
	engine.Unfit, engine.Reason = v1.NodeUnfit_NODE_UNFIT_ENGINE, "InvalidModule"
	a = unfitFor(&v1.Workload{Name: "app", Generation: 2, UnfitNodes: append(slices.Clone(had), engine)}, now)
	if !a.WasmOnly["wasm-failed"] || a.WasmOnly["kept"] || a.Nodes["wasm-failed"] != "InvalidModule" {
		t.Fatalf("unfitFor = %+v, want wasm-failed alone marked WasmOnly", a)
	}
	if a := unfitFor(&v1.Workload{Name: "app", Generation: 3, UnfitNodes: had}, now); a != nil {
		t.Fatalf("a new generation is still held to %v", a.Nodes)
	}
}

func TestTruncateKeepsRunes(t *testing.T) {
	s := strings.Repeat("é", 200) // 400 bytes
	got := truncate(s, 101)
	if len(got) > 101 || !strings.HasSuffix(got, "…") || !strings.HasPrefix(s, strings.TrimSuffix(got, "…")) {
		t.Fatalf("truncate = %q (%d bytes)", got, len(got))
	}
}
