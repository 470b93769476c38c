package cliclient

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/wasmorch/wasmorch/internal/cliout"
	"github.com/wasmorch/wasmorch/internal/errdefs"
	wasmorchv1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// intOrPercent is what --max-surge and --max-unavailable take.
var intOrPercent = regexp.MustCompile(`^([0-9]+|[0-9]+%)$`)

// checkRolloutFlags checks --max-surge and --max-unavailable.
func checkRolloutFlags(surge, unavailable string) error {
	for _, f := range []struct{ name, v string }{{"--max-surge", surge}, {"--max-unavailable", unavailable}} {
		if f.v != "" && !intOrPercent.MatchString(f.v) {
			return Errorf("use a count or a percentage of the replicas, e.g. "+f.name+" 1 or "+f.name+" 25%", "invalid %s %q", f.name, f.v)
		}
	}
	return nil
}

// History lists a workload's kept revisions, oldest first.
func (c *Client) History(ctx context.Context, name string) ([]*wasmorchv1.Revision, int64, error) {
	w, err := call(ctx, c, name, c.api.GetWorkload, &wasmorchv1.GetWorkloadRequest{Name: name})
	if err != nil {
		return nil, 0, err
	}
	l, err := call(ctx, c, name, c.api.ListRevisions, &wasmorchv1.ListRevisionsRequest{Workload: name})
	if err != nil {
		return nil, 0, err
	}
	return l.GetRevisions(), w.GetWorkload().GetGeneration(), nil
}

// Undo applies a kept revision's spec (0: the previous one) as a new
// generation.
func (c *Client) Undo(ctx context.Context, name string, toRevision int64) (*wasmorchv1.ApplyWorkloadResponse, error) {
	if _, err := call(ctx, c, name, c.api.GetWorkload, &wasmorchv1.GetWorkloadRequest{Name: name}); err != nil {
		return nil, err
	}
	resp, err := call(ctx, c, "", c.api.RollbackWorkload, &wasmorchv1.RollbackRequest{Workload: name, ToGeneration: toRevision})
	var ue *Error
	if err != nil && errors.As(err, &ue) && (errdefs.IsNotFound(ue.Cause) || errdefs.IsFailedPrecondition(ue.Cause)) {
		ue.Hint = fmt.Sprintf("see 'wasmorch rollout history %s' for the revisions kept", name)
	}
	return resp, err
}

// RolloutResult is how a rollout that rollout status followed ended.
type RolloutResult struct {
	Generation      int64
	Ready, Replicas int32
	// Canary is set when the rollout waits for 'rollout promote'.
	Canary *Canary
}

// Restart replaces every instance of a workload in a rolling update (a
// new generation of the same spec).
func (c *Client) Restart(ctx context.Context, name string) (*wasmorchv1.ApplyWorkloadResponse, error) {
	return call(ctx, c, name, c.api.RestartRollout, &wasmorchv1.RestartRolloutRequest{Workload: name})
}

// RolloutStatus waits until the workload's current generation is rolled
// out (every replica ready, no instance of an older generation left), or
// until its canary is ready and waits for 'rollout promote', failing with
// the reason if one of its instances fails.
func (c *Client) RolloutStatus(ctx context.Context, name string, timeout time.Duration, progress func(cliout.Step)) (RolloutResult, error) {
	if timeout <= 0 {
		timeout = DefaultDeployTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	r, err := c.wait(ctx, name, 0, timeout, progress)
	return RolloutResult{Generation: r.generation, Ready: r.count(), Replicas: r.replicas, Canary: r.held()}, err
}
