package integration

import (
	"context"
	"testing"

	"google.golang.org/protobuf/proto"

	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// A service (restart always) whose module exits 0 is down between its
// runs: the workload does not count it ready while its node reports it
// Succeeded and waiting to restart. The same module as a command
// (restart on-failure) is ready once it has completed.
func TestAServiceThatExitedIsNotReady(t *testing.T) {
	a := start(t, options{})
	a.deploy(t, "svc", "hello.wasm", &v1.WorkloadSpec{Replicas: 1, Restart: v1.RestartPolicy_RESTART_POLICY_ALWAYS})
	a.deploy(t, "job", "hello.wasm", &v1.WorkloadSpec{Replicas: 1, Restart: v1.RestartPolicy_RESTART_POLICY_ON_FAILURE})
	ready := func(name string) int32 {
		t.Helper()
		w, err := a.control.GetWorkload(context.Background(), &v1.GetWorkloadRequest{Name: name})
		if err != nil {
			t.Fatal(err)
		}
		return w.GetReady()
	}

	a.waitInstances(t, "job", 1, state(succeeded))
	if n := ready("job"); n != 1 {
		t.Errorf("job (restart on-failure) that completed: %d ready, want 1", n)
	}

	// Past a few restarts, the worker waits seconds (its backoff doubles)
	// before the next: a look at the workload between two looks at the
	// instance that see the same exit sees that exit.
	a.waitFor(t, "svc exited after 5 restarts", func() (bool, string) {
		is := a.instances(t, "svc")
		return len(is) == 1 && is[0].GetState() == succeeded && is[0].GetStatus().GetRestarts() >= 5, describe(is)
	})
	var n int32
	var exited *v1.InstanceStatus
	a.waitFor(t, "two looks at svc that see the same exit", func() (bool, string) {
		before := a.instances(t, "svc")
		n = ready("svc")
		after := a.instances(t, "svc")
		if len(before) != 1 || len(after) != 1 || after[0].GetState() != succeeded || !proto.Equal(before[0].GetStatus(), after[0].GetStatus()) {
			return false, describe(before) + " then " + describe(after) // it restarted meanwhile: look again
		}
		exited = after[0].GetStatus()
		return true, ""
	})
	if n != 0 {
		t.Errorf("svc (restart always) exited 0 and waits to restart (%s): %d ready, want 0", exited.GetMessage(), n)
	}
}
