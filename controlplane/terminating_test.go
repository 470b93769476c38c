package controlplane_test

import (
	"context"
	"fmt"
	"testing"

	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// TestInstancesStayTerminatingUntilTheirNodeStopsThem: what a scale-down
// or a delete removes is listed Terminating (out of the ready and
// up-to-date counts, still in the total and in its node's set) until its
// node reports it stopped; only then does it go.
func TestInstancesStayTerminatingUntilTheirNodeStopsThem(t *testing.T) {
	c := startCluster(t, t.TempDir())
	ctx := context.Background()
	nodes := registerFake(t, c, "n1")
	nodes["n1"].holdStops.Store(true) // its instances take their time to stop
	deployOn(t, c, 3, "n1")
	eventually(t, "web 3/3 ready", func() (bool, string) { r := ready(t, c); return r == 3, fmt.Sprint(r) })

	states := func() map[v1.InstanceState][]string {
		t.Helper()
		// Every instance, not --workload web: that one may be deleted.
		l, err := c.control.ListInstances(ctx, &v1.ListInstancesRequest{})
		if err != nil {
			t.Fatal(err)
		}
		out := map[v1.InstanceState][]string{}
		for _, iv := range l.GetInstances() {
			if iv.GetInstance().GetWorkload() == "web" {
				out[iv.GetState()] = append(out[iv.GetState()], iv.GetInstance().GetId())
			}
		}
		return out
	}
	counts := func() string {
		v, err := c.control.GetWorkload(ctx, &v1.GetWorkloadRequest{Name: "web"})
		if err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf("ready %d, current %d, total %d", v.GetReady(), v.GetCurrent(), v.GetTotal())
	}

	scale(t, c, "web", 1)
	var leaving []string
	eventually(t, "2 instances Terminating, 1 Running", func() (bool, string) {
		s := states()
		leaving = s[v1.InstanceState_INSTANCE_STATE_TERMINATING]
		return len(leaving) == 2 && len(s[v1.InstanceState_INSTANCE_STATE_RUNNING]) == 1, fmt.Sprint(s)
	})
	if got := counts(); got != "ready 1, current 1, total 3" {
		t.Errorf("while 2 terminate: %s, want ready 1, current 1, total 3", got)
	}
	if on := instancesOn(t, c, "n1"); len(on) != 3 {
		t.Errorf("n1 holds %v while 2 terminate, want all 3", on)
	}

	stop := func(ids ...string) {
		t.Helper()
		batch := &v1.StatusBatch{Node: "n1"}
		for _, id := range ids {
			batch.Statuses = append(batch.Statuses, &v1.InstanceStatus{Id: id, State: v1.InstanceState_INSTANCE_STATE_STOPPED})
		}
		if _, err := c.agent.ReportStatus(ctx, batch); err != nil {
			t.Fatal(err)
		}
	}
	stop(leaving[0])
	eventually(t, "the one reported stopped gone, the other still Terminating", func() (bool, string) {
		s := states()
		return len(s) == 2 && fmt.Sprint(s[v1.InstanceState_INSTANCE_STATE_TERMINATING]) == fmt.Sprint(leaving[1:]), fmt.Sprint(s)
	})
	stop(leaving[1])
	waitTotal(t, c, "web", 1)

	// A deleted workload's instances terminate the same way.
	running := states()[v1.InstanceState_INSTANCE_STATE_RUNNING]
	if _, err := c.control.DeleteWorkload(ctx, &v1.DeleteWorkloadRequest{Name: "web"}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the deleted workload's instance Terminating", func() (bool, string) {
		s := states()
		return fmt.Sprint(s[v1.InstanceState_INSTANCE_STATE_TERMINATING]) == fmt.Sprint(running), fmt.Sprint(s)
	})
	stop(running...)
	eventually(t, "the deleted workload's instance gone", func() (bool, string) {
		s := states()
		return len(s) == 0, fmt.Sprint(s)
	})
}
