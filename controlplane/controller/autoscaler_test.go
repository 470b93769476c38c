package controller

import (
	"testing"
	"time"

	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

func TestDecideScale(t *testing.T) {
	now := time.Unix(10000, 0)
	ago := func(d time.Duration) int64 { return now.Add(-d).UnixNano() }
	fn := func(replicas, lo, hi int32, updated time.Duration) *v1.Workload {
		return &v1.Workload{Name: "fn", UpdatedUnixNano: ago(updated), Spec: &v1.WorkloadSpec{
			Replicas: replicas,
			Http:     &v1.HttpTrigger{Route: "/fn"},
			Autoscale: &v1.Autoscale{MinReplicas: lo, MaxReplicas: hi, TargetConcurrency: 4,
				IdleMs: time.Minute.Milliseconds()},
		}}
	}
	load := func(inFlight, peak int64, last time.Duration) *v1.FunctionLoad {
		return &v1.FunctionLoad{InFlight: inFlight, PeakInFlight: peak, LastRequestUnixNano: ago(last)}
	}
	tests := []struct {
		name       string
		wl         *v1.Workload
		loads      []*v1.FunctionLoad
		want       int32
		wantReason string
	}{
		{"steady", fn(1, 0, 5, time.Hour), []*v1.FunctionLoad{load(2, 3, 0)}, 1, ""},
		{"up on load summed over gateways", fn(1, 0, 5, time.Hour), []*v1.FunctionLoad{load(5, 5, 0), load(0, 4, time.Second)}, 3, "ScaledUp"},
		{"up capped at max", fn(2, 0, 3, time.Hour), []*v1.FunctionLoad{load(100, 100, 0)}, 3, "ScaledUp"},
		{"to zero when idle", fn(2, 0, 5, time.Hour), []*v1.FunctionLoad{load(0, 0, 2*time.Minute)}, 0, "ScaledToZero"},
		{"to the minimum when idle", fn(3, 1, 5, time.Hour), nil, 1, "ScaledDown"},
		{"not idle yet", fn(2, 0, 5, time.Hour), []*v1.FunctionLoad{load(0, 0, 30*time.Second)}, 2, ""},
		{"a recent deploy or wake counts as activity", fn(1, 0, 5, 10*time.Second), nil, 1, ""},
		{"down after load dropped for the idle period", fn(4, 0, 5, 2*time.Minute), []*v1.FunctionLoad{load(3, 3, 0)}, 1, "ScaledDown"},
		{"held at zero without requests", fn(0, 0, 5, time.Hour), nil, 0, ""},
		{"raised to the minimum", fn(0, 2, 5, time.Hour), nil, 2, "ScaledUp"},
		{"lowered to the maximum", fn(9, 0, 5, 0), []*v1.FunctionLoad{load(100, 100, 0)}, 5, "ScaledDown"},
		{"a scale to zero by hand is not undone by a peak from before it", fn(0, 0, 5, time.Second), []*v1.FunctionLoad{load(0, 6, 2*time.Second)}, 0, ""},
		{"a peak after the latest change counts", fn(1, 0, 5, 10*time.Second), []*v1.FunctionLoad{load(0, 8, time.Second)}, 2, "ScaledUp"},
		{"requests in flight count whenever they came", fn(0, 0, 5, time.Second), []*v1.FunctionLoad{load(3, 6, 2*time.Second)}, 1, "ScaledUp"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, reason, msg := decideScale(tt.wl, tt.loads, now)
			if got != tt.want || reason != tt.wantReason {
				t.Errorf("decideScale = %d %q (%s), want %d %q", got, reason, msg, tt.want, tt.wantReason)
			}
		})
	}
}
