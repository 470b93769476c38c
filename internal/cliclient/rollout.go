package cliclient

import (
	"cmp"
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
	// ready: of them, those the wait has seen Running (and passing their
	// health check) for minReady in one run, or Succeeded for good (a
	// command: restart on-failure or never).
	ready     int32
	started   int32         // of them, Running, Succeeded or Failed: they ran
	minReady  time.Duration // the server's --rollout-min-ready
	old       int32         // instances of older generations still active
	failed    *wasmorchv1.InstanceView
	waitingOn string // why the first instance that is not ready is not
	// canary.go: set in a canary phase, the share of the traffic, the
	// replicas of the new generation and how long they must be ready
	// before the control plane promotes them (0: 'rollout promote').
	canaryPercent  int
	canaryReplicas int32
	canaryDuration time.Duration
}

// defaultMinReady is the min-ready of a server that does not say its own
// (WorkloadView.min_ready_millis): its controller's default then.
const defaultMinReady = time.Second

// runMark is when a wait first saw an instance running, in the run it is
// in (a restart starts a new run).
type runMark struct {
	restarts int32
	started  int64
	since    time.Time
}

// runsSeen is what a wait remembers between its looks: when it first saw
// each instance running. A running instance counts as ready once the wait
// has seen it running for the server's min-ready, on the wait's own clock
// (as the controller counts an instance available for a rolling update):
// the worker reports a guest Running as soon as it starts, and one that
// crashes in its start-up must not pass for ready in between.
type runsSeen map[string]runMark

// since returns when the wait first saw v running in its current run,
// marking it now if it had not.
func (s runsSeen) since(v *wasmorchv1.InstanceView, now time.Time) time.Time {
	st := v.GetStatus()
	m, ok := s[v.GetInstance().GetId()]
	if !ok || m.restarts != st.GetRestarts() || m.started != st.GetStartedUnixNano() {
		m = runMark{restarts: st.GetRestarts(), started: st.GetStartedUnixNano(), since: now}
		s[v.GetInstance().GetId()] = m
	}
	return m.since
}

// assess summarizes a workload and its instances as seen at now; seen
// carries what earlier looks saw running (nil: none).
func assess(w *wasmorchv1.WorkloadView, views []*wasmorchv1.InstanceView, seen runsSeen, now time.Time) rollout {
	spec := w.GetWorkload().GetSpec()
	r := rollout{
		generation: w.GetWorkload().GetGeneration(),
		replicas:   spec.GetReplicas(),
		startOnly:  spec.GetRestart() == wasmorchv1.RestartPolicy_RESTART_POLICY_NEVER,
		minReady:   cmp.Or(time.Duration(w.GetMinReadyMillis())*time.Millisecond, defaultMinReady),
	}
	if seen == nil {
		seen = runsSeen{}
	}
	views = append([]*wasmorchv1.InstanceView(nil), views...)
	sort.Slice(views, func(i, j int) bool { return views[i].GetInstance().GetId() < views[j].GetInstance().GetId() })
	running := make(map[string]bool, len(views))
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
		case state == wasmorchv1.InstanceState_INSTANCE_STATE_RUNNING && !unhealthy:
			r.started++
			running[v.GetInstance().GetId()] = true
			if now.Sub(seen.since(v, now)) >= r.minReady {
				r.ready++
				continue
			}
			if r.waitingOn == "" {
				r.waitingOn = fmt.Sprintf("instance %s is Running, ready once running for %s", v.GetInstance().GetId(), r.minReady)
			}
			continue
		case state == wasmorchv1.InstanceState_INSTANCE_STATE_SUCCEEDED:
			r.started++
			if completes(v.GetInstance().GetSpec().GetRestart()) {
				r.ready++
				continue
			}
			// A service (restart always) that exited: it is restarted,
			// and exits again, where it should keep running.
			if r.failed == nil {
				r.failed = v
			}
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
	for id := range seen {
		if !running[id] {
			delete(seen, id) // gone, or no longer running: a new run starts again
		}
	}
	r.assessCanary(w.GetWorkload())
	return r
}

// completes says whether a run that exits 0 is done under a restart
// policy (on-failure, never): a command that completed, where under
// always (the default) the instance is a service, run again after any
// exit (as controlplane/cache.CompletesOnSuccess).
func completes(p wasmorchv1.RestartPolicy) bool {
	return p == wasmorchv1.RestartPolicy_RESTART_POLICY_ON_FAILURE || p == wasmorchv1.RestartPolicy_RESTART_POLICY_NEVER
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
		return completes(restart)
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
	if st := r.failed.GetStatus(); st.GetState() == wasmorchv1.InstanceState_INSTANCE_STATE_SUCCEEDED {
		return &Error{
			What: fmt.Sprintf("workload %s is not ready: instance %s exited with code 0 and restart policy always runs it again, where a service keeps running",
				name, r.failed.GetInstance().GetId()),
			Hint: fmt.Sprintf("deploy a command that ends with --restart on-failure or never; see 'wasmorch logs %s'", name),
		}
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
