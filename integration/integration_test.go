package integration

import (
	"context"
	"strings"
	"testing"

	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

const (
	running   = v1.InstanceState_INSTANCE_STATE_RUNNING
	succeeded = v1.InstanceState_INSTANCE_STATE_SUCCEEDED
	failed    = v1.InstanceState_INSTANCE_STATE_FAILED
)

func TestDeployScaleDeleteOnRealWorker(t *testing.T) {
	a := start(t, options{})
	a.deploy(t, "hello", "hello.wasm", &v1.WorkloadSpec{Replicas: 3, Args: []string{"ana"}, Env: []*v1.EnvVar{{Name: "GREETING", Value: "hi"}},
		Restart: v1.RestartPolicy_RESTART_POLICY_NEVER})
	a.waitInstances(t, "hello", 3, state(succeeded))
	logs := a.logs(t, "hello")
	if len(logs) != 3 {
		t.Fatalf("logs from %d instances, want 3: %v", len(logs), logs)
	}
	for id, out := range logs {
		if !strings.Contains(out, "hello from wasmorch") || !strings.Contains(out, "ana") || !strings.Contains(out, "hi") {
			t.Errorf("instance %s printed %q; want the greeting with its argument and GREETING", id, out)
		}
	}
	a.deploy(t, "ticker", "ticker.wasm", &v1.WorkloadSpec{Replicas: 4})
	a.waitInstances(t, "ticker", 4, state(running))
	if _, err := a.control.ScaleWorkload(context.Background(), &v1.ScaleRequest{Name: "ticker", Replicas: 1}); err != nil {
		t.Fatal(err)
	}
	a.waitInstances(t, "ticker", 1, state(running))
	if _, err := a.control.DeleteWorkload(context.Background(), &v1.DeleteWorkloadRequest{Name: "ticker"}); err != nil {
		t.Fatal(err)
	}
	a.waitInstances(t, "ticker", 0, nil)
}

// Each way a module can end is recorded with a precise reason, and none of
// them disturbs an unrelated workload on the same worker.
func TestFailuresAreRecordedAndContained(t *testing.T) {
	a := start(t, options{})
	a.deploy(t, "bystander", "ticker.wasm", &v1.WorkloadSpec{Replicas: 1})
	bystander := a.waitInstances(t, "bystander", 1, state(running))[0]

	never := v1.RestartPolicy_RESTART_POLICY_NEVER
	tests := []struct {
		name, module string
		spec         *v1.WorkloadSpec
		exitCode     int32
		reason       string
		message      string
	}{
		{"fail", "fail.wasm", &v1.WorkloadSpec{Replicas: 1, Restart: never}, 3, "Error", ""},
		{"trap", "trap.wasm", &v1.WorkloadSpec{Replicas: 1, Restart: never}, 134, "Trap", "unreachable"},
		{"oom", "oom.wasm", &v1.WorkloadSpec{Replicas: 1, Restart: never, MemoryBytes: 16 << 20}, 4, "Error", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a.deploy(t, tc.name, tc.module, tc.spec)
			iv := a.waitInstances(t, tc.name, 1, state(failed))[0]
			st := iv.GetStatus()
			if st.GetReason() != tc.reason || (tc.exitCode != 0 && st.GetExitCode() != tc.exitCode) || !strings.Contains(st.GetMessage(), tc.message) {
				t.Errorf("status = %v; want reason %s, exit code %d, message containing %q", st, tc.reason, tc.exitCode, tc.message)
			}
		})
	}
	// The failing module under the default policy is restarted (first step immediate).
	a.deploy(t, "crashloop", "fail.wasm", &v1.WorkloadSpec{Replicas: 1})
	a.waitInstances(t, "crashloop", 1, func(iv *v1.InstanceView) bool { return iv.GetStatus().GetRestarts() >= 2 })

	after := a.instances(t, "bystander")
	if len(after) != 1 || after[0].GetInstance().GetId() != bystander.GetInstance().GetId() || after[0].GetState() != running || after[0].GetStatus().GetRestarts() != 0 {
		t.Fatalf("the bystander was disturbed: %s", describe(after))
	}
}

// A guest in a busy loop is stopped when its workload is deleted, and the
// worker goes on running other instances.
func TestBusyLoopIsStoppedOnDelete(t *testing.T) {
	a := start(t, options{})
	a.deploy(t, "loop", "loop.wasm", &v1.WorkloadSpec{Replicas: 2})
	a.waitInstances(t, "loop", 2, state(running))
	if _, err := a.control.DeleteWorkload(context.Background(), &v1.DeleteWorkloadRequest{Name: "loop"}); err != nil {
		t.Fatal(err)
	}
	a.waitInstances(t, "loop", 0, nil)
	a.deploy(t, "after", "hello.wasm", &v1.WorkloadSpec{Replicas: 1, Restart: v1.RestartPolicy_RESTART_POLICY_NEVER})
	a.waitInstances(t, "after", 1, state(succeeded))
}

// A module that prints 200 MiB keeps only the newest output, within the
// per-instance bound.
func TestFloodedOutputIsBounded(t *testing.T) {
	const bound = 256 << 10
	a := start(t, options{logBytes: bound})
	a.deploy(t, "flood", "flood.wasm", &v1.WorkloadSpec{Replicas: 1, Restart: v1.RestartPolicy_RESTART_POLICY_NEVER})
	a.waitInstances(t, "flood", 1, state(succeeded))
	for id, out := range a.logs(t, "flood") {
		if len(out) > bound || len(out) < bound/4 {
			t.Errorf("instance %s kept %d bytes of log; want at most %d (and the newest part of it)", id, len(out), bound)
		}
	}
}
