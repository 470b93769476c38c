package controlplane

import (
	"context"
	"errors"
	"slices"
	"sort"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"

	"github.com/wasmorch/wasmorch/controlplane/blobs"
	"github.com/wasmorch/wasmorch/controlplane/gateway"
	"github.com/wasmorch/wasmorch/ctrrt/ociarchive"
	"github.com/wasmorch/wasmorch/internal/errdefs"
	"github.com/wasmorch/wasmorch/internal/httptrigger"
	"github.com/wasmorch/wasmorch/internal/version"
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

// UploadBlob receives a module as a client stream, checks its digest and
// validity, and stores it once.
func (a *controlAPI) UploadBlob(stream v1.Control_UploadBlobServer) error {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	hdr := first.GetHeader()
	if hdr == nil {
		return errdefs.Invalidf("upload must start with a header naming the digest and size")
	}
	if _, err := blobs.ParseDigest(hdr.GetDigest()); err != nil {
		return err
	}
	b, err := blobs.ReadUpload(&chunkReader{recv: stream.Recv}, hdr.GetSize())
	if err != nil {
		return err
	}
	if got := blobs.Digest(b); got != hdr.GetDigest() {
		return errdefs.Invalidf("digest mismatch: expected %s, the uploaded bytes hash to %s", hdr.GetDigest(), got)
	}
	media := hdr.GetMediaType()
	if media == "" {
		media = "application/wasm"
	}
	var info moduleInfo
	switch media {
	case "application/wasm":
		if info, err = inspectModule(stream.Context(), b); err != nil {
			return err
		}
	case ociarchive.MediaType:
		if err := inspectImageArchive(b); err != nil {
			return err
		}
	default:
		return errdefs.Invalidf("media type %q is not supported: upload application/wasm modules or %s image archives", media, ociarchive.MediaType)
	}
	existed, err := a.s.blobs.Put(stream.Context(), hdr.GetDigest(), b, media, info.minMemoryBytes, info.unsupported)
	if err != nil {
		return err
	}
	return stream.SendAndClose(&v1.UploadResponse{Digest: hdr.GetDigest(), Size: int64(len(b)), Existed: existed})
}

// chunkReader turns the upload stream's chunks into an io.Reader.
type chunkReader struct {
	recv func() (*v1.UploadRequest, error)
	buf  []byte
}

func (r *chunkReader) Read(p []byte) (int, error) {
	for len(r.buf) == 0 {
		m, err := r.recv()
		if err != nil {
			return 0, err // io.EOF ends the upload
		}
		if m.GetHeader() != nil {
			return 0, errdefs.Invalidf("upload sent a second header")
		}
		r.buf = m.GetChunk()
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}

// ApplyWorkload creates a workload or updates its spec. A change to
// anything but the replica count is a new generation.
func (a *controlAPI) ApplyWorkload(ctx context.Context, req *v1.ApplyWorkloadRequest) (*v1.ApplyWorkloadResponse, error) {
	return a.applyWorkload(ctx, req, false, 0)
}

// applyWorkload is ApplyWorkload; the workload's generation is written
// promoted (canary.go: it never waits as a canary) when its spec has no
// canary, or promote is set (a rollback). basedOn, if set, is the mod
// revision of the workload the spec was derived from (a rollback, a
// restart): if it changed meanwhile, nothing is written (Conflict), so
// that a deploy in between is not undone.
func (a *controlAPI) applyWorkload(ctx context.Context, req *v1.ApplyWorkloadRequest, promote bool, basedOn int64) (*v1.ApplyWorkloadResponse, error) {
	if err := ValidateName(req.GetName()); err != nil {
		return nil, err
	}
	spec := proto.Clone(req.GetSpec()).(*v1.WorkloadSpec)
	if spec == nil {
		return nil, errdefs.Invalidf("workload spec is missing")
	}
	if spec.Kind == "" {
		spec.Kind = "wasm"
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
		if err := validateSpec(spec); err != nil {
			return nil, err
		}
		// configs: a dry run (diff, apply's check) may name configs that
		// the same manifest creates; the client checks the others.
		if err := a.s.checkReferences(ctx, spec); err != nil && !req.GetDryRun() {
			return nil, err
		}
		if err := gateway.CheckRoute(ctx, a.s.store, req.GetName(), spec.GetHttp()); err != nil {
			return nil, err
		}
		if a.s.routeChecked != nil {
			a.s.routeChecked()
		}
		if spec.GetKind() == kindContainer {
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
			if err := a.s.resolveFallback(ctx, spec, meta); err != nil {
				return nil, err
			}
		}
		now := time.Now().UnixNano()
		if !exists {
			wl := &v1.Workload{Name: req.GetName(), Spec: spec, Generation: 1, PromotedGeneration: 1, CreatedUnixNano: now, UpdatedUnixNano: now}
			if req.GetDryRun() {
				return &v1.ApplyWorkloadResponse{Workload: wl, Created: true, Changed: true}, nil
			}
			if err := a.writeWorkload(ctx, wl, nil, 0, req.GetChangeCause()); errdefs.IsConflict(err) && attempt < 5 {
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
		if proto.Equal(cur.Value.GetSpec(), spec) {
			return &v1.ApplyWorkloadResponse{Workload: wl}, nil
		}
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
		if err := a.writeWorkload(ctx, wl, cur.Value.GetSpec().GetHttp(), cur.ModRevision, cause); errdefs.IsConflict(err) && attempt < 5 {
			continue
		} else if err != nil {
			return nil, err
		}
		return &v1.ApplyWorkloadResponse{Workload: wl, Changed: true}, nil
	}
}

// writeWorkload creates (modRev 0) or updates wl if it is still at modRev,
// claiming its HTTP route in the same transaction (gateway.ClaimRoute;
// prev is its trigger until now). It fails with ErrConflict when either
// changed since it was read. rollouts: unless cause is "-", wl's
// generation is new and its revision is written in the same transaction.
func (a *controlAPI) writeWorkload(ctx context.Context, wl *v1.Workload, prev *v1.HttpTrigger, modRev int64, cause string) error {
	cmps, ops, err := gateway.ClaimRoute(ctx, a.s.store, wl.GetName(), wl.GetSpec().GetHttp(), prev)
	if err != nil {
		return err
	}
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
	present, err := blobsPresent(wl.GetSpec())
	if err != nil {
		return err
	}
	cmps = append(cmps, present...)
	resp, err := a.s.store.Client.Txn(ctx).If(cmps...).Then(append(ops, put)...).Commit()
	if err != nil {
		return errdefs.Unavailablef("write workload %q: %v", wl.GetName(), err)
	}
	if !resp.Succeeded {
		return errdefs.Conflictf("workload %q, the claim of its route or one of its blobs changed since they were read", wl.GetName())
	}
	return nil
}

func (a *controlAPI) ScaleWorkload(ctx context.Context, req *v1.ScaleRequest) (*v1.Workload, error) {
	if req.GetReplicas() < 0 || req.GetReplicas() > MaxReplicas {
		return nil, errdefs.Invalidf("replicas %d is outside 0..%d", req.GetReplicas(), MaxReplicas)
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

func (a *controlAPI) GetWorkload(ctx context.Context, req *v1.GetWorkloadRequest) (*v1.WorkloadView, error) {
	wl, err := a.s.store.Workloads.Get(ctx, req.GetName())
	if err != nil {
		return nil, err
	}
	v, err := a.s.snapshot(ctx)
	if err != nil {
		return nil, err
	}
	if err := v.readLoads(ctx, a.s.store.Client); err != nil {
		return nil, err
	}
	return v.workloadView(wl.Value), nil
}

func (a *controlAPI) ListWorkloads(ctx context.Context, _ *v1.ListWorkloadsRequest) (*v1.ListWorkloadsResponse, error) {
	v, err := a.s.snapshot(ctx)
	if err != nil {
		return nil, err
	}
	if err := v.readLoads(ctx, a.s.store.Client); err != nil {
		return nil, err
	}
	out := &v1.ListWorkloadsResponse{}
	v.indexByWorkload()
	for _, wl := range v.workloads {
		out.Workloads = append(out.Workloads, v.workloadView(wl))
	}
	return out, nil
}

func (a *controlAPI) ListInstances(ctx context.Context, req *v1.ListInstancesRequest) (*v1.ListInstancesResponse, error) {
	v, err := a.s.snapshot(ctx)
	if err != nil {
		return nil, err
	}
	if req.GetWorkload() != "" && v.workload(req.GetWorkload()) == nil {
		return nil, errdefs.NotFoundf("workload %q not found", req.GetWorkload())
	}
	out := &v1.ListInstancesResponse{}
	for _, inst := range v.instances {
		if req.GetWorkload() != "" && inst.GetWorkload() != req.GetWorkload() {
			continue
		}
		st := v.statuses[inst.GetId()]
		out.Instances = append(out.Instances, &v1.InstanceView{Instance: inst, Status: st, State: EffectiveState(inst, st, v.alive)})
	}
	return out, nil
}

func (a *controlAPI) ListNodes(ctx context.Context, _ *v1.ListNodesRequest) (*v1.ListNodesResponse, error) {
	v, err := a.s.snapshot(ctx)
	if err != nil {
		return nil, err
	}
	return &v1.ListNodesResponse{Nodes: v.nodeViews()}, nil
}

// Logs gathers the workload's instance output from the workers that hold it.
func (a *controlAPI) Logs(req *v1.LogsRequest, stream v1.Control_LogsServer) error {
	ctx := stream.Context()
	if _, err := a.s.store.Workloads.Get(ctx, req.GetWorkload()); err != nil {
		return err
	}
	v, err := a.s.snapshot(ctx)
	if err != nil {
		return err
	}
	byNode := map[string][]string{}
	for _, inst := range v.instances {
		if inst.GetWorkload() == req.GetWorkload() && inst.GetNode() != "" {
			byNode[inst.GetNode()] = append(byNode[inst.GetNode()], inst.GetId())
		}
	}
	// A function may have been served cold (before a replica existed) on
	// any node that runs its kind: ask every such node for that output too.
	if wl := v.workload(req.GetWorkload()); wl != nil && wl.GetSpec().GetHttp() != nil {
		for _, n := range v.nodes {
			if slices.Contains(n.GetRuntimes(), wl.GetSpec().GetKind()) {
				byNode[n.GetName()] = append(byNode[n.GetName()], httptrigger.ColdLogID(req.GetWorkload()))
			}
		}
	}
	nodes := make([]string, 0, len(byNode))
	for n := range byNode {
		nodes = append(nodes, n)
	}
	sort.Strings(nodes)
	var unreachable []error
	for _, name := range nodes {
		node := v.node(name)
		if node == nil || node.GetAddress() == "" {
			continue
		}
		ids := byNode[name]
		sort.Strings(ids)
		err := a.s.workers.logs(ctx, name, node.GetAddress(), &v1.InstanceLogsRequest{Instances: ids, TailBytes: req.GetTailBytes()}, stream.Send)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			unreachable = append(unreachable, errdefs.Unavailablef("node %s at %s: %v", name, node.GetAddress(), err))
		}
	}
	if len(unreachable) > 0 {
		return errdefs.Unavailablef("logs from some nodes could not be read: %v", errors.Join(unreachable...))
	}
	return nil
}

// view is one read of the cluster state, for the list calls.
type view struct {
	workloads []*v1.Workload
	instances []*v1.Instance
	statuses  map[string]*v1.InstanceStatus
	nodes     []*v1.Node
	alive     map[string]bool

	byWorkload map[string][]*v1.Instance // built on demand by indexByWorkload
	inFlight   map[string]int64          // functions' requests in flight, read by readLoads
}

// readLoads sums the requests in flight that every gateway last reported
// for each function.
func (v *view) readLoads(ctx context.Context, kv clientv3.KV) error {
	loads, err := gateway.ReadLoads(ctx, kv)
	if err != nil {
		return err
	}
	v.inFlight = make(map[string]int64, len(loads))
	for name, ls := range loads {
		for _, l := range ls {
			v.inFlight[name] += l.GetInFlight()
		}
	}
	return nil
}

func (v *view) indexByWorkload() {
	v.byWorkload = make(map[string][]*v1.Instance, len(v.workloads))
	for _, inst := range v.instances {
		v.byWorkload[inst.GetWorkload()] = append(v.byWorkload[inst.GetWorkload()], inst)
	}
}

func (s *Server) snapshot(ctx context.Context) (*view, error) {
	v := &view{statuses: map[string]*v1.InstanceStatus{}}
	wls, _, err := s.store.Workloads.List(ctx)
	if err != nil {
		return nil, err
	}
	for _, w := range wls {
		v.workloads = append(v.workloads, w.Value)
	}
	insts, _, err := s.store.Instances.List(ctx)
	if err != nil {
		return nil, err
	}
	for _, i := range insts {
		v.instances = append(v.instances, i.Value)
	}
	sort.SliceStable(v.instances, func(i, j int) bool {
		a, b := v.instances[i], v.instances[j]
		return a.GetWorkload() < b.GetWorkload() || a.GetWorkload() == b.GetWorkload() && a.GetCreatedUnixNano() < b.GetCreatedUnixNano()
	})
	sts, _, err := s.store.Statuses.List(ctx)
	if err != nil {
		return nil, err
	}
	for _, st := range sts {
		v.statuses[st.Name] = st.Value
	}
	nodes, _, err := s.store.Nodes.List(ctx)
	if err != nil {
		return nil, err
	}
	for _, n := range nodes {
		v.nodes = append(v.nodes, n.Value)
	}
	if v.alive, err = s.aliveNodes(ctx); err != nil {
		return nil, err
	}
	return v, nil
}

func (v *view) workload(name string) *v1.Workload {
	for _, w := range v.workloads {
		if w.GetName() == name {
			return w
		}
	}
	return nil
}

func (v *view) node(name string) *v1.Node {
	for _, n := range v.nodes {
		if n.GetName() == name {
			return n
		}
	}
	return nil
}

func (v *view) workloadView(wl *v1.Workload) *v1.WorkloadView {
	out := &v1.WorkloadView{Workload: wl, InFlight: v.inFlight[wl.GetName()]}
	insts := v.instances
	if v.byWorkload != nil {
		insts = v.byWorkload[wl.GetName()]
	}
	for _, inst := range insts {
		if inst.GetWorkload() != wl.GetName() || inst.GetLostUnixNano() != 0 {
			continue // a lost instance has been replaced
		}
		out.Total++
		if inst.GetGeneration() != wl.GetGeneration() {
			continue
		}
		out.Current++
		if isReady(inst, v.statuses[inst.GetId()], v.alive) {
			out.Ready++
		}
	}
	return out
}
