package cliout

import (
	"bytes"
	"regexp"
	"strings"
	"testing"

	wasmorchv1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

func TestDescribeShowsACanaryWaitingForPromotion(t *testing.T) {
	running := wasmorchv1.InstanceState_INSTANCE_STATE_RUNNING
	view := func(id string, gen int64) *wasmorchv1.InstanceView {
		return &wasmorchv1.InstanceView{Instance: &wasmorchv1.Instance{Id: id, Workload: "greet", Generation: gen, Node: "n1"},
			Status: &wasmorchv1.InstanceStatus{State: running}, State: running}
	}
	wl := &wasmorchv1.Workload{Name: "greet", Generation: 2, PromotedGeneration: 1,
		Spec: &wasmorchv1.WorkloadSpec{Replicas: 4, Canary: "25%", Http: &wasmorchv1.HttpTrigger{Route: "/greet"}}}
	insts := []*wasmorchv1.InstanceView{view("greet-a", 1), view("greet-b", 1), view("greet-c", 1), view("greet-d", 1), view("greet-e", 2)}
	var b bytes.Buffer
	if err := (Printer{Format: Table}).DescribeWorkload(&b, DescribeWorkload(&wasmorchv1.WorkloadView{Workload: wl}, insts, nil)); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`(?m)^Canary: +25% of the traffic for a new generation, promoted by 'wasmorch rollout promote'$`,
		`(?m)^Rollout: +canary of generation 2: 1/1 ready, 25% of the traffic; 4 of older generations serve the rest; waiting for promotion \('wasmorch rollout promote greet'\)$`,
	} {
		if !regexp.MustCompile(want).MatchString(b.String()) {
			t.Errorf("describe does not show %q:\n%s", want, b.String())
		}
	}
	// Promoted, or with a duration.
	wl.PromotedGeneration = 2
	if d := DescribeWorkload(&wasmorchv1.WorkloadView{Workload: wl}, insts, nil); d.CanaryPhase != "" {
		t.Errorf("a promoted generation shows a canary phase: %q", d.CanaryPhase)
	}
	wl.PromotedGeneration, wl.Spec.CanaryDurationMs = 1, 300000
	d := DescribeWorkload(&wasmorchv1.WorkloadView{Workload: wl}, insts, nil)
	if !strings.HasSuffix(d.CanaryPhase, "promoted once ready for 5m0s") || d.Canary != "25% of the traffic for a new generation, promoted once ready for 5m0s" {
		t.Errorf("with a duration: %q / %q", d.Canary, d.CanaryPhase)
	}
}
