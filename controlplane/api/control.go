package api

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/wasmorch/wasmorch/ctrrt/ociarchive"
	"github.com/wasmorch/wasmorch/internal/version"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"

	"github.com/wasmorch/wasmorch/controlplane/cache"
	"github.com/wasmorch/wasmorch/controlplane/gateway"
	"github.com/wasmorch/wasmorch/controlplane/store"
	"github.com/wasmorch/wasmorch/controlplane/workloads"
	"github.com/wasmorch/wasmorch/internal/errdefs"
	"github.com/wasmorch/wasmorch/internal/resources"
	"github.com/wasmorch/wasmorch/internal/selector"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// controlAPI serves the Control service the CLI speaks.
type controlAPI struct {
	v1.UnimplementedControlServer
	s *Server
}

func (a *controlAPI) Version(context.Context, *v1.VersionRequest) (*v1.VersionResponse, error) {
	return &v1.VersionResponse{Version: version.Version, Member: a.s.cfg.Name}, nil
}

// ApplyWorkload creates a workload or updates its spec. A change to
// anything but the replica count is a new generation.
func (a *controlAPI) ApplyWorkload(ctx context.Context, req *v1.ApplyWorkloadRequest) (*v1.ApplyWorkloadResponse, error) {
	// observe: a spec without the stamp of a 'rollout restart' keeps the
	// one the workload has, so that applying the manifest it was deployed
	// from does not restart it again (rollbacks and restarts set theirs).
	if req.GetSpec() != nil && req.GetSpec().GetRestartedUnixNano() == 0 {
		if cur, ok := a.s.cache.Workload(req.GetName()); ok {
			if stamp := cur.Value.GetSpec().GetRestartedUnixNano(); stamp != 0 {
				req = proto.Clone(req).(*v1.ApplyWorkloadRequest)
				req.Spec.RestartedUnixNano = stamp
			}
		}
	}
	return a.applyWorkload(ctx, req, false, 0)
}

