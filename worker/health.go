package worker

import (
	"context"
	"time"

	"github.com/wasmorch/wasmorch/internal/httptrigger"
	pb "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
	"github.com/wasmorch/wasmorch/worker/funcserver"
)

// Health checks of functions (a trigger's health path), like a Kubernetes
// readiness probe: the worker requests the path of each replica it serves
// every interval. A replica is Starting until a check passes, then
// Running; after httptrigger.HealthFailureThreshold failures in a row it
// is unhealthy (still Running, but the gateways send it nothing) until one
// passes again. A failing replica is not restarted: every request gets a
// fresh sandbox, so there is nothing to restart. The control plane rolls
// a new revision back when its replicas keep failing (see rollout.go).

// healthProber is a function replica that can be checked.
type healthProber interface {
	Probe(ctx context.Context, timeout time.Duration) funcserver.ProbeResult
}

var (
	_ healthProber = (*funcserver.Replica)(nil)
	_ healthProber = (*containerFunction)(nil)
)

// Probe implements healthProber for an HTTP container's replica.
func (c *containerFunction) Probe(ctx context.Context, timeout time.Duration) funcserver.ProbeResult {
	return c.rep.Probe(ctx, timeout)
}

// healthSettings returns the trigger's effective settings and whether the
// run is a function replica with a health path to check.
func healthSettings(run any, spec *pb.WorkloadSpec) (healthProber, httptrigger.Settings, bool) {
	p, ok := run.(healthProber)
	if !ok || spec.GetHttp().GetHealthPath() == "" {
		return nil, httptrigger.Settings{}, false
	}
	return p, httptrigger.Effective(spec.GetHttp()), true
}

// probeTimeout bounds one check: the function's timeout, but no longer
// than the interval (at least a second).
func probeTimeout(set httptrigger.Settings) time.Duration {
	return min(set.Timeout, max(set.HealthInterval, time.Second))
}

// checkHealth checks run, start attempt gen of in, until it stops, the
// instance starts again, or ctx ends; it reports each change of the
// replica's health in in's status.
func (w *Worker) checkHealth(ctx context.Context, in *instance, gen uint32, run healthProber, done <-chan struct{}, set httptrigger.Settings) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-done:
		case <-ctx.Done():
		}
		cancel()
	}()
	var failures int32
	passed := false
	for {
		res := run.Probe(ctx, probeTimeout(set))
		if ctx.Err() != nil {
			return
		}
		if res.Skipped {
			// The node's memory was in use: busy, not unhealthy.
			if !sleep(ctx, w.clock, set.HealthInterval) {
				return
			}
			continue
		}
		if res.OK {
			failures = 0
		} else {
			failures++
		}
		if !w.reportHealth(in, gen, res, failures, &passed) {
			return
		}
		if !sleep(ctx, w.clock, set.HealthInterval) {
			return
		}
	}
}

// reportHealth records one check in in's status when it changes what the
// status says; false when the run it checks is no longer current.
func (w *Worker) reportHealth(in *instance, gen uint32, res funcserver.ProbeResult, failures int32, passed *bool) bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.gen != gen || in.run == nil || in.stopping || in.final {
		return false
	}
	cur := in.status
	var st *pb.InstanceStatus
	switch {
	case res.OK && !*passed:
		*passed = true
		st = w.newStatus(in, pb.InstanceState_INSTANCE_STATE_RUNNING, "", "")
	case res.OK && (cur.GetUnhealthy() || cur.GetHealthFailures() > 0):
		st = w.newStatus(in, pb.InstanceState_INSTANCE_STATE_RUNNING, "", "")
	case res.OK:
		return true // healthy, as reported
	case !*passed:
		st = w.newStatus(in, pb.InstanceState_INSTANCE_STATE_STARTING, "HealthCheckFailed", "waiting for a health check to pass; last: "+res.Detail)
	default:
		st = w.newStatus(in, pb.InstanceState_INSTANCE_STATE_RUNNING, "", "")
		if failures >= httptrigger.HealthFailureThreshold {
			st.Unhealthy = true
			st.Reason, st.Message = "Unhealthy", "failing its health check: "+res.Detail
		}
	}
	if !res.OK {
		st.HealthFailures, st.HealthMessage = failures, res.Detail
	}
	st.StartedUnixNano = in.startedAt.UnixNano()
	w.setStatusLocked(in, st)
	return true
}
