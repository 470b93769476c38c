package api

import (
	"context"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"

	"github.com/wasmorch/wasmorch/controlplane/events"
	"github.com/wasmorch/wasmorch/controlplane/workloads"
	"github.com/wasmorch/wasmorch/internal/canary"
	"github.com/wasmorch/wasmorch/internal/errdefs"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

func (s *Server) revisionHistoryLimit() int {
	if s.cfg.RevisionHistoryLimit > 0 {
		return s.cfg.RevisionHistoryLimit
	}
	return workloads.DefaultRevisionHistoryLimit
}

// revisionOps are the writes of wl's revision, when its generation is new
// (workloads.RevisionOps with this member's history limit).
func (s *Server) revisionOps(ctx context.Context, wl *v1.Workload, cause string) ([]clientv3.Cmp, []clientv3.Op, error) {
	return workloads.RevisionOps(ctx, s.store, s.revisionHistoryLimit(), wl, cause)
}

// ListRevisions lists a workload's kept revisions, oldest first.
func (a *controlAPI) ListRevisions(ctx context.Context, req *v1.ListRevisionsRequest) (*v1.ListRevisionsResponse, error) {
	if _, err := a.s.store.Workloads.Get(ctx, req.GetWorkload()); err != nil {
		return nil, err
	}
	revs, err := workloads.ListRevisions(ctx, a.s.store, req.GetWorkload())
	if err != nil {
		return nil, err
	}
	return &v1.ListRevisionsResponse{Revisions: revs}, nil
}

// RollbackWorkload applies a kept revision's spec (the one before the
// current generation by default) as a new generation, keeping the current
// replica count, like `kubectl rollout undo`.
func (a *controlAPI) RollbackWorkload(ctx context.Context, req *v1.RollbackRequest) (*v1.ApplyWorkloadResponse, error) {
	cur, err := a.s.store.Workloads.Get(ctx, req.GetWorkload())
	if err != nil {
		return nil, err
	}
	target, err := a.s.rollbackTarget(ctx, cur.Value, req.GetToGeneration())
	if err != nil {
		return nil, err
	}
	spec := proto.Clone(target.GetSpec()).(*v1.WorkloadSpec)
	spec.Replicas = cur.Value.GetSpec().GetReplicas()
	// canary.go: a rollback is promoted as it is written, never a canary.
	return a.applyWorkload(ctx, &v1.ApplyWorkloadRequest{Name: req.GetWorkload(), Spec: spec,
		ChangeCause: fmt.Sprintf("rollback to revision %d", target.GetGeneration())}, true, cur.ModRevision)
}

// RestartRollout replaces every instance of a workload in a rolling
// update, like `kubectl rollout restart`: the same spec with a new
// restart time, as a new generation (and revision). It is never a canary.
func (a *controlAPI) RestartRollout(ctx context.Context, req *v1.RestartRolloutRequest) (*v1.ApplyWorkloadResponse, error) {
	cur, err := a.s.store.Workloads.Get(ctx, req.GetWorkload())
	if err != nil {
		return nil, err
	}
	spec := proto.Clone(cur.Value.GetSpec()).(*v1.WorkloadSpec)
	spec.RestartedUnixNano = time.Now().UnixNano()
	return a.applyWorkload(ctx, &v1.ApplyWorkloadRequest{Name: req.GetWorkload(), Spec: spec, ChangeCause: "rollout restart"}, true, cur.ModRevision)
}

// rollbackTarget finds the revision to return to: to, or (0) the newest
// kept one before the current generation.
func (s *Server) rollbackTarget(ctx context.Context, wl *v1.Workload, to int64) (*v1.Revision, error) {
	revs, err := workloads.ListRevisions(ctx, s.store, wl.GetName())
	if err != nil {
		return nil, err
	}
	return workloads.PickRevision(revs, wl, to)
}

// PromoteRollout ends a canary: the workload's generation is promoted and
// the rolling update replaces the old instances.
func (a *controlAPI) PromoteRollout(ctx context.Context, req *v1.PromoteRolloutRequest) (*v1.Workload, error) {
	name := req.GetWorkload()
	for attempt := 0; ; attempt++ {
		cur, err := a.s.store.Workloads.Get(ctx, name)
		if err != nil {
			return nil, err
		}
		if err := a.canaryInProgress(ctx, cur.Value); err != nil {
			return nil, err
		}
		wl := proto.Clone(cur.Value).(*v1.Workload)
		wl.PromotedGeneration = wl.GetGeneration()
		if _, err := a.s.store.Workloads.Update(ctx, name, wl, cur.ModRevision); errdefs.IsConflict(err) && attempt < 5 {
			continue
		} else if err != nil {
			return nil, err
		}
		if err := a.s.events.Record(ctx, events.Workload(name), "CanaryPromoted", "generation %d promoted by 'rollout promote' (its canary had %s of the traffic)",
			wl.GetGeneration(), wl.GetSpec().GetCanary()); err != nil {
			a.s.log.Warn("could not record event", "err", err)
		}
		a.s.log.Info("canary promoted", "workload", name, "generation", wl.GetGeneration())
		return wl, nil
	}
}

// canaryInProgress says why wl has no canary to promote, or nil.
func (a *controlAPI) canaryInProgress(ctx context.Context, wl *v1.Workload) error {
	name, gen := wl.GetName(), wl.GetGeneration()
	switch {
	case wl.GetSpec().GetCanary() == "":
		return errdefs.Preconditionf("workload %q has no canary in progress: it is not deployed with a canary", name)
	case !canary.Unpromoted(wl):
		return errdefs.Preconditionf("workload %q has no canary in progress: generation %d is already promoted", name, gen)
	}
	if err := a.s.cache.Sync(ctx); err != nil {
		return err
	}
	for _, e := range a.s.cache.InstancesOf(name) {
		if e.Value.GetGeneration() != gen {
			return nil
		}
	}
	return errdefs.Preconditionf("workload %q has no canary in progress: no instance of a generation before %d is left", name, gen)
}