// applyWorkload is ApplyWorkload; the workload's generation is written
// promoted (canary.go: it never waits as a canary) when its spec has no
// canary, or promote is set (a rollback). basedOn, if set, is the mod
// revision of the workload the spec was derived from (a rollback, a
// restart): if it changed meanwhile, nothing is written (Conflict), so
// that a deploy in between is not undone.
func (a *controlAPI) applyWorkload(ctx context.Context, req *v1.ApplyWorkloadRequest, promote bool, basedOn int64) (*v1.ApplyWorkloadResponse, error) {
	if err := workloads.ValidateName(req.GetName()); err != nil {
		return nil, err
	}
	spec := proto.Clone(req.GetSpec()).(*v1.WorkloadSpec)
	if spec == nil {
		return nil, errdefs.Invalidf("workload spec is missing")
	}
	if spec.Kind == "" {
		spec.Kind = "wasm"
	}
	for k, v := range req.GetLabels() { // observe
		if err := workloads.ValidateLabel(k, v); err != nil {
			return nil, err
		}
	}
	labels := req.GetLabels()
	if len(labels) == 0 {
		labels = nil
	}
	// The route check reads the cache: it must see every write
	// acknowledged before this call (a delete that freed the route).
	if err := a.s.cache.Sync(ctx); err != nil {
		return nil, err
	}
	for attempt := 0; ; attempt++ {
		cur, err := a.s.store.Workloads.Get(ctx, req.GetName())
		exists := err == nil
		if err != nil && !errdefs.IsNotFound(err) {
			return nil, err
		}
		if basedOn != 0 && (!exists || cur.ModRevision != basedOn) {
			return nil, errdefs.Conflictf("workload %q changed meanwhile; try again", req.GetName())
		}
		if exists && cur.Value.GetSpec().GetKind() != spec.GetKind() {
			return nil, errdefs.Preconditionf("workload %q already exists with kind %q, not %q; delete it first or choose another name",
				req.GetName(), cur.Value.GetSpec().GetKind(), spec.GetKind())
		}
		if err := workloads.Validate(spec); err != nil {
			return nil, err
		}
		// configs: a dry run (diff, apply's check) may name configs that
		// the same manifest creates; the client checks the others. The
		// write is guarded on those it found (checkReferences).
		refs, err := a.s.checkReferences(ctx, spec)
		if err != nil && !req.GetDryRun() {
			return nil, err
		}
		var routeErr error
		a.s.cache.Read(func(r cache.Reader) {
			if routeErr = gateway.CheckRouteIn(r, req.GetName(), spec.GetHttp()); routeErr == nil {
				routeErr = checkStorageIn(r, req.GetName(), spec) // storage.go
			}
			if routeErr == nil {
				routeErr = checkPortIn(r, req.GetName(), spec) // services.go
			}
		})
		if routeErr != nil {
			return nil, routeErr
		}
		if a.s.routeChecked != nil {
			a.s.routeChecked()
		}
		if spec.GetKind() == workloads.KindContainer {
			if err := a.s.resolveContainerSource(ctx, spec); err != nil {
				return nil, err
			}
		} else {
			meta, err := a.s.blobs.Stat(ctx, spec.GetModuleDigest())
			if errdefs.IsNotFound(err) && req.GetDryRun() {
				// configs: a module not uploaded yet is surely a change.
				return &v1.ApplyWorkloadResponse{Workload: &v1.Workload{Name: req.GetName(), Spec: spec}, Created: !exists, Changed: true}, nil
			}
			if errdefs.IsNotFound(err) {
				return nil, errdefs.Preconditionf("module %s has not been uploaded; upload it first ('wasmorch deploy FILE.wasm' does both)", spec.GetModuleDigest())
			} else if err != nil {
				return nil, err
			}
			if meta.GetMediaType() == ociarchive.MediaType {
				return nil, errdefs.Preconditionf("blob %s is an OCI image archive, not a module: deploy it as a container workload", spec.GetModuleDigest())
			}
			spec.ModuleSize = meta.GetSize()
			spec.MemoryRequestBytes = max(meta.GetWasmMinMemoryBytes(), wasmPageSize)
			if err := a.s.checkAccepts(ctx, spec, meta); err != nil { // services.go
				return nil, err
			}
			if err := checkMemoryLimit(spec, meta); err != nil {
				return nil, err
			}
			if err := a.s.resolveFallback(ctx, spec, meta); err != nil {
				return nil, err
			}
		}
		now := time.Now().UnixNano()
		if !exists {
			wl := &v1.Workload{Name: req.GetName(), Spec: spec, Generation: 1, PromotedGeneration: 1, CreatedUnixNano: now, UpdatedUnixNano: now, Labels: labels}
			if req.GetDryRun() {
				return &v1.ApplyWorkloadResponse{Workload: wl, Created: true, Changed: true}, nil
			}
			if err := a.writeWorkload(ctx, wl, nil, 0, req.GetChangeCause(), refs); errdefs.IsConflict(err) && attempt < 5 {
				continue
			} else if err != nil {
				return nil, err
			}
			return &v1.ApplyWorkloadResponse{Workload: wl, Created: true, Changed: true}, nil
		}
		wl := proto.Clone(cur.Value).(*v1.Workload)
		sameButReplicas := proto.Clone(cur.Value.GetSpec()).(*v1.WorkloadSpec)
		sameButReplicas.Replicas = spec.GetReplicas()
		// rollouts: how to roll is not what runs: no new generation either.
		sameButReplicas.MaxSurge, sameButReplicas.MaxUnavailable = spec.GetMaxSurge(), spec.GetMaxUnavailable()
		sameButReplicas.Canary, sameButReplicas.CanaryDurationMs = spec.GetCanary(), spec.GetCanaryDurationMs()
		if basedOn != 0 {
			labels = cur.Value.GetLabels() // a rollback or restart keeps them
		}
		sameLabels := maps.Equal(cur.Value.GetLabels(), labels)
		if proto.Equal(cur.Value.GetSpec(), spec) && sameLabels {
			return &v1.ApplyWorkloadResponse{Workload: wl}, nil
		}
		wl.Labels = labels
		newGeneration := !proto.Equal(sameButReplicas, spec)
		if newGeneration {
			wl.Generation++
		}
		if promote || spec.GetCanary() == "" {
			wl.PromotedGeneration = wl.Generation // canary.go: it does not wait
		}
		wl.Spec, wl.UpdatedUnixNano = spec, now
		if req.GetDryRun() {
			return &v1.ApplyWorkloadResponse{Workload: wl, Changed: true}, nil
		}
		cause := req.GetChangeCause()
		if !newGeneration {
			cause = "-" // rollouts: a replica change makes no revision
		}
		if err := a.writeWorkload(ctx, wl, cur.Value.GetSpec(), cur.ModRevision, cause, refs); errdefs.IsConflict(err) && attempt < 5 {
			continue
		} else if err != nil {
			return nil, err
		}
		return &v1.ApplyWorkloadResponse{Workload: wl, Changed: true}, nil
	}
}

