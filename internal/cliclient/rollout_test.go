package cliclient

import (
	"strings"
	"testing"
	"time"

	wasmorchv1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

const (
	pending   = wasmorchv1.InstanceState_INSTANCE_STATE_PENDING
	scheduled = wasmorchv1.InstanceState_INSTANCE_STATE_SCHEDULED
	starting  = wasmorchv1.InstanceState_INSTANCE_STATE_STARTING
	running   = wasmorchv1.InstanceState_INSTANCE_STATE_RUNNING
	succeeded = wasmorchv1.InstanceState_INSTANCE_STATE_SUCCEEDED
	failedSt  = wasmorchv1.InstanceState_INSTANCE_STATE_FAILED
	lost      = wasmorchv1.InstanceState_INSTANCE_STATE_LOST
	stopped   = wasmorchv1.InstanceState_INSTANCE_STATE_STOPPED
	always    = wasmorchv1.RestartPolicy_RESTART_POLICY_ALWAYS
	never     = wasmorchv1.RestartPolicy_RESTART_POLICY_NEVER
)

func workloadView(gen int64, replicas int32, restart wasmorchv1.RestartPolicy) *wasmorchv1.WorkloadView {
	return &wasmorchv1.WorkloadView{Workload: &wasmorchv1.Workload{
		Name: "hello", Generation: gen,
		Spec: &wasmorchv1.WorkloadSpec{Replicas: replicas, Restart: restart},
	}}
}

func inst(id string, gen int64, state wasmorchv1.InstanceState, st *wasmorchv1.InstanceStatus) *wasmorchv1.InstanceView {
	return &wasmorchv1.InstanceView{
		Instance: &wasmorchv1.Instance{Id: id, Workload: "hello", Generation: gen, Node: "n1", Spec: &wasmorchv1.WorkloadSpec{Restart: always}},
		Status:   st,
		State:    state,
	}
}

// assessed is how a wait that has watched the instances for an hour sees
// them: those running have been running longer than any min-ready.
func assessed(w *wasmorchv1.WorkloadView, views []*wasmorchv1.InstanceView) rollout {
	seen, t0 := runsSeen{}, time.Now()
	assess(w, views, seen, t0)
	return assess(w, views, seen, t0.Add(time.Hour))
}

// withRestart sets the restart policy of an instance from inst (always).
func withRestart(p wasmorchv1.RestartPolicy, v *wasmorchv1.InstanceView) *wasmorchv1.InstanceView {
	v.Instance.Spec.Restart = p
	return v
}

func onFailure(v *wasmorchv1.InstanceView) *wasmorchv1.InstanceView {
	return withRestart(wasmorchv1.RestartPolicy_RESTART_POLICY_ON_FAILURE, v)
}

func TestRolloutIsDoneWhenTheCurrentGenerationIsReadyAndTheOldOneGone(t *testing.T) {
	for _, tc := range []struct {
		name      string
		w         *wasmorchv1.WorkloadView
		instances []*wasmorchv1.InstanceView
		done      bool
		summary   string
	}{
		{
			name:    "no instance yet",
			w:       workloadView(1, 2, always),
			summary: "hello: 0/2 ready (0 of 2 instances created)",
		},
		{
			name:      "some starting",
			w:         workloadView(1, 2, always),
			instances: []*wasmorchv1.InstanceView{inst("hello-a", 1, running, nil), inst("hello-b", 1, starting, nil)},
			summary:   "hello: 1/2 ready (instance hello-b is Starting)",
		},
		{
			name:      "running and a command that succeeded are ready",
			w:         workloadView(1, 2, wasmorchv1.RestartPolicy_RESTART_POLICY_ON_FAILURE),
			instances: []*wasmorchv1.InstanceView{onFailure(inst("hello-a", 1, running, nil)), onFailure(inst("hello-b", 1, succeeded, nil))},
			done:      true,
			summary:   "hello: 2/2 ready",
		},
		{
			name: "an old generation still runs",
			w:    workloadView(2, 1, always),
			instances: []*wasmorchv1.InstanceView{
				inst("hello-a", 1, running, nil), inst("hello-b", 2, running, nil),
			},
			summary: "hello: 1/1 ready, 1 of the previous generation still running",
		},
		{
			name: "old generation stopped or lost counts as gone",
			w:    workloadView(2, 1, always),
			instances: []*wasmorchv1.InstanceView{
				inst("hello-a", 1, stopped, nil), inst("hello-c", 1, lost, nil), inst("hello-b", 2, running, nil),
			},
			done:    true,
			summary: "hello: 1/1 ready",
		},
		{
			name: "pending says why",
			w:    workloadView(1, 1, always),
			instances: []*wasmorchv1.InstanceView{{
				Instance: &wasmorchv1.Instance{Id: "hello-a", Generation: 1, PendingReason: "no node has 64 MiB free"},
				State:    pending,
			}},
			summary: "hello: 0/1 ready (instance hello-a is Pending: no node has 64 MiB free)",
		},
		{
			name:      "restart never waits for a start, not readiness",
			w:         workloadView(1, 2, never),
			instances: []*wasmorchv1.InstanceView{withRestart(never, inst("hello-a", 1, succeeded, nil)), withRestart(never, inst("hello-b", 1, running, nil))},
			done:      true,
			summary:   "hello: 2/2 started",
		},
		{
			name:      "restart never: scheduled is not started",
			w:         workloadView(1, 1, never),
			instances: []*wasmorchv1.InstanceView{inst("hello-a", 1, scheduled, nil)},
			summary:   "hello: 0/1 started (instance hello-a is Scheduled)",
		},
		{
			name:    "zero replicas",
			w:       workloadView(1, 0, always),
			done:    true,
			summary: "hello: 0/0 ready",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := assessed(tc.w, tc.instances)
			if r.done() != tc.done {
				t.Errorf("done() = %v, want %v", r.done(), tc.done)
			}
			if got := r.summary("hello"); got != tc.summary {
				t.Errorf("summary = %q, want %q", got, tc.summary)
			}
			if err := r.failure("hello"); err != nil {
				t.Errorf("failure() = %v, want none", err)
			}
		})
	}
}

