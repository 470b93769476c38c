package workloads

import (
	"context"
	"sort"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/wasmorch/wasmorch/controlplane/store"
	"github.com/wasmorch/wasmorch/internal/errdefs"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// DefaultRevisionHistoryLimit is how many revisions of a workload are kept
// when Config.RevisionHistoryLimit is zero.
const DefaultRevisionHistoryLimit = 10

// RevisionName is the record name of a workload's revision.
func RevisionName(workload string, generation int64) string {
	return workload + "/" + strconv.FormatInt(generation, 10)
}

func ListRevisions(ctx context.Context, st *store.Store, workload string) ([]*v1.Revision, error) {
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

func RevisionOps(ctx context.Context, st *store.Store, limit int, wl *v1.Workload, cause string) ([]clientv3.Cmp, []clientv3.Op, error) {
	rev := &v1.Revision{Workload: wl.GetName(), Generation: wl.GetGeneration(), Spec: wl.GetSpec(),
		CreatedUnixNano: time.Now().UnixNano(), ChangeCause: cause}
	name := RevisionName(wl.GetName(), wl.GetGeneration())
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

// PickRevision finds to (or, 0, the newest before wl's generation) in revs.
func PickRevision(revs []*v1.Revision, wl *v1.Workload, to int64) (*v1.Revision, error) {
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