// writeWorkload creates (modRev 0) or updates wl if it is still at modRev,
// claiming its HTTP route and its node port in the same transaction
// (gateway.ClaimRoute, workloads.ClaimPort; prev is its spec until now),
// on the condition guards hold (the configs and secrets it uses still
// exist: checkReferences). It fails with ErrConflict when any of them
// changed since it was read. rollouts: unless cause is "-", wl's
// generation is new and its revision is written in the same transaction.
func (a *controlAPI) writeWorkload(ctx context.Context, wl *v1.Workload, prev *v1.WorkloadSpec, modRev int64, cause string, guards []clientv3.Cmp) error {
	cmps, ops, err := gateway.ClaimRoute(ctx, a.s.store, wl.GetName(), wl.GetSpec().GetHttp(), prev.GetHttp())
	if err != nil {
		return err
	}
	pcmps, pops, err := workloads.ClaimPort(ctx, a.s.store, wl.GetName(), wl.GetSpec(), prev)
	if err != nil {
		return err
	}
	cmps, ops = append(append(cmps, pcmps...), guards...), append(ops, pops...)
	if cause != "-" {
		rcmps, rops, err := a.s.revisionOps(ctx, wl, cause)
		if err != nil {
			return err
		}
		cmps, ops = append(cmps, rcmps...), append(ops, rops...)
	}
	put, err := a.s.store.Workloads.PutOp(wl.GetName(), wl)
	if err != nil {
		return err
	}
	key := a.s.store.Workloads.Key(wl.GetName())
	if modRev == 0 {
		cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(key), "=", 0))
	} else {
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(key), "=", modRev))
	}
	// blob GC: the blobs it runs must still be stored; if the collector
	// deleted one since ApplyWorkload checked it, the retry reports it
	// as not uploaded.
	present, err := workloads.BlobsPresent(wl.GetSpec())
	if err != nil {
		return err
	}
	cmps = append(cmps, present...)
	resp, err := a.s.store.Client.Txn(ctx).If(cmps...).Then(append(ops, put)...).Commit()
	if err != nil {
		return store.EtcdError(fmt.Sprintf("write workload %q", wl.GetName()), err)
	}
	if !resp.Succeeded {
		return errdefs.Conflictf("workload %q, the claim of its route or port, one of its blobs, configs or secrets changed since they were read", wl.GetName())
	}
	return nil
}

func (a *controlAPI) ScaleWorkload(ctx context.Context, req *v1.ScaleRequest) (*v1.Workload, error) {
	if req.GetReplicas() < 0 || req.GetReplicas() > workloads.MaxReplicas {
		return nil, errdefs.Invalidf("replicas %d is outside 0..%d", req.GetReplicas(), workloads.MaxReplicas)
	}
	for attempt := 0; ; attempt++ {
		cur, err := a.s.store.Workloads.Get(ctx, req.GetName())
		if err != nil {
			return nil, err
		}
		wl := proto.Clone(cur.Value).(*v1.Workload)
		wl.Spec.Replicas = req.GetReplicas()
		wl.UpdatedUnixNano = time.Now().UnixNano()
		if _, err := a.s.store.Workloads.Update(ctx, wl.Name, wl, cur.ModRevision); errdefs.IsConflict(err) && attempt < 5 {
			continue
		} else if err != nil {
			return nil, err
		}
		return wl, nil
	}
}

func (a *controlAPI) DeleteWorkload(ctx context.Context, req *v1.DeleteWorkloadRequest) (*v1.DeleteWorkloadResponse, error) {
	for attempt := 0; ; attempt++ {
		cur, err := a.s.store.Workloads.Get(ctx, req.GetName())
		if err != nil {
			return nil, err
		}
		ops := []clientv3.Op{a.s.store.Workloads.DeleteOp(req.GetName()),
			clientv3.OpDelete(a.s.store.Revisions.Key(req.GetName()+"/"), clientv3.WithPrefix())} // rollouts
		if trig := cur.Value.GetSpec().GetHttp(); trig.GetRoute() != "" {
			ops = append(ops, gateway.ReleaseRouteOp(req.GetName(), trig))
		}
		if port := resources.NodePort(cur.Value.GetSpec()); port != 0 {
			ops = append(ops, workloads.ReleasePortOp(req.GetName(), port))
		}
		resp, err := a.s.store.Client.Txn(ctx).If(a.s.store.Workloads.Unchanged(req.GetName(), cur.ModRevision)).Then(ops...).Commit()
		if err != nil {
			return nil, errdefs.Unavailablef("delete workload %q: %v", req.GetName(), err)
		}
		if resp.Succeeded {
			break
		}
		if attempt == 5 {
			return nil, errdefs.Conflictf("workload %q kept changing while deleting it; try again", req.GetName())
		}
	}
	// The controller stops its instances on its next pass.
	return &v1.DeleteWorkloadResponse{}, nil
}