func TestRolloutFailsOnAFailedInstanceOfTheCurrentGeneration(t *testing.T) {
	exit3 := &wasmorchv1.InstanceStatus{State: failedSt, Exited: true, ExitCode: 3, Reason: "Error", Message: "exited with code 3; restarting in 100ms"}
	trap := &wasmorchv1.InstanceStatus{State: failedSt, Exited: true, ExitCode: 134, Reason: "Trap", Message: "wasm error: unreachable"}
	for _, tc := range []struct {
		name string
		w    *wasmorchv1.WorkloadView
		is   []*wasmorchv1.InstanceView
		want string
	}{
		{
			name: "exit code",
			w:    workloadView(1, 2, always),
			is:   []*wasmorchv1.InstanceView{inst("hello-a", 1, running, nil), inst("hello-b", 1, failedSt, exit3)},
			want: "workload hello is not ready: instance hello-b failed: Error: exit code 3; see 'wasmorch logs hello'",
		},
		{
			name: "trap under restart never",
			w:    workloadView(1, 1, never),
			is:   []*wasmorchv1.InstanceView{inst("hello-a", 1, failedSt, trap)},
			want: "workload hello is not ready: instance hello-a failed: Trap: exit code 134: wasm error: unreachable; see 'wasmorch logs hello'",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := assessed(tc.w, tc.is).failure("hello")
			if err == nil || err.Error() != tc.want {
				t.Errorf("failure() = %v, want %q", err, tc.want)
			}
		})
	}

	t.Run("a service that exited 0 fails the wait", func(t *testing.T) {
		done := &wasmorchv1.InstanceStatus{State: succeeded, Exited: true, Reason: "Completed", Message: "restarting in 100ms"}
		err := assessed(workloadView(1, 2, always), []*wasmorchv1.InstanceView{inst("hello-a", 1, running, nil), inst("hello-b", 1, succeeded, done)}).failure("hello")
		want := "workload hello is not ready: instance hello-b exited with code 0 and restart policy always runs it again, where a service keeps running; " +
			"deploy a command that ends with --restart on-failure or never; see 'wasmorch logs hello'"
		if err == nil || err.Error() != want {
			t.Errorf("failure() = %v, want %q", err, want)
		}
	})

	t.Run("an old generation's failure does not count", func(t *testing.T) {
		r := assessed(workloadView(2, 1, always), []*wasmorchv1.InstanceView{inst("hello-a", 1, failedSt, exit3), inst("hello-b", 2, running, nil)})
		if err := r.failure("hello"); err != nil {
			t.Errorf("failure() = %v, want none", err)
		}
	})
}

