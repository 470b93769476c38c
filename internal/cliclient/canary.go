package cliclient

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/wasmorch/wasmorch/internal/canary"
	"github.com/wasmorch/wasmorch/internal/errdefs"
	wasmorchv1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// checkCanaryFlags checks --canary and --canary-duration: a percentage of
// an HTTP function's traffic, and a whole number of milliseconds that
// needs it.
func checkCanaryFlags(cfg DeployConfig) error {
	if cfg.CanaryDuration < 0 || cfg.CanaryDuration%time.Millisecond != 0 {
		return Errorf("e.g. --canary-duration 5m", "invalid --canary-duration %s: use whole milliseconds, 0 or more", cfg.CanaryDuration)
	}
	if cfg.Canary == "" {
		if cfg.CanaryDuration > 0 {
			return Errorf("add --canary PERCENT, e.g. --canary 10%", "--canary-duration needs --canary")
		}
		return nil
	}
	if _, err := canary.Parse(cfg.Canary); err != nil {
		return Errorf("give the new revision's share of the traffic, e.g. --canary 10%", "invalid --canary: %v", err)
	}
	if cfg.Function.Route == "" {
		return Errorf("add --route /PATH to deploy an HTTP function", "--canary is only for HTTP functions: it splits a function's traffic")
	}
	return nil
}

// Canary is a rollout held at its canary, waiting for 'rollout promote'.
type Canary struct {
	Generation int64
	Replicas   int32 // of the new generation, all ready
	Percent    int   // of the function's traffic
}

// Summary says what the canary is and what to do next.
func (c Canary) Summary(name string) string {
	return fmt.Sprintf("%s: canary of generation %d ready (%d replica%s, %d%% of traffic); promote with 'wasmorch rollout promote %s' or roll back with 'wasmorch rollout undo %s'",
		name, c.Generation, c.Replicas, plural(int(c.Replicas)), c.Percent, name, name)
}

// assessCanary fills in a rollout's canary phase: the workload's
// generation waits for promotion while older instances remain.
func (r *rollout) assessCanary(wl *wasmorchv1.Workload) {
	if !canary.Unpromoted(wl) || r.old == 0 {
		return
	}
	r.canaryPercent = canary.Percent(wl)
	r.canaryReplicas = int32(canary.Replicas(r.canaryPercent, int(r.replicas)))
	r.canaryDuration = time.Duration(wl.GetSpec().GetCanaryDurationMs()) * time.Millisecond
}

// canaryReady reports whether a rollout in its canary phase has every
// canary replica ready.
func (r rollout) canaryReady() bool {
	return r.canaryPercent > 0 && r.current >= r.canaryReplicas && r.count() >= r.canaryReplicas
}

// held reports whether a rollout waits for 'rollout promote': its canary
// is ready and has no duration after which it promotes itself.
func (r rollout) held() *Canary {
	if !r.canaryReady() || r.canaryDuration > 0 {
		return nil
	}
	return &Canary{Generation: r.generation, Replicas: r.canaryReplicas, Percent: r.canaryPercent}
}

// canarySummary is the progress line of a canary phase.
func (r rollout) canarySummary(name string) string {
	s := fmt.Sprintf("%s: canary of generation %d %d/%d %s (%d%% of traffic), %d of the previous generation serving the rest",
		name, r.generation, min(r.count(), r.canaryReplicas), r.canaryReplicas, r.word(), r.canaryPercent, r.old)
	switch {
	case r.count() < r.canaryReplicas && r.waitingOn != "":
		s += " (" + r.waitingOn + ")"
	case r.canaryDuration > 0:
		s += fmt.Sprintf("; promoted once ready for %s", r.canaryDuration)
	}
	return s
}

// Promote promotes a workload's canary: its rolling update goes on.
func (c *Client) Promote(ctx context.Context, name string) (*wasmorchv1.Workload, error) {
	wl, err := call(ctx, c, name, c.api.PromoteRollout, &wasmorchv1.PromoteRolloutRequest{Workload: name})
	var ue *Error
	if err != nil && errors.As(err, &ue) && errdefs.IsFailedPrecondition(ue.Cause) {
		ue.Hint = fmt.Sprintf("see 'wasmorch rollout status %s'", name)
	}
	return wl, err
}
