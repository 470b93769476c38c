package cliout

import (
	"strings"
	"testing"
	"time"

	wasmorchv1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// An instance placed as its workload's fallback container shows, in the
// wide table, the runtime chosen and why, before any worker report.
func TestWideInstancesShowFallback(t *testing.T) {
	in := InstanceFrom(&wasmorchv1.InstanceView{Instance: &wasmorchv1.Instance{
		Id: "app-x", Workload: "app", Node: "n1", Spec: &wasmorchv1.WorkloadSpec{Kind: "wasm"},
		Runtime: "container", RuntimeReason: "fallback image: the node offers no wasm runtime",
	}})
	if in.Runtime != "container" || in.RuntimeReason == "" {
		t.Fatalf("InstanceFrom = %+v, want runtime container with its reason", in)
	}
	var out strings.Builder
	if err := (Printer{Format: Table, Wide: true, Now: time.Now()}).Instances(&out, []Instance{in}); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(out.String(), "\n")
	if !strings.Contains(lines[0], "RUNTIME") || !strings.Contains(lines[0], "WHY") ||
		!strings.Contains(lines[1], "container") || !strings.Contains(lines[1], "fallback image: the node offers no wasm runtime") {
		t.Errorf("wide table:\n%s", out.String())
	}
}