func TestRolloutTimeoutSaysHowManyAreReadyAndWhy(t *testing.T) {
	r := assessed(workloadView(1, 3, always), []*wasmorchv1.InstanceView{
		inst("hello-a", 1, running, nil),
		{Instance: &wasmorchv1.Instance{Id: "hello-b", Generation: 1, PendingReason: "no node is ready"}, State: pending},
	})
	err := r.timeoutError("hello", 2*time.Minute, nil).Error()
	for _, want := range []string{"not ready after 2m0s", "1/3 ready", "instance hello-b is Pending: no node is ready", "--timeout"} {
		if !strings.Contains(err, want) {
			t.Errorf("timeout error %q does not mention %q", err, want)
		}
	}
}

// A running instance is ready once the wait has seen it running for the
// server's min-ready, in one run: a module that crashes in its start-up,
// reported Running first, never passes for ready; a restart starts the
// count again.
func TestRunningIsReadyOnlyOnceSeenRunningForMinReady(t *testing.T) {
	w := workloadView(1, 1, always)
	w.MinReadyMillis = 1500
	run := func(restarts int32, started int64) []*wasmorchv1.InstanceView {
		return []*wasmorchv1.InstanceView{inst("hello-a", 1, running, &wasmorchv1.InstanceStatus{State: running, Restarts: restarts, StartedUnixNano: started})}
	}
	seen, t0 := runsSeen{}, time.Now()
	look := func(at time.Duration, views []*wasmorchv1.InstanceView) rollout {
		return assess(w, views, seen, t0.Add(at))
	}
	if r := look(0, run(0, 1)); r.done() || r.summary("hello") != "hello: 0/1 ready (instance hello-a is Running, ready once running for 1.5s)" {
		t.Errorf("first seen running: done %v, %q", r.done(), r.summary("hello"))
	}
	if r := look(1499*time.Millisecond, run(0, 1)); r.done() {
		t.Errorf("done before min-ready: %q", r.summary("hello"))
	}
	// It crashed and restarted: a new run, counted from now.
	crashed := &wasmorchv1.InstanceStatus{State: failedSt, Exited: true, ExitCode: 2, Reason: "Error", Restarts: 0}
	if err := look(1400*time.Millisecond, []*wasmorchv1.InstanceView{inst("hello-a", 1, failedSt, crashed)}).failure("hello"); err == nil {
		t.Error("a crash after Running does not fail the wait")
	}
	if r := look(2*time.Second, run(1, 2)); r.done() {
		t.Errorf("a restarted run is ready at once: %q", r.summary("hello"))
	}
	if r := look(3499*time.Millisecond, run(1, 2)); r.done() {
		t.Errorf("a restarted run is ready before min-ready: %q", r.summary("hello"))
	}
	if r := look(3500*time.Millisecond, run(1, 2)); !r.done() || r.summary("hello") != "hello: 1/1 ready" {
		t.Errorf("running for min-ready: done %v, %q", r.done(), r.summary("hello"))
	}
	// Without the server's setting: the controller's default.
	w.MinReadyMillis = 0
	seen = runsSeen{}
	if r := look(0, run(0, 1)); r.minReady != time.Second || r.done() {
		t.Errorf("min-ready %s, done %v", r.minReady, r.done())
	}
}
