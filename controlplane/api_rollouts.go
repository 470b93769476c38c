package controlplane

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"

	"github.com/wasmorch/wasmorch/controlplane/store"
	"github.com/wasmorch/wasmorch/internal/errdefs"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// DefaultRevisionHistoryLimit is how many revisions of a workload are kept
// when Config.RevisionHistoryLimit is zero.
const DefaultRevisionHistoryLimit = 10

func (s *Server) revisionHistoryLimit() int {
	if s.cfg.RevisionHistoryLimit > 0 {
		return s.cfg.RevisionHistoryLimit
	}
	return DefaultRevisionHistoryLimit
}

func (c Config) rolloutMinReady() time.Duration {
	if c.RolloutMinReady > 0 {
		return c.RolloutMinReady
	}
	return DefaultMinReady
}

// revisionName is the record name of a workload's revision.
func revisionName(workload string, generation int64) string {
	return workload + "/" + strconv.FormatInt(generation, 10)
}

// listRevisions reads a workload's revisions, oldest first.
func (s *Server) listRevisions(ctx context.Context, workload string) ([]*v1.Revision, error) {
	return listRevisions(ctx, s.store, workload)
}

func listRevisions(ctx context.Context, st *store.Store, workload string) ([]*v1.Revision, error) {
	recs, err := st.Revisions.ListUnder(ctx, workload+"/")
	if err != nil {
		return nil, err
	}
	out := make([]*v1.Revision, 0, len(recs))
	for _, r := range recs {
		out = append(out, r.Value)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].GetGeneration() < out[j].GetGeneration() })
	return out, nil
}

// revisionOps are the writes that go in the same transaction as wl when
// its generation is new: its revision, and the deletion of revisions that
// fall out of the history limit. A revision is never rewritten: the put
// is guarded on the key being absent (a generation is written once).
func (s *Server) revisionOps(ctx context.Context, wl *v1.Workload, cause string) ([]clientv3.Cmp, []clientv3.Op, error) {
	return revisionOps(ctx, s.store, s.revisionHistoryLimit(), wl, cause)
}

func revisionOps(ctx context.Context, st *store.Store, limit int, wl *v1.Workload, cause string) ([]clientv3.Cmp, []clientv3.Op, error) {
	rev := &v1.Revision{Workload: wl.GetName(), Generation: wl.GetGeneration(), Spec: wl.GetSpec(),
		CreatedUnixNano: time.Now().UnixNano(), ChangeCause: cause}
	name := revisionName(wl.GetName(), wl.GetGeneration())
	put, err := st.Revisions.PutOp(name, rev)
	if err != nil {
		return nil, nil, err
	}
	cmps := []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(st.Revisions.Key(name)), "=", 0)}
	ops := []clientv3.Op{put}
	if wl.GetGeneration() == 1 {
		return cmps, ops, nil // DeleteWorkload removed the revisions of any namesake
	}
	old, err := st.Revisions.ListUnder(ctx, wl.GetName()+"/")
	if err != nil {
		return nil, nil, err
	}
	oldest := wl.GetGeneration() - int64(limit) // this one and limit-1 before it stay
	for _, r := range old {
		if r.Value.GetGeneration() <= oldest {
			ops = append(ops, st.Revisions.DeleteOp(r.Name))
		}
	}
	return cmps, ops, nil
}

// ListRevisions lists a workload's kept revisions, oldest first.
func (a *controlAPI) ListRevisions(ctx context.Context, req *v1.ListRevisionsRequest) (*v1.ListRevisionsResponse, error) {
	if _, err := a.s.store.Workloads.Get(ctx, req.GetWorkload()); err != nil {
		return nil, err
	}
	revs, err := a.s.listRevisions(ctx, req.GetWorkload())
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
	revs, err := listRevisions(ctx, s.store, wl.GetName())
	if err != nil {
		return nil, err
	}
	return pickRevision(revs, wl, to)
}

// pickRevision finds to (or, 0, the newest before wl's generation) in revs.
func pickRevision(revs []*v1.Revision, wl *v1.Workload, to int64) (*v1.Revision, error) {
	var kept []string
	for i := len(revs) - 1; i >= 0; i-- {
		r := revs[i]
		kept = append(kept, strconv.FormatInt(r.GetGeneration(), 10))
		if to != 0 && r.GetGeneration() == to {
			if to == wl.GetGeneration() {
				return nil, errdefs.Preconditionf("revision %d is the current generation of %q", to, wl.GetName())
			}
			return r, nil
		}
		if to == 0 && r.GetGeneration() < wl.GetGeneration() {
			return r, nil
		}
	}
	if to == 0 {
		return nil, errdefs.Preconditionf("workload %q has no revision before generation %d to roll back to", wl.GetName(), wl.GetGeneration())
	}
	return nil, errdefs.NotFoundf("workload %q has no revision %d (kept: %s)", wl.GetName(), to, strings.Join(kept, ", "))
}
