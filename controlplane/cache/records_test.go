package cache

import (
	"testing"

	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// A run that exited 0 is done for a command (restart on-failure or
// never), so it stays ready; a service (restart always, the default) that
// exited is down until its restart runs, whatever its exit code.
func TestIsReadyFollowsTheRestartPolicy(t *testing.T) {
	const (
		running   = v1.InstanceState_INSTANCE_STATE_RUNNING
		succeeded = v1.InstanceState_INSTANCE_STATE_SUCCEEDED
		failed    = v1.InstanceState_INSTANCE_STATE_FAILED
		starting  = v1.InstanceState_INSTANCE_STATE_STARTING
	)
	for _, tc := range []struct {
		name      string
		restart   v1.RestartPolicy
		state     v1.InstanceState
		unhealthy bool
		want      bool
	}{
		{"a service running", v1.RestartPolicy_RESTART_POLICY_ALWAYS, running, false, true},
		{"a service failing its health check", v1.RestartPolicy_RESTART_POLICY_ALWAYS, running, true, false},
		{"a service that exited 0, restarting", v1.RestartPolicy_RESTART_POLICY_ALWAYS, succeeded, false, false},
		{"an unspecified policy (always) that exited 0", v1.RestartPolicy_RESTART_POLICY_UNSPECIFIED, succeeded, false, false},
		{"a service that failed", v1.RestartPolicy_RESTART_POLICY_ALWAYS, failed, false, false},
		{"a service starting", v1.RestartPolicy_RESTART_POLICY_ALWAYS, starting, false, false},
		{"an on-failure job that completed", v1.RestartPolicy_RESTART_POLICY_ON_FAILURE, succeeded, false, true},
		{"an on-failure job that failed", v1.RestartPolicy_RESTART_POLICY_ON_FAILURE, failed, false, false},
		{"a never job that completed", v1.RestartPolicy_RESTART_POLICY_NEVER, succeeded, false, true},
		{"a never job running", v1.RestartPolicy_RESTART_POLICY_NEVER, running, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wl := workload("w", 1, 1)
			wl.Spec.Restart = tc.restart
			inst := instance(wl, "w-abcde", "n1")
			st := &v1.InstanceStatus{Id: inst.GetId(), Node: "n1", State: tc.state, Unhealthy: tc.unhealthy}
			if got := IsReady(inst, st, true); got != tc.want {
				t.Errorf("IsReady = %v, want %v", got, tc.want)
			}
			if got := countsOf(inst, st, true, 1)&countedReady != 0; got != tc.want {
				t.Errorf("counted ready = %v, want %v", got, tc.want)
			}
		})
	}
}