// The read calls answer from the member's cache (controlplane/cache),
// after Sync so that a read sees every write acknowledged before it: a
// single object costs O(1), a list its page.

func (a *controlAPI) GetWorkload(ctx context.Context, req *v1.GetWorkloadRequest) (*v1.WorkloadView, error) {
	if err := a.s.cache.Sync(ctx); err != nil {
		return nil, err
	}
	var out *v1.WorkloadView
	a.s.cache.Read(func(r cache.Reader) {
		if w, ok := r.Workload(req.GetName()); ok {
			out = workloadView(r, w)
		}
	})
	if out == nil {
		return nil, errdefs.NotFoundf("workload %q not found", req.GetName())
	}
	out.MinReadyMillis = a.s.cfg.RolloutMinReady.Milliseconds()
	return out, nil
}

func (a *controlAPI) ListWorkloads(ctx context.Context, req *v1.ListWorkloadsRequest) (*v1.ListWorkloadsResponse, error) {
	limit, err := pageLimit(req.GetLimit())
	if err != nil {
		return nil, err
	}
	sel, err := parseSelector(req.GetSelector())
	if err != nil {
		return nil, err
	}
	tok, err := parseContinue(req.GetContinue(), "workloads", selectorTerm(sel))
	if err != nil {
		return nil, err
	}
	if err := a.s.cache.Sync(ctx); err != nil {
		return nil, err
	}
	out := &v1.ListWorkloadsResponse{}
	var more bool
	var scanned string // the last workload looked at, when the scan stopped before the page filled
	a.s.cache.Read(func(r cache.Reader) {
		after := tok.After
		for budget := maxScan; ; {
			page, pageMore := r.ListWorkloads(after, min(limit, budget))
			for _, w := range page {
				if sel.Matches(w.Value.GetLabels()) && len(out.Workloads) < limit {
					out.Workloads = append(out.Workloads, workloadView(r, w))
				}
			}
			budget -= len(page)
			if len(page) > 0 {
				after = page[len(page)-1].Value.GetName()
			}
			if !pageMore || len(out.Workloads) == limit || budget <= 0 {
				more = pageMore
				if len(out.Workloads) < limit && pageMore {
					scanned = after
				}
				break
			}
		}
		out.Revision = r.Rev()
	})
	if n := fitPage(out.Workloads); n < len(out.Workloads) {
		out.Workloads, more, scanned = out.Workloads[:n], true, ""
	}
	if more {
		tok.After = scanned
		if tok.After == "" {
			tok.After = out.Workloads[len(out.Workloads)-1].GetWorkload().GetName()
		}
		out.Continue = tok.encode()
	}
	return out, nil
}

// maxScan bounds how many objects a filtered list looks at for one page:
// a selector that matches few objects of many gets a short page and a
// continue token rather than hold the cache for the whole scan.
var maxScan = 20_000

// workloadView is a workload with its instance counts (kept by the
// cache as they change) and, for a function, the requests in flight
// across every gateway.
func workloadView(r cache.Reader, w cache.Workload) *v1.WorkloadView {
	out := &v1.WorkloadView{Workload: w.Value, Total: w.Counts.Total, Current: w.Counts.Current, Ready: w.Counts.Ready}
	for _, l := range r.Loads(w.Value.GetName()) {
		out.InFlight += l.GetInFlight()
		out.Requests += l.GetRequests()
	}
	return out
}

