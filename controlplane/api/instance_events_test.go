package api

import (
	"strings"
	"testing"
	"time"

	"github.com/wasmorch/wasmorch/controlplane/cache"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// TestACrashLoopRecordsRateLimitedEvents: each crash of an instance that
// is restarted is a BackOff event, at most one per window, the next one
// counting those it stands for; an OOM kill and a final failure are
// named as such, and a report of the same exit again records nothing.
func TestACrashLoopRecordsRateLimitedEvents(t *testing.T) {
	s := &Server{}
	inst := cache.Instance{Value: &v1.Instance{Id: "web-a", Workload: "web", Node: "n1"}}
	crash := func(restarts int32, finished int64, reason, msg string, state v1.InstanceState) *v1.InstanceStatus {
		return &v1.InstanceStatus{Id: "web-a", Node: "n1", State: state, Exited: true, ExitCode: 3, Reason: reason,
			Message: msg, Restarts: restarts, FinishedUnixNano: finished}
	}
	failed := v1.InstanceState_INSTANCE_STATE_FAILED
	t0 := time.Unix(1000, 0)
	prev := map[string]cache.Instance{"web-a": inst}

	evs := s.exitEvents(prev, []*v1.InstanceStatus{crash(1, 1, "Error", "exited with code 3; restarting in 100ms", failed)}, t0)
	if len(evs) != 1 || evs[0].GetReason() != "BackOff" || evs[0].GetObject() != "workload/web" || !strings.Contains(evs[0].GetMessage(), "restarting in 100ms; 1 restart so far") {
		t.Fatalf("first crash: %v", evs)
	}
	inst.Status = crash(1, 1, "Error", "", failed)
	prev["web-a"] = inst
	if evs := s.exitEvents(prev, []*v1.InstanceStatus{crash(1, 1, "Error", "x; restarting in 100ms", failed)}, t0.Add(time.Second)); len(evs) != 0 {
		t.Errorf("the same exit reported again: %v", evs)
	}
	for i := int32(2); i < 6; i++ {
		if evs := s.exitEvents(prev, []*v1.InstanceStatus{crash(i, int64(i), "Error", "restarting in 1s", failed)}, t0.Add(time.Duration(i)*time.Second)); len(evs) != 0 {
			t.Errorf("crash %d within the window recorded %v", i, evs)
		}
	}
	evs = s.exitEvents(prev, []*v1.InstanceStatus{crash(6, 6, "OOMKilled", "restarting in 2s", failed)}, t0.Add(instanceEventWindow+time.Second))
	if len(evs) != 1 || evs[0].GetReason() != "OOMKilled" || !strings.Contains(evs[0].GetMessage(), "and 4 more exits") {
		t.Fatalf("after the window: %v", evs)
	}
	evs = s.exitEvents(prev, []*v1.InstanceStatus{crash(7, 7, "Error", "exited with code 3", failed)}, t0.Add(3*instanceEventWindow))
	if len(evs) != 1 || evs[0].GetReason() != "Failed" {
		t.Fatalf("a final failure: %v", evs)
	}
}
