package cliclient

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/wasmorch/wasmorch/internal/cliout"
	"github.com/wasmorch/wasmorch/internal/httptrigger"
	wasmorchv1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
	"github.com/wasmorch/wasmorch/worker/runtimeapi"
)

// rollout is one look at a workload while deploy waits for it: how many
// of the current generation's instances are ready, how many of an older
// generation are still active, and what the wait is stuck on.
type rollout struct {
	generation int64
	replicas   int32
	// startOnly is set for restart policy never, whose instances are
	// waited for until they have started, not until they are ready.
	startOnly bool
	current   int32 // instances of the current generation
	ready     int32 // of them, Running or Succeeded
	started   int32 // of them, Running, Succeeded or Failed: they ran
	old       int32 // instances of older generations still active
	failed    *wasmorchv1.InstanceView
	waitingOn string // why the first instance that is not ready is not
	// canary.go: set in a canary phase, the share of the traffic, the
	// replicas of the new generation and how long they must be ready
	// before the control plane promotes them (0: 'rollout promote').
	canaryPercent  int
	canaryReplicas int32
	canaryDuration time.Duration
}

// assess summarizes a workload and its instances.
func assess(w *wasmorchv1.WorkloadView, views []*wasmorchv1.InstanceView) rollout {
	spec := w.GetWorkload().GetSpec()
	r := rollout{
		generation: w.GetWorkload().GetGeneration(),
		replicas:   spec.GetReplicas(),
		startOnly:  spec.GetRestart() == wasmorchv1.RestartPolicy_RESTART_POLICY_NEVER,
	}
	views = append([]*wasmorchv1.InstanceView(nil), views...)
	sort.Slice(views, func(i, j int) bool { return views[i].GetInstance().GetId() < views[j].GetInstance().GetId() })
	for _, v := range views {
		state := cliout.EffectiveState(v)
		if v.GetInstance().GetGeneration() != r.generation {
			if !finished(v, state) {
				r.old++
			}
			continue
		}
		r.current++
		unhealthy := v.GetStatus().GetUnhealthy()
		switch {
		case state == wasmorchv1.InstanceState_INSTANCE_STATE_RUNNING && !unhealthy, state == wasmorchv1.InstanceState_INSTANCE_STATE_SUCCEEDED:
			r.ready++
			r.started++
			continue
		case state == wasmorchv1.InstanceState_INSTANCE_STATE_STARTING && v.GetStatus().GetHealthFailures() >= httptrigger.HealthFailureThreshold:
			// A function replica that has never passed its health check
			// (the control plane rolls such a revision back).
			if r.failed == nil {
				r.failed = v
			}
		case state == wasmorchv1.InstanceState_INSTANCE_STATE_FAILED:
			r.started++
			if r.failed == nil {
				r.failed = v
			}
		}
		if r.waitingOn == "" {
			r.waitingOn = describe(v, state)
		}
	}
	if r.waitingOn == "" && r.current < r.replicas {
		r.waitingOn = fmt.Sprintf("%d of %d instances created", r.current, r.replicas)
	}
	r.assessCanary(w.GetWorkload())
	return r
}

// finished reports whether an instance of an older generation has stopped
// for good: stopped, lost, or ended in a way its restart policy does not
// restart.
func finished(v *wasmorchv1.InstanceView, state wasmorchv1.InstanceState) bool {
	restart := v.GetInstance().GetSpec().GetRestart()
	switch state {
	case wasmorchv1.InstanceState_INSTANCE_STATE_STOPPED, wasmorchv1.InstanceState_INSTANCE_STATE_LOST:
		return true
	case wasmorchv1.InstanceState_INSTANCE_STATE_SUCCEEDED:
		return restart == wasmorchv1.RestartPolicy_RESTART_POLICY_NEVER || restart == wasmorchv1.RestartPolicy_RESTART_POLICY_ON_FAILURE
	case wasmorchv1.InstanceState_INSTANCE_STATE_FAILED:
		return restart == wasmorchv1.RestartPolicy_RESTART_POLICY_NEVER
	}
	return false
}