func (a *controlAPI) ListInstances(ctx context.Context, req *v1.ListInstancesRequest) (*v1.ListInstancesResponse, error) {
	limit, err := pageLimit(req.GetLimit())
	if err != nil {
		return nil, err
	}
	filter, states, err := instanceFilter(req.GetWorkload(), req.GetNode(), slices.Clone(req.GetStates()))
	if err != nil {
		return nil, err
	}
	sel, err := parseSelector(req.GetSelector())
	if err != nil {
		return nil, err
	}
	if !sel.Empty() {
		filter += ";" + selectorTerm(sel)
	}
	tok, err := parseContinue(req.GetContinue(), "instances", filter)
	if err != nil {
		return nil, err
	}
	if err := a.s.cache.Sync(ctx); err != nil {
		return nil, err
	}
	f := cache.InstanceFilter{Workload: req.GetWorkload(), Node: req.GetNode(), States: states}
	out := &v1.ListInstancesResponse{}
	var more, missing bool
	var scanned string
	a.s.cache.Read(func(r cache.Reader) {
		if f.Workload != "" {
			if _, ok := r.Workload(f.Workload); !ok {
				missing = true
				return
			}
		}
		out.Revision = r.Rev()
		if sel.Empty() {
			var page []cache.Instance
			page, more = r.ListInstances(f, tok.After, limit)
			out.Instances = make([]*v1.InstanceView, len(page))
			for i, e := range page {
				out.Instances[i] = instanceView(e)
			}
			return
		}
		// observe: instances answer to their workload's labels.
		labels := map[string]bool{}
		matches := func(workload string) bool {
			m, ok := labels[workload]
			if !ok {
				w, _ := r.Workload(workload)
				m = sel.Matches(w.Value.GetLabels())
				labels[workload] = m
			}
			return m
		}
		after := tok.After
		for budget := maxScan; ; {
			page, pageMore := r.ListInstances(f, after, min(limit, budget))
			for _, e := range page {
				if matches(e.Value.GetWorkload()) && len(out.Instances) < limit {
					out.Instances = append(out.Instances, instanceView(e))
				}
			}
			budget -= len(page)
			if len(page) > 0 {
				after = page[len(page)-1].Value.GetId()
			}
			if !pageMore || len(out.Instances) == limit || budget <= 0 {
				more = pageMore
				if len(out.Instances) < limit && pageMore {
					scanned = after
				}
				return
			}
		}
	})
	if missing {
		return nil, errdefs.NotFoundf("workload %q not found", f.Workload)
	}
	if n := fitPage(out.Instances); n < len(out.Instances) {
		out.Instances, more, scanned = out.Instances[:n], true, ""
	}
	if more {
		tok.After = scanned
		if tok.After == "" {
			tok.After = out.Instances[len(out.Instances)-1].GetInstance().GetId()
		}
		out.Continue = tok.encode()
	}
	return out, nil
}

// parseSelector reads a list's or watch's label selector.
func parseSelector(s string) (selector.Selector, error) {
	sel, err := selector.Parse(s)
	if err != nil {
		return sel, errdefs.Invalidf("%v: use k=v, k!=v, k or !k, comma-separated", err)
	}
	return sel, nil
}

// selectorTerm spells a selector for a continue token's filters.
func selectorTerm(sel selector.Selector) string {
	if sel.Empty() {
		return ""
	}
	return "selector=" + sel.String()
}

func instanceView(e cache.Instance) *v1.InstanceView {
	return &v1.InstanceView{Instance: e.Value, Status: e.Status, State: e.State}
}

func (a *controlAPI) ListNodes(ctx context.Context, req *v1.ListNodesRequest) (*v1.ListNodesResponse, error) {
	limit, err := pageLimit(req.GetLimit())
	if err != nil {
		return nil, err
	}
	sel := req.GetSelector()
	tok, err := parseContinue(req.GetContinue(), "nodes", selectorFilter(sel))
	if err != nil {
		return nil, err
	}
	if err := a.s.cache.Sync(ctx); err != nil {
		return nil, err
	}
	var match func(cache.Node) bool
	if len(sel) > 0 {
		match = func(n cache.Node) bool { return hasLabels(n.Value.GetLabels(), sel) }
	}
	out := &v1.ListNodesResponse{}
	var more bool
	a.s.cache.Read(func(r cache.Reader) {
		var page []cache.Node
		page, more = r.ListNodes(match, tok.After, limit)
		out.Nodes = make([]*v1.NodeView, len(page))
		for i, n := range page {
			out.Nodes[i] = nodeView(n)
		}
		out.Revision = r.Rev()
	})
	if n := fitPage(out.Nodes); n < len(out.Nodes) {
		out.Nodes, more = out.Nodes[:n], true
	}
	if more {
		tok.After = out.Nodes[len(out.Nodes)-1].GetNode().GetName()
		out.Continue = tok.encode()
	}
	return out, nil
}