// describe says what an instance is doing, for progress and timeouts.
func describe(v *wasmorchv1.InstanceView, state wasmorchv1.InstanceState) string {
	id := v.GetInstance().GetId()
	if state == wasmorchv1.InstanceState_INSTANCE_STATE_PENDING {
		if why := OneLine(v.GetInstance().GetPendingReason()); why != "" {
			return fmt.Sprintf("instance %s is Pending: %s", id, why)
		}
		return fmt.Sprintf("instance %s is Pending (not placed on a node yet)", id)
	}
	s := fmt.Sprintf("instance %s is %s", id, cliout.StateName(state))
	if st := v.GetStatus(); st.GetReason() != "" || st.GetMessage() != "" {
		s += ": " + exitDescription(st)
	}
	return s
}

// exitDescription is "Reason: exit code N: message", leaving out what is
// unknown or repeats the exit code: for reason Error (a non-zero exit) the
// code says it all. Semicolons in the message become commas, since the
// CLI's errors use one to separate what went wrong from what to do.
func exitDescription(st *wasmorchv1.InstanceStatus) string {
	parts := []string{}
	if st.GetReason() != "" {
		parts = append(parts, st.GetReason())
	}
	if st.GetExited() {
		parts = append(parts, fmt.Sprintf("exit code %d", st.GetExitCode()))
	}
	msg := strings.ReplaceAll(OneLine(st.GetMessage()), ";", ",")
	redundant := st.GetExited() && (st.GetReason() == runtimeapi.ReasonError || st.GetReason() == runtimeapi.ReasonCompleted)
	if msg != "" && msg != st.GetReason() && !redundant {
		parts = append(parts, msg)
	}
	if len(parts) == 0 {
		return "no reason reported"
	}
	return strings.Join(parts, ": ")
}

// count is the number the rollout waits for: ready instances, or started
// ones for restart policy never.
func (r rollout) count() int32 {
	if r.startOnly {
		return r.started
	}
	return r.ready
}

func (r rollout) done() bool {
	return r.count() >= r.replicas && r.old == 0
}

// failure is the error for a rollout with a failed instance, if any.
func (r rollout) failure(name string) error {
	if r.failed == nil {
		return nil
	}
	if st := r.failed.GetStatus(); st.GetState() == wasmorchv1.InstanceState_INSTANCE_STATE_STARTING {
		return &Error{
			What: fmt.Sprintf("workload %s is not ready: instance %s fails its health check: %s",
				name, r.failed.GetInstance().GetId(), strings.ReplaceAll(OneLine(st.GetHealthMessage()), ";", ",")),
			Hint: fmt.Sprintf("see 'wasmorch logs %s'", name),
		}
	}
	return &Error{
		What: fmt.Sprintf("workload %s is not ready: instance %s failed: %s",
			name, r.failed.GetInstance().GetId(), exitDescription(r.failed.GetStatus())),
		Hint: fmt.Sprintf("see 'wasmorch logs %s'", name),
	}
}

// word is what count counts.
func (r rollout) word() string {
	if r.startOnly {
		return "started"
	}
	return "ready"
}

// summary is the progress line, e.g. "hello: 2/3 ready (instance hello-ab12c is Starting)".
func (r rollout) summary(name string) string {
	if r.canaryPercent > 0 {
		return r.canarySummary(name)
	}
	s := fmt.Sprintf("%s: %d/%d %s", name, r.count(), r.replicas, r.word())
	if r.old > 0 {
		s += fmt.Sprintf(", %d of the previous generation still running", r.old)
	}
	if r.waitingOn != "" && r.count() < r.replicas {
		s += " (" + r.waitingOn + ")"
	}
	return s
}

// timeoutError explains a wait that ran out of time.
func (r rollout) timeoutError(name string, timeout time.Duration, lastErr error) error {
	hint := fmt.Sprintf("see 'wasmorch get instances --workload %s'; pass a longer --timeout to wait more", name)
	if r.generation == 0 {
		what := fmt.Sprintf("workload %s was applied but its state could not be read within %s", name, timeout)
		if lastErr != nil {
			what += ": " + OneLine(lastErr.Error())
		}
		return &Error{What: what, Hint: hint}
	}
	what := fmt.Sprintf("workload %s is not ready after %s: %d/%d %s", name, timeout, r.count(), r.replicas, r.word())
	switch {
	case r.canaryReady():
		what += fmt.Sprintf("; its canary is ready and is promoted once ready for %s", r.canaryDuration)
	case r.waitingOn != "" && r.count() < r.replicas:
		what += "; last seen: " + r.waitingOn
	case r.old > 0:
		what += fmt.Sprintf("; %d instances of the previous generation are still running", r.old)
	}
	return &Error{What: what, Hint: hint}
}
